"""Writing an analysis: CSV, JSON, an emotion-over-time plot and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from .._io import atomic_write  # noqa: E402
from .analyze import Analysis  # noqa: E402

OUTPUT_NAMES = {"csv": "emotions.csv", "json": "emotions.json", "png": "emotions.png", "html": "report.html"}


def metadata(analysis: Analysis, **extra) -> dict:
    e = analysis.embedding
    return {
        "video": e.path,
        "duration_s": round(e.info.duration, 3),
        "fps": round(e.info.fps, 3),
        "width": e.info.width,
        "height": e.info.height,
        "num_windows": len(analysis.table),
        "method": analysis.scorer.method,
        "classes": list(analysis.scorer.classes),
        **extra,
    }


def _person_free_spans(table) -> list[tuple[float, float]]:
    missing = ~table["has_person"].to_numpy()
    edges = np.flatnonzero(np.diff(np.r_[0, missing.astype(np.int8), 0]))
    return [
        (table["start"].iat[a], table["end"].iat[b - 1]) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def plot_png(analysis: Analysis, title: str) -> bytes:
    table, classes = analysis.table, analysis.scorer.classes
    duration = max(float(table["end"].max()), analysis.embedding.info.duration)
    unit, per = ("min", 60.0) if duration > 600 else ("s", 1.0)  # long films read better in minutes
    centres = (table["start"] + table["end"]) / 2 / per
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    spans = _person_free_spans(table)
    for a, b in spans:
        ax.axvspan(a / per, b / per, color="0.85", lw=0, zorder=0)
    for name in classes:
        ax.plot(centres, table[name], lw=1.5, marker="o" if len(table) <= 60 else None, ms=3, label=name)
    if spans:
        ax.axvspan(0, 0, color="0.85", label="no person detected")
    ax.set(xlabel=f"time ({unit}, window centre)", ylabel="score", title=title)
    if analysis.scorer.probabilities:
        ax.set_ylim(0, 1)
    ax.set_xlim(0, duration / per)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _keyframe_jpeg(image: np.ndarray, boxes: np.ndarray, height: int = 180) -> bytes:
    im = Image.fromarray(image)
    scale = height / im.height
    im = im.resize((max(1, round(im.width * scale)), height), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    for x1, y1, x2, y2, score in np.asarray(boxes).reshape(-1, 5):
        draw.rectangle([x1 * scale, y1 * scale, x2 * scale, y2 * scale], outline=(255, 40, 40), width=3)
        draw.text((x1 * scale + 4, y1 * scale + 2), f"{score:.2f}", fill=(255, 40, 40))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
.note{background:#fff6d6;border:1px solid #e6c200;padding:8px 12px;border-radius:4px}
.strip{display:flex;gap:8px;overflow-x:auto;padding-bottom:8px}
figure{margin:0;text-align:center;font-size:12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
img.plot{max-width:100%}
"""


def report_html(analysis: Analysis, plot: bytes, meta: dict, note: str | None = None) -> str:
    table, e = analysis.table, analysis.embedding
    esc = html.escape
    figures = []
    for k in e.keyframes:
        row = table.iloc[k.window]
        figures.append(
            f'<figure><img class="keyframe" alt="keyframe at {k.time:.2f} s" '
            f'src="{_data_uri(_keyframe_jpeg(k.image, k.boxes), "image/jpeg")}">'
            f"<figcaption>{k.time:.2f} s · {esc(str(row['top_emotion']))}"
            f"{'' if row['has_person'] else ' · no person'}</figcaption></figure>"
        )
    rows = "".join(
        f"<tr><td>{r.start:.2f}–{r.end:.2f}</td><td>{esc(str(r.top_emotion))}</td>"
        f"<td>{r[r.top_emotion]:.3f}</td><td>{'yes' if r.has_person else 'no'}</td></tr>"
        for _, r in table.iterrows()
    )
    info = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in meta.items() if k != "classes")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>EmotionCLIP · {esc(Path(e.path).name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Emotions over time: {esc(Path(e.path).name)}</h1>
{f'<p class="note">{esc(note)}</p>' if note else ""}
<p>{info}</p>
<h2>Scores per window</h2>
<img class="plot" alt="emotion scores over time" src="{_data_uri(plot, "image/png")}">
<h2>Keyframes (subject boxes in red)</h2>
<div class="strip">{"".join(figures)}</div>
<h2>Top emotion per window</h2>
<table><thead><tr><th>window (s)</th><th>top emotion</th><th>score</th><th>person</th></tr></thead>
<tbody>{rows}</tbody></table>
</body></html>
"""


def write_report(
    analysis: Analysis, out_dir: str | Path, note: str | None = None, **meta_extra
) -> dict[str, Path]:
    """Write CSV, JSON, PNG and HTML for one analysis into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = {kind: out_dir / name for kind, name in OUTPUT_NAMES.items()}
    meta = metadata(analysis, **meta_extra)
    table = analysis.table
    atomic_write(paths["csv"], table.to_csv(index=False))
    records = table.assign(boxes=[json.loads(b) for b in table["boxes"]]).to_dict(orient="records")
    atomic_write(paths["json"], json.dumps({**meta, "windows": records}, indent=1, default=_json_default))
    plot = plot_png(analysis, title=Path(analysis.embedding.path).name)
    atomic_write(paths["png"], plot)
    atomic_write(paths["html"], report_html(analysis, plot, meta, note))
    return paths


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
