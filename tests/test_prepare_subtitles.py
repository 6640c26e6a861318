import json
from itertools import pairwise

import pytest

from emotionclip.prepare.subtitles import (
    RuleSegmenter,
    clean_cues,
    clean_text,
    cues_to_sentences,
    cues_to_words,
    get_segmenter,
)
from emotionclip.subtitles import Cue, SubtitleError, load_subtitles


def texts(sentences):
    return [s.text for s in sentences]


def test_friday_vtt_regroups_into_sentences(media_dir):
    cues = load_subtitles(media_dir / "friday.vtt")
    assert len(cues) == 5 and cues[0].text == "Hildy!"  # the `line:80%` cue settings are not text
    sentences = cues_to_sentences(cues)
    assert texts(sentences) == [
        "Hildy!",
        "How are you?",
        "Tell me, is the lord of the universe in?",
        "Yes, he's in - in a bad humor Somebody must've stolen the crown jewels",
    ]
    question = sentences[2]
    assert question.start == pytest.approx(1.5) and question.end == pytest.approx(2.999)
    assert sentences[3].start == pytest.approx(3.0) and sentences[3].end == pytest.approx(6.0)


def test_sentence_inside_a_cue_gets_evenly_spread_word_times():
    cues = [Cue(0.0, 4.0, "One two. Three four five six"), Cue(4.0, 6.0, "seven eight.")]
    s = cues_to_sentences(cues, "punctuation")
    assert texts(s) == ["One two.", "Three four five six seven eight."]
    assert (s[0].start, s[0].end) == pytest.approx((0.0, 4 / 3))  # 2 of the cue's 6 words over 4 s
    assert (s[1].start, s[1].end) == pytest.approx((4 / 3, 6.0))


def test_popeye_srt_markup_and_non_speech(media_dir):
    cues = load_subtitles(media_dir / "popeye" / "popeye_p1.eng.srt")  # UTF-8 BOM, <i>, [barking]
    assert len(cues) == 14
    cleaned = clean_cues(cues)
    assert len(cleaned) == 13  # "[barking and roaring]" is not speech
    assert cleaned[0].text == "I'm Sinbad the sailor So hearty and hale"
    sentences = cues_to_sentences(cues)
    assert all("<" not in s.text and "[" not in s.text for s in sentences)
    assert "Sinbad the sailor!" in texts(sentences)
    # unpunctuated lyrics are cut into pieces under the maximum clip length
    assert max(s.duration for s in sentences) < 10.0


@pytest.mark.parametrize(
    "raw, spoken",
    [
        ("<i>Hello</i> <b>there</b>", "Hello there"),
        ("{\\an8}Top line", "Top line"),
        ("- Are you coming?\n- Yes.", "Are you coming? Yes."),
        ("[Music]", ""),
        ("♪ ♪", ""),
        ("♪ la la love ♪", "la la love"),
        ("(laughs) That's funny", "That's funny"),
        ("JOHN: Get out.", "Get out."),
        (">> we're live", "we're live"),
        ("<c.yellow>caps</c> &amp; <00:00:01.500><c>words</c>", "caps & words"),
    ],
)
def test_clean_text(raw, spoken):
    assert clean_text(raw) == spoken


def test_overlapping_and_out_of_order_cues():
    cues = [
        Cue(5.0, 8.0, "and then it ended."),
        Cue(0.0, 3.0, "It started here"),
        Cue(2.0, 5.5, "and went on"),  # overlaps both neighbours
        Cue(2.0, 2.5, "[applause]"),
    ]
    cleaned = clean_cues(cues)
    assert [c.text for c in cleaned] == ["It started here", "and went on", "and then it ended."]
    assert all(a.end <= b.start for a, b in pairwise(cleaned))  # overlaps trimmed
    words = cues_to_words(cleaned)
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.end > w.start for w in words)
    (sentence,) = cues_to_sentences(cues, "punctuation")
    assert sentence.text == "It started here and went on and then it ended."
    assert (sentence.start, sentence.end) == (0.0, 8.0)


def test_simultaneous_cues_merge_and_rolling_captions_dedupe():
    same_start = clean_cues([Cue(1.0, 2.0, "Left speaker."), Cue(1.0, 3.0, "Right speaker.")])
    assert [(c.start, c.end, c.text) for c in same_start] == [(1.0, 3.0, "Left speaker. Right speaker.")]
    rolling = clean_cues(
        [
            Cue(0.0, 2.0, "so we went to"),
            Cue(2.0, 4.0, "so we went to\nthe market and"),
            Cue(4.0, 6.0, "the market and\nbought fish"),
        ]
    )
    assert " ".join(c.text for c in rolling) == "so we went to the market and bought fish"


def test_unpunctuated_autocaptions_split_at_pauses_and_length():
    # 30 s of captions without punctuation: 2 s cues, a 2 s silence after the 5th
    cues = [
        Cue(
            2.0 * k + (2.0 if k >= 5 else 0.0),
            2.0 * k + 2.0 + (2.0 if k >= 5 else 0.0),
            f"word{k} more words here",
        )
        for k in range(15)
    ]
    release_rule = cues_to_sentences(cues, "punctuation")
    assert len(release_rule) == 1  # one 32 s "sentence" that the clip filter would drop
    sentences = cues_to_sentences(cues)
    assert len(sentences) >= 3
    assert all(2.0 < s.duration <= 10.0 for s in sentences)
    assert sentences[0].end == pytest.approx(10.0)  # the silence is a boundary
    assert " ".join(texts(sentences)) == " ".join(c.text for c in cues)  # nothing lost or reordered
    # cuts fall between cues, not mid-cue
    assert all(s.text.startswith("word") for s in sentences)


def test_abbreviations_do_not_end_sentences():
    s = cues_to_sentences([Cue(0, 4, "Mr. Smith met Dr. Jones. Then left.")], "punctuation")
    assert texts(s) == ["Mr. Smith met Dr. Jones.", "Then left."]


def test_pluggable_segmenter():
    def every_word(words):
        return [[w] for w in words]

    assert texts(cues_to_sentences([Cue(0, 2, "a b")], every_word)) == ["a", "b"]
    seg = get_segmenter("py:emotionclip.prepare.subtitles:RuleSegmenter")
    assert isinstance(seg, RuleSegmenter)
    with pytest.raises(ValueError, match="unknown segmenter"):
        get_segmenter("nonsense")


def test_youtube_transcript_json(tmp_path):
    path = tmp_path / "talk.json"
    path.write_text(
        json.dumps(
            [
                {"text": "hi there", "start": 0.5, "duration": 1.5},
                {"text": "[Music]", "start": 2.0, "duration": 1.0},
            ]
        )
    )
    cues = load_subtitles(path)
    assert cues[0] == Cue(0.5, 2.0, "hi there")
    assert texts(cues_to_sentences(cues)) == ["hi there"]


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.srt", "", "empty subtitle file"),
        ("blank.vtt", "\n  \n", "empty subtitle file"),
        ("garbage.vtt", "this is not\x00 a subtitle {{{", "not a WebVTT file"),
        ("header_only.vtt", "WEBVTT\n\nNOTE nothing here\n", "no timed cues"),
        ("noise.srt", "1\nhello\n\n2\nworld\n", "no timed cues"),
        ("bad.json", "{not json", "Expecting property name"),
        ("wrong.json", '[{"text": "x"}]', "entry 0"),
    ],
)
def test_unusable_files_raise_naming_the_file(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SubtitleError, match=problem) as err:
        load_subtitles(path)
    assert str(err.value).startswith(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(SubtitleError, match="cannot read"):
        load_subtitles(tmp_path / "nope.srt")


def test_cp1252_srt(tmp_path):
    path = tmp_path / "old.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:03,500\nCafé au lait\n".encode("cp1252"))
    assert load_subtitles(path) == [Cue(1.0, 3.5, "Café au lait")]


def test_youtube_auto_caption_vtt(tmp_path):
    path = tmp_path / "auto.en.vtt"
    path.write_text(
        "WEBVTT\nKind: captions\nLanguage: en\n\n"
        "00:00:00.000 --> 00:00:02.000 align:start position:0%\n \nso<00:00:00.500><c> we</c><00:00:01.000><c> went</c>\n\n"
        "00:00:02.000 --> 00:00:02.010 align:start position:0%\nso we went\n \n\n"
        "00:00:02.010 --> 00:00:04.000 align:start position:0%\nso we went\nto<00:00:02.500><c> the</c><00:00:03.000><c> market</c>\n"
    )
    cleaned = clean_cues(load_subtitles(path))
    assert [c.text for c in cleaned] == ["so we went", "to the market"]
    assert texts(cues_to_sentences(load_subtitles(path))) == ["so we went to the market"]


# ---------------------------------------------------------------- the release's regrouping

RELEASE_TRANSCRIPT = [  # YouTube transcript entries: text, start, duration
    ("well hello there. my name is", 0.0, 2.5),  # ends at 2.0, where the next one starts
    ("Sam. I'm glad, really glad, to be here.", 2.0, 2.0),
    ("[Music] what a day.", 4.5, 1.0),
    ("Is it? Yes it is! It is 3.5 times better. and then", 5.5, 3.0),
]


def test_release_segmenter_on_a_punctuated_transcript(tmp_path):
    path = tmp_path / "talk.json"
    path.write_text(json.dumps([{"text": t, "start": s, "duration": d} for t, s, d in RELEASE_TRANSCRIPT]))
    sentences = cues_to_sentences(load_subtitles(path), "release")
    # computed by hand with regroup_transcripts.py's rules: words before the first "." (well hello
    # there) and after the last (and then) dropped, "[Music] what a day" dropped, only "." splits
    # ("?" and "!" do not), marks removed except inside numbers
    assert texts(sentences) == [
        "my name is Sam",
        "I'm glad really glad to be here",
        "Is it Yes it is It is 3.5 times better",
    ]
    step = 3.0 / 12  # the last entry's 12 words over its 3 s
    times = [t for s in sentences for t in (s.start, s.end)]
    assert times == pytest.approx([1.0, 2.25, 2.25, 4.0, 5.5, 5.5 + 10 * step])


def test_release_segmenter_keeps_lone_marks_and_format_markup_rules():
    cues = [Cue(0.0, 1.0, "Start ."), Cue(1.0, 3.0, "<i>Hello</i> &amp; bye ..."), Cue(3.0, 4.0, "- Yes.")]
    # a lone "." ends the word before it; tags and entities go; a dialogue dash stays a word (as in the release)
    assert texts(cues_to_sentences(cues, "release")) == ["Hello & bye", "- Yes"]
    # a number keeps its marks (the release's preprocess), and still ends the sentence
    cues = [Cue(0.0, 3.0, "Hi. Born in 2020. Then 3.5. What")]
    assert texts(cues_to_sentences(cues, "release")) == ["Born in 2020.", "Then 3.5."]
