"""Where trained EmotionCLIP weights come from: named entries, local copies and the Hugging Face Hub.

As in open_clip's pretrained registry, an entry is data: where a person gets the file, its name,
the architecture and the state-dict layout (key -> shape) a strict load needs. Nothing here
downloads the release: its weights sit on Google Drive behind a confirmation page, so
``load_model("emotionclip-release")`` reads a local copy and, when there is none, says where to get
it and where to put it. ``hf-hub:ORG/NAME`` goes through ``huggingface_hub`` (its cache,
``HF_HUB_OFFLINE`` and token handling included).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from emotionclip._io import FileError

CACHE_ENV = "EMOTIONCLIP_CACHE"
DEFAULT_CACHE = "~/.cache/emotionclip"
HF_HUB_PREFIX = "hf-hub:"
HUB_FILES = ("config.json", "model.safetensors")  # what load_model needs from a Hub repository


class PretrainedError(FileError, ValueError):
    """Named weights that are missing, or a file that is not what the entry describes."""


@dataclass(frozen=True)
class PretrainedEntry:
    name: str
    filename: str  # the name the file is looked for under in the cache
    url: str  # where a person downloads it
    source: str  # where the link is published
    architecture: dict[str, Any]
    layout: str  # package data: model_configs/layouts/<layout> (key -> shape)
    path_env: str  # environment variable that may point at the file itself
    license: str = ""
    sha256: str | None = None  # None: nobody who wrote this entry had the file to hash
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    def expected_shapes(self) -> dict[str, list[int]]:
        text = (resources.files("emotionclip.model_configs") / "layouts" / self.layout).read_text()
        return json.loads(text)


PRETRAINED: dict[str, PretrainedEntry] = {
    "emotionclip-release": PretrainedEntry(
        name="emotionclip-release",
        filename="emotionclip_latest.pt",
        url="https://drive.google.com/file/d/1iWA7KfiR1JjRi-hD6R4LK5cug1FMcblD/view?usp=drive_link",
        source="https://github.com/Xeaver/EmotionCLIP#testing (README: 'The pre-trained EmotionCLIP "
        "model can be downloaded here')",
        architecture={
            "backbone": "ViT-B-32",
            "temporal_fusion": "transformer",
            "head_layers": 6,
            "video_len": 8,
            "format": "torch.save({'model': state_dict, ...})",
        },
        # key -> shape of the released model, recorded by running the published code (MIT)
        layout="emotionclip-release.json",
        path_env="EMOTIONCLIP_RELEASE_PATH",
        license="MIT (code); see the release for the weights",
        notes="Zhang, Pan & Wang, CVPR 2023. ViT-B/32 frame encoder initialised from OpenCLIP "
        "laion2b_e16, 6-layer temporal transformer over 8 frames.",
    ),
}


def list_pretrained() -> list[str]:
    """Names :func:`emotionclip.load_model` accepts besides paths and ``hf-hub:`` ids."""
    return sorted(PRETRAINED)


def get_pretrained(name: str) -> PretrainedEntry | None:
    return PRETRAINED.get(name)


def cache_dir() -> Path:
    """``$EMOTIONCLIP_CACHE``, else ``~/.cache/emotionclip``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def locate(entry: PretrainedEntry) -> Path:
    """The local copy of ``entry``: ``$<path_env>`` if set, else ``<cache>/<filename>``."""
    env = os.environ.get(entry.path_env)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise PretrainedError(path, f"{entry.path_env} points here but there is no such file")
        return path
    path = cache_dir() / entry.filename
    if not path.is_file():
        raise PretrainedError(
            path,
            f"the {entry.name} weights are not here. Download {entry.filename} from {entry.url} "
            f"(the link in {entry.source}), then put it at {path} (or set {CACHE_ENV} to the folder "
            f"holding it, or {entry.path_env} to the file itself). Nothing downloads it automatically.",
        )
    return path


def resolve_checkpoint(spec: str | os.PathLike) -> tuple[Path, PretrainedEntry | None]:
    """The local file or folder behind a :func:`emotionclip.load_model` argument, and its entry if
    it names one: an existing path wins over an entry of the same name; ``hf-hub:`` ids are fetched
    into (or read from) the Hugging Face cache."""
    if isinstance(spec, str) and spec.startswith(HF_HUB_PREFIX):
        return download_from_hub(spec), None
    if isinstance(spec, str) and spec in PRETRAINED and not Path(spec).exists():
        entry = PRETRAINED[spec]
        return locate(entry), entry
    return Path(spec).expanduser(), None


def check_layout(entry: PretrainedEntry, state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse a state dict whose keys or shapes differ from the entry's layout."""
    expected = entry.expected_shapes()
    got = {k: list(v.shape) for k, v in state_dict.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys {missing[:5]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys {unexpected[:5]}")
    if wrong:
        shown = ", ".join(f"{k}: file {got[k]} vs release {expected[k]}" for k in wrong[:5])
        parts.append(f"{len(wrong)} shape mismatches ({shown})")
    raise PretrainedError(path, f"is not the {entry.name} checkpoint: {'; '.join(parts)}")


def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> ``(repo_id, revision)``."""
    repo, _, revision = spec[len(HF_HUB_PREFIX) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{spec!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo, revision or None


def download_from_hub(spec: str) -> Path:
    """The local folder of a Hub model (downloaded into huggingface_hub's cache if needed and allowed)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, revision = parse_hub_id(spec)
    try:
        paths = [Path(hf_hub_download(repo, name, revision=revision)) for name in HUB_FILES]
    except LocalEntryNotFoundError as e:
        raise PretrainedError(
            spec, f"not in the local Hugging Face cache and the Hub cannot be reached ({e})"
        ) from e
    except Exception as e:  # the Hub's own errors (no such repo/file, auth, HTTP) say what is wrong
        raise PretrainedError(
            spec, f"cannot be fetched from the Hugging Face Hub ({type(e).__name__}: {e})"
        ) from e
    return paths[-1].parent


_CARD = """
# {name}

An [EmotionCLIP](https://github.com/Xeaver/EmotionCLIP) model (Zhang, Pan & Wang, *Learning Emotion
Representations from Verbal and Nonverbal Communication*, CVPR 2023), saved by the `emotionclip`
package.

- backbone: {backbone} ({vision_layers}-layer ViT, patch {patch}, {image_size} px; {text_layers}-layer text tower)
- temporal head: {temporal_fusion} ({head_layers} layers) over {video_len} frames
- preprocessing (`preprocessor_config.json`): short side {resize} ({interpolation}), centre crop {crop},
  mean {mean}, std {std}; person boxes with score > {box_score_threshold} make the subject

```python
import emotionclip
model = emotionclip.load_model("hf-hub:ORG/NAME")
tf = emotionclip.model_transform(model)           # frames + subject masks -> model input
features = model.encode_video(video, video_mask)  # [B, T, 3, {crop}, {crop}] -> [B, {embed_dim}]
```
"""


def model_card(config: Any, name: str = "EmotionCLIP", license: str = "mit", extra_text: str = "") -> str:
    """A Hub model card (README.md with YAML metadata) describing ``config`` (an EmotionCLIPConfig)."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        library_name="emotionclip",
        license=license,
        tags=["emotionclip", "emotion-recognition", "video", "clip", "representation-learning"],
    )
    vision, text, pre = config.backbone["vision_cfg"], config.backbone["text_cfg"], config.preprocess
    body = _CARD.format(
        name=name,
        backbone=config.backbone_name or "CLIP",
        vision_layers=vision.get("layers"),
        patch=vision.get("patch_size"),
        image_size=vision.get("image_size"),
        text_layers=text.get("layers"),
        temporal_fusion=config.temporal_fusion,
        head_layers=config.head_layers,
        video_len=config.video_len,
        resize=pre.resize,
        interpolation=pre.interpolation,
        crop=pre.crop_size,
        mean=list(pre.mean),
        std=list(pre.std),
        box_score_threshold=pre.box_score_threshold,
        embed_dim=config.backbone["embed_dim"],
    )
    return f"---\n{data.to_yaml()}\n---\n{body}{extra_text}"
