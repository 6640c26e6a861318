"""Subtitles → timed sentences.

Parsing (SRT, WebVTT, YouTube transcript JSON), markup stripping, non-speech cue removal, and the
release's regrouping: each cue's duration is spread evenly over its words, words are regrouped into
sentences by a pluggable segmenter, and a sentence spans its first word's start to its last word's
end. The default segmenter splits at sentence-ending punctuation like the release, and also handles
unpunctuated auto-captions (split at long pauses, then cut runs longer than a maximum duration at
their best boundary).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from .._io import FileError

SUBTITLE_EXTENSIONS = (".srt", ".vtt", ".json")


class SubtitleError(FileError, ValueError):
    """A subtitle file could not be used. The message starts with the file and says why."""


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


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


# ---------------------------------------------------------------- parsing

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(.*)$")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def _parse_timed_blocks(text: str) -> list[Cue]:
    """Cues of SRT/VTT text: a timing line followed by text lines up to a blank line."""
    cues: list[Cue] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _TIMING.match(lines[i])
        i += 1
        if not m:
            continue
        g = m.groups()
        start, end = _seconds(*g[0:4]), _seconds(*g[4:8])
        body = []
        while i < len(lines) and lines[i].strip() and not _TIMING.match(lines[i]):
            body.append(lines[i])
            i += 1
        cues.append(Cue(start, end, "\n".join(body)))
    return cues


def parse_srt(text: str) -> list[Cue]:
    return _parse_timed_blocks(text)


def parse_vtt(text: str) -> list[Cue]:
    # NOTE/STYLE/REGION blocks have no timing line, so the block parser never picks them up;
    # cue settings after the end time (``line:80%``) are discarded by the timing regex.
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise ValueError("not a WebVTT file (it must start with 'WEBVTT')")
    return _parse_timed_blocks(text)


def parse_youtube_json(text: str) -> list[Cue]:
    """YouTube transcript JSON: ``[{"text", "start", "duration"}, ...]`` (youtube-transcript-api)."""
    data = json.loads(text)
    if isinstance(data, dict):  # some exporters wrap the list
        data = data.get("transcript") or data.get("segments") or data.get("events")
    if not isinstance(data, list):
        raise ValueError('expected a JSON list of {"text", "start", "duration"} objects')
    cues = []
    for k, item in enumerate(data):
        try:
            start = float(item["start"])
            end = float(item["end"]) if "end" in item else start + float(item["duration"])
            cues.append(Cue(start, end, str(item["text"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"entry {k} is not a {{text, start, duration}} object ({e!r})") from e
    return cues


def parse_subtitles(text: str, fmt: str) -> list[Cue]:
    parsers = {"srt": parse_srt, "vtt": parse_vtt, "json": parse_youtube_json}
    if fmt not in parsers:
        raise ValueError(f"unknown subtitle format {fmt!r} (known: {', '.join(parsers)})")
    return parsers[fmt](text)


def load_subtitles(path: str | Path) -> list[Cue]:
    """Raw cues of a ``.srt`` / ``.vtt`` / YouTube ``.json`` file; :class:`SubtitleError` if unusable."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SubtitleError(path, f"cannot read ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # old SRTs are often Windows-1252
    if not text.strip():
        raise SubtitleError(path, "empty subtitle file")
    try:
        cues = parse_subtitles(text, fmt)
    except (ValueError, json.JSONDecodeError) as e:
        raise SubtitleError(path, str(e)) from e
    if not cues:
        raise SubtitleError(path, f"no timed cues found (not a valid {fmt.upper()} file?)")
    return cues


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


def get_segmenter(name: str | Segmenter = "default") -> Segmenter:
    """``"default"`` (RuleSegmenter), ``"punctuation"`` (release rule only), or ``"py:module:factory"``
    naming a factory that returns a segmenter (e.g. one wrapping a punctuation-restoration model)."""
    if callable(name):
        return name
    if name in ("default", "rules"):
        return RuleSegmenter()
    if name == "punctuation":
        return RuleSegmenter(pause=None, max_duration=None)
    if name.startswith(registry.PLUGIN_PREFIX):
        return registry.load_plugin(name)()
    raise ValueError(f"unknown segmenter {name!r}: use 'default', 'punctuation' or 'py:module:factory'")


def words_to_sentences(groups: Sequence[Sequence[Word]]) -> list[Sentence]:
    return [Sentence(g[0].start, g[-1].end, " ".join(w.text for w in g)) for g in groups if g]


def cues_to_sentences(cues: Sequence[Cue], segmenter: str | Segmenter = "default") -> list[Sentence]:
    """Clean cues, time their words, regroup into sentences."""
    words = cues_to_words(clean_cues(cues))
    return words_to_sentences(get_segmenter(segmenter)(words))
