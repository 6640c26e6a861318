"""The part of an evaluation split over processes that completes the set assembles the splits and fits the probes."""

from __future__ import annotations

import logging

from ..jobs import Part
from .features import assemble_parts, cached_split

logger = logging.getLogger(__name__)


def finish_part(this: Part, feats, splits, protocol, cache, checkpoint, ckpt_sha, json_path, probe) -> dict:
    """Assemble the splits whose parts are all there; fit the probes if this process completed the
    set (or, every feature cached when it started, as part 0 or where no metrics were written)."""
    cached_at_start = all(f is not None for f in feats.values())
    completed = False
    pending: dict[str, list[str]] = {}
    for name, sp in splits.items():
        if feats[name] is None:  # another part may have assembled it meanwhile
            feats[name] = cached_split(sp, protocol, cache, ckpt_sha)
        if feats[name] is None:
            feats[name], missing = assemble_parts(sp, protocol, cache, checkpoint, this.count, ckpt_sha)
            completed = completed or not missing
            if missing:
                pending[name] = missing
    dataset = next(iter(splits.values())).dataset
    if pending:
        logger.info(
            "%s %s: features written; waiting for %s; the last part to finish fits the probes",
            dataset,
            this.name,
            "; ".join(f"{split}: {', '.join(parts)}" for split, parts in pending.items()),
        )
        return {"dataset": dataset, "part": this.name, "pending": pending}
    if completed or not json_path.exists() or (cached_at_start and this.index == 0):
        return probe(feats)
    logger.info(
        "%s %s: every feature is cached; %s",
        dataset,
        this.name,
        "part 0 fits the probes" if cached_at_start else f"the part that completed the set wrote {json_path}",
    )
    return {"dataset": dataset, "part": this.name, "pending": {}}
