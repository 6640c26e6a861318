"""Punctuation restoration with a Hugging Face token-classification model, as a segmenter step.

The release ran ``oliverguhr/fullstop-punctuation-multilang-large`` (through
``deepmultilingualpunctuation``) over each transcript before splitting it at ``.``: every word gets one
of the model's labels (``0`` none, ``.``, ``,``, ``?``, ``-``, ``:``). This module does the same with
``transformers`` directly: words in chunks of 230 with an overlap of 5, a word labelled by its last
sub-token. The model is loaded on first use (so a segmenter pickled into worker processes stays small).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

RELEASE_PUNCTUATION_MODEL = "oliverguhr/fullstop-punctuation-multilang-large"
_CHUNK, _OVERLAP = 230, 5  # deepmultilingualpunctuation's chunking
# deepmultilingualpunctuation's preprocess: marks go, except inside numbers (3.5, 10,000)
RELEASE_MARKS = re.compile(r"(?<!\d)[.,;:!?](?!\d)")


def release_words(text: str) -> list[str]:
    """Words as the release feeds them to the punctuation model (marks removed)."""
    return RELEASE_MARKS.sub("", text).split()


class PunctuationRestorer:
    """``labels(words)``: one punctuation label per word, from a token-classification model
    (HF hub name, or a local folder holding its config, weights and tokenizer)."""

    def __init__(self, model_name: str = RELEASE_PUNCTUATION_MODEL, device: str = "cpu"):
        self.model_name = model_name
        self.device = device
        self._model = self._tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def load(self) -> PunctuationRestorer:
        """Load the model now (``prepare`` does, so a wrong name fails before any video is read)."""
        if self._model is not None:
            return self
        try:
            from transformers import AutoModelForTokenClassification, AutoTokenizer
        except ImportError as e:
            raise ValueError(
                f"{self.model_name}: punctuation restoration needs transformers ({e}); "
                "pip install 'emotionclip[hf]'"
            ) from e

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self._model = AutoModelForTokenClassification.from_pretrained(self.model_name)
        except OSError as e:
            raise ValueError(f"{self.model_name}: cannot load the punctuation model ({e})") from e
        if not self._tokenizer.is_fast:
            raise ValueError(f"{self.model_name}: needs a fast tokenizer (word alignment)")
        self._model.eval().to(self.device)
        return self

    def labels(self, words: Sequence[str]) -> list[str]:
        if not words:
            return []
        self.load()
        out: list[str] = []
        step = _CHUNK - _OVERLAP
        for begin in range(0, len(words), step):
            chunk = list(words[begin : begin + _CHUNK])
            last = begin + _CHUNK >= len(words)
            # the overlap's words are labelled by the next chunk, which sees what follows them
            out += self._chunk_labels(chunk)[: len(chunk) if last else step]
            if last:
                break
        return out

    def _chunk_labels(self, words: list[str]) -> list[str]:
        import torch

        enc = self._tokenizer(words, is_split_into_words=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self._model(**{k: v.to(self.device) for k, v in enc.items()}).logits[0]
        predicted = logits.argmax(-1).tolist()
        id2label = self._model.config.id2label
        labels = ["0"] * len(words)  # words cut off by truncation get no mark
        for token, word in enumerate(enc.word_ids(0)):
            if word is not None:
                labels[word] = str(id2label[predicted[token]])  # the last sub-token wins
        return labels


class PunctuatedSegmenter:
    """A word segmenter (``subtitles.Segmenter``) run on words whose punctuation a model restored first."""

    def __init__(self, inner: Callable, model: str | PunctuationRestorer):
        self.inner = inner
        self.punctuation = PunctuationRestorer(model) if isinstance(model, str) else model

    @property
    def name(self) -> str:
        return f"{getattr(self.inner, 'name', type(self.inner).__name__)}+{self.punctuation.model_name}"

    def __call__(self, words: Sequence) -> list[list]:
        bare = [(w, " ".join(t)) for w in words if (t := release_words(w.text))]
        labels = self.punctuation.labels([t for _, t in bare])
        marked = [replace(w, text=t + (label if label != "0" else "")) for (w, t), label in zip(bare, labels)]
        return self.inner(marked)
