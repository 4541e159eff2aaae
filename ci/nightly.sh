#!/usr/bin/env bash
# The nightly job for any CI (.github/workflows/nightly.yml runs this very script):
#
#   ci/nightly.sh [run_bench.sh options...]
#
# Steps, the first four in `python3 -m dpsync_bench nightly` (dpsync_bench/nightly.py):
#   1. sweep        ./run_bench.sh: the default sweep for this machine (plus the options given)
#   2. store        the run into the history store (publish, prune; git commit and push)
#   3. gate         compare: the run against that machine kind's history
#   4. dashboard    rebuilt from the store, for the CI to publish (WORK/site)
#   5. job summary  the gate's report appended to $DPSYNC_SUMMARY ($GITHUB_STEP_SUMMARY)
# Exit codes: 0 no regression, 1 a regression (one REGRESSION line per failing case) or a
# failed sweep, 2 bad setup (one line).
#
# Settings (environment):
#   DPSYNC_HISTORY_DIR     history store: a directory the CI keeps between runs; else
#   DPSYNC_HISTORY_BRANCH  a git branch of its own (default dpsync-history) in
#   DPSYNC_HISTORY_REPO    this repository (default: this checkout), fetched from and pushed
#   DPSYNC_HISTORY_REMOTE  to this remote (default: origin where there is one; "" for none)
#   DPSYNC_WORK            scratch: WORK/runs (whole runs), WORK/site (the dashboard to
#                          publish, gate.txt beside it); default $RUNNER_TEMP or $TMPDIR
#   DPSYNC_GATE            compare's options, e.g. "--min-history 2 --consecutive 1"
#                          (default: its production rule, --min-history 5 --consecutive 2:
#                          a case fails on its 2nd night in a row beyond the noise)
#   DPSYNC_SUMMARY         a Markdown file the gate is appended to ($GITHUB_STEP_SUMMARY)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# NVLink multicast stays off: a program using it can take a shared host's GPUs down.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PYTHON:-python3}

work=${DPSYNC_WORK:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/dpsync-nightly}
if [[ -n ${DPSYNC_HISTORY_DIR:-} ]]; then
  store=(--store "$DPSYNC_HISTORY_DIR")
else
  repo=${DPSYNC_HISTORY_REPO:-$PWD}
  store=(--store-branch "${DPSYNC_HISTORY_BRANCH:-dpsync-history}" --store-repo "$repo")
  if [[ -z ${DPSYNC_HISTORY_REMOTE+set} ]]; then
    git -C "$repo" remote get-url origin >/dev/null 2>&1 && DPSYNC_HISTORY_REMOTE=origin
  fi
  [[ -n ${DPSYNC_HISTORY_REMOTE:-} ]] && store+=(--store-remote "$DPSYNC_HISTORY_REMOTE")
fi
summary=${DPSYNC_SUMMARY:-${GITHUB_STEP_SUMMARY:-}}

# Steps 1-5 (the summary: --summary).
"$PY" -m dpsync_bench nightly "${store[@]}" --out "$work/runs" --site "$work/site" \
  --gate="${DPSYNC_GATE:-}" ${summary:+--summary "$summary"} -- "$@"
rc=$?
# Where the CI finds the dashboard to publish (GitHub Actions: a step output).
if [[ -f $work/site/index.html && -n ${GITHUB_OUTPUT:-} ]]; then
  echo "site=$work/site" >>"$GITHUB_OUTPUT"
fi
echo "ci/nightly.sh: exit $rc; runs in $work/runs, dashboard $work/site/index.html" >&2
exit "$rc"
