"""Subtitles → timed sentences.

Parsing is the core's (:mod:`emotionclip.subtitles`: SRT, WebVTT, YouTube transcript JSON,
BOM-marked UTF-8/16/32); here: cue validation, markup
stripping, non-speech cue removal, and regrouping: each cue's duration is spread evenly over its
words (the release's word timing), words are regrouped into sentences by a pluggable segmenter, and
a sentence spans its first word's start to its last word's end.

Segmenters (``get_segmenter``): ``release`` reproduces the release's
``preprocessing/regroup_transcripts.py`` (split only at ``.``, punctuation removed, optionally with a
punctuation-restoration model, see :mod:`.punctuation`); the default ``rules`` also splits at
``!?…`` and long pauses and cuts long runs, so unpunctuated auto-captions still give sentences.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import registry
from ..subtitles import Cue, unreadable_char
from .punctuation import RELEASE_MARKS, PunctuatedSegmenter, PunctuationRestorer, release_words


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    cue_start: bool = False  # first word of a cue: a natural place to cut unpunctuated text


@dataclass(frozen=True)
class Sentence:
    start: float
    end: float
    text: str

    @property
    def duration(self) -> float:
        return self.end - self.start


# ---------------------------------------------------------------- validation

MAX_CUE_SECONDS = 60.0  # longer is a broken timestamp (99:59:59), not a subtitle
MAX_WORDS_PER_SECOND = 10.0  # faster than anyone speaks: a pasted text, not a timed cue
_RATE_MIN_WORDS = 20  # short cues (a flash of "Yes no yes") may be fast


def cue_problem(cue: Cue, video_duration: float | None = None) -> tuple[str, str] | None:
    """``(kind, message)`` saying why a cue cannot be timed or read, or None if it is usable."""
    if math.isnan(cue.start) or math.isnan(cue.end) or math.isinf(cue.start):
        return "not_a_number", f"time is not a number (start {cue.start}, end {cue.end})"
    if cue.start < 0:
        return "negative_time", f"negative start time ({cue.start:g} s)"
    if cue.end < cue.start:
        return "end_before_start", f"ends before it starts ({cue.start:g} s -> {cue.end:g} s)"
    seconds = cue.end - cue.start
    if math.isfinite(seconds) and seconds > MAX_CUE_SECONDS:
        return "too_long", f"lasts {seconds:g} s (over {MAX_CUE_SECONDS:g} s: a broken timestamp?)"
    if any(map(unreadable_char, cue.text)):
        return "unreadable", "unreadable characters (binary data?)"
    if video_duration is not None:
        seconds = min(cue.end, video_duration) - cue.start
    words = len(cue.text.split())
    if seconds > 0 and words >= _RATE_MIN_WORDS and words > MAX_WORDS_PER_SECOND * max(seconds, 1.0):
        return "too_many_words", f"{words} words in {seconds:.1f} s (faster than speech: not a timed cue)"
    return None


def validate_cues(
    cues: Sequence[Cue], video_duration: float | None, stats: Counter, where: str = "subtitles"
) -> tuple[list[Cue], list[str]]:
    """The usable cues, and one message per bad cue (``WHERE: cue K at T s: problem``).

    ``stats`` counts bad cues by kind (``bad_cue_<kind>``), so the manifest and summary show them.
    """
    good, problems = [], []
    for k, c in enumerate(cues):
        found = cue_problem(c, video_duration)
        if found is None:
            good.append(c)
            continue
        stats[f"bad_cue_{found[0]}"] += 1
        problems.append(f"{where}: cue {k + 1} at {c.start:g} s: {found[1]}")
    return good, problems


# ---------------------------------------------------------------- cleaning

_TAG = re.compile(r"</?[a-zA-Z][^>]*>|<\d[\d:.]*>")  # <i>, <c.yellow>, <v Bob>, <00:00:01.000>
_ASS_OVERRIDE = re.compile(r"\{\\[^}]*\}")  # {\an8}, {\i1}
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")  # [Music], (laughs), *sighs*
_MUSIC = re.compile(r"[♪♫♬#]+")
_SPEAKER_DASH = re.compile(r"^\s*[-–—]+\s*")  # dialogue dash at the start of a line
_SPEAKER_LABEL = re.compile(r"^\s*(?:>>+\s*)?(?:[A-Z][A-Z0-9 .'\-]{0,30}:\s+)?")  # ">> BOB: hi"
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Spoken words of a cue: markup, speaker marks and non-speech annotations removed."""
    text = html.unescape(_ASS_OVERRIDE.sub("", _TAG.sub("", text.replace("\\N", "\n"))))
    text = _MUSIC.sub(" ", _NON_SPEECH.sub(" ", text))
    lines = [_SPEAKER_LABEL.sub("", _SPEAKER_DASH.sub("", line)) for line in text.splitlines()]
    return _SPACES.sub(" ", " ".join(lines)).strip(" -–—")


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def clean_cues(cues: Sequence[Cue]) -> list[Cue]:
    """Clean and order cues so that regrouping is well defined.

    Non-speech cues are dropped; cues are sorted by time; YouTube's rolling captions (each cue
    repeating the previous one's line) lose the repeat; cues starting together are merged; a
    cue overlapping the next one is cut where the next one starts, so word times never run back.
    """
    kept = []
    for c in cues:
        text = clean_text(c.text)
        if _has_words(text) and c.end > c.start:
            kept.append(Cue(float(c.start), float(c.end), text))
    kept.sort(key=lambda c: (c.start, c.end))
    out: list[Cue] = []
    for c in kept:
        if out:
            prev = out[-1]
            text = c.text
            if text.startswith(prev.text) and c.start < prev.end + 0.05:  # rolling caption
                text = text[len(prev.text) :].strip()
                if not text:
                    out[-1] = Cue(prev.start, max(prev.end, c.end), prev.text)
                    continue
                c = Cue(max(c.start, prev.end), max(c.end, prev.end + 1e-3), text)
            if abs(c.start - prev.start) < 1e-3:
                out[-1] = Cue(prev.start, max(prev.end, c.end), f"{prev.text} {c.text}")
                continue
            if prev.end > c.start:
                out[-1] = Cue(prev.start, c.start, prev.text)
        out.append(c)
    return out


def cues_to_words(cues: Sequence[Cue]) -> list[Word]:
    """Each cue's duration spread evenly over its words (the release's word timing)."""
    words: list[Word] = []
    for c in cues:
        tokens = c.text.split()
        step = (c.end - c.start) / len(tokens)
        words += [
            Word(tok, c.start + k * step, c.start + (k + 1) * step, cue_start=k == 0)
            for k, tok in enumerate(tokens)
        ]
    return words


# ---------------------------------------------------------------- segmentation

Segmenter = Callable[[Sequence[Word]], list[list[Word]]]

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*$")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "prof.", "e.g.", "i.e.", "etc."}


def ends_sentence(word: str) -> bool:
    return bool(_SENTENCE_END.search(word)) and word.lower() not in _ABBREVIATIONS


class RuleSegmenter:
    """Offline sentence segmenter.

    Splits after sentence-ending punctuation (the release's rule); with ``pause`` set, also at
    silences of at least ``pause`` seconds between words; with ``max_duration`` set, a group still
    longer than that is cut at its best boundary (longest silence, then a cue start, then a comma,
    nearest the middle) until every piece fits. Unpunctuated auto-captions thus become
    pause-delimited phrases of trainable length instead of one long run that the clip filter drops.
    ``RuleSegmenter(pause=None, max_duration=None)`` is the release's punctuation-only rule.
    """

    def __init__(self, pause: float | None = 1.5, max_duration: float | None = 10.0):
        self.pause = pause
        self.max_duration = max_duration

    def __call__(self, words: Sequence[Word]) -> list[list[Word]]:
        groups: list[list[Word]] = []
        current: list[Word] = []
        for k, w in enumerate(words):
            if current and self.pause is not None and w.start - current[-1].end >= self.pause:
                groups.append(current)
                current = []
            current.append(w)
            if ends_sentence(w.text) or k == len(words) - 1:
                groups.append(current)
                current = []
        if self.max_duration is None:
            return groups
        return [piece for g in groups for piece in self._fit(g)]

    def _fit(self, group: list[Word]) -> list[list[Word]]:
        if len(group) < 2 or group[-1].end - group[0].start <= self.max_duration:
            return [group]
        mid = (group[0].start + group[-1].end) / 2
        span = group[-1].end - group[0].start

        def score(k: int) -> float:  # boundary before word k
            gap = group[k].start - group[k - 1].end
            cue = 0.2 if group[k].cue_start else 0.0
            comma = 0.1 if group[k - 1].text.endswith((",", ";", ":")) else 0.0
            return gap + cue + comma - 0.15 * abs(group[k].start - mid) / span

        cut = max(range(1, len(group)), key=score)
        return self._fit(group[:cut]) + self._fit(group[cut:])


# ---------------------------------------------------------------- the release's regrouping


def _given_labels(text: str) -> list[str]:
    """One punctuation label per :func:`release_words` word, read from the text's own marks: what the
    restoration model would predict if the subtitles' punctuation is right (``"0"``: none)."""
    labels: list[str] = []
    for token in text.split():
        stripped = RELEASE_MARKS.sub("", token)
        tail = re.search(r"([.,;:!?])\W*$", token)
        mark = tail.group(1) if tail else "0"  # "2020." ends a sentence, though its "." stays (a number)
        if not stripped:  # a lone "..." or "?" belongs to the word before
            if labels and mark != "0":
                labels[-1] = mark
            continue
        labels.append(mark)
    return labels


def format_markup_free(text: str) -> str:
    """Only what a subtitle *format* adds (tags, ASS overrides, entities, ``\\N``); the release read
    YouTube transcripts, which have none, and kept everything else (``[Music]``, dashes) as words."""
    return html.unescape(_ASS_OVERRIDE.sub("", _TAG.sub("", text.replace("\\N", "\n"))))


class ReleaseSegmenter:
    """The release's ``preprocessing/regroup_transcripts.py`` regrouping.

    Each cue ends at ``min(start + duration, next cue's start)`` (cues in file order); its duration
    is spread evenly over its words; every word gets a punctuation label: predicted by ``punctuation``
    (a :class:`~emotionclip.prepare.punctuation.PunctuationRestorer`, as the release did with
    ``oliverguhr/fullstop-punctuation-multilang-large``) or, without one, read from the subtitles'
    own marks. A sentence is the words after one ``.`` up to and including the next: the words
    before the first and after the last ``.`` are dropped. Its text is the words without their
    marks (those inside numbers stay); sentences containing ``[`` are dropped.
    """

    def __init__(self, punctuation=None):
        if isinstance(punctuation, str):
            punctuation = PunctuationRestorer(punctuation)
        self.punctuation = punctuation

    @property
    def name(self) -> str:
        model = getattr(self.punctuation, "model_name", None)
        return f"release:{model}" if model else "release"

    def sentences(self, cues: Sequence[Cue]) -> list[Sentence]:
        words, labels = [], []
        for k, c in enumerate(cues):
            end = c.end if k == len(cues) - 1 else min(c.end, cues[k + 1].start)
            text = format_markup_free(c.text)
            tokens = release_words(text)
            if not tokens:
                continue
            step = (end - c.start) / len(tokens)
            words += [Word(t, c.start + i * step, c.start + (i + 1) * step) for i, t in enumerate(tokens)]
            labels += _given_labels(text)
        if self.punctuation is not None:
            labels = self.punctuation.labels([w.text for w in words])
        ends = [i for i, label in enumerate(labels) if label == "."]
        groups = [words[a + 1 : b + 1] for a, b in zip(ends, ends[1:])]
        return [s for s in words_to_sentences(groups) if "[" not in s.text]


_SEGMENTERS: dict[str, Callable[..., object]] = {
    "default": RuleSegmenter,
    "rules": RuleSegmenter,
    "punctuation": lambda: RuleSegmenter(pause=None, max_duration=None),
    "release": ReleaseSegmenter,  # release:MODEL restores punctuation with MODEL first
}


def get_segmenter(name: str | Segmenter = "default", punctuation: str | None = None) -> Segmenter:
    """A segmenter by name: ``default`` / ``rules`` (:class:`RuleSegmenter`), ``punctuation`` (split at
    sentence marks only), ``release`` or ``release:MODEL`` (:class:`ReleaseSegmenter`), or
    ``py:module:factory``. ``punctuation`` names a token-classification model (HF hub name or local
    folder) that restores punctuation before segmenting."""
    if not isinstance(name, str):  # a segmenter already
        return name
    if punctuation and name in ("release", "default", "rules", "punctuation"):
        if name == "release":
            return ReleaseSegmenter(punctuation)
        return PunctuatedSegmenter(get_segmenter(name), punctuation)
    try:
        return registry.resolve("segmenter", name, _SEGMENTERS)
    except ValueError as e:
        raise ValueError(f"{e} (e.g. default, punctuation, release, release:MODEL)") from None


def words_to_sentences(groups: Sequence[Sequence[Word]]) -> list[Sentence]:
    return [Sentence(g[0].start, g[-1].end, " ".join(w.text for w in g)) for g in groups if g]


def cues_to_sentences(cues: Sequence[Cue], segmenter: str | Segmenter = "default") -> list[Sentence]:
    """Regroup cues into sentences: a segmenter with a ``sentences(cues)`` method (the release's)
    takes the cues as they are; a word segmenter gets cleaned cues' evenly timed words."""
    segmenter = get_segmenter(segmenter)
    if hasattr(segmenter, "sentences"):
        return segmenter.sentences(cues)
    words = cues_to_words(clean_cues(cues))
    return words_to_sentences(segmenter(words))
