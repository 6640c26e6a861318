"""Export EmotionCLIP to ONNX or OpenVINO IR: three graphs with a dynamic batch + a preprocessing config.

An export folder holds

- ``frame_encoder``: ``pixels float32 [N, 3, S, S]`` (normalised) + ``mask float32 [N, S, S]``
  (1 = subject) -> ``features [N, D]``, i.e. :meth:`EmotionCLIP.encode_image` with the subject token;
- ``temporal_head``: ``frames float32 [B, T, D]`` -> ``features [B, D]`` (``visual_head``; T = video_len);
- ``text_encoder``: ``tokens int64 [B, 77]`` -> ``features [B, D]``;
- ``emotionclip_export.json``: the model config, its weights' hash, ``logit_scale`` and the
  preprocessing (resize, crop, mean/std, box threshold) that :mod:`emotionclip.backends` rebuilds.

``encode_video`` is ``temporal_head(frame_encoder(frames))``, which lets a runtime encode frames
shared by overlapping windows once. int8 goes through the runtimes' own tools: ONNX Runtime's
dynamic quantisation (int8 weights, per channel) or NNCF post-training quantisation calibrated on
frames of the shipped sample media. Only the frame encoder is quantised: it does nearly all the
work of encoding video, while the temporal head is a few percent of it and the text encoder runs
once per set of prompts, so quantising them would cost accuracy for no speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._inference import eval_mode
from ._io import FileError, atomic_dir

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")
EXPORT_PRECISIONS = ("fp32", "bf16", "int8")
EXPORT_CONFIG = "emotionclip_export.json"
GRAPHS = ("frame_encoder", "temporal_head", "text_encoder")
OPSET = 17
_SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}


class ExportError(FileError, ValueError):
    """An export folder is missing, incomplete or of another model."""


def model_hash(model) -> str:
    """SHA-256 (hex, 16 digits) of a model's config and weights: keys export and backend caches."""
    import torch

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def preprocess_config(model) -> dict[str, Any]:
    """What a runtime needs to turn frames into the graphs' inputs (the model's saved preprocessing)."""
    from dataclasses import asdict

    return {
        **asdict(model.config.preprocess),
        "crop": "center",
        "mask": "float32 [N, S, S], 1 inside the subject boxes, transformed with the pixels",
    }


def _graph_modules(model):
    from torch import nn

    class FrameEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixels, mask):
            return self.model.encode_image(pixels, mask)

    class TextEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = model.backbone

        def forward(self, tokens):  # ids are checked where they enter (backends), not in the graph
            return self.backbone.encode_text(tokens)

    return {
        "frame_encoder": FrameEncoder(),
        "temporal_head": model.visual_head,
        "text_encoder": TextEncoder(),
    }


def _example_inputs(model, batch: int = 2):
    import torch

    s, t, d = model.image_size, model.video_len, model.embed_dim
    mask = torch.zeros(batch, s, s)
    mask[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1
    return {
        "frame_encoder": ((torch.randn(batch, 3, s, s), mask), ["pixels", "mask"]),
        "temporal_head": ((torch.randn(batch, t, d),), ["frames"]),
        "text_encoder": ((torch.ones(batch, model.backbone.context_length, dtype=torch.long),), ["tokens"]),
    }


def export_onnx_graphs(model, folder: Path) -> dict[str, Path]:
    """fp32 ONNX graphs of ``model`` in ``folder`` (the TorchScript-based exporter: no onnxscript needed)."""
    import torch

    paths = {}
    examples = _example_inputs(model)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused encoder-layer op has no ONNX form
    try:
        for name, module in _graph_modules(model).items():
            paths[name] = _export_one(module, folder / f"{name}.onnx", *examples[name])
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return paths


def _export_one(module, path: Path, args, input_names) -> Path:
    import torch

    axes = {n: {0: "batch"} for n in [*input_names, "features"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the shape checks, exporter deprecations
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=input_names,
            output_names=["features"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


# ---------------------------------------------------------------------------------------------------
# calibration data: frames of the shipped sample media
# The int8 check is made on whole sample videos that calibration never sees (not only other instants
# of the calibration videos): the one film scene (friday: black and white, three people) and one
# CREMA-D clip. Calibration takes the others (flower: colour nature, no people; five CREMA-D clips).
CHECK_VIDEOS = ("friday.mp4", "1001_DFA_SAD_XX.flv")


def sample_videos(which: str = "all") -> list[Path]:
    """The shipped sample videos: ``all``, ``calibration`` (int8 calibration) or ``check`` (the int8
    held-out check, :data:`CHECK_VIDEOS`); sorted."""
    from .constants import SAMPLE_MEDIA

    videos = sorted(p for p in SAMPLE_MEDIA.rglob("*") if p.suffix.lower() in (".mp4", ".flv"))
    if which == "calibration":
        return [v for v in videos if v.name not in CHECK_VIDEOS]
    if which == "check":
        return [v for v in videos if v.name in CHECK_VIDEOS]
    if which != "all":
        raise ValueError(f"which must be all, calibration or check, got {which!r}")
    return videos


def calibration_frames(model, frames: int = 32, per_video: int | None = None, videos: str = "all"):
    """``(pixels [N, 3, S, S], masks float32 [N, S, S])`` from :data:`~emotionclip.constants.SAMPLE_MEDIA`.

    ``per_video`` frames (default: enough for ``frames``) at the centres of equal segments of each
    sample video (``videos``: see :func:`sample_videos`); every other one gets a centred subject box,
    the rest none (both occur in use). ``per_video=2`` (1/4, 3/4 of each video) shares no frame with
    the default 32-frame set (4 per video: 1/8, 3/8, 5/8, 7/8), which keeps a check set apart.
    """
    import torch

    from .transform import model_transform
    from .video_io import probe_video, read_frames_at, uniform_times

    chosen = sample_videos(videos)
    per_video = per_video or max(1, -(-frames // len(chosen)))
    tf = model_transform(model)
    pixels, masks = [], []
    for video in chosen:
        info = probe_video(video)
        decoded = read_frames_at(video, uniform_times(0.0, info.duration, per_video), short_side=tf.resize)
        h, w = decoded.shape[1:3]
        mask = np.zeros((len(decoded), h, w), np.uint8)
        mask[::2, h // 6 : 5 * h // 6, w // 4 : 3 * w // 4] = 1
        p, m = tf(decoded, mask)
        pixels.append(p)
        masks.append(m)
    return torch.cat(pixels)[:frames], torch.cat(masks)[:frames].float()


def photometric_variants(pixels, model):
    """Each normalised frame of ``pixels`` as footage from other cameras shows it: grey, darker
    (gamma 1.8), flat (half the contrast), harsher (1.6x contrast, clipped) and colour-cast (warm).

    Real footage differs from the sample media most in exposure, contrast and colour; these widen
    the activation ranges int8 calibration sees and stress the held-out check the same way.
    Returns ``[5 * N, 3, S, S]`` (variant-major)."""
    import torch

    pre = model.config.preprocess
    mean = torch.tensor(pre.mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=pixels.dtype).view(1, 3, 1, 1)
    rgb = (pixels * std + mean).clamp(0, 1)
    grey = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(rgb)
    mid = rgb.mean((1, 2, 3), keepdim=True)
    variants = [
        grey,
        rgb**1.8,
        (rgb - mid) * 0.5 + mid,
        ((rgb - mid) * 1.6 + mid).clamp(0, 1),
        (rgb * torch.tensor([1.15, 1.0, 0.8]).view(1, 3, 1, 1)).clamp(0, 1),
    ]
    return (torch.cat(variants) - mean) / std


# ---------------------------------------------------------------------------------------------------
# the runtimes' quantisation tools
def _ort_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
    )


# int8 must hold on footage calibration never saw: an OpenVINO int8 export records its held-out
# check (min cosine over held-out frames, int8 against the model's own torch fp32 frame features),
# and ``auto`` considers it only when that cosine is at least this (the bar every backend meets)
INT8_CHECK_BUDGET = 0.999


def _feeds(node, types: tuple[str, ...], through: tuple[str, ...] | None = None, hops: int = 6) -> bool:
    """Whether an op of ``types`` feeds ``node`` within ``hops`` ops up (only ``through`` ops between)."""
    frontier = [node]
    for _ in range(hops):
        frontier = [i.get_source_output().get_node() for n in frontier for i in n.inputs()]
        if any(n.get_type_name() in types for n in frontier):
            return True
        if through is not None:
            frontier = [n for n in frontier if n.get_type_name() in through]
    return False


def _reaches(node, types: tuple[str, ...], hops: int = 10) -> bool:
    """Whether ``node``'s output reaches an op of ``types`` within ``hops`` ops down, through no MatMul."""
    frontier = [node]
    for _ in range(hops):
        frontier = [t.get_node() for n in frontier for out in n.outputs() for t in out.get_target_inputs()]
        if any(n.get_type_name() in types for n in frontier):
            return True
        frontier = [n for n in frontier if n.get_type_name() != "MatMul"]
    return False


def float_scope(ov_model) -> list[str]:
    """Names of the frame encoder's ops that int8 keeps in floating point, found by their place in
    the graph (not by name). Per-layer sensitivity, ViT-B/32, frames of footage no calibration saw
    (docs/benchmarks.md) picked them:

    - the patch embedding (the only Convolution: its input is pixels, whose range is the footage's);
    - the subject-token MatMul (mask coverage @ position embeddings, fed by the mask's AvgPool);
    - each block's attention: its input projection (q, k, v: the MatMul whose output reaches
      ScaledDotProductAttention) and output projection (fed by it through reshapes); quantised
      activations there cost the most cosine on unseen footage;
    - the last block's MLP (the MatMuls after the last ScaledDotProductAttention), whose output is
      the pooled feature with no block after it to average its error out;
    - the final projection (the MatMul that makes the output).
    """
    ops = list(ov_model.get_ordered_ops())
    keep = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    attention = [i for i, op in enumerate(ops) if op.get_type_name() == "ScaledDotProductAttention"]
    if attention:
        keep += [op.get_friendly_name() for op in ops[attention[-1] :] if op.get_type_name() == "MatMul"]
    for op in ops:
        if op.get_type_name() != "MatMul":
            continue
        subject = _feeds(op, ("AvgPool",))
        attention_out = _feeds(op, ("ScaledDotProductAttention",), through=("Reshape", "Transpose"), hops=3)
        attention_in = _reaches(op, ("ScaledDotProductAttention",))
        if subject or attention_out or attention_in:
            keep.append(op.get_friendly_name())
    for result in ov_model.get_results():
        node = result.input(0).get_source_output().get_node()
        while node.get_type_name() not in ("MatMul", "Parameter") and len(node.inputs()):
            node = node.input(0).get_source_output().get_node()
        if node.get_type_name() == "MatMul":
            keep.append(node.get_friendly_name())
    return sorted(set(keep))


def _nncf_int8(ov_model, samples: list[tuple[np.ndarray, ...]]):
    """``(int8 model, names kept in floating point)``: NNCF post-training quantisation."""
    try:
        import nncf
    except ImportError as e:
        raise ImportError(
            "int8 OpenVINO export needs NNCF: pip install 'emotionclip[openvino]' (or pip install nncf)"
        ) from e
    names = [p.get_any_name() for p in ov_model.inputs]
    dataset = nncf.Dataset(samples, lambda item: dict(zip(names, item, strict=True)))
    keep = float_scope(ov_model)
    quantized = nncf.quantize(
        ov_model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        preset=nncf.QuantizationPreset.MIXED,
        ignored_scope=nncf.IgnoredScope(names=keep, validate=False),
    )
    return quantized, keep


def int8_calibration(model, frames: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    """NNCF's calibration samples: ``frames`` frames of the calibration sample videos (not
    :data:`CHECK_VIDEOS`), as decoded and in each :func:`photometric_variants`, with their masks."""
    import torch

    pixels, masks = calibration_frames(model, frames=frames, videos="calibration")
    pixels = torch.cat([pixels, photometric_variants(pixels, model)])
    masks = masks.repeat(6, 1, 1)
    return [(p[None].numpy(), m[None].numpy()) for p, m in zip(pixels, masks, strict=True)]


def int8_check(model, frame_encoder, budget: float = INT8_CHECK_BUDGET) -> dict[str, Any]:
    """The held-out check of an int8 frame encoder against ``model``'s own torch fp32 frame features.

    ``frame_encoder``: the path of an OpenVINO IR graph, or a callable ``(pixels, mask) -> features``
    on NumPy arrays. The frames: 8 of each of :data:`CHECK_VIDEOS` (whole videos no calibration
    used), as decoded and in each :func:`photometric_variants` (96 in all). Returns what the export
    config records: min and mean cosine, the budget and ``passed`` (min cosine >= budget)."""
    import torch

    from ._inference import int8_float_precision, openvino_core

    float_precision = int8_float_precision()
    pixels, masks = calibration_frames(model, frames=16, per_video=8, videos="check")
    pixels = torch.cat([pixels, photometric_variants(pixels, model)])
    masks = masks.repeat(6, 1, 1)
    run = frame_encoder
    if not callable(run):
        config = {"INFERENCE_PRECISION_HINT": float_precision}  # as the backend runs int8 graphs
        compiled = openvino_core().compile_model(str(frame_encoder), "CPU", config)
        run = lambda *arrays: compiled(list(arrays))[0]  # noqa: E731
    with torch.inference_mode():
        ref = model.encode_image(pixels, masks).float()
    got = torch.cat(
        [
            torch.from_numpy(np.asarray(run(p[None].numpy(), m[None].numpy())))
            for p, m in zip(pixels, masks, strict=True)
        ]
    )
    cosine = torch.nn.functional.cosine_similarity(got.float(), ref, dim=-1)
    return {
        "min_cosine": round(float(cosine.min()), 6),
        "mean_cosine": round(float(cosine.mean()), 6),
        "budget": budget,
        "passed": bool(float(cosine.min()) >= budget),
        "frames": len(pixels),
        "videos": [v.name for v in sample_videos("check")],
        "variants": "as decoded, grey, gamma 1.8, contrast 0.5, contrast 1.6, warm cast",
        "float_ops_precision": float_precision,
    }


def export_model(
    model,
    out: str | os.PathLike,
    format: str = "onnx",
    precision: str = "fp32",
    overwrite: bool = False,
    source: str | None = None,
    fp32_onnx: str | os.PathLike | None = None,
) -> Path:
    """Write an export folder (see the module docstring) of ``model`` to ``out``, atomically.

    ``precision``: ``fp32``; ``int8`` (ONNX: ONNX Runtime dynamic quantisation; OpenVINO: NNCF with
    sample-media calibration); ``bf16`` (OpenVINO only: fp32 weights, run with the runtime's bf16
    inference hint, which needs a CPU with bf16 instructions). An existing ``out`` is replaced only
    with ``overwrite=True`` and only if it is an export folder. ``fp32_onnx``: an fp32 ONNX export
    of the same model to start from instead of exporting the graphs again.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    if format == "onnx" and precision == "bf16":
        raise ValueError(
            "ONNX Runtime has no bf16 kernels on the CPU; use --format openvino --precision bf16, or int8"
        )
    out = Path(out)
    if out.exists() and (not overwrite or not (out / EXPORT_CONFIG).is_file()):
        why = (
            "pass overwrite=True to replace it" if (out / EXPORT_CONFIG).is_file() else "not an export folder"
        )
        raise ExportError(out, f"already exists ({why}); choose a new folder")
    with eval_mode(model):  # the caller's model keeps its train/eval flags
        return _write_export(model, out, format, precision, overwrite, source, fp32_onnx)


def _write_export(model, out: Path, format, precision, overwrite, source, fp32_onnx) -> Path:
    import torch

    from . import __version__

    config = {
        "format": format,
        "precision": precision,
        "quantization": None,
        "int8_check": None,
        "graphs": {g: g + _SUFFIX[format] for g in GRAPHS},
        "model_config": model.config.to_dict(),
        "model_hash": model_hash(model),
        "source": source,
        "logit_scale": float(model.logit_scale.detach().float()),
        "video_len": model.video_len,
        "image_size": model.image_size,
        "embed_dim": model.embed_dim,
        "context_length": int(model.backbone.context_length),
        "vocab_size": int(model.backbone.vocab_size),
        "preprocess": preprocess_config(model),
        "opset": OPSET,
        "emotionclip_version": __version__,
        "torch_version": torch.__version__,
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        work = tmp / ".fp32"
        work.mkdir()
        if fp32_onnx is not None:
            base = read_export_config(fp32_onnx)
            if base["model_hash"] != config["model_hash"] or (base["format"], base["precision"]) != (
                "onnx",
                "fp32",
            ):
                raise ExportError(fp32_onnx, "is not an fp32 ONNX export of this model")
            onnx_paths = {
                g: Path(shutil.copy(Path(fp32_onnx) / base["graphs"][g], work / f"{g}.onnx")) for g in GRAPHS
            }
        else:
            onnx_paths = export_onnx_graphs(model, work)
        calib = None
        if (precision, format) == ("int8", "openvino"):
            calib = int8_calibration(model)
        for name, src in onnx_paths.items():
            dst = tmp / config["graphs"][name]
            quantize = precision == "int8" and name == "frame_encoder"
            if format == "onnx":
                if quantize:
                    _ort_int8(src, dst)
                    config["quantization"] = (
                        "frame encoder: onnxruntime dynamic, int8 per-channel MatMul weights"
                    )
                else:
                    shutil.move(src, dst)
                continue
            import openvino as ov

            ov_model = ov.convert_model(str(src))
            if quantize:
                ov_model, kept = _nncf_int8(ov_model, calib)
                config["quantization"] = (
                    f"frame encoder: NNCF post-training (mixed preset, transformer), {len(calib)} frames "
                    "of the calibration sample videos and their photometric variants; kept in floating "
                    "point: patch embedding, subject token, attention in/out projections, the last "
                    "block's MLP, projection"
                )
                config["float_ops"] = kept
            ov.save_model(ov_model, str(dst), compress_to_fp16=False)
            if quantize:  # with this model's own weights: trained ones are checked when first exported
                config["int8_check"] = int8_check(model, dst)
                logger.info(
                    "int8 held-out check: min cosine %.5f to fp32 on %d frames of %s (budget %s): %s",
                    config["int8_check"]["min_cosine"],
                    config["int8_check"]["frames"],
                    ", ".join(config["int8_check"]["videos"]),
                    config["int8_check"]["budget"],
                    "passed" if config["int8_check"]["passed"] else "FAILED",
                )
        shutil.rmtree(work)
        (tmp / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    logger.info("exported %s %s graphs to %s", format, precision, out)
    return out


def read_export_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The config of an export folder, checked for its graphs."""
    folder = Path(folder)
    path = folder / EXPORT_CONFIG
    if not path.is_file():
        raise ExportError(folder, f"has no {EXPORT_CONFIG} (not written by `emotionclip export`?)")
    try:
        config = json.loads(path.read_text())
        graphs = config["graphs"]
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(path, f"cannot be read as an export config ({e})") from e
    missing = [g for g in GRAPHS if not (folder / graphs.get(g, f"<{g}>")).is_file()]
    if missing:
        raise ExportError(folder, f"is incomplete: graphs {missing} are missing")
    return config
