"""Figure plumbing shared by the run figures and the trends: a grid of panels, one legend,
a header naming machine, software stack, code, date, cadence and reduction, and a small PNG.

matplotlib's object API only (no pyplot: no global state, no GUI backend). PNGs are mapped
onto a fixed palette (the line colors, their tints on white, greys): a few tens of KB each,
so committed runs and the dashboard stay small, and a color drawn by a few points keeps its
hue (an adaptive palette gives it away to the many grey pixels of text).
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np

from ..results import write_atomic
from .labels import CADENCE_TEXT, REDUCTION, cadence_order, provenance

DPI = 90
# The pass's four parts, stacked in this order (plots.parts_figure).
PART_COLORS = {"row": "#9ecae1", "collective": "#3182bd", "stall": "#e6550d", "decide": "#31a354"}
TINTS = (1.0, 0.75, 0.5, 0.3, 0.15)  # of each color on white: anti-aliasing and alpha
GREYS = 48


def new_figure(panels: int, width: float = 5.0, height: float = 3.4, ncols: int = 3):
    """A figure of `panels` panels, `ncols` to a row; returns (figure, axes)."""
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 1.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def cadence_note(cadences) -> str:
    """The definitions of the cadences a figure shows."""
    return "; ".join(CADENCE_TEXT.get(c, c) for c in sorted(set(cadences), key=cadence_order))


def log_axis(ax, which: str) -> None:
    """Log scale with plain-number ticks (call it after plotting): 1-2-5 steps over a
    couple of decades, decades only over more (their labels would collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    low, high = getattr(ax, f"get_{which}lim")()
    subs = (1.0, 2.0, 5.0) if high < 300 * low else (1.0,)
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _legend(fig) -> None:
    """One legend for the whole figure, each label once, below the panels."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fits = max(1, int(fig.get_figwidth() // 2.6))  # entries side by side in the width
        fig.legend(handles, labels, loc="outside lower center", ncols=min(fits, len(labels)))


def _palette() -> np.ndarray:
    """(colors, 3) in 0-255: C0-C9 and the part colors with their tints, a ramp of greys."""
    from matplotlib.colors import to_rgb

    colors = [to_rgb(f"C{i}") for i in range(10)] + [to_rgb(c) for c in PART_COLORS.values()]
    rgb = [[1 - t * (1 - c) for c in color] for color in colors for t in TINTS]
    rgb += [[g, g, g] for g in np.linspace(0, 1, GREYS)]
    return np.rint(255 * np.array(rgb)).astype(np.int32)


def _to_palette(rgb: np.ndarray):
    """Each pixel to its nearest palette color (exact: Pillow's own mapping is coarse and
    turns white into grey), solved once per distinct color."""
    from PIL import Image

    palette = _palette()
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    distinct, inverse = np.unique(keys.ravel(), return_inverse=True)
    colors = np.stack([distinct >> 16, (distinct >> 8) & 255, distinct & 255], axis=-1)
    nearest = ((colors[:, None, :] - palette[None, :, :]) ** 2).sum(axis=-1).argmin(axis=1)
    image = Image.fromarray(nearest[inverse].reshape(keys.shape).astype(np.uint8), "P")
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    return image


def save_png(fig, out_dir: Path, name: str, metas: list[dict], title: str, note: str) -> Path:
    """Title, the provenance of every run drawn from, and `note` (cadences) with the
    reduction, on top; written atomically as a palette PNG."""
    from PIL import Image

    sources = list(dict.fromkeys(provenance(m) for m in metas))  # each run's line once
    chars = int(fig.get_figwidth() * 11)  # what fits at the "medium" font size
    notes = textwrap.wrap(f"{note}; {REDUCTION}", chars)
    fig.suptitle("\n".join([title, *sources, *notes]), fontsize="medium")
    _legend(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    image = _to_palette(np.asarray(Image.open(buf).convert("RGB")))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / f"{name}.png", lambda f: image.save(f, "PNG", optimize=True))
