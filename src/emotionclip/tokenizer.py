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


TRUNCATIONS = ("eot", "release")


def tokenize(
    texts: str | Sequence[str], context_length: int = 77, truncation: str = "eot"
) -> torch.LongTensor:
    """Tokenize one string or a list of strings into ``LongTensor[N, context_length]``.

    Texts longer than the context: ``truncation="eot"`` cuts them and keeps EOT as the last token,
    as CLIP does; ``"release"`` keeps the first ``context_length`` tokens with no EOT, as the
    release's (older open_clip) tokenizer did, so the text feature, read at the highest token id,
    comes from whichever word has it.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("tokenize expects a string or a sequence of strings")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    tok = get_tokenizer(context_length)
    if truncation == "eot":
        return tok(list(texts), context_length=context_length)
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = ([tok.sot_token_id] + tok.encode(text) + [tok.eot_token_id])[:context_length]
        result[i, : len(ids)] = torch.tensor(ids)
    return result


def check_tokens(
    tokens: torch.Tensor, vocab_size: int, context_length: int = 77, check_ids: bool = True
) -> None:
    """Refuse what is not ``int[B, context_length]`` with ids in ``[0, vocab_size)``.

    The id range check reads the tensor's values (a host sync on an accelerator), so it is
    optional; shape and dtype checks are free.
    """
    if (
        not isinstance(tokens, torch.Tensor)
        or tokens.ndim != 2
        or tokens.dtype not in (torch.int64, torch.int32)
    ):
        got = (
            f"{tokens.dtype} {list(tokens.shape)}"
            if isinstance(tokens, torch.Tensor)
            else type(tokens).__name__
        )
        raise ValueError(f"tokens must be an integer tensor [B, L], got {got}")
    if tokens.shape[1] != context_length:
        raise ValueError(f"tokens must have length {context_length}, got {tokens.shape[1]}")
    if check_ids and tokens.numel():
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"token ids must be in [0, {vocab_size}) for this model's vocabulary, got range [{lo}, {hi}]"
            )
