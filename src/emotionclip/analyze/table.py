"""The table ``analyze_video`` returns: a pandas DataFrame that also draws itself, for notebooks.

``table.plot()`` draws the emotion-over-time chart with matplotlib (``table.plot.line(...)`` and
the rest of pandas' plot accessor still work), with per-person rows one panel for everybody
(``person == "all"``) and one per person; in Jupyter the table shows a strip of the top emotion per
window above the usual rows. Everything else is the plain DataFrame scripts expect.
"""

from __future__ import annotations

import pandas as pd


class _EmotionPlot:
    """``table.plot()``: the emotion chart; ``table.plot.<kind>(...)``: pandas' own plots."""

    def __init__(self, table: EmotionTable):
        self._table = table

    def __call__(self, ax=None, title: str | None = None, person=None):
        """The chart on ``ax`` (a new figure when None). With per-person rows and no ``ax``: one panel
        for everybody and one per person (an array of axes); ``person=`` ("all" or an id) draws one."""
        import matplotlib.pyplot as plt

        from .charts import plot_scores
        from .persons import person_color

        t = self._table
        title = title or t.attrs.get("video", "")
        panels = [(None, pd.DataFrame(t))]
        if "person" in t.columns:
            labels = t["person"].astype(str)
            keys = ["all"] + sorted({k for k in labels if k != "all"}, key=int)
            if person is not None:
                if str(person) not in keys:
                    raise ValueError(
                        f"no rows for person {person!r}; persons: {', '.join(keys[1:]) or 'none'}"
                    )
                keys = [str(person)]
            union = pd.DataFrame(t[labels == "all"])[["window", "start", "end", "padded_frames"]]
            panels = [(k, _on_all_windows(pd.DataFrame(t[labels == k]), union)) for k in keys]
        if ax is None:
            _, axes = plt.subplots(
                len(panels), 1, figsize=(11, 3 + 2.2 * (len(panels) - 1)), sharex=True, squeeze=False
            )
            axes = axes[:, 0]
        elif len(panels) > 1:
            raise ValueError('one ax draws one panel: pass person= ("all" or an id), or no ax for all panels')
        else:
            axes = [ax]
        for a, (key, rows) in zip(axes, panels, strict=True):
            name = (
                title if key is None else f"{title} · " + ("everybody" if key == "all" else f"person {key}")
            )
            plot_scores(
                a, rows, t.classes, t.attrs.get("duration", 0.0), t.attrs.get("probabilities", True), name
            )
            if key not in (None, "all"):
                a.title.set_color(person_color(int(key)))
        if len(axes) > 1:
            for a in axes[:-1]:
                a.set_xlabel("")
            return axes
        return axes[0]

    def __getattr__(self, name):
        return getattr(pd.DataFrame(self._table).plot, name)


def _on_all_windows(rows: pd.DataFrame, union: pd.DataFrame) -> pd.DataFrame:
    """A person's rows on every window of the video: NaN scores (a break in the lines) and
    ``has_person`` False (greyed) where the person is not scored."""
    if (rows["person"].astype(str) == "all").all():
        return rows
    scores = rows.drop(columns=["start", "end", "padded_frames"])
    out = union.merge(scores, on="window", how="left")
    out["has_person"] = out["has_person"].fillna(False).astype(bool)
    return out


class EmotionTable(pd.DataFrame):
    """One row per window (see :func:`~emotionclip.analyze.analyze.score_table`; with per-person rows
    one more per (window, person), told apart by ``person``), with ``plot()`` and an HTML view.

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
        union = self if "person" not in self.columns else self[self["person"].astype(str) == "all"]
        strip = timeline_svg(
            union["top_emotion"],
            union["start"],
            union["end"],
            self.attrs.get("duration", 0.0),
            classes,
            colors,
            width=600,
            height=18,
            persons=union["has_person"].tolist(),
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
