#!/usr/bin/env bash
# Run the default dpsync-bench sweep for this machine under torchrun, then report.
#
#   ./run_bench.sh [--nproc N] [--out DIR | --resume RUN_DIR] [--no-report]
#                  [--nnodes N --rdzv-endpoint HOST:PORT [--rdzv-id ID]]
#                  [sweep options: --paths, --shapes, --forward-ms, --cadences, --iters,
#                   --forward-iters, --warmup, --repeat, --variants, --preset,
#                   --machine-kind, --timeout]   (python3 -m dpsync_bench check --help)
#
# One run directory holds the whole sweep. No GPU: the host paths (gloo_cpu, shm_cpu,
# hierarchical) at 2 ranks. With N GPUs: every path at N ranks (one per GPU), then the host
# paths at 2, 4 and 8 ranks beyond N where the cores allow.
# Exit codes: 0 ok, 2 bad input (one line), other: the job failed (finished cases are kept).
set -uo pipefail
cd "$(dirname "$0")" || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# NVLink multicast stays off: a program using it can take a shared host's GPUs down.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PYTHON:-python3}
export DPSYNC_COMMAND="./run_bench.sh${*:+ $*}"  # recorded in run.json as the command run

die() { echo "run_bench: $*" >&2; exit 2; }
# Stopped from outside (a CI's timeout, Ctrl-C): torchrun is told to stop its ranks, so no job
# outlives this script; finished cases stay on disk.
job_pid="" stopped=""
trap 'stopped=1; [[ -n $job_pid ]] && kill -TERM "$job_pid" 2>/dev/null' TERM INT HUP

nproc="" run_dir="" failed="" failed_rc=0 nnodes=1 endpoint="" rdzv_id="dpsync" out="" resume="" report=1
sweep=()
while (($#)); do
  case "$1" in
    --nproc) nproc=${2:?--nproc needs a value}; shift 2 ;;
    --nnodes) nnodes=${2:?--nnodes needs a value}; shift 2 ;;
    --rdzv-endpoint) endpoint=${2:?--rdzv-endpoint needs HOST:PORT}; shift 2 ;;
    --rdzv-id) rdzv_id=${2:?--rdzv-id needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --resume) resume=${2:?--resume needs a run directory}; shift 2 ;;
    --no-report) report=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --*=*) sweep+=("${1%%=*}" "${1#*=}"); shift ;;
    --*) [[ $# -ge 2 ]] || die "option $1 needs a value"; sweep+=("$1" "$2"); shift 2 ;;
    *) die "unexpected argument '$1' (see --help)" ;;
  esac
done
[[ $nnodes =~ ^[1-9][0-9]*$ ]] || die "--nnodes must be a positive integer, got '$nnodes'"
[[ -z $nproc || $nproc =~ ^[1-9][0-9]*$ ]] || die "--nproc must be a positive integer, got '$nproc'"
((nnodes == 1)) || [[ -n $endpoint ]] || die "--nnodes $nnodes needs --rdzv-endpoint HOST:PORT"
[[ -z $out || -z $resume ]] || die "give either --out DIR or --resume RUN_DIR, not both"
# A user's runs go outside the checkout: DPSYNC_RESULTS, else the XDG data folder.
default_out=${DPSYNC_RESULTS:-${XDG_DATA_HOME:-$HOME/.local/share}/dpsync-bench/results}
target=(--out "${out:-$default_out}")
[[ -n $resume ]] && target=(--resume "$resume")

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null) \
  || die "cannot import torch with $PY (see README.md: setup)"

# What broke, in one line: failed data checks, else a rank that died (and its case), else the
# first error a rank printed.
why_failed() {  # why_failed TMPDIR RUN_DIR
  "$PY" -m dpsync_bench.failure "$1" "$2" 2>/dev/null || echo "see the log above"
}

# One torchrun job: check the sweep here first (bad input stops before any process starts).
run_job() {  # run_job NPROC [extra sweep options...]
  local n=$1; shift
  local opts=("${sweep[@]}" "$@")
  "$PY" -m dpsync_bench check --nproc "$n" --nnodes "$nnodes" "${target[@]}" "${opts[@]}" \
    >/dev/null || exit 2
  local note; note=$(mktemp)
  local tmp; tmp=$(mktemp -d)
  mkdir "$tmp/finished"  # conftest.py marks each rank whose session ends normally
  local launch=(--nproc-per-node "$n")
  if ((n > 1)); then  # local rank 0 on the console; the others' stdout+stderr in log files
    launch+=(--log-dir "$tmp/logs" --redirects "$(seq -s, 1 $((n - 1)) | sed 's/\([0-9]\+\)/\1:3/g')")
  fi
  if ((nnodes > 1)); then
    launch+=(--nnodes "$nnodes" --rdzv-backend c10d --rdzv-endpoint "$endpoint" --rdzv-id "$rdzv_id")
  else
    launch+=(--standalone)
  fi
  local pyopts=("--dpsync-${target[0]#--}" "${target[1]}")
  local world=$((n * nnodes))
  local i
  for ((i = 0; i < ${#opts[@]}; i += 2)); do pyopts+=("--dpsync-${opts[i]#--}" "${opts[i+1]}"); done
  echo "run_bench: torchrun ${launch[*]} -m pytest benchmarks/ ${pyopts[*]}" >&2
  DPSYNC_RUN_DIR_FILE=$note DPSYNC_JOB_DIR=$tmp "$PY" -m torch.distributed.run "${launch[@]}" -m pytest benchmarks/ \
    -q -p no:cacheprovider --benchmark-json "$tmp/pytest-benchmark-w$world.json" \
    "${pyopts[@]}" > >(tee "$tmp/stdout") 2> >(tee "$tmp/stderr" >&2) &
  job_pid=$!
  local rc=0
  wait "$job_pid" || rc=$?
  while kill -0 "$job_pid" 2>/dev/null; do wait "$job_pid" || rc=$?; done  # a signal came first
  job_pid=""
  wait  # for tee
  local got; got=$(head -n 1 "$note" 2>/dev/null)
  [[ -n $got ]] && run_dir=$got
  rm -f "$note"
  if [[ -n $run_dir && -d $run_dir ]]; then
    [[ -s $tmp/pytest-benchmark-w$world.json ]] && mv "$tmp/pytest-benchmark-w$world.json" "$run_dir/"
    target=(--resume "$run_dir")  # the sweep's later jobs add to the same run
  fi
  if [[ -n $stopped ]]; then
    echo "run_bench: stopped by a signal${run_dir:+; results so far in $run_dir}" >&2
    rm -rf "$tmp"
    exit 143
  fi
  if ((rc != 0)) && [[ -z $failed ]]; then  # the sweep goes on; the first failure ends it
    failed="run_bench: job failed (torchrun exit $rc): $(why_failed "$tmp" "$run_dir")"
    failed_rc=$rc
  fi
  rm -rf "$tmp"
}

if [[ -n $nproc ]]; then
  run_job "$nproc"
elif ((gpus >= 1)); then
  run_job "$gpus"
  cores=$(nproc)
  for w in 2 4 8; do
    ((w > gpus && w <= cores)) && run_job "$w" --paths gloo_cpu,shm_cpu,hierarchical --forward-ms 0 --iters 500
  done
else
  run_job 2
fi
if [[ -n $run_dir ]]; then
  if ((report)); then
    "$PY" -m dpsync_bench report "$run_dir" --plots || echo "run_bench: report failed" >&2
  fi
  echo "run_bench: results in $run_dir" >&2
fi
# torchrun's own failure report is long; end with one line that says what broke.
[[ -z $failed ]] || { echo "$failed" >&2; exit "$failed_rc"; }
