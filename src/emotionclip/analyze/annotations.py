"""Per-person emotions for the tools people annotate and watch with: ELAN ``.eaf`` and WebVTT ``.vtt``.

Windows overlap (2 s long, 1 s apart by default), annotations on a tier may not, so each window
owns the stretch of time closest to its centre, as on the report's timeline: from halfway to the
previous window's centre to halfway to the next one's (the first from its start, the last to its
end). ELAN: one tier per person (``person 1``, ``person 2``...), one annotation per window where
the person is scored, its value the top emotion. WebVTT: one cue per window with anyone scored,
a line per person (``person 1: joy 0.42``), shown by any player beside the subtitles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..heads import NO_DOMINANT, NO_DOMINANT_TEXT
from .analyze import person_rows, union_rows


def window_spans(table: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """window -> (from, to) seconds it owns: the time closest to its centre."""
    union = union_rows(table)
    starts, ends = union["start"].to_numpy(float), union["end"].to_numpy(float)
    centres = (starts + ends) / 2
    cuts = np.r_[starts[:1], (centres[1:] + centres[:-1]) / 2, ends[-1:]] if len(starts) else []
    return {int(w): (float(cuts[i]), float(cuts[i + 1])) for i, w in enumerate(union["window"])}


def _mimetype(media: str) -> str:
    import mimetypes

    return mimetypes.guess_type(media)[0] or "video/*"


def _label(top) -> str:
    return NO_DOMINANT_TEXT if top == NO_DOMINANT else str(top)


def tier_name(person: int) -> str:
    return f"person {person}"


def eaf_document(table: pd.DataFrame, media: str | None = None, relative: str | None = None):
    """A ``pympi.Elan.Eaf``: one tier per person, one annotation (the top emotion) per scored window.
    ``media``: the video's absolute ``file:`` URL; ``relative``: its path from the ``.eaf``."""
    from pympi.Elan import Eaf

    eaf = Eaf(author="emotionclip")
    eaf.remove_tier("default")  # pympi starts every document with one; only persons are wanted
    if media:  # ELAN tries the absolute URL, then the relative one (a moved folder still finds it)
        rel = None if relative is None or ":" in relative else "./" + relative
        eaf.add_linked_file(media, relpath=rel, mimetype=_mimetype(media))
    spans = window_spans(table)
    people = person_rows(table)
    for person in sorted(set(people["person"].tolist())):
        name = tier_name(person)
        eaf.add_tier(name)
        for r in people[people["person"] == person].itertuples(index=False):
            a, b = spans[int(r.window)]
            eaf.add_annotation(name, round(a * 1000), round(b * 1000), _label(r.top_emotion))
    return eaf


def eaf_bytes(table: pd.DataFrame, media: str | None = None, relative: str | None = None) -> bytes:
    """:func:`eaf_document` as the bytes of an ``.eaf`` file, rendered by pympi (``to_adocument``) in
    memory: pympi's own writer renames an existing file to ``.bak``, ours writes atomically."""
    from xml.etree import ElementTree

    from pympi.Elan import to_adocument

    return ElementTree.tostring(
        to_adocument(eaf_document(table, media, relative)), encoding="UTF-8", xml_declaration=True
    )


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def vtt_text(table: pd.DataFrame, classes) -> str:
    """A WebVTT track: a cue per window with anyone scored, a line per person with its top emotion."""
    spans = window_spans(table)
    people = person_rows(table)
    cues = ["WEBVTT", ""]
    for window, rows in people.groupby("window", sort=True):
        a, b = spans[int(window)]
        lines = []
        for r in rows.sort_values("person").itertuples(index=False):
            top = r.top_emotion
            score = f" {getattr(r, top):.2f}" if top in classes and top != NO_DOMINANT else ""
            lines.append(f"{tier_name(int(r.person))}: {_label(top)}{score}")
        cues += [f"{_timestamp(a)} --> {_timestamp(b)}", *lines, ""]
    return "\n".join(cues)
