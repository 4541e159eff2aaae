"""Plots of a run (filled in by the reporting work)."""


def write_run_plots(run, out_dir):
    return []
