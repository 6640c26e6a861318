"""Text tokenization: open_clip's CLIP byte-pair tokenizer (SOT 49406, EOT 49407, 77 tokens)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

_TOKENIZER: SimpleTokenizer | None = None


def get_tokenizer(context_length: int = 77) -> SimpleTokenizer:
    global _TOKENIZER
    if _TOKENIZER is None or _TOKENIZER.context_length != context_length:
        _TOKENIZER = SimpleTokenizer(context_length=context_length)
    return _TOKENIZER


def tokenize(texts: str | Sequence[str], context_length: int = 77) -> torch.LongTensor:
    """Tokenize one string or a list of strings into ``LongTensor[N, context_length]``.

    Texts longer than the context are truncated with EOT kept as the last token, as CLIP does.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("tokenize expects a string or a sequence of strings")
    return get_tokenizer(context_length)(list(texts), context_length=context_length)
