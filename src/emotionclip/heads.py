"""Prediction heads on EmotionCLIP features, shared by evaluate (which fits them) and analyze (which
applies them): the zero-shot classifier built from prompts and the saved linear probe head.

Zero-shot: ``scores = softmax(exp(logit_scale) * normalize(visual) @ classifier.T)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ._io import atomic_dir
from .constants import EMOTIC_CATEGORIES, SENTIMENT_CLASSES
from .runner import as_runner
from .tokenizer import tokenize

KINDS = ("ovr", "multinomial", "ridge")
HEAD_WEIGHTS, HEAD_CONFIG = "head.safetensors", "head.json"

# the 7 classes of the paper's sentiment teacher (emotionclip.SENTIMENT_CLASSES) and Emotic's 26
VOCABULARIES = {
    "basic": SENTIMENT_CLASSES,
    "emotic": EMOTIC_CATEGORIES,
}
DEFAULT_TEMPLATES = (
    "a person feeling {}.",
    "a person expressing {}.",
    "a video of a person feeling {}.",
    "a photo of a person showing {}.",
    "someone who feels {}.",
    "the emotion of this person is {}.",
)


# A top class is named only when its probability beats the runner-up's by this much; below
# it the scores carry no choice between the two (a tiny or untrained model gives 1/K for every class)
# and the top is NO_DOMINANT, shown as "no dominant emotion", never a confident label.
DOMINANCE_MARGIN = 0.01
NO_DOMINANT = ""  # no class name can be empty (check_class_names), so it never collides
NO_DOMINANT_TEXT = "no dominant emotion"


def top_emotions(probs: np.ndarray, classes: Sequence[str], probabilities: bool = True) -> np.ndarray:
    """The top class per row (a window, an input), or NO_DOMINANT where it leads the second by less
    than DOMINANCE_MARGIN (probabilities only: a ridge probe's values have no common scale, so their
    argmax is kept)."""
    probs = np.asarray(probs, np.float64)
    tops = np.asarray(classes, dtype=object)[probs.argmax(1)]
    if probabilities and probs.shape[1] > 1:
        ranked = np.sort(probs, axis=1)
        tops[ranked[:, -1] - ranked[:, -2] < DOMINANCE_MARGIN] = NO_DOMINANT
    return tops


def check_head_or_classes(head=None, classes=None) -> None:
    """Features are scored by a linear-probe head or zero-shot over class names: one, never both."""
    if head is not None and classes:
        raise ValueError("give either --classes (zero-shot) or --head (linear probe), not both")


def check_class_names(classes: Sequence[str]) -> None:
    """At least one class, none blank, none twice (duplicates would split one class's probability)."""
    if not classes or any(not str(c).strip() for c in classes):
        raise ValueError(f"need one or more non-empty emotion class names, got {list(classes)}")
    twice = sorted({c for c in classes if list(classes).count(c) > 1})
    if twice:
        raise ValueError(f"class names given twice: {', '.join(twice)} (scores would no longer sum to 1)")


@torch.no_grad()
def zero_shot_classifier(
    model,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 256,
    device=None,
) -> torch.Tensor:
    """``[K, D]`` unit vectors: per class, the mean of its normalised prompt embeddings, renormalised.

    Encoded by a runner (:func:`emotionclip.runner.as_runner`: ``model`` may be one) in eval mode on
    ``device`` (default: the model's; another device encodes with a copy), so the caller's model is
    neither moved nor left in eval mode."""
    check_class_names(class_names)
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"every template needs a '{{}}' for the class name; bad: {bad or 'no templates'}")
    prompts = [t.format(c) for c in class_names for t in templates]
    tokens = tokenize(prompts)
    runner = as_runner(model, device)
    text = torch.cat(
        [runner.encode_text(tokens[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    )
    text = F.normalize(text, dim=-1).view(len(class_names), len(templates), -1).mean(1)
    return F.normalize(text, dim=-1)


def zero_shot_scores(features, classifier: torch.Tensor, logit_scale: float = 100.0) -> np.ndarray:
    """Class probabilities ``[N, K]`` for visual ``features`` ``[N, D]`` (normalised here)."""
    f = F.normalize(torch.as_tensor(features).detach().float().cpu(), dim=-1)
    return torch.softmax(logit_scale * f @ classifier.detach().float().cpu().T, dim=-1).numpy()


@dataclass
class ProbeHead:
    """``scores = f(features @ weight.T + bias)``; f = sigmoid (ovr), softmax (multinomial), identity (ridge).

    Features are L2-normalised before the linear map when ``normalize`` is set (the protocol's).
    ``weight`` / ``bias`` are float32 CPU tensors so that other stages can apply them directly.
    """

    kind: str
    weight: torch.Tensor  # [K, D]
    bias: torch.Tensor  # [K]
    classes: tuple[str, ...]
    normalize: bool = True
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"probe kind must be one of {KINDS}, not {self.kind!r}")
        self.weight = (
            torch.as_tensor(
                np.asarray(self.weight, np.float32) if not torch.is_tensor(self.weight) else self.weight
            )
            .float()
            .cpu()
        )
        self.bias = (
            torch.as_tensor(
                np.asarray(self.bias, np.float32) if not torch.is_tensor(self.bias) else self.bias
            )
            .float()
            .cpu()
        )
        self.classes = tuple(self.classes)
        if self.weight.ndim != 2 or tuple(self.bias.shape) != (self.weight.shape[0],):
            raise ValueError(
                f"probe weight {list(self.weight.shape)} and bias {list(self.bias.shape)} disagree"
            )
        if len(self.classes) != self.weight.shape[0]:
            raise ValueError(f"{len(self.classes)} class names for {self.weight.shape[0]} outputs")

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def decision(self, features) -> torch.Tensor:
        x = torch.as_tensor(features).detach().cpu().float()
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"probe expects features [N, {self.dim}], got {list(x.shape)}")
        if self.normalize:
            x = torch.nn.functional.normalize(x, dim=-1)
        return x @ self.weight.T + self.bias

    def predict(self, features) -> np.ndarray:
        """Scores ``[N, K]``: probabilities for the classifiers, values for ridge."""
        z = self.decision(features).double()
        if self.kind == "ovr":
            z = torch.sigmoid(z)
        elif self.kind == "multinomial":
            z = torch.softmax(z, dim=-1)
        return z.numpy()

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``head.safetensors`` + ``head.json`` into ``directory`` (atomically, as a whole)."""
        directory = Path(directory)
        with atomic_dir(directory, overwrite=overwrite) as tmp:
            save_file(
                {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(tmp / HEAD_WEIGHTS)
            )
            config = {
                "kind": self.kind,
                "classes": list(self.classes),
                "normalize": self.normalize,
                "meta": self.meta,
            }
            (tmp / HEAD_CONFIG).write_text(json.dumps(config, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ProbeHead:
        """The head saved in ``directory``; ``ValueError`` / ``FileNotFoundError`` (``"PATH: problem"``)
        for anything else, including weights that are not finite (they would give NaN scores)."""
        from safetensors import SafetensorError

        directory = Path(directory)
        if directory.is_file():
            raise ValueError(
                f"{directory}: is a file, not a probe head (give the folder `emotionclip evaluate` saved, "
                f"with {HEAD_WEIGHTS} and {HEAD_CONFIG})"
            )
        for name in (HEAD_WEIGHTS, HEAD_CONFIG):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory}: not a probe head (no {name})")
        try:
            config = json.loads((directory / HEAD_CONFIG).read_text())
            tensors = load_file(str(directory / HEAD_WEIGHTS))
            head = cls(
                config["kind"],
                tensors["weight"],
                tensors["bias"],
                tuple(config["classes"]),
                bool(config.get("normalize", True)),
                config.get("meta", {}),
            )
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, SafetensorError) as e:
            raise ValueError(f"{directory}: broken probe head ({e})") from e
        bad = int((~torch.isfinite(head.weight)).sum() + (~torch.isfinite(head.bias)).sum())
        if bad:
            raise ValueError(
                f"{directory / HEAD_WEIGHTS}: {bad} weight(s) are NaN or infinite (a diverged fit?); "
                "its scores would be meaningless"
            )
        return head
