"""Charts of an emotion table shared by the PNG, the HTML pages and notebooks: colours, the
matplotlib plot, and the inline-SVG strip of the top emotion per window."""

from __future__ import annotations

import html

import matplotlib
import numpy as np


def class_colors(classes) -> list[str]:
    """One colour per class, the same in the PNG, the HTML report and the index (matplotlib's tab10/20)."""
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return [matplotlib.colors.to_hex(cmap(i % cmap.N)) for i in range(len(classes))]


def _person_free_spans(table) -> list[tuple[float, float]]:
    missing = ~table["has_person"].to_numpy(bool)
    edges = np.flatnonzero(np.diff(np.r_[0, missing.astype(np.int8), 0]))
    return [
        (table["start"].iat[a], table["end"].iat[b - 1]) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def plot_scores(ax, table, classes, duration: float, probabilities: bool = True, title: str = "") -> None:
    """The emotion-over-time chart on a matplotlib ``ax`` (the PNG, and ``EmotionTable.plot``)."""
    duration = max(float(table["end"].max()), duration)
    unit, per = ("min", 60.0) if duration > 600 else ("s", 1.0)  # long films read better in minutes
    centres = (table["start"] + table["end"]) / 2 / per
    spans = _person_free_spans(table)
    for a, b in spans:
        ax.axvspan(a / per, b / per, color="0.85", lw=0, zorder=0)
    for name, color in zip(classes, class_colors(classes), strict=True):
        marker = "o" if len(table) <= 60 else None
        ax.plot(centres, table[name], lw=1.5, marker=marker, ms=3, label=name, color=color)
    if spans:
        ax.axvspan(0, 0, color="0.85", label="no person detected")
    padded = table["padded_frames"].to_numpy() > 0 if "padded_frames" in table else []
    if np.any(padded):
        first = float(table["start"].to_numpy()[padded].min())
        ax.axvspan(first / per, duration / per, fill=False, hatch="//", ec="0.5", lw=0, label="padded")
    ax.set(xlabel=f"time ({unit}, window centre)", ylabel="score", title=title)
    if probabilities:
        ax.set_ylim(0, 1)
    ax.set_xlim(0, duration / per)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)


def timeline_svg(tops, starts, ends, duration, classes, colors, width=240, height=14, persons=None) -> str:
    """A strip of the top emotion per window (inline SVG), for the index and notebooks."""
    color = dict(zip(classes, colors, strict=True))
    duration = max(float(duration), float(max(ends, default=0)), 1e-6)
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    centres = (starts + ends) / 2
    cuts = np.r_[starts[:1], (centres[1:] + centres[:-1]) / 2, ends[-1:]] if len(starts) else []
    rects = []
    for i, top in enumerate(tops):
        x, w = cuts[i] / duration * width, (cuts[i + 1] - cuts[i]) / duration * width
        faded = ' fill-opacity="0.35"' if persons is not None and not persons[i] else ""
        rects.append(
            f'<rect x="{x:.2f}" y="0" width="{max(w, 0.5):.2f}" height="{height}" '
            f'fill="{color.get(top, "#999")}"{faded}>'
            f"<title>{starts[i]:.1f}–{ends[i]:.1f} s: {html.escape(str(top) or 'no dominant emotion')}</title></rect>"
        )
    return (
        f'<svg class="mini" width="{width}" height="{height}" viewBox="0 0 {width} {height}" shape-rendering="crispEdges" '
        f'><rect width="{width}" height="{height}" fill="#eee"/>' + "".join(rects) + "</svg>"
    )
