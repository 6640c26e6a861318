"""The two :class:`emotionclip.runner.Runner` implementations: :class:`TorchModel` (an EmotionCLIP
under autocast) and :class:`InferenceModel` (the three exported graphs run by ONNX Runtime or OpenVINO)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._inference import eval_mode, int8_float_precision, openvino_core
from ..precision import autocast, check_precision
from ..shapes import check_video

logger = logging.getLogger(__name__)

# backend -> (module it needs, precisions it runs)
BACKENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch", ("fp32", "bf16", "fp16")),
    "onnxruntime": ("onnxruntime", ("fp32", "int8")),
    "openvino": ("openvino", ("fp32", "bf16", "int8")),
}


def available_backends() -> list[str]:
    """Backends whose runtime imports here (torch always)."""
    found = []
    for name, (module, _) in BACKENDS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(name)
    return found


def check_backend(backend: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be auto or one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in BACKENDS[backend][1]:
        raise ValueError(f"backend {backend} runs {', '.join(BACKENDS[backend][1])}, not {precision!r}")


def resolve_device(device) -> torch.device:
    """A bare ``cuda`` is the current GPU, so that a model already there is not copied."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class TorchModel:
    """An EmotionCLIP run at ``precision`` on ``device``, in eval mode; other attributes are the model's.

    The caller's model is neither moved nor switched to eval: on another device it is copied.
    """

    def __init__(self, model, device: str | torch.device | None = None, precision: str = "fp32"):
        check_precision(precision)
        here = next(model.parameters()).device
        self.device = resolve_device(device) if device is not None else here
        if self.device != here:
            import copy

            logger.info("running a copy of the model on %s (it lives on %s)", self.device, here)
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        self.precision = precision
        self.backend = f"torch-{precision}"

    def __getattr__(self, name: str):  # sizes, config, backbone, logit_scale, state_dict ...
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def _run(self, fn: Callable, *args) -> torch.Tensor:
        args = [a.to(self.device) if torch.is_tensor(a) else a for a in args]
        with torch.inference_mode(), eval_mode(self.model), autocast(self.device, self.precision):
            return fn(*args).float()

    def encode_image(self, image, image_mask=None) -> torch.Tensor:
        return self._run(self.model.encode_image, image, image_mask)

    def encode_video(self, video, video_mask=None) -> torch.Tensor:
        return self._run(self.model.encode_video, video, video_mask)

    def encode_text(self, tokens) -> torch.Tensor:
        return self._run(self.model.encode_text, tokens)

    def visual_head(self, frames) -> torch.Tensor:
        return self._run(self.model.visual_head, frames)

    def parameters(self):
        return self.model.parameters()


# ---------------------------------------------------------------------------------------------------
# exported graphs
class _OrtGraph:
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # idle pool threads sleep instead of spinning: in analyze the detector, decoding and the
        # transform run beside the encoder, and spinning threads took their cores (ViT-B/32 + NanoDet,
        # 2 cores: 12.0 windows/s against 8.2-9.1 with spinning)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(None, dict(zip(self.names, arrays, strict=True)))[0]


class _OvGraph:
    def __init__(self, path: Path, threads: int | None, precision: str):
        hint = {"bf16": "bf16", "int8": int8_float_precision()}.get(precision, "f32")
        config: dict[str, Any] = {
            # fp32 explicitly: on AMX CPUs OpenVINO would otherwise run bf16; int8 graphs keep their
            # float ops (the sensitive layers) in bf16 where the CPU has it, as their check ran
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = openvino_core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.request.infer(list(arrays))[0].copy()


def _open_graph(make, path: Path, runtime: str):
    """A graph the runtime can run; a truncated or foreign file -> ``ExportError`` naming it (one line)."""
    from ..export import ExportError

    try:
        return make(path)
    except Exception as e:  # the runtimes raise their own classes (InvalidProtobuf, RuntimeError...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(
            path, f"{runtime} cannot load this graph (truncated or not an export?): {first}"
        ) from e


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(torch.as_tensor(x).detach().float().cpu().numpy())


class InferenceModel:
    """EmotionCLIP's encoders run from an export folder (:mod:`emotionclip.export`) on the CPU."""

    def __init__(
        self, folder: str | Path, runtime: str, precision: str | None = None, threads: int | None = None
    ):
        from ..export import ExportError, read_export_config

        if runtime == "torch":
            raise ValueError("InferenceModel runs exported graphs; use TorchModel for torch")
        self.folder = Path(folder)
        cfg = read_export_config(self.folder)
        precision = precision or cfg["precision"]
        check_backend(runtime, precision)
        if runtime == "onnxruntime" and cfg["format"] != "onnx":
            raise ExportError(self.folder, f"ONNX Runtime needs an ONNX export, this one is {cfg['format']}")
        if (precision == "int8") != (cfg["precision"] == "int8"):
            raise ExportError(self.folder, f"is a {cfg['precision']} export; it cannot run at {precision}")
        self.export_config = cfg
        self.backend = f"{runtime}-{precision}"
        self.precision = precision
        self.device = torch.device("cpu")
        self.video_len = int(cfg["video_len"])
        self.image_size = int(cfg["image_size"])
        self.embed_dim = int(cfg["embed_dim"])
        self.context_length = int(cfg["context_length"])
        self.vocab_size = int(cfg["vocab_size"])
        self.model_hash = cfg["model_hash"]
        self.logit_scale = torch.tensor(float(cfg["logit_scale"]))
        make = (
            (lambda p: _OrtGraph(p, threads))
            if runtime == "onnxruntime"
            else (lambda p: _OvGraph(p, threads, precision))
        )
        self._graphs = {
            name: _open_graph(make, self.folder / file, runtime) for name, file in cfg["graphs"].items()
        }

    @property
    def config(self):
        from ..model import EmotionCLIPConfig

        return EmotionCLIPConfig.from_dict(self.export_config["model_config"])

    def __repr__(self) -> str:
        return f"InferenceModel({str(self.folder)!r}, backend={self.backend!r})"

    def eval(self):
        return self

    def parameters(self):  # where results live, for code that asks a model for its device
        return iter([self.logit_scale])

    def _check_frames(self, x: torch.Tensor, what: str) -> None:
        s = self.image_size
        if tuple(x.shape[-3:]) != (3, s, s):
            raise ValueError(f"{what} frames must be [3, {s}, {s}], got {list(x.shape[-3:])}")

    def encode_image(self, image, image_mask=None) -> torch.Tensor:
        image = torch.as_tensor(image)
        if image.ndim != 4:
            raise ValueError(f"image must be [B, 3, H, W], got shape {list(image.shape)}")
        self._check_frames(image, "image")
        n, s = image.shape[0], self.image_size
        if image_mask is None:
            mask = np.zeros((n, s, s), np.float32)
        else:
            image_mask = torch.as_tensor(image_mask)
            if tuple(image_mask.shape) != (n, s, s):
                raise ValueError(f"image_mask must be [B, H, W] = {[n, s, s]}, got {list(image_mask.shape)}")
            m = image_mask if image_mask.is_floating_point() else image_mask != 0
            mask = _f32(m)
        if n == 0:
            return torch.empty(0, self.embed_dim)
        return torch.from_numpy(self._graphs["frame_encoder"](_f32(image), mask))

    def visual_head(self, frames) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        if frames.ndim != 3 or frames.shape[1] != self.video_len:
            raise ValueError(f"frames must be [B, {self.video_len}, D], got {list(frames.shape)}")
        return torch.from_numpy(self._graphs["temporal_head"](_f32(frames)))

    def encode_video(self, video, video_mask=None) -> torch.Tensor:
        video = torch.as_tensor(video)
        video_mask = None if video_mask is None else torch.as_tensor(video_mask)
        b, t = check_video(video, video_mask)
        if video_mask is not None:
            video_mask = video_mask.flatten(0, 1)
        frames = self.encode_image(video.flatten(0, 1), video_mask)
        return self.visual_head(frames.view(b, t, -1))

    def encode_text(self, tokens) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"tokens must be an integer tensor [B, L], got {tokens.dtype} {list(tokens.shape)}"
            )
        if tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must have length {self.context_length}, got {tokens.shape[1]}")
        if tokens.numel() and (int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}) for this model's vocabulary")
        return torch.from_numpy(self._graphs["text_encoder"](tokens.cpu().long().numpy()))
