"""Person-detector quality and speed on hand-labelled frames of the shared media.

    python benchmarks/detect_quality.py [--labels benchmarks/data/detect_labels.json] [--root ../shared]
        [--detectors default,faces,torchvision] [--sweep [--sizes 288,352,384,416,480]] [--png DIR]

The labels (``benchmarks/data/detect_labels.json``) say, per frame, how many people are visible
(0 = an empty scene; null = only a fragment at the edge, left out). Frames are decoded at short side
256, as prepare stores them. Printed per detector: recall (frames with people where at least one box
is found, per group and overall, and on the "from behind" Intel clip), frames whose box count equals
the label, false-alarm frames on empty real scenes and, apart, on cartoon frames (drawn people), and
ms per frame on one thread (wall and CPU; the machine may be shared, so CPU time is the steadier
number). ``--sweep`` prints recall and false alarms per score threshold (how the default's
threshold was chosen), for the default at each of ``--sizes`` (its input size, long side); ``--png DIR`` saves contact sheets with the boxes drawn.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _cpu import describe  # benchmarks/ is the script's folder
from PIL import Image, ImageDraw

from emotionclip.detect import get_detector
from emotionclip.video_io import read_frames_at

ROOT = Path(__file__).resolve().parents[1]


def load_frames(labels_path: Path, root: Path) -> list[tuple[str, str, np.ndarray, int | None]]:
    """(group, kind, frame [H, W, 3] at short side 256, people) for every labelled frame."""
    doc = json.loads(labels_path.read_text())
    out = []
    for g in doc["groups"]:
        if g["file"].endswith(".jpg"):  # still images: every file of the pattern, one label
            for p in sorted(root.glob(g["file"])):
                im = Image.open(p).convert("RGB")
                s = 256 / min(im.size)
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
                out.append((g["name"], g["kind"], np.asarray(im), g["people"]))
        elif "frames" in g:
            times = [f["t"] for f in g["frames"]]
            frames = read_frames_at(root / g["file"], times, short_side=256)
            out += [(g["name"], g["kind"], fr, f["people"]) for fr, f in zip(frames, g["frames"])]
        else:  # one label at the same times in every clip of the pattern
            for p in sorted(root.glob(g["file"])):
                for fr in read_frames_at(p, g["times"], short_side=256):
                    out.append((g["name"], g["kind"], fr, g["people"]))
    return out


def run(det, items) -> tuple[list[np.ndarray], float, float]:
    """Boxes per frame (one call per frame, as a stream would), wall and CPU ms per frame."""
    det.detect(items[0][2][None])  # warm-up: session creation
    boxes, wall, cpu = [], 0.0, 0.0
    for _, _, frame, _ in items:
        t0, c0 = time.perf_counter(), time.process_time()
        boxes.append(det.detect(frame[None])[0])
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return boxes, 1000 * wall / len(items), 1000 * cpu / len(items)


def scores(items, boxes, threshold: float = 0.0) -> dict[str, float]:
    found = np.array([int((b[:, 4] > threshold).sum()) for b in boxes])
    people = np.array([-1 if it[3] is None else it[3] for it in items])
    kind = np.array([it[1] for it in items])
    group = np.array([it[0] for it in items])
    pos = people > 0
    r = {
        "recall": float((found[pos] > 0).mean()),
        "recall_intel": float((found[pos & (group == "intel")] > 0).mean()),
        "count_exact": float((found[pos] == people[pos]).mean()),
        "false_alarm_empty": int((found[(people == 0) & (kind != "cartoon")] > 0).sum()),
        "n_empty": int(((people == 0) & (kind != "cartoon")).sum()),
        "false_alarm_cartoon": int((found[kind == "cartoon"] > 0).sum()),
        "n_cartoon": int((kind == "cartoon").sum()),
        "n_people": int(pos.sum()),
    }
    r["groups"] = {
        g: f"{(found[pos & (group == g)] > 0).sum()}/{(pos & (group == g)).sum()}"
        for g in dict.fromkeys(group[pos])
    }
    return r


def _gated(boxes, box_threshold: float, frame_threshold: float) -> list[np.ndarray]:
    """Raw-score boxes as a two-threshold detector keeps them: none unless the best passes the frame
    threshold, then those above the box threshold."""
    return [b[b[:, 4] > box_threshold] if (b[:, 4] > frame_threshold).any() else b[:0] for b in boxes]


def sheet(items, boxes, path: Path, cols: int = 8) -> None:
    tiles = []
    for (name, _, frame, people), b in zip(items, boxes):
        im = Image.fromarray(frame).resize((256 * frame.shape[1] // frame.shape[0], 256))
        sx = im.width / frame.shape[1]
        draw = ImageDraw.Draw(im)
        for x1, y1, x2, y2, s in b:
            draw.rectangle([x1 * sx, y1 * sx, x2 * sx, y2 * sx], outline=(255, 0, 0), width=2)
            draw.text((x1 * sx + 3, y1 * sx + 2), f"{s:.2f}", fill=(255, 255, 0))
        draw.text((4, 4), f"{name} label={people}", fill=(0, 255, 0))
        tiles.append(im.resize((342, 256)))
    rows = -(-len(tiles) // cols)
    out = Image.new("RGB", (342 * cols, 256 * rows))
    for i, im in enumerate(tiles):
        out.paste(im, ((i % cols) * 342, (i // cols) * 256))
    out.save(path)


def torchvision_weights_present() -> bool:
    import torchvision

    weights = torchvision.models.get_model_weights("fasterrcnn_resnet50_fpn_v2").DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return cache.is_file()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "data" / "detect_labels.json")
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--detectors", default="default,faces,torchvision")
    ap.add_argument("--sweep", action="store_true", help="recall / false alarms per score threshold")
    ap.add_argument(
        "--sizes", default="", help="with --sweep: NanoDet input sizes to sweep, e.g. 352,384,416"
    )
    ap.add_argument("--png", type=Path, default=None, help="folder for contact sheets with boxes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {describe()}; detectors on 1 thread: wall times are noisy, CPU times steadier")
    items = load_frames(args.labels, args.root)
    print(f"{len(items)} labelled frames at short side 256")
    runs = [(spec, {}) for spec in args.detectors.split(",")]
    if args.sweep and args.sizes:  # the default detector at each input size
        runs = [
            (s, {"size": int(z)})
            for s, _ in runs
            for z in args.sizes.split(",")
            if s in ("default", "nanodet")
        ]
    for spec, extra in runs:
        if spec == "torchvision" and not torchvision_weights_present():
            print(
                f"{spec:10s} absent (no COCO weights in the torch hub cache; they are downloaded on first use)"
            )
            continue
        kw = {"num_threads": 1} if spec in ("default", "nanodet", "faces") else {}
        det = get_detector(spec, **kw, **extra)
        threshold = raw_threshold = det.score_threshold
        gate = getattr(det, "frame_threshold", None)
        if args.sweep:  # raw scores from a low threshold up; scores() then applies each threshold
            det.score_threshold = 0.1
            det.rescale = False
            if gate is not None:
                det.frame_threshold = 0.1
        elif getattr(det, "rescale", False):
            threshold = 0.5  # rescaled scores: the calibrated threshold reads 0.5
        boxes, wall, cpu = run(det, items)
        r = scores(items, _gated(boxes, threshold, gate) if args.sweep and gate else boxes, threshold)
        print(
            f"{spec:10s} {det.name}: recall {r['recall']:.3f} ({r['n_people']} frames with people; "
            f"from behind, Intel clip {r['recall_intel']:.3f}), count exact {r['count_exact']:.2f}, "
            f"false-alarm frames: empty scenes {r['false_alarm_empty']}/{r['n_empty']}, "
            f"cartoon {r['false_alarm_cartoon']}/{r['n_cartoon']}; {wall:.1f} ms/frame wall, {cpu:.1f} ms CPU "
            f"(threshold {raw_threshold}{'' if gate is None else f', frame threshold {gate}'})"
        )
        print(f"{'':10s} found per group: {r['groups']}")
        if args.sweep:  # with a frame gate: each frame threshold, boxes kept above the box threshold
            for t in np.arange(0.15, 0.61, 0.05) if gate is None else np.arange(0.30, 0.57, 0.02):
                s = (
                    scores(items, boxes, t)
                    if gate is None
                    else scores(items, _gated(boxes, raw_threshold, t))
                )
                print(
                    f"{'':10s} {'threshold' if gate is None else 'frame threshold'} {t:.2f}: recall {s['recall']:.3f} (Intel {s['recall_intel']:.3f}), "
                    f"count exact {s['count_exact']:.2f}, false alarms empty {s['false_alarm_empty']}/{s['n_empty']}, "
                    f"cartoon {s['false_alarm_cartoon']}/{s['n_cartoon']}"
                )
        if args.png is not None:
            args.png.mkdir(parents=True, exist_ok=True)
            kept = [b[b[:, 4] > threshold] for b in boxes]
            sheet(items, kept, args.png / f"{spec}.png")


if __name__ == "__main__":
    main()
