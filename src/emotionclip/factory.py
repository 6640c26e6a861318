"""The front door: build, load and save EmotionCLIP models.

- ``create_model``: a new model from an open_clip backbone name/config, optionally initialised from
  CLIP weights (an open_clip pretrained tag, or a local OpenAI TorchScript/state-dict or OpenCLIP
  ``.pth``/``.safetensors`` file).
- ``load_model``: a trained EmotionCLIP — the official release checkpoint (architecture inferred from
  tensor shapes), this project's own format (``save_model``), or a trainer checkpoint.
- ``save_model``: safetensors weights + JSON config (architecture and preprocessing), written
  atomically; ``save_pretrained`` adds what a Hugging Face Hub repository shows (preprocessing
  config, model card).
- Named weights and ``hf-hub:`` ids are resolved by :mod:`emotionclip.pretrained`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import re
import warnings
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from emotionclip._io import FileError, atomic_dir
from emotionclip.model import TEMPORAL_HEADS, EmotionCLIP, EmotionCLIPConfig
from emotionclip.transform import FrameTransform, PreprocessConfig, model_transform

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PREPROCESS_NAME = "preprocessor_config.json"  # Hub folders: the preprocessing on its own
_CONFIG_META_KEY = "emotionclip_config"
_OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its messages


class CheckpointError(FileError, ValueError):
    """A checkpoint file is unreadable or holds something other than what was asked for."""


# ---------------------------------------------------------------------------------------------
# backbone configs
# ---------------------------------------------------------------------------------------------
def list_backbones() -> list[str]:
    """Backbones this package ships configs for, then every open_clip model name."""
    own = sorted(
        p.name[:-5]
        for p in resources.files("emotionclip.model_configs").iterdir()
        if p.name.endswith(".json")
    )
    return own + open_clip.list_models()


def get_backbone_config(
    backbone: str | dict[str, Any] | os.PathLike,
) -> tuple[dict[str, Any], bool, str | None]:
    """Resolve ``backbone`` to ``(clip_config, quick_gelu, name)``.

    ``backbone`` is a config shipped with this package (e.g. ``"tiny"``), an open_clip model name
    (``"ViT-B-32"``, ``"ViT-L-14-quickgelu"``, ...), a path to a JSON config, or the config dict itself.
    """
    name = None
    if isinstance(backbone, dict):
        cfg = copy.deepcopy(backbone)
    elif (
        isinstance(backbone, (str, os.PathLike))
        and Path(backbone).suffix == ".json"
        and Path(backbone).is_file()
    ):
        cfg = json.loads(Path(backbone).read_text())
        name = Path(backbone).stem
    elif isinstance(backbone, str):
        name = backbone
        own = resources.files("emotionclip.model_configs") / f"{backbone}.json"
        if own.is_file():
            cfg = json.loads(own.read_text())
        else:
            cfg = open_clip.get_model_config(backbone)
            if cfg is None:
                raise ValueError(
                    f"unknown backbone {backbone!r}: not one of this package's configs nor an open_clip model "
                    f"(see emotionclip.list_backbones())"
                )
            cfg = copy.deepcopy(cfg)
    else:
        raise TypeError(f"backbone must be a name, a JSON path or a dict, got {type(backbone).__name__}")
    quick_gelu = bool(cfg.pop("quick_gelu", False))
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(cfg)
    if missing:
        raise ValueError(f"backbone config {name or ''} lacks {sorted(missing)}")
    if cfg.get("custom_text") or "hf_model_name" in cfg["text_cfg"] or "timm_model_name" in cfg["vision_cfg"]:
        raise ValueError(
            f"backbone {name or cfg}: EmotionCLIP needs open_clip's own ViT vision tower and CLIP text "
            f"tower (timm / Hugging Face towers are not supported)"
        )
    cfg = {k: cfg[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    return cfg, quick_gelu, name


# ---------------------------------------------------------------------------------------------
# reading weight files
# ---------------------------------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except pickle.UnpicklingError as e:  # weights_only refused a Python object: keep torch's whole reason
        raise CheckpointError(
            path,
            "cannot be read with torch.load(weights_only=True): it holds Python objects, not only "
            f"tensors, and unpickling them could run code. torch says:\n{_ANSI.sub('', str(e)).strip()}",
        ) from e
    except Exception as e:  # torch raises many types for truncated/corrupt/foreign files
        raise CheckpointError(
            path,
            f"cannot be read as a PyTorch checkpoint ({type(e).__name__}: {_ANSI.sub('', str(e)).strip()}); "
            "the file may be truncated, corrupt, or not a weights file",
        ) from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(path, f"cannot be read as safetensors ({e}); the file may be truncated") from e


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(path, f"cannot be read as safetensors ({e}); the file may be truncated") from e


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_clip_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """CLIP weights from a local file → ``(open_clip CLIP state dict, is_openai_archive)``.

    Accepts OpenAI's TorchScript release archives (``ViT-B-32.pt``), OpenAI/OpenCLIP state dicts
    (``.pt``/``.pth``/``.bin``, optionally wrapped in ``{'state_dict': ...}`` with DDP ``module.``
    prefixes), and ``.safetensors``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    openai_archive = False
    if path.suffix == ".safetensors":
        sd = _read_safetensors(path)
    elif _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.load's deprecation notice
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:
            raise CheckpointError(path, f"cannot be read as a TorchScript archive ({e})") from e
        openai_archive = True
    else:
        sd = _torch_load(path)
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(path, "does not hold a state dict (name → tensor)")
    sd = _strip_prefix(dict(sd), "module.")
    for k in _OPENAI_ONLY_KEYS:
        sd.pop(k, None)
    if "visual.conv1.weight" not in sd or "token_embedding.weight" not in sd:
        hint = (
            " (it looks like an EmotionCLIP checkpoint: use emotionclip.load_model)"
            if any(k.startswith("backbone.") for k in sd)
            else ""
        )
        raise CheckpointError(
            path, f"is not an OpenAI/OpenCLIP ViT CLIP checkpoint{hint}; first keys: {list(sd)[:5]}"
        )
    return sd, openai_archive


def _resolve_pretrained(backbone_name: str | None, pretrained: str) -> tuple[Path, bool | None]:
    """A local path, or an open_clip tag downloaded into open_clip's cache."""
    if Path(pretrained).expanduser().exists():
        return Path(pretrained).expanduser(), None
    if backbone_name is None or not open_clip.pretrained.is_pretrained_cfg(backbone_name, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(backbone_name) if backbone_name else []
        raise ValueError(
            f"pretrained={pretrained!r} is neither an existing file nor an open_clip tag for "
            f"{backbone_name!r} (tags: {', '.join(tags) or 'none'})"
        )
    pcfg = open_clip.pretrained.get_pretrained_cfg(backbone_name, pretrained)
    logger.info("fetching open_clip weights %s/%s", backbone_name, pretrained)
    path = open_clip.pretrained.download_pretrained(pcfg)
    if not path:
        raise ValueError(f"open_clip could not provide weights for {backbone_name}/{pretrained}")
    return Path(path), pcfg.get("quick_gelu")


# ---------------------------------------------------------------------------------------------
# create / load / save
# ---------------------------------------------------------------------------------------------
def create_model(
    backbone: str | dict[str, Any] | os.PathLike = "ViT-B-32",
    pretrained: str | os.PathLike | None = None,
    temporal_fusion: str = "transformer",
    video_len: int = 8,
    head_layers: int = 6,
    head_heads: int = 8,
    head_ffn: int = 2048,
    head_dropout: float = 0.1,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
    preprocess: dict[str, Any] | None = None,
) -> EmotionCLIP:
    """A new EmotionCLIP.

    ``pretrained`` initialises the CLIP towers: an open_clip tag for ``backbone`` (e.g.
    ``"laion2b_e16"``, as the release did) or a local weights file. ``quick_gelu=None`` takes it from
    the backbone name/config, or turns it on for OpenAI weights (which were trained with QuickGELU).
    ``preprocess`` overrides fields of the frame preprocessing saved with the model
    (:class:`~emotionclip.transform.PreprocessConfig`; default: the release's at the tower's size).
    """
    if temporal_fusion not in TEMPORAL_HEADS:
        raise ValueError(
            f"unknown temporal_fusion {temporal_fusion!r}; choose one of {sorted(TEMPORAL_HEADS)}"
        )
    if video_len < 1 or head_layers < 0:
        raise ValueError("video_len must be >= 1 and head_layers >= 0")
    clip_cfg, cfg_quick_gelu, name = get_backbone_config(backbone)
    state_dict = None
    if pretrained is not None:
        path, tag_quick_gelu = _resolve_pretrained(name, str(pretrained))
        state_dict, openai_archive = read_clip_state_dict(path)
        if quick_gelu is None and (tag_quick_gelu or openai_archive):
            quick_gelu = True
    config = EmotionCLIPConfig(
        backbone=clip_cfg,
        quick_gelu=cfg_quick_gelu if quick_gelu is None else quick_gelu,
        temporal_fusion=temporal_fusion,
        video_len=video_len,
        head_layers=head_layers,
        head_heads=head_heads,
        head_ffn=head_ffn,
        head_dropout=head_dropout,
        backbone_name=name,
        preprocess=_preprocess_for(clip_cfg, preprocess),
    )
    model = EmotionCLIP(config)
    if state_dict is not None:
        _load_backbone(model, state_dict, str(pretrained))
    return model.to(device)


def _preprocess_for(clip_cfg: dict[str, Any], overrides: dict[str, Any] | None) -> PreprocessConfig:
    base = PreprocessConfig.for_crop(int(clip_cfg["vision_cfg"]["image_size"])).to_dict()
    return PreprocessConfig.from_dict({**base, **(overrides or {})})


def create_model_and_transforms(*args, **kwargs) -> tuple[EmotionCLIP, FrameTransform, FrameTransform]:
    """``(model, train_transform, eval_transform)`` like open_clip's front door; the transforms are
    the model's own (:func:`~emotionclip.transform.model_transform`)."""
    model = create_model(*args, **kwargs)
    return model, model_transform(model, train=True), model_transform(model, train=False)


def _load_backbone(model: EmotionCLIP, sd: dict[str, torch.Tensor], source: str) -> None:
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    sd = dict(sd)
    target = model.backbone.state_dict()
    # non-persistent buffers (the causal attn_mask) are rebuilt by the model; TorchScript archives store them
    for name, _ in model.backbone.named_buffers():
        if name not in target:
            sd.pop(name, None)
    if sd.get("logit_scale") is not None and sd["logit_scale"].ndim != target["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(target["logit_scale"].shape)
    resizable = ("positional_embedding", "visual.positional_embedding")  # open_clip interpolates these
    bad = [k for k in target if k in sd and k not in resizable and sd[k].shape != target[k].shape]
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    if bad or missing or unexpected:
        details = "; ".join(
            f"{k}: file {list(sd[k].shape)} vs model {list(target[k].shape)}" for k in bad[:3]
        )
        raise CheckpointError(
            source,
            f"CLIP weights do not fit backbone {model.config.backbone_name or ''}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(bad)} shape mismatches {details}",
        )
    resize_pos_embed(sd, model.backbone)
    resize_text_pos_embed(sd, model.backbone)
    model.backbone.load_state_dict(sd, strict=True)
    logger.info("initialised CLIP towers from %s", source)


def _count_layers(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def infer_config(sd: dict[str, torch.Tensor], source: str | Path = "<state dict>") -> EmotionCLIPConfig:
    """The architecture of an official-format EmotionCLIP state dict, from its tensor shapes.

    Attention heads are ``width / 64`` (CLIP's head width); the temporal transformer's head count
    is not visible in the weights and takes the release's 8.
    """
    required = [
        "backbone.visual.conv1.weight",
        "backbone.visual.positional_embedding",
        "backbone.visual.proj",
        "backbone.token_embedding.weight",
        "backbone.positional_embedding",
        "backbone.text_projection",
        "logit_scale",
    ]
    missing = [k for k in required if k not in sd]
    if missing:
        raise CheckpointError(
            source,
            f"is not an EmotionCLIP checkpoint: missing {missing[:4]} (expected keys backbone.*, "
            f"visual_head.*, logit_scale; found e.g. {list(sd)[:4]})",
        )
    conv = sd["backbone.visual.conv1.weight"]
    vwidth, patch = conv.shape[0], conv.shape[-1]
    grid = round((sd["backbone.visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vlayers = _count_layers(sd, "backbone.visual.transformer.resblocks.")
    vmlp = sd["backbone.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vwidth
    vocab, twidth = sd["backbone.token_embedding.weight"].shape
    tlayers = _count_layers(sd, "backbone.transformer.resblocks.")
    tmlp = sd["backbone.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / twidth
    backbone = {
        "embed_dim": int(sd["backbone.visual.proj"].shape[1]),
        "vision_cfg": {
            "image_size": int(grid * patch),
            "layers": vlayers,
            "width": int(vwidth),
            "head_width": 64,
            "mlp_ratio": vmlp,
            "patch_size": int(patch),
        },
        "text_cfg": {
            "context_length": int(sd["backbone.positional_embedding"].shape[0]),
            "vocab_size": int(vocab),
            "width": int(twidth),
            "heads": max(1, int(twidth) // 64),
            "layers": tlayers,
            "mlp_ratio": tmlp,
        },
    }
    head: dict[str, Any]
    if "visual_head.fusion_layer.layers.0.linear1.weight" in sd:
        head = {
            "temporal_fusion": "transformer",
            "video_len": int(sd["visual_head.frame_position_embedding.weight"].shape[0]),
            "head_layers": _count_layers(sd, "visual_head.fusion_layer.layers."),
            "head_ffn": int(sd["visual_head.fusion_layer.layers.0.linear1.weight"].shape[0]),
        }
    elif (
        sd.get("visual_head.fusion_layer.weight") is not None
        and sd["visual_head.fusion_layer.weight"].ndim == 3
    ):
        head = {"temporal_fusion": "conv1d", "head_layers": 0}
    elif not any(k.startswith("visual_head.") for k in sd):
        head = {"temporal_fusion": "mean", "head_layers": 0}
    else:
        raise CheckpointError(
            source, f"unrecognised temporal head keys: {[k for k in sd if k.startswith('visual_head.')][:4]}"
        )
    return EmotionCLIPConfig(backbone=backbone, **head)


def _emotionclip_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, saved config or None) from whatever ``torch.load`` returned."""
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        config = obj.get("model_config")
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            path, "is not an EmotionCLIP checkpoint (expected {'model': state_dict} or a state dict)"
        )
    sd = _strip_prefix(_strip_prefix(dict(obj), "module."), "_orig_mod.")
    if "visual.conv1.weight" in sd and not any(k.startswith("backbone.") for k in sd):
        raise CheckpointError(
            path,
            "is a plain CLIP checkpoint, not EmotionCLIP; start from it with create_model(pretrained=...)",
        )
    return sd, config


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict | None, Path]:
    """``(state dict, saved config or None, weights file)`` from a folder, ``.safetensors`` or torch file."""
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        from emotionclip.export import EXPORT_CONFIG

        if not weights.is_file() and (path / EXPORT_CONFIG).is_file():
            raise CheckpointError(
                path,
                "is an export of `emotionclip export`, not a checkpoint: add --backend onnxruntime or "
                "--backend openvino (Python: load_runner(path, backend=...))",
            )
        if not weights.is_file():
            raise CheckpointError(
                path, f"directory has no {WEIGHTS_NAME} (not saved by emotionclip.save_model?)"
            )
        cfg_file, pre_file = path / CONFIG_NAME, path / PREPROCESS_NAME
        config = _read_json(cfg_file) if cfg_file.is_file() else None
        if config is not None and "preprocess" not in config and pre_file.is_file():
            config["preprocess"] = _read_json(pre_file)
        return _read_safetensors(weights), config, weights
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if path.suffix == ".safetensors":
        meta = _safetensors_metadata(path)
        config = json.loads(meta[_CONFIG_META_KEY]) if _CONFIG_META_KEY in meta else None
        return _read_safetensors(path), config, path
    if _is_torchscript(path):
        raise CheckpointError(
            path, "is a TorchScript archive (OpenAI CLIP?); use create_model(pretrained=...)"
        )
    sd, config = _emotionclip_state_dict(_torch_load(path), path)
    return sd, config, path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"is not a readable JSON model config ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(path, f"model config must be a JSON object, got {type(data).__name__}")
    return data


def _refuse_nonfinite(sd: dict[str, torch.Tensor], path: Path) -> None:
    """A diverged run's NaN/inf weights would give empty scores downstream: refuse them here."""
    # one sum per tensor is the fast screen (NaN/inf propagate); isfinite confirms the few it flags
    bad = [
        k
        for k, v in sd.items()
        if v.is_floating_point() and not torch.isfinite(v.sum()) and not torch.isfinite(v).all()
    ]
    if bad:
        raise CheckpointError(
            path,
            f"{len(bad)} of {len(sd)} weight tensors hold NaN or infinite values (a diverged run?): "
            f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}",
        )


def _architecture(cfg: EmotionCLIPConfig) -> dict[str, Any]:
    """The config fields that tensor shapes show, with open_clip's defaults filled in."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(**cfg.backbone["vision_cfg"])
    text = CLIPTextCfg(**cfg.backbone["text_cfg"])
    image_size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    out = {
        "embed_dim": cfg.backbone["embed_dim"],
        "vision_cfg.layers": vision.layers,
        "vision_cfg.width": vision.width,
        "vision_cfg.patch_size": vision.patch_size,
        "vision_cfg.image_size": image_size // vision.patch_size * vision.patch_size,
        "vision_cfg.mlp_width": int(vision.width * vision.mlp_ratio),  # what open_clip builds
        "text_cfg.layers": text.layers,
        "text_cfg.width": text.width,
        "text_cfg.vocab_size": text.vocab_size,
        "text_cfg.context_length": text.context_length,
        "text_cfg.mlp_width": int(text.width * text.mlp_ratio),
        "temporal_fusion": cfg.temporal_fusion,
    }
    if cfg.temporal_fusion == "transformer":
        out.update(video_len=cfg.video_len, head_layers=cfg.head_layers, head_ffn=cfg.head_ffn)
    return out


def _check_config_fits(cfg: EmotionCLIPConfig, sd: dict[str, torch.Tensor], path: Path) -> None:
    """Compare a stored config with what the weights' shapes show, before anything is built: a
    config claiming 2,000 layers must not allocate them."""
    try:
        claimed = _architecture(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid model config ({e})") from e
    shown = _architecture(infer_config(sd, path))
    diff = {k: (v, shown.get(k)) for k, v in claimed.items() if shown.get(k) != v}
    if diff:
        details = ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in list(diff.items())[:6])
        raise CheckpointError(path, f"model config does not match the weights' shapes ({details})")


def _build(
    sd: dict[str, torch.Tensor], config: dict | None, path: Path, strict: bool, overrides: dict[str, Any]
) -> EmotionCLIP:
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    _refuse_nonfinite(sd, path)
    if config is None:
        config = infer_config(sd, path).to_dict()
    try:
        cfg = EmotionCLIPConfig.from_dict({**config, **overrides})
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(path, f"invalid model config ({e})") from e
    _check_config_fits(cfg, sd, path)
    try:
        model = EmotionCLIP(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid model config ({e})") from e
    result = model.load_state_dict(sd, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise CheckpointError(
            path,
            f"weights do not match the EmotionCLIP architecture: missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}",
        )
    return model


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    strict: bool = True,
    backend: str | None = None,
    precision: str | None = None,
    **overrides: Any,
) -> EmotionCLIP:
    """Load a trained EmotionCLIP in eval mode, fp32. To run it with a backend or at another
    precision, build a runner: :func:`emotionclip.load_runner` (``backend`` / ``precision`` here
    only say so).

    ``path``: the official release checkpoint (``{'model': state_dict}``; the architecture is
    inferred from tensor shapes), a directory or ``.safetensors`` written by :func:`save_model` or
    :func:`save_pretrained`, a checkpoint of ``emotionclip train``, a named entry
    (``"emotionclip-release"``: a local copy, see :mod:`emotionclip.pretrained`) or
    ``"hf-hub:ORG/NAME[@REVISION]"``. ``overrides`` set config fields the weights cannot show
    (``quick_gelu``, ``head_heads``, ``head_dropout``). Weights holding NaN/inf, and configs that
    disagree with the weights' shapes, are refused before a model is built.
    """
    if backend is not None or precision is not None:
        raise TypeError(
            "load_model returns an EmotionCLIP (torch, fp32); to run it with a backend or at another "
            f"precision use emotionclip.load_runner({str(path)!r}, device, precision={precision!r}, "
            f"backend={backend or 'torch'!r})"
        )
    from emotionclip import pretrained

    local, entry = pretrained.resolve_checkpoint(path)
    sd, config, weights = _read_checkpoint(local)
    if entry is not None:
        pretrained.check_layout(entry, sd, weights)
    return _build(sd, config, weights, strict, overrides).to(device).eval()


def save_model(model: EmotionCLIP, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``path/`` with ``model.safetensors`` (config also in its metadata) and ``config.json``
    (architecture and preprocessing).

    Written to a temporary directory and renamed, so an interrupted save leaves nothing half-written.
    An existing ``path`` is replaced only with ``overwrite=True``.
    """
    return _save(model, path, overwrite, card=None)


def save_pretrained(
    model: EmotionCLIP,
    path: str | os.PathLike,
    overwrite: bool = False,
    name: str = "EmotionCLIP",
    license: str = "mit",
    card_text: str = "",
) -> Path:
    """A Hugging Face Hub-shaped folder: ``config.json``, ``model.safetensors``,
    ``preprocessor_config.json`` and a ``README.md`` model card with metadata. Upload it with
    ``huggingface_hub.upload_folder``; ``load_model("hf-hub:ORG/NAME")`` reads it back."""
    from emotionclip.pretrained import model_card

    return _save(model, path, overwrite, card=model_card(model.config, name, license, card_text))


def _save(model: EmotionCLIP, path: str | os.PathLike, overwrite: bool, card: str | None) -> Path:
    path = Path(path).expanduser()
    if not isinstance(model, EmotionCLIP):
        raise TypeError(f"expected an EmotionCLIP, got {type(model).__name__}")
    config = model.config.to_dict()
    config_json = json.dumps(config, indent=2)
    # the shared temperature is stored under both keys, as the release; safetensors wants distinct memory
    tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_dir(path, overwrite=overwrite) as tmp:
        save_file(tensors, tmp / WEIGHTS_NAME, metadata={_CONFIG_META_KEY: config_json, "format": "pt"})
        (tmp / CONFIG_NAME).write_text(config_json + "\n")
        if card is not None:
            (tmp / PREPROCESS_NAME).write_text(json.dumps(config["preprocess"], indent=2) + "\n")
            (tmp / "README.md").write_text(card)
    return path
