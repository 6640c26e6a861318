"""Sentence sentiment as 7-class logits in ``emotionclip.SENTIMENT_CLASSES`` order.

* ``"default"``: a TF-IDF (word 1-2-grams + character 2-5-grams) logistic regression trained on
  GoEmotions by ``scripts/train_sentiment.py``, temperature-scaled on its dev split (the temperature
  is folded into the weights), shipped as plain arrays in ``assets/sentiment_goemotions.npz`` (no
  pickle; accuracy and calibration in the README and in the artefact's ``config``).
  Any other ``.npz`` written by that script loads the same way (pass its path).
* any other name: a Hugging Face ``transformers`` text-classification model, by hub name or local
  directory (the paper used ``j-hartmann/emotion-english-distilroberta-base``); its labels must be
  exactly our seven classes, in any order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer

from . import registry
from .constants import ASSETS, SENTIMENT_CLASSES

logger = logging.getLogger(__name__)

DEFAULT_ARTEFACT = ASSETS / "sentiment_goemotions.npz"
NEUTRAL = SENTIMENT_CLASSES.index("neutral")
ARTEFACT_KEYS = ("config", "word_vocab", "word_idf", "char_vocab", "char_idf", "coef", "intercept")


def neutral_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of the neutral class, ``[N, 7]`` logits -> ``[N]``."""
    logits = np.asarray(logits, np.float64)
    z = np.exp(logits - logits.max(1, keepdims=True))
    return (z[:, NEUTRAL] / z.sum(1)).astype(np.float32)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("score() takes a list of strings")
    return list(texts)


class SentimentScorer:
    """Scores sentences. Subclasses set ``name`` and implement :meth:`score`."""

    name: str = "abstract"
    classes = SENTIMENT_CLASSES

    def score(self, texts: list[str]) -> np.ndarray:
        """``texts`` -> float32 logits ``[N, 7]`` in ``SENTIMENT_CLASSES`` order."""
        raise NotImplementedError

    def neutral_probability(self, texts: list[str]) -> np.ndarray:
        return neutral_probability(self.score(texts))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ---------------------------------------------------------------------------------------------------
# shipped default: TF-IDF + logistic regression as plain arrays


def pack_strings(strings: list[str]) -> np.ndarray:
    """A vocabulary as one uint8 array (UTF-8, newline separated): compact and pickle-free in .npz."""
    if any("\n" in s for s in strings):
        raise ValueError("vocabulary entries may not contain newlines")
    return np.frombuffer("\n".join(strings).encode("utf-8"), np.uint8)


def unpack_strings(packed: np.ndarray) -> list[str]:
    return packed.tobytes().decode("utf-8").split("\n") if packed.size else []


def _tfidf(counts: sp.csr_matrix, idf: np.ndarray, sublinear: bool) -> sp.csr_matrix:
    """sklearn's TfidfTransformer(sublinear_tf, norm='l2') on a count matrix, with a fixed idf."""
    x = counts.astype(np.float64).tocsr()
    if sublinear:
        np.log(x.data, out=x.data)
        x.data += 1.0
    x.data *= idf[x.indices]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, np.diff(x.indptr))
    return x


class TfidfSentimentScorer(SentimentScorer):
    """Word + char TF-IDF logistic regression stored as arrays (``scripts/train_sentiment.py``)."""

    def __init__(self, path: str | Path = DEFAULT_ARTEFACT):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: sentiment model artefact not found")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: not a readable .npz sentiment artefact ({e})") from e
        missing = [k for k in ARTEFACT_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"{self.path}: sentiment artefact lacks {missing}")
        self.config = json.loads(arrays["config"].tobytes().decode("utf-8"))
        if tuple(self.config.get("classes", ())) != SENTIMENT_CLASSES:
            raise ValueError(f"{self.path}: classes {self.config.get('classes')} != {SENTIMENT_CLASSES}")
        cfg = self.config["features"]
        self.word = CountVectorizer(
            vocabulary=unpack_strings(arrays["word_vocab"]),
            ngram_range=tuple(cfg["word_ngram_range"]),
            token_pattern=cfg["word_token_pattern"],
            lowercase=True,
        )
        self.char = CountVectorizer(
            vocabulary=unpack_strings(arrays["char_vocab"]),
            analyzer="char_wb",
            ngram_range=tuple(cfg["char_ngram_range"]),
            lowercase=True,
        )
        self.sublinear = bool(cfg["sublinear_tf"])
        self.word_idf = arrays["word_idf"].astype(np.float64)
        self.char_idf = arrays["char_idf"].astype(np.float64)
        self.coef = arrays["coef"].astype(np.float32)  # [7, V_word + V_char]
        self.intercept = arrays["intercept"].astype(np.float32)
        n_feat = len(self.word.vocabulary) + len(self.char.vocabulary)
        if self.coef.shape != (len(SENTIMENT_CLASSES), n_feat) or self.intercept.shape != (
            len(SENTIMENT_CLASSES),
        ):
            raise ValueError(
                f"{self.path}: coef {self.coef.shape} does not fit {n_feat} features x 7 classes"
            )
        self.name = f"tfidf-lr:{self.path.name}"

    def features(self, texts: list[str]) -> sp.csr_matrix:
        texts = _check_texts(texts)
        word = _tfidf(self.word.transform(texts), self.word_idf, self.sublinear)
        char = _tfidf(self.char.transform(texts), self.char_idf, self.sublinear)
        return sp.hstack([word, char], format="csr")

    def score(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, len(SENTIMENT_CLASSES)), np.float32)
        x = self.features(texts).astype(np.float32)
        return np.asarray(x @ self.coef.T + self.intercept, np.float32)


# ---------------------------------------------------------------------------------------------------
# Hugging Face transformers models


class HFSentimentScorer(SentimentScorer):
    """A ``transformers`` sequence-classification model whose labels are our seven classes.

    Sentences are padded and truncated to ``max_length`` = 77 tokens, as the release computes its
    sentiment logits (``preprocessing/get_sentiment_logits.py``); the attention mask hides the padding.
    """

    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 32, max_length: int = 77):
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as e:
            raise ImportError(
                f"sentiment model {name_or_path!r} needs transformers (pip install 'emotionclip[hf]')"
            ) from e
        local = Path(name_or_path).expanduser()
        if not local.exists() and (
            local.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
        ):
            raise FileNotFoundError(
                f"{name_or_path}: no such model directory (and not a hub name 'org/model')"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{name_or_path}: could not load a transformers text classifier ({e})") from e
        labels = {str(v).strip().lower(): int(k) for k, v in model.config.id2label.items()}
        if set(labels) != set(SENTIMENT_CLASSES) or len(model.config.id2label) != len(SENTIMENT_CLASSES):
            raise ValueError(
                f"{name_or_path}: model labels {sorted(labels)} are not the 7 classes {list(SENTIMENT_CLASSES)}"
            )
        self.order = torch.tensor([labels[c] for c in SENTIMENT_CLASSES])
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"hf:{name_or_path}"

    @torch.inference_mode()
    def score(self, texts: list[str]) -> np.ndarray:
        texts = _check_texts(texts)
        out = [np.zeros((0, len(SENTIMENT_CLASSES)), np.float32)]
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                padding="max_length",
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**enc).logits[:, self.order.to(self.device)]
            out.append(logits.float().cpu().numpy())
        return np.concatenate(out)


def get_sentiment_scorer(name: str = "default", device: str = "cpu", **kw) -> SentimentScorer:
    """``"default"`` (shipped GoEmotions model), a path to a ``.npz`` from ``scripts/train_sentiment.py``,
    ``py:package.module:factory`` (a user's scorer), or a transformers model (hub name or local directory)."""
    if name.startswith(registry.PLUGIN_PREFIX):
        return registry.load_plugin(name)(**kw)
    if name == "default":
        return TfidfSentimentScorer(DEFAULT_ARTEFACT)
    if name.endswith(".npz"):
        return TfidfSentimentScorer(name)
    return HFSentimentScorer(name, device=device, **kw)
