"""The table ``analyze_video`` returns: a pandas DataFrame that also draws itself, for notebooks.

``table.plot()`` draws the emotion-over-time chart with matplotlib (``table.plot.line(...)`` and
the rest of pandas' plot accessor still work); in Jupyter the table shows a strip of the top
emotion per window above the usual rows. Everything else is the plain DataFrame scripts expect.
"""

from __future__ import annotations

import pandas as pd


class _EmotionPlot:
    """``table.plot()``: the emotion chart; ``table.plot.<kind>(...)``: pandas' own plots."""

    def __init__(self, table: EmotionTable):
        self._table = table

    def __call__(self, ax=None, title: str | None = None):
        import matplotlib.pyplot as plt

        from .charts import plot_scores

        t = self._table
        if ax is None:
            _, ax = plt.subplots(figsize=(11, 4))
        plot_scores(
            ax,
            t,
            t.classes,
            t.attrs.get("duration", 0.0),
            t.attrs.get("probabilities", True),
            title or t.attrs.get("video", ""),
        )
        return ax

    def __getattr__(self, name):
        return getattr(pd.DataFrame(self._table).plot, name)


class EmotionTable(pd.DataFrame):
    """One row per window (see :func:`~emotionclip.analyze.analyze.score_table`), with ``plot()`` and an HTML view.

    ``attrs`` holds ``classes``, ``video``, ``duration`` and ``probabilities``; results of pandas
    operations are plain DataFrames.
    """

    @property
    def _constructor(self):
        return pd.DataFrame

    @property
    def classes(self) -> list[str]:
        return list(self.attrs.get("classes", []))

    @property
    def plot(self) -> _EmotionPlot:  # type: ignore[override]
        return _EmotionPlot(self)

    def _repr_html_(self) -> str:
        from .charts import class_colors, timeline_svg

        classes = self.classes
        colors = class_colors(classes)
        strip = timeline_svg(
            self["top_emotion"],
            self["start"],
            self["end"],
            self.attrs.get("duration", 0.0),
            classes,
            colors,
            width=600,
            height=18,
            persons=self["has_person"].tolist(),
        )
        legend = " ".join(
            f'<span style="white-space:nowrap"><span style="display:inline-block;width:10px;height:10px;'
            f'background:{c}"></span> {n}</span>'
            for n, c in zip(classes, colors, strict=True)
        )
        return f"<div>{strip}<div style='font-size:11px'>{legend}</div></div>" + (
            pd.DataFrame(self)._repr_html_() or ""
        )


def emotion_table(
    table: pd.DataFrame, classes, video: str, duration: float, probabilities: bool = True
) -> EmotionTable:
    out = EmotionTable(table)
    out.attrs.update(
        classes=list(classes), video=str(video), duration=float(duration), probabilities=bool(probabilities)
    )
    return out
