"""`simulate`: the PrefillDelayer's gain, delayer off against on, in a simulated engine; with
--sweep, how the gain moves with the sync path, max_delay_passes and the arrival spread."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..cases import UsageError
from .scenarios import (
    PR23588,
    Scenario,
    SyncModel,
    load_sync_model,
    measured_paths,
    poisson,
    pr23588,
    trace,
)

if TYPE_CHECKING:
    from .simulate import Comparison, EngineConfig


def _engine():
    """The SimPy engine, imported only when a simulation runs: every other command, measuring
    included, works where SimPy is not installed (a GPU box without network)."""
    try:
        from . import simulate
    except ImportError as e:
        raise UsageError(f"simulate needs SimPy ({e}): pip install simpy") from None
    return simulate


SWEEP_DELAY_PASSES = (1, 2, 3, 5, 10, 30, 100)
SWEEP_SPREAD_MS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


def add_simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", choices=("pr23588", "poisson", "trace"), default="pr23588")
    p.add_argument("--run", type=Path, help="measured run whose passes are the sync cost")
    p.add_argument("--path", default="gloo_cpu", help="sync path to draw passes from")
    p.add_argument(
        "--sync-world-size",
        type=int,
        help="measured world to draw from (default: the largest measured one <= --dp-size)",
    )
    p.add_argument("--dp-size", type=int, default=4)
    p.add_argument("--max-delay-passes", type=int, default=30)
    p.add_argument("--arrival-spread-ms", type=float, default=1.0, help="pr23588 burst")
    p.add_argument("--disable-overlap-schedule", action="store_true")
    p.add_argument(
        "--colocated-decode",
        action="store_true",
        help="decode on these ranks ('null' mode), not on a decode engine",
    )
    p.add_argument(
        "--pass-overhead-us",
        type=float,
        default=0.0,
        help="the scheduler's own host time per pass, besides the gather",
    )
    p.add_argument("--rate", type=float, default=1.0, help="poisson: requests per second")
    p.add_argument("--requests", type=int, default=64, help="poisson: how many")
    p.add_argument("--input-tokens", type=int, default=8192, help="poisson")
    p.add_argument("--output-tokens", type=int, help="default: 1 for pr23588, else 128")
    p.add_argument("--trace", type=Path, help="CSV: arrival_ms,input_tokens,output_tokens[,rank]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plots", type=Path, help="write PNG figures to this directory")
    p.add_argument("--sweep", action="store_true", help="gain vs path, delay passes, spread")


def _scenario(args, spread_ms: float | None = None) -> Scenario:
    if args.scenario == "pr23588":
        spread = args.arrival_spread_ms if spread_ms is None else spread_ms
        return pr23588(spread, args.dp_size, args.output_tokens or 1)
    if args.scenario == "poisson":
        out = args.output_tokens or 128
        return poisson(args.rate, args.requests, args.dp_size, args.input_tokens, out, args.seed)
    if args.trace is None:
        raise ValueError("--scenario trace needs --trace FILE")
    return trace(args.trace, args.dp_size)


def _sync_models(args, paths: list[str]) -> dict[str, SyncModel]:
    """Each path's measured passes at the chosen world size."""
    if args.run is None:  # upstream's default path at its usual idle p50, hidden behind forwards
        if paths != ["gloo_cpu"]:
            raise ValueError(f"--path {args.path} needs --run RUN_DIR (its measured passes)")
        return {"gloo_cpu": SyncModel.constant("gloo_cpu (synthetic 160 us; no --run)", 160, 0)}
    measured = measured_paths(args.run)
    models = {}
    for path in paths:
        if path not in measured:
            raise ValueError(f"{args.run}: no passing idle case of {path}; has {list(measured)}")
        worlds = measured[path]
        world = args.sync_world_size or max([w for w in worlds if w <= args.dp_size] or worlds)
        models[path] = load_sync_model(args.run, path, world)
    return models


def _config(args) -> EngineConfig:
    return _engine().EngineConfig(
        dp_size=args.dp_size,
        max_delay_passes=args.max_delay_passes,
        overlap=not args.disable_overlap_schedule,
        disaggregated_prefill=not args.colocated_decode,
        pass_overhead_us=args.pass_overhead_us,
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)), *lines])


def _pct(fraction: float) -> str:
    return f"{round(100 * fraction, 1) + 0.0:.1f}"  # + 0.0: no "-0.0"


def _summary(c: Comparison, scenario: Scenario) -> str:
    label = "end to end (makespan, s)" if c.burst else "mean end to end (s)"
    rows = []
    for name, get in (
        (label, lambda r: f"{c.headline_s(r):.4f}"),
        ("mean TTFT (s)", lambda r: f"{r.mean_ttft_s:.4f}"),
        ("prefill rounds", lambda r: r.prefill_rounds),
        ("passes", lambda r: r.passes),
        ("passes delayed", lambda r: r.delayed_passes),
        ("mean time delayed (ms)", lambda r: f"{r.mean_delayed_s * 1e3:.3f}"),
        ("time lost to syncs (ms)", lambda r: f"{r.sync_lost_s * 1e3:.3f}"),
    ):
        rows.append([name, str(get(c.off)), str(get(c.on))])
    text = _table(["", "delayer off", "delayer on"], rows)
    text += f"\ngain: {_pct(c.gain)} % lower {'end to end' if c.burst else 'mean end to end'}"
    if scenario.name == "pr23588":
        pr_gain = 100 * (1 - PR23588["on_s"] / PR23588["off_s"])
        text += f" (PR #23588: {PR23588['off_s']} s -> {PR23588['on_s']} s, {pr_gain:.1f} %)"
    return text


def _per_request(c: Comparison) -> str:
    rows = []
    for i, (off, on) in enumerate(zip(c.off.requests, c.on.requests, strict=True)):
        req = on.request
        rows.append(
            [
                i,
                req.rank,
                f"{req.arrival_s * 1e3:.2f}",
                f"{off.ttft_s:.4f}",
                f"{on.ttft_s:.4f}",
                f"{off.e2e_s:.4f}",
                f"{on.e2e_s:.4f}",
                on.delayed_passes,
                f"{on.delayed_s * 1e3:.3f}",
            ]
        )
    header = ["req", "rank", "arrival ms", "TTFT off s", "TTFT on s", "E2E off s", "E2E on s"]
    return _table([*header, "delayed passes", "delayed ms"], rows)


def _sweep(args, models: dict[str, SyncModel], config: EngineConfig):
    """The sweep's tables, and (pr23588) the gain by arrival spread and path for the plot."""
    scenario, seed, compare = _scenario(args), args.seed, _engine().compare
    by_path = []
    for sync in models.values():
        c = compare(scenario, sync, config, seed)
        by_path.append(
            [
                sync.name,
                f"{np.median(sync.idle_pass_us):.1f}",
                f"{np.median(sync.exposed_us):.1f}",
                f"{c.headline_s(c.off):.4f}",
                f"{c.headline_s(c.on):.4f}",
                _pct(c.gain),
            ]
        )
    tables = [
        "gain by sync path:\n"
        + _table(
            ["path@world", "idle p50 us", "exposed p50 us", "off s", "on s", "gain %"], by_path
        )
    ]
    sync = models.get(args.path) or next(iter(models.values()))
    by_passes = []
    for passes in SWEEP_DELAY_PASSES:
        c = compare(scenario, sync, replace(config, max_delay_passes=passes), seed)
        by_passes.append([passes, _pct(c.gain), c.on.prefill_rounds, c.on.delayed_passes])
    tables.append(
        f"gain by max_delay_passes ({sync.name}):\n"
        + _table(["max_delay_passes", "gain %", "rounds on", "delayed"], by_passes)
    )
    if args.scenario != "pr23588":
        return tables, None
    grid = {
        spread: [compare(_scenario(args, spread), m, config, seed).gain for m in models.values()]
        for spread in SWEEP_SPREAD_MS
    }
    rows = [[f"{s:g}", *(_pct(g) for g in gains)] for s, gains in grid.items()]
    header = ["spread ms", *(m.name for m in models.values())]
    tables.append("gain % by arrival spread and path:\n" + _table(header, rows))
    return tables, grid


def _plot(out_dir: Path, c: Comparison, grid: dict | None, names: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for y, result in enumerate((c.on, c.off)):
        for start, end, tokens in result.forwards:
            color = "tab:orange" if any(tokens) else "tab:blue"
            ax.broken_barh([(start, end - start)], (y - 0.35, 0.7), color=color, ec="k")
            if any(tokens) and len(result.forwards) <= 8:  # label only a readable few
                ranks = sum(t > 0 for t in tokens)
                ax.text((start + end) / 2, y, f"{ranks} rank(s)", ha="center", va="center")
        end_s = max(end for _, end, _ in result.forwards)
        label = "makespan" if c.burst else "mean E2E"
        ax.text(end_s, y, f" {label} {c.headline_s(result):.3f} s", ha="left", va="center")
    ax.set_xlim(right=1.25 * max(end for r in (c.on, c.off) for _, end, _ in r.forwards))
    ax.set_yticks([0, 1], ["delayer on", "delayer off"])
    ax.set_xlabel("time (s); orange: prefill forward, blue: decode forward")
    ax.set_title(f"Forwards with the delayer off and on: gain {100 * c.gain:.1f} %")
    paths = [out_dir / "simulate_timeline.png"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    if grid:
        fig, ax = plt.subplots(figsize=(7, 4))
        spreads = list(grid)
        for i, name in enumerate(names):
            ax.plot(spreads, [100 * grid[s][i] for s in spreads], marker="o", label=name)
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlabel("arrival spread of the 4 requests (ms)")
        ax.set_ylabel("end-to-end gain (%)")
        ax.set_title("Delayer gain by arrival spread and sync path")
        ax.legend(loc="center right", fontsize=8)
        paths.append(out_dir / "simulate_gain_vs_spread.png")
        fig.tight_layout()
        fig.savefig(paths[1], dpi=120)
        plt.close(fig)
    return paths


def cmd_simulate(args) -> int:
    """Prints the comparison (and the sweep); bad input raises ValueError with one line."""
    config = _config(args)
    scenario = _scenario(args)
    paths = sorted(measured_paths(args.run)) if args.sweep and args.run else [args.path]
    models = _sync_models(args, paths)
    sync = models.get(args.path) or next(iter(models.values()))
    comparison = _engine().compare(scenario, sync, config, args.seed)
    f = scenario.forward
    print(
        f"{scenario.name}: {len(scenario.requests)} requests over {config.dp_size} DP ranks; "
        f"sync {sync.name}; overlap {'on' if config.overlap else 'off'}; seed {args.seed}\n"
        f"forward model (DeepSeek-V3, H100 figures): prefill {f.prefill_us_per_token:.1f} "
        f"us/token ({100 * f.expert_share:.1f} % in routed experts), EP fixed "
        f"{f.ep_fixed_us / 1e3:.2f} ms/forward, decode step {f.decode_step_us / 1e3:.1f} ms"
    )
    print(_summary(comparison, scenario))
    if len(scenario.requests) <= 8:
        print("\nper request (delays with the delayer on):\n" + _per_request(comparison))
    grid = None
    if args.sweep:
        tables, grid = _sweep(args, models, config)
        for table in tables:
            print("\n" + table)
    if args.plots:
        names = [m.name for m in models.values()]
        for path in _plot(args.plots, comparison, grid, names):
            print(f"wrote {path}")
    return 0
