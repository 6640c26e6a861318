"""Writing an analysis: CSV, JSON, an emotion-over-time plot and a self-contained, offline HTML report.

The report plays the video (the file itself, linked relatively, or a small H.264 copy when the
browser cannot play it) above an interactive timeline; its script and style ship in
``report_assets/`` and are inlined, so the page fetches nothing but the video. Everything is
rendered in memory first and then written, so a failure leaves no partial set of outputs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from .._io import atomic_path, atomic_write  # noqa: E402
from ..heads import DOMINANCE_MARGIN, NO_DOMINANT, NO_DOMINANT_TEXT  # noqa: E402
from .analyze import Analysis, person_rows, union_rows  # noqa: E402
from .charts import class_colors, timeline_svg  # noqa: E402
from .persons import person_color  # noqa: E402

logger = logging.getLogger(__name__)

OUTPUT_NAMES = {"csv": "emotions.csv", "json": "emotions.json", "png": "emotions.png", "html": "report.html"}
PERSON_OUTPUT_NAMES = {"eaf": "emotions.eaf", "vtt": "emotions.vtt"}  # with per-person rows
THUMBNAIL_NAME = "thumbnail.jpg"
PROXY_NAME = "video.mp4"  # the browser copy of a video the browser cannot play
ASSETS = Path(__file__).with_name("report_assets")


def metadata(analysis: Analysis, extra: dict | None = None) -> dict:
    e = analysis.embedding
    table = union_rows(analysis.table)
    padded = table["padded_frames"].to_numpy()
    persons = {} if e.persons is None else {"persons": len(e.persons.ids)}
    return {
        "video": e.path,
        "duration_s": round(e.info.duration, 3),
        "fps": round(e.info.fps, 3),
        "width": e.info.width,
        "height": e.info.height,
        "num_windows": len(table),
        "padded_windows": np.flatnonzero(padded).tolist(),
        "method": analysis.scorer.method,
        "classes": list(analysis.scorer.classes),
        **persons,
        **(extra or {}),
    }


def plot_png(analysis: Analysis, title: str) -> bytes:
    """The chart of ``EmotionTable.plot()``: one panel, or with per-person rows one per person too."""
    from .table import emotion_table

    a = analysis
    table = emotion_table(
        a.table, a.scorer.classes, a.embedding.path, a.embedding.info.duration, a.scorer.probabilities
    )
    axes = table.plot(title=title)
    fig = np.atleast_1d(axes)[0].figure
    fig.set_dpi(100)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def clean_boxes(boxes, width: float, height: float) -> np.ndarray:
    """``[K, 6]`` boxes safe to draw: finite, corners ordered, clipped to the frame, non-empty; the
    sixth column is the track or person id (0 where the boxes carry none)."""
    b = np.asarray(boxes, np.float64) if np.size(boxes) else np.zeros((0, 5))
    b = b.reshape(-1, b.shape[-1] if b.shape[-1] in (5, 6) else 5)
    ids = b[:, 5] if b.shape[1] == 6 else np.zeros(len(b))
    b, ids = b[:, :5], np.nan_to_num(ids)
    keep = np.isfinite(b).all(axis=1)
    b, ids = b[keep], ids[keep]
    x1, x2 = np.sort(b[:, [0, 2]], axis=1).clip(0, width).T
    y1, y2 = np.sort(b[:, [1, 3]], axis=1).clip(0, height).T
    out = np.stack([x1, y1, x2, y2, b[:, 4], ids], axis=1)
    return out[(x2 - x1 >= 1) & (y2 - y1 >= 1)]


def _keyframe_jpeg(image: np.ndarray, boxes: np.ndarray, height: int = 180, by_person: bool = False) -> bytes:
    """The frame with its subject boxes, red (``by_person``: each person's colour, its id beside the score)."""
    im = Image.fromarray(image)
    scale = height / im.height
    im = im.resize((max(1, round(im.width * scale)), height), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    for x1, y1, x2, y2, score, person in clean_boxes(boxes, image.shape[1], image.shape[0]):
        person = person if by_person else 0
        color = person_color(int(person)) if person > 0 else "#ff2828"
        draw.rectangle([x1 * scale, y1 * scale, x2 * scale, y2 * scale], outline=color, width=3)
        text = f"{int(person)} · {score:.2f}" if person > 0 else f"{score:.2f}"
        draw.text((x1 * scale + 4, y1 * scale + 2), text, fill=color)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _script_json(obj) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` can end it early)."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default).replace("</", "<\\/")


def _relative_url(target: str | Path, start: Path) -> str:
    try:
        rel = os.path.relpath(Path(target).resolve(), start.resolve())
    except ValueError:  # another drive (Windows): only an absolute URL reaches it
        return Path(target).resolve().as_uri()
    return quote(Path(rel).as_posix())


def report_data(analysis: Analysis, meta: dict, video_url: str | None, lines=None) -> dict:
    """What the report's script draws: windows with scores and boxes, classes, colours, spoken lines,
    and with per-person rows one lane per person (its colour, a thumbnail, its scored windows)."""
    table, e, classes = union_rows(analysis.table), analysis.embedding, list(analysis.scorer.classes)
    w, h = e.info.width, e.info.height
    scores = table[classes].to_numpy(np.float64).round(4)
    windows = [
        {
            "start": float(r.start),
            "end": float(r.end),
            "top": str(r.top_emotion),
            "person": bool(r.has_person),
            "padded": int(r.padded_frames),
            "scores": scores[i].tolist(),
            "boxes": [clean_boxes(b, w, h).round(1).tolist() for b in e.boxes[i]],
        }
        for i, r in enumerate(table.itertuples(index=False))
    ]
    return {
        "video": video_url,
        "name": Path(e.path).name,
        "duration": max(float(e.info.duration), float(table["end"].max())),
        "width": w,
        "height": h,
        "classes": classes,
        "colors": class_colors(classes),
        "probabilities": analysis.scorer.probabilities,
        "windows": windows,
        "lines": [] if lines is None else [list(c) for c in lines.cues],
        "persons": None if e.persons is None else _person_lanes(analysis, w, h),
        "meta": meta,
    }


def _person_lanes(analysis: Analysis, width: int, height: int) -> list[dict]:
    """One lane per person: its rows (window, top emotion, scores, its box per frame)."""
    rows, e, classes = person_rows(analysis.table), analysis.embedding, list(analysis.scorer.classes)
    lanes = []
    for person in sorted(set(rows["person"].tolist())):
        mine = rows[rows["person"] == person]
        thumb = e.persons.thumbnails.get(person)
        lanes.append(
            {
                "id": int(person),
                "color": person_color(person),
                "thumbnail": None if thumb is None else _data_uri(_jpeg(thumb), "image/jpeg"),
                "rows": [
                    {
                        "window": int(r.window),
                        "top": str(r.top_emotion),
                        "scores": mine[classes].to_numpy(np.float64)[i].round(4).tolist(),
                        "boxes": [
                            clean_boxes(b, width, height).round(1).tolist() for b in json.loads(r.boxes)
                        ],
                    }
                    for i, r in enumerate(mine.itertuples(index=False))
                ],
            }
        )
    return lanes


def _jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def report_html(analysis: Analysis, plot: bytes, meta: dict, note: str | None = None, data=None) -> str:
    table, e = union_rows(analysis.table), analysis.embedding
    per_person = e.persons is not None
    esc = html.escape
    data = data if data is not None else report_data(analysis, meta, None)
    figures = []
    for k in e.keyframes:
        row = table.iloc[k.window]
        figures.append(
            f'<figure><img class="keyframe" alt="keyframe at {k.time:.2f} s" '
            f'src="{_data_uri(_keyframe_jpeg(k.image, k.boxes, by_person=per_person), "image/jpeg")}">'
            f"<figcaption>{k.time:.2f} s · {esc(_top_text(row['top_emotion']))}"
            f"{'' if row['has_person'] else ' · no person'}</figcaption></figure>"
        )
    classes = list(analysis.scorer.classes)
    best = table[classes].max(axis=1) if len(table) else []
    rows = "".join(
        f"<tr><td>{r.start:.2f}–{r.end:.2f}</td><td>{esc(_top_text(r.top_emotion))}</td>"
        f"<td>{best[i]:.3f}</td><td>{'yes' if r.has_person else 'no'}</td>"
        f"<td>{r.padded_frames or ''}</td></tr>"
        for i, r in table.iterrows()
    )
    flat = bool(len(table)) and bool((table["top_emotion"] == NO_DOMINANT).all())
    no_signal = (
        f'<p class="note flat">No window has a dominant emotion: in every one the top score leads the '
        f"second by less than {DOMINANCE_MARGIN:.2f} (scores {table[classes].min().min():.3f}–"
        f"{table[classes].max().max():.3f}), so this model does not tell these classes apart here.</p>"
        if flat and analysis.scorer.probabilities
        else ""
    )
    padded = meta.get("padded_windows") or []
    nobody = (
        '<p class="note nobody">Per person: nobody was tracked long enough to be scored alone in any '
        "window (no person rows); the timeline shows the windows scored with all subject boxes.</p>"
        if per_person and not len(e.persons)
        else ""
    )
    warn = (
        no_signal
        + nobody
        + (
            f'<p class="note padded">The video stream ends before its stated duration: {len(padded)} '
            "window(s) at the end repeat the last decoded frame (hatched on the timeline).</p>"
            if padded
            else ""
        )
    )
    info = ", ".join(
        f"{esc(str(k))}: {esc(str(v))}" for k, v in meta.items() if k not in ("classes", "padded_windows")
    )
    name = esc(Path(e.path).name)
    player = (
        f'<div class="stage"><video id="video" controls preload="auto" muted playsinline '
        f'src="{esc(data["video"])}"></video><canvas id="boxes"></canvas></div>'
        if data.get("video")
        else '<div class="stage novideo">(no playable copy of the video)</div>'
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>EmotionCLIP · {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_asset("report.css")}</style></head><body>
<h1>Emotions over time: {name}</h1>
{f'<p class="note">{esc(note)}</p>' if note else ""}{warn}
<div class="player">{player}
<aside id="now"><div class="clock" id="clock">0.00 s</div><div class="top" id="top-emotion"></div>
<div id="bars"></div>{'<div id="people-now"></div>' if per_person else ""}<p class="line" id="line"></p></aside></div>
<div id="timeline" role="slider" aria-label="timeline: click to seek" tabindex="0"></div>
<div id="legend"></div><div id="tooltip" class="tooltip" hidden></div>
<p class="meta">{info}</p>
<h2>Scores per window</h2>
<img class="plot" alt="emotion scores over time" src="{_data_uri(plot, "image/png")}">
<h2>Keyframes (subject boxes {"in each person's colour" if per_person else "in red"})</h2>
<div class="strip">{"".join(figures)}</div>
<details><summary>Top emotion per window</summary>
<table class="windows"><thead><tr><th>window (s)</th><th>top emotion</th><th>score</th><th>person</th>
<th>padded frames</th></tr></thead><tbody>{rows}</tbody></table></details>
<script type="application/json" id="report-data">{_script_json(data)}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""


def _top_text(top) -> str:
    return NO_DOMINANT_TEXT if top == NO_DOMINANT else str(top)


def _thumbnail_jpeg(analysis: Analysis) -> bytes | None:
    frames = analysis.embedding.keyframes
    if not frames:
        return None
    k = frames[len(frames) // 2]
    return _keyframe_jpeg(k.image, k.boxes, height=90)


def write_report(
    analysis: Analysis,
    out_dir: str | Path,
    note: str | None = None,
    proxy: bool = True,
    settings: dict | None = None,
) -> dict[str, Path]:
    """Write CSV, JSON, PNG, HTML (+ a thumbnail, + a browser copy of the video; with per-person rows
    + an ELAN ``.eaf`` and a WebVTT ``.vtt``, :mod:`.annotations`) into ``out_dir``.

    ``settings`` (the batch's: checkpoint, windows, detector, ...) go into the JSON and the page.
    All outputs are rendered before the first one is written, so a failure leaves none of them.
    """
    from .annotations import eaf_bytes, vtt_text
    from .proxy import browser_playable, write_proxy
    from .subtitles import spoken_lines

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in OUTPUT_NAMES.items()}
    source = Path(analysis.embedding.path)
    lines = spoken_lines(source)
    if lines.problem:
        logger.warning("%s: subtitles not shown (%s)", lines.path, lines.problem)
    meta = metadata(analysis, settings)
    if lines.path:
        meta["subtitles"] = lines.path
    with ExitStack() as stack:
        if browser_playable(source):
            video_url = _relative_url(source, out_dir)
        elif proxy:
            tmp = stack.enter_context(atomic_path(out_dir / PROXY_NAME))
            write_proxy(source, tmp)
            video_url, paths["proxy"] = PROXY_NAME, out_dir / PROXY_NAME
        else:
            video_url = None
        table = analysis.table
        csv = table.to_csv(index=False)
        records = table.assign(boxes=[json.loads(b) for b in table["boxes"]]).to_dict(orient="records")
        doc = json.dumps({**meta, "windows": records}, indent=1, default=_json_default)
        plot = plot_png(analysis, title=source.name)
        page = report_html(analysis, plot, meta, note, report_data(analysis, meta, video_url, lines))
        thumbnail = _thumbnail_jpeg(analysis)
        extra = {}
        if analysis.embedding.persons is not None:
            classes = analysis.scorer.classes
            extra = {
                "eaf": eaf_bytes(table, source.resolve().as_uri(), _relative_url(source, out_dir)),
                "vtt": vtt_text(table, classes),
            }
        atomic_write(paths["csv"], csv)
        atomic_write(paths["json"], doc)
        atomic_write(paths["png"], plot)
        if thumbnail is not None:
            atomic_write(out_dir / THUMBNAIL_NAME, thumbnail)
            paths["thumbnail"] = out_dir / THUMBNAIL_NAME
        for kind, content in extra.items():
            paths[kind] = out_dir / PERSON_OUTPUT_NAMES[kind]
            atomic_write(paths[kind], content)
        atomic_write(paths["html"], page)  # last: its presence means the set is complete
    return paths


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------
# the batch overview


def _video_row(item: dict, status: str, index_dir: Path) -> dict:
    """One index row from a done or skipped video's folder (its emotions.json and thumbnail)."""
    folder = Path(item.get("out") or Path(item["html"]).parent)
    row = {"video": item["video"], "status": status, "reason": item.get("reason", "")}
    try:
        doc = json.loads((folder / OUTPUT_NAMES["json"]).read_text())
    except (OSError, ValueError) as e:
        return {**row, "status": "failed", "reason": f"{folder}: cannot read its emotions.json ({e})"}
    classes = doc["classes"]
    windows = [w for w in doc["windows"] if str(w.get("person", "all")) == "all"]
    tops = [w["top_emotion"] for w in windows]
    counts = {c: tops.count(c) for c in classes if tops.count(c)}
    dominant = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    thumb = folder / THUMBNAIL_NAME
    padded = doc.get("padded_windows") or []
    return {
        **row,
        "report": _relative_url(folder / OUTPUT_NAMES["html"], index_dir),
        "thumbnail": _relative_url(thumb, index_dir) if thumb.is_file() else None,
        "duration": float(doc["duration_s"]),
        "windows": len(windows),
        "dominant": [(c, n / len(tops)) for c, n in dominant],
        "colors": dict(zip(classes, class_colors(classes), strict=True)),
        "padded": len(padded),
        "persons": doc.get("persons"),
        "mini": timeline_svg(
            tops,
            [w["start"] for w in windows],
            [w["end"] for w in windows],
            doc["duration_s"],
            classes,
            class_colors(classes),
            persons=[w["has_person"] for w in windows],
        ),
    }


def index_html(
    summary: dict, index_dir: Path, note: str | None = None, title: str = "EmotionCLIP analysis"
) -> str:
    esc = html.escape
    rows = [_video_row(d, "done", index_dir) for d in summary["done"]]
    rows += [_video_row({"reason": "outputs exist", **d}, "skipped", index_dir) for d in summary["skipped"]]
    rows += [{"video": f["video"], "status": "failed", "reason": f["error"]} for f in summary["failed"]]
    body = []
    for r in sorted(rows, key=lambda r: r["video"]):
        name = esc(Path(r["video"]).name)
        if "report" not in r:  # failed: no outputs
            body.append(
                f'<tr class="failed" data-status="failed"><td></td><td data-sort="{name}">{name}</td>'
                f'<td data-sort="-1"></td><td data-sort="-1"></td><td></td><td></td><td data-sort="failed" class="status">'
                f'failed: <span class="reason">{esc(r["reason"])}</span></td></tr>'
            )
            continue
        thumb = f'<img alt="" src="{esc(r["thumbnail"])}">' if r["thumbnail"] else ""
        dominant = (
            " ".join(
                f'<span class="chip" style="border-color:{r["colors"][c]}">{esc(c)} {share:.0%}</span>'
                for c, share in r["dominant"]
            )
            or f'<span class="chip flat">{NO_DOMINANT_TEXT}</span>'
        )  # flat scores: no label to show
        # people scored alone (analyze --per-person); "–" when the video was analysed without it
        people = "–" if r["persons"] is None else str(r["persons"])
        status = r["status"] + (f" ({esc(r['reason'])})" if r["reason"] else "")
        if r["padded"]:
            status += f", {r['padded']} padded window(s)"
        body.append(
            f'<tr data-status="{r["status"]}"><td><a href="{esc(r["report"])}">{thumb}</a></td>'
            f'<td data-sort="{name}"><a href="{esc(r["report"])}">{name}</a></td>'
            f'<td data-sort="{r["duration"]:.3f}">{r["duration"]:.1f} s</td>'
            f'<td data-sort="{-1 if r["persons"] is None else r["persons"]}" class="persons">{people}</td><td>{r["mini"]}</td>'
            f'<td data-sort="{esc(r["dominant"][0][0]) if r["dominant"] else ""}">{dominant}</td>'
            f'<td data-sort="{r["status"]}" class="status">{status}</td></tr>'
        )
    counts = ", ".join(f"{len(summary[k])} {k}" for k in ("done", "skipped", "failed"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_asset("report.css")}</style></head><body>
<h1>{esc(title)}</h1>
{f'<p class="note">{esc(note)}</p>' if note else ""}
<p class="meta">{len(rows)} videos: {counts}. Click a column heading to sort.</p>
<table id="videos" class="index"><thead><tr><th></th><th data-type="text">video</th>
<th data-type="number">duration</th><th data-type="number" title="people followed and scored alone (--per-person)">people</th><th>timeline</th><th data-type="text">dominant emotions</th>
<th data-type="text">status</th></tr></thead><tbody>{"".join(body)}</tbody></table>
<script>{_asset("index.js")}</script>
</body></html>
"""


def write_index(
    path: str | Path, summary: dict, note: str | None = None, title: str = "EmotionCLIP analysis"
) -> Path:
    """The batch overview: one sortable row per video, linking to its report (paths relative to ``path``)."""
    path = Path(path)
    atomic_write(path, index_html(summary, path.parent, note, title))
    return path
