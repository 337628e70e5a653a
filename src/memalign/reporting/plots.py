"""The charts memalign's reports draw, as functions of plain data: series in, one PNG out.

Reports (``memalign.bench.report``, ``memalign.persona.evaluation.report``) decide what to plot; these
functions only draw it, in one style (120 dpi, legends outside the axes so they never hide data).
matplotlib is imported on the first call, with the non-interactive Agg backend, so importing a report
costs nothing and a machine without a display can plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memalign.reporting.optional import import_extra

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
DPI = 120

Points = Sequence[tuple[float, float]]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (a :class:`MissingExtraError` if matplotlib is absent)."""
    matplotlib = import_extra("matplotlib", "plotting")
    matplotlib.use("Agg")
    return import_extra("matplotlib.pyplot", "plotting")


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (folders created) and free it: reports draw many figures in one process."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def log2_lines(
    series: Sequence[tuple[str, Points]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    tick_label: Callable[[float], str] = str,
    ylim: tuple[float, float] = (-5, 105),
) -> Path:
    """One line per labelled series over a log2 x axis (e.g. score against context length).

    Series often coincide (every method at 0 or 100): each is shifted by a small factor along x, in the
    order given, so every line stays visible; a series without points keeps its marker and style slot."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs: set[float] = set()
    for i, (label, points) in enumerate(series):
        if not points:
            continue
        xs.update(x for x, _ in points)
        dodge = 2 ** (0.06 * (i - (len(series) - 1) / 2))
        ax.plot(
            [x * dodge for x, _ in points],
            [y for _, y in points],
            label=label,
            marker=MARKERS[i % len(MARKERS)],
            linestyle=LINESTYLES[i % len(LINESTYLES)],
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(xs), [tick_label(x) for x in sorted(xs)])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, path)


def heatmap(
    matrix: Sequence[Sequence[float]],
    path: Path,
    *,
    columns: Sequence[str],
    rows: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    vmin: float = 0,
    vmax: float = 100,
) -> Path:
    """A red (``vmin``) to green (``vmax``) grid of ``matrix[row][column]``; NaN cells stay blank."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(columns), 1.2 + 0.45 * len(rows)))
    image = ax.imshow(matrix, cmap="RdYlGn", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return save(fig, path)


def grouped_bars(
    panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float]]]]],
    categories: Sequence[str],
    path: Path,
    *,
    ylabel: str,
) -> Path:
    """One panel per ``(title, bars)``; in each, one group per category and one coloured bar per series."""
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 3.8 * len(panels)), squeeze=False)
    for ax, (title, bars) in zip(axes[:, 0], panels, strict=True):
        width = 0.8 / max(1, len(bars))
        for n, (label, values) in enumerate(bars):
            ax.bar(
                [x + n * width for x in range(len(categories))], values, width, color=plt.cm.tab20(n % 20), label=label
            )
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(categories))], list(categories))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, path)


def radar(
    series: Sequence[tuple[str, Sequence[float], str]],
    axes: Sequence[str],
    path: Path,
    *,
    title: str,
    ylim: tuple[float, float],
) -> Path:
    """Closed polygons over ``axes`` (one spoke each), one per ``(label, values, matplotlib style)``."""
    plt = pyplot()
    angles = [2 * math.pi * n / len(axes) for n in range(len(axes))]
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(polar=True)
    for label, values, style in series:
        ax.plot([*angles, angles[0]], [*values, values[0]], style, marker="o", label=label)
    ax.set_xticks(angles, list(axes))
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.25, -0.1))
    return save(fig, path)
