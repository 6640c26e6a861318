"""``backend="auto"``: the fastest installed backend whose features stay within cosine 0.999 of fp32.

On CUDA that is torch at the device's native reduced precision (no measuring). On the CPU each
candidate (torch fp32 / bf16 autocast, ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 where the CPU
has bf16, and OpenVINO int8 when its export's own held-out check passed, see
:func:`int8_check_failure`) encodes the same two clips of sample-media frames (held out from the
int8 calibration set) and three sentences; the choice is cached per machine
(CPU model, flags, threads, runtime versions) and model (weights hash) in
:func:`~emotionclip.backends.cache_dir`, so the measuring happens once.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import platform
import time
from pathlib import Path

import torch

from .runtimes import InferenceModel, TorchModel, available_backends, openvino_core

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999
CHOICES_FILE = "backend-choices.json"
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_description() -> dict:
    """CPU model and the flags that decide which reduced precision pays (Linux ``/proc/cpuinfo``)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {
        "model": name,
        "flags": sorted(f for f in _CPU_FLAGS if f in flags),
        "threads": torch.get_num_threads(),
    }


# OpenVINO int8 is NNCF's static quantisation: activation ranges fixed from calibration frames. Such
# ranges can fail on footage unlike the calibration set (before issue 24: 0.981 on the Intel walkers
# clip), so a check on other instants of the calibration videos cannot vouch for it. Each int8 export
# records its own held-out check (emotionclip.export.int8_check: whole sample videos calibration never
# saw, and photometric variants of them, with this model's weights); auto considers it only when that
# check reached MIN_COSINE. Explicit backend="openvino", precision="int8" runs it regardless.
CHECKED_INT8 = {("openvino", "int8")}
INT8_MIN_COSINE = MIN_COSINE  # what the recorded held-out check must reach


def int8_check_failure(folder) -> str | None:
    """Why the int8 export in ``folder`` may not be chosen by ``auto`` (``None``: it may)."""
    from ..export import read_export_config

    check = read_export_config(folder).get("int8_check")
    if not check:
        return "its export records no held-out check (made before issue 24?); export it again"
    if check["min_cosine"] < INT8_MIN_COSINE:
        return (
            f"its held-out check gave min cosine {check['min_cosine']:.5f} to fp32 on {check['frames']} "
            f"frames no calibration saw ({', '.join(check['videos'])} and their variants), "
            f"below {INT8_MIN_COSINE}"
        )
    return None


def candidates(for_auto: bool = False) -> list[tuple[str, str]]:
    """(backend, precision) pairs that can run here (``for_auto``: those ``auto`` may measure; an
    int8 export in :data:`CHECKED_INT8` is then kept only if its held-out check passed)."""
    found = [("torch", "fp32"), ("torch", "bf16")]
    installed = available_backends()
    if "onnxruntime" in installed:
        found += [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if "openvino" in installed:
        found.append(("openvino", "fp32"))
        if "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            found.append(("openvino", "bf16"))
        try:
            importlib.import_module("nncf")
            found.append(("openvino", "int8"))
        except ImportError:
            pass
    return found


def _versions() -> dict:
    out = {"torch": torch.__version__}
    for name in ("onnxruntime", "openvino", "nncf"):
        try:
            out[name] = importlib.import_module(name).__version__
        except (ImportError, AttributeError):
            pass
    return out


def _reference_inputs(model):
    from ..export import calibration_frames
    from ..tokenizer import tokenize

    # Two clips of frames held out from the int8 calibration set: calibration takes 4 instants per
    # sample video, at (k + 0.5) / 4 of its length; these are at 1/4 and 3/4 of it, between them.
    t = model.video_len
    pixels, masks = calibration_frames(model, frames=2 * t, per_video=2)
    if len(pixels) < t:  # clips longer than the held-out frames: any sample frames
        pixels, masks = calibration_frames(model, frames=t)
    n = len(pixels) // t
    video, mask = pixels[: n * t].unflatten(0, (n, t)), masks[: n * t].unflatten(0, (n, t))
    tokens = tokenize(["a person feeling joy.", "someone who feels anger.", "I can't believe you did that!"])
    return video, mask, tokens


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (graph compilation, caches)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)  # the least-disturbed run on a shared CPU
    return best


def measure(model, pairs: list[tuple[str, str]] | None = None, repeats: int = 3) -> list[dict]:
    """Seconds per clip and cosine to torch fp32 (video and text features) of each (backend, precision)."""
    from .cache import cached_export

    video, mask, tokens = _reference_inputs(model)
    reference = TorchModel(model, "cpu", "fp32")
    ref_video, ref_text = reference.encode_video(video, mask), reference.encode_text(tokens)
    results = []
    for backend, precision in pairs or candidates():
        entry = {"backend": backend, "precision": precision}
        try:
            if backend == "torch":
                runner = TorchModel(model, "cpu", precision)
            else:
                folder = cached_export(model, backend, precision)
                why = int8_check_failure(folder) if (backend, precision) in CHECKED_INT8 else None
                if why:
                    logger.info("backend auto: not considering %s %s: %s", backend, precision, why)
                    entry["error"] = f"excluded: {why}"
                    results.append(entry)
                    continue
                runner = InferenceModel(folder, backend, precision)
            entry["seconds_per_clip"] = _time(lambda r=runner: r.encode_video(video, mask), repeats)
            entry["cosine"] = min(
                _cosine(runner.encode_video(video, mask), ref_video),
                _cosine(runner.encode_text(tokens), ref_text),
            )
        except Exception as e:  # a runtime that cannot run this model is simply not a candidate
            logger.warning("backend %s %s cannot run here: %s", backend, precision, e)
            entry["error"] = f"{type(e).__name__}: {e}"
        results.append(entry)
    return results


def _pick(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r and r["cosine"] >= MIN_COSINE]
    if not ok:  # nothing asked for is close enough: the reference itself
        logger.warning("backend auto: no candidate within cosine %s of fp32; using torch fp32", MIN_COSINE)
        return {"backend": "torch", "precision": "fp32"}
    return min(ok, key=lambda r: r["seconds_per_clip"])


def choose_backend(model, device="cpu", precision: str | None = None) -> tuple[str, str]:
    """``(backend, precision)`` for ``model`` on ``device`` (see the module docstring); logged."""
    from filelock import FileLock

    from .._io import atomic_write_json
    from ..export import model_hash
    from ..precision import default_precision
    from .cache import cache_dir

    device = torch.device(device)
    if device.type == "cuda":
        chosen = ("torch", precision or default_precision(device))
        logger.info("backend auto on %s: torch %s", device, chosen[1])
        return chosen
    machine = cpu_description()
    key_text = json.dumps(
        {"machine": machine, "versions": _versions(), "model": model_hash(model)}, sort_keys=True
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    pairs = [p for p in candidates(for_auto=True) if precision is None or p[1] == precision]
    path = cache_dir() / CHOICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # one process measures, the others read its choice
        try:
            choices = json.loads(path.read_text())
        except (OSError, ValueError):
            choices = {}
        record = choices.get(key)
        if record is None or any(list(p) not in record["candidates"] for p in pairs):
            logger.info(
                "backend auto: measuring %s on %s (once for this machine and model)", pairs, machine["model"]
            )
            results = measure(model, pairs)
            best = _pick(results)
            record = {
                "choice": [best["backend"], best["precision"]],
                "candidates": [list(p) for p in pairs],
                "results": results,
                "machine": machine,
                "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            choices[key] = record
            atomic_write_json(path, choices)
    by_pair = {(r["backend"], r["precision"]): r for r in record["results"]}
    allowed = [p for p in pairs if "error" not in by_pair.get(p, {"error": 1})]
    usable = [by_pair[p] for p in allowed]
    best = _pick(usable) if usable else {"backend": "torch", "precision": "fp32"}
    base = by_pair.get(("torch", "fp32"), {}).get("seconds_per_clip")
    speed = (
        f", {base / best['seconds_per_clip']:.2f}x torch fp32" if base and "seconds_per_clip" in best else ""
    )
    logger.info(
        "backend auto: %s %s (cosine %.5f to fp32%s; %s, flags %s)",
        best["backend"],
        best["precision"],
        best.get("cosine", 1.0),
        speed,
        machine["model"],
        " ".join(machine["flags"]) or "none",
    )
    return best["backend"], best["precision"]
