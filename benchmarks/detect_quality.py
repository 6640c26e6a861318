"""Person-detector quality and speed on hand-labelled frames of real footage, with stress variants.

    python benchmarks/detect_quality.py [--detectors default,nanodet,faces,...] [--part report|tune]
        [--sweep] [--png DIR] [--labels benchmarks/data/detect_labels.json] [--root ../shared]

The labels (``benchmarks/data/detect_labels.json``) say, per frame, how many people are visible
(0 = nobody; null = only a fragment, such as a hand, left out of every score) and put every source
video in one part: ``tune`` (sizes and thresholds of the shipped detectors were chosen there, with
``--part tune --sweep``) or ``report`` (the numbers the README and docs quote). Frames are decoded at
short side 256, as prepare stores them. Each part's frames are also scored under stress variants made
from them: dark (gamma 2.2, then 60 % darker), low contrast (30 %), small (frame halved and padded: a
quarter of the area), wide (put in a 2.4:1 frame, itself letterboxed to 16:9), motion blur (9 px
horizontal), and the frames of people seen from behind (the Intel clip) on their own.

Printed per detector: recall (frames with people where at least one box is kept) on the part and on
each variant, frames whose box count equals the label, false-alarm frames on empty real scenes (the
originals, and in all variants together) and, apart, on cartoon frames (drawn people: neither required
nor counted against), and ms per frame on one thread (wall and CPU time; the machine may be shared,
so CPU time is the steadier number). Detector specs are those of ``--detector`` (``movenet``,
``nanodet``, ``faces``, ...), ``NAME@SIZE`` for another input size, ``A+B`` for the union of two
detectors' boxes and ``flip:NAME`` for NAME on the frame and its mirror image (test-time flip).
``--sweep`` prints recall / false alarms per threshold from raw scores (one-detector specs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _cpu import describe  # benchmarks/ is the script's folder
from PIL import Image, ImageDraw

from emotionclip.constants import BOX_SCORE_THRESHOLD
from emotionclip.detect import get_detector
from emotionclip.video_io import read_frames_at

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DETECTORS = "default,nanodet,faces,movenet@320,movenet@384,movenet+faces,flip:movenet,nanodet+faces"


class Item:
    def __init__(self, group: dict, frame: np.ndarray, people: int | None, source: str):
        self.group, self.kind, self.part = group["name"], group["kind"], group["part"]
        self.behind = bool(group.get("behind"))
        self.frame, self.people, self.source = frame, people, source


def _still(path: Path) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    s = 256 / min(im.size)
    return np.asarray(im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR))


def load_items(labels_path: Path, root: Path) -> list[Item]:
    doc = json.loads(labels_path.read_text())
    out = []
    for g in doc["groups"]:
        if g["file"].endswith(".jpg"):  # still images: every file of the pattern, one label
            out += [Item(g, _still(p), g["people"], p.name) for p in sorted(root.glob(g["file"]))]
        elif "frames" in g:
            frames = read_frames_at(root / g["file"], [f["t"] for f in g["frames"]], short_side=256)
            out += [Item(g, fr, f["people"], g["file"]) for fr, f in zip(frames, g["frames"])]
        else:  # one label at the same times in every clip of the pattern
            for p in sorted(root.glob(g["file"])):
                out += [
                    Item(g, fr, g["people"], p.name) for fr in read_frames_at(p, g["times"], short_side=256)
                ]
    return out


# ---- stress variants -----------------------------------------------------------------------------


def _dark(frame):
    f = frame.astype(np.float32) / 255
    return np.rint(f**2.2 * 0.4 * 255).astype(np.uint8)


def _low_contrast(frame):
    f = frame.astype(np.float32)
    return np.rint(np.clip(f.mean() + (f - f.mean()) * 0.3, 0, 255)).astype(np.uint8)


def _small(frame):
    h, w, _ = frame.shape
    out = np.zeros_like(frame)
    half = np.asarray(Image.fromarray(frame).resize((w // 2, h // 2), Image.BILINEAR))
    out[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = half
    return out


def _wide(frame):
    h, w, _ = frame.shape
    width = max(w, round(h * 2.4))
    out = np.zeros((round(width * 9 / 16), width, 3), np.uint8)
    y0, x0 = (out.shape[0] - h) // 2, (width - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = frame
    return out


def _blur(frame):
    x = torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1)[:, None]
    k = torch.full((1, 1, 1, 9), 1 / 9)
    y = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="replicate"), k)[:, 0].permute(1, 2, 0)
    return np.rint(y.numpy()).astype(np.uint8)


VARIANTS = {"dark": _dark, "low contrast": _low_contrast, "small": _small, "wide": _wide, "blur": _blur}


# ---- detectors -----------------------------------------------------------------------------------


class _Union:
    def __init__(self, parts):
        self.parts, self.name = parts, "+".join(p.name for p in parts)

    def detect(self, frames):
        found = [p.detect(frames) for p in self.parts]
        return [np.concatenate(bs) for bs in zip(*found)]


class _Flip:
    """Boxes of the frame and of its mirror image (mirrored back), merged by NMS."""

    def __init__(self, det):
        self.det, self.name = det, f"flip:{det.name}"

    def detect(self, frames):
        import torchvision

        w = frames.shape[2]
        a, b = self.det.detect(frames), self.det.detect(np.ascontiguousarray(frames[:, :, ::-1]))
        out = []
        for x, y in zip(a, b):
            y = y.copy()
            y[:, [0, 2]] = w - y[:, [2, 0]]
            both = np.concatenate([x, y])
            keep = torchvision.ops.nms(torch.from_numpy(both[:, :4]), torch.from_numpy(both[:, 4]), 0.5)
            out.append(both[keep.numpy()])
        return out


def build(spec: str, raw: bool = False):
    if "+" in spec:
        return _Union([build(s, raw) for s in spec.split("+")])
    if spec.startswith("flip:"):
        return _Flip(build(spec[5:], raw))
    name, _, size = spec.partition("@")
    kw = {"num_threads": 1}
    if size:
        kw["size"] = int(size)
    if raw:  # every candidate with its raw score; the sweep applies each threshold
        kw["score_threshold"] = 0.05
        if name in ("default", "movenet", "nanodet"):
            kw.update(frame_threshold=0.05, rescale=False)
    return get_detector(name, **kw)


def run(det, items) -> tuple[list[np.ndarray], float, float]:
    """Boxes per frame (one call per frame, as a stream would), wall and CPU ms per frame."""
    det.detect(items[0].frame[None])  # warm-up: session creation
    boxes, wall, cpu = [], 0.0, 0.0
    for it in items:
        t0, c0 = time.perf_counter(), time.process_time()
        boxes.append(det.detect(it.frame[None])[0])
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return boxes, 1000 * wall / len(items), 1000 * cpu / len(items)


def score(items: list[Item], boxes, threshold: float = BOX_SCORE_THRESHOLD) -> dict:
    found = np.array([int((b[:, 4] > threshold).sum()) for b in boxes])
    people = np.array([-1 if it.people is None else it.people for it in items])
    kind = np.array([it.kind for it in items])
    group = np.array([it.group for it in items])
    pos, empty, cartoon = people > 0, (people == 0) & (kind != "cartoon"), kind == "cartoon"
    return {
        "recall": float((found[pos] > 0).mean()) if pos.any() else float("nan"),
        "n_people": int(pos.sum()),
        "count_exact": float((found[pos] == people[pos]).mean()) if pos.any() else float("nan"),
        "false_alarm": int((found[empty] > 0).sum()),
        "n_empty": int(empty.sum()),
        "cartoon": int((found[cartoon] > 0).sum()),
        "n_cartoon": int(cartoon.sum()),
        "groups": {
            g: f"{(found[pos & (group == g)] > 0).sum()}/{(pos & (group == g)).sum()}"
            for g in dict.fromkeys(group[pos])
        },
    }


def gated(boxes, box_threshold: float, frame_threshold: float) -> list[np.ndarray]:
    """Raw-score boxes as a two-threshold detector keeps them: none unless the best passes the frame
    threshold, then those above the box threshold."""
    return [b[b[:, 4] > box_threshold] if (b[:, 4] > frame_threshold).any() else b[:0] for b in boxes]


def sheet(items, boxes, path: Path, cols: int = 8) -> None:
    tiles = []
    for it, b in zip(items, boxes):
        im = Image.fromarray(it.frame)
        draw = ImageDraw.Draw(im)
        for x1, y1, x2, y2, s in b[:, :5]:
            draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
            draw.text((x1 + 3, y1 + 2), f"{s:.2f}", fill=(255, 255, 0))
        draw.text((4, 4), f"{it.group} label={it.people}", fill=(0, 255, 0))
        tiles.append(im.resize((342, 256)))
    out = Image.new("RGB", (342 * cols, 256 * -(-len(tiles) // cols)))
    for i, im in enumerate(tiles):
        out.paste(im, ((i % cols) * 342, (i // cols) * 256))
    out.save(path)


def report(spec: str, items: list[Item], variants: dict[str, list[Item]], png: Path | None) -> None:
    det = build(spec)
    boxes, wall, cpu = run(det, items)
    r = score(items, boxes)
    behind = [i for i, it in enumerate(items) if it.behind]
    rb = score([items[i] for i in behind], [boxes[i] for i in behind])
    stress, fa, n_fa = {}, 0, 0
    for name, vitems in variants.items():
        s = score(vitems, [det.detect(it.frame[None])[0] for it in vitems])
        stress[name] = s["recall"]
        fa, n_fa = fa + s["false_alarm"], n_fa + s["n_empty"]
    print(
        f"{spec:22s} recall {r['recall']:.3f} ({r['n_people']} frames) | "
        + " ".join(f"{k} {v:.3f}" for k, v in stress.items())
        + f" from-behind {rb['recall']:.3f} | count exact {r['count_exact']:.2f} | false alarms "
        f"{r['false_alarm']}/{r['n_empty']} (variants {fa}/{n_fa}) | cartoon {r['cartoon']}/{r['n_cartoon']} "
        f"| {wall:.1f} ms wall, {cpu:.1f} ms CPU | {det.name}"
    )
    print(f"{'':22s} found per group: {r['groups']}")
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
        sheet(items, boxes, png / f"{spec.replace(':', '_')}.png")


def sweep(spec: str, items: list[Item], variants: dict[str, list[Item]]) -> None:
    """Recall and false alarms per (frame threshold, box threshold) from raw scores."""
    det = build(spec, raw=True)
    boxes, _, _ = run(det, items)
    vboxes = {k: [det.detect(it.frame[None])[0] for it in v] for k, v in variants.items()}
    print(f"{spec}: sweep on raw scores (frame threshold / box threshold)")
    for t in np.arange(0.10, 0.51, 0.05):
        for bt in sorted({round(t, 2), 0.1, 0.15}):
            if bt > t:
                continue
            r = score(items, gated(boxes, bt, t), 0.0)
            vs = {k: score(v, gated(vboxes[k], bt, t), 0.0) for k, v in variants.items()}
            print(
                f"  frame {t:.2f} box {bt:.2f}: recall {r['recall']:.3f} count exact {r['count_exact']:.2f} "
                f"false alarms {r['false_alarm']}/{r['n_empty']} cartoon {r['cartoon']}/{r['n_cartoon']} | "
                + " ".join(f"{k} {s['recall']:.3f}" for k, s in vs.items())
                + f" | variant false alarms {sum(s['false_alarm'] for s in vs.values())}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "data" / "detect_labels.json")
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--detectors", default=DEFAULT_DETECTORS)
    ap.add_argument("--part", choices=("report", "tune"), default="report")
    ap.add_argument("--sweep", action="store_true", help="recall / false alarms per threshold (raw scores)")
    ap.add_argument("--png", type=Path, default=None, help="folder for contact sheets with boxes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {describe()}; detectors on 1 thread: wall times are noisy, CPU times steadier")
    items = [it for it in load_items(args.labels, args.root) if it.part == args.part]
    variants = {
        name: [Item({"name": it.group, "kind": it.kind, "part": it.part}, fn(it.frame), it.people, it.source)
               for it in items if it.kind != "cartoon"]
        for name, fn in VARIANTS.items()
    }  # fmt: skip
    n_sources = len({it.source for it in items})
    print(f"part {args.part!r}: {len(items)} labelled frames from {n_sources} sources, short side 256")
    for spec in args.detectors.split(","):
        if args.sweep:
            sweep(spec, items, variants)
        else:
            report(spec, items, variants, args.png)


if __name__ == "__main__":
    main()
