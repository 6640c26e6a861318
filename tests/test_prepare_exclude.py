"""The BoLD-overlap guard: videos whose YouTube id is on a list are left out of the corpus."""

import os
from pathlib import Path

import pytest

from emotionclip._io import FileError
from emotionclip.constants import SAMPLE_MEDIA
from emotionclip.prepare import ClipFilter, PrepareConfig, prepare
from emotionclip.prepare.discovery import VideoItem, youtube_ids
from emotionclip.prepare.pipeline import load_excluded_ids
from prepare_support import KeywordScorer, write_boxes_json

ANG = SAMPLE_MEDIA / "cremad" / "1001_DFA_ANG_XX.flv"
NAMES = ["7YpF6DntOYw", "A talk [Db19rWN5BGo]", "CrlfWnsS7ac&part2", "keep"]


def test_the_release_list_is_shipped():
    ids = load_excluded_ids("release-bold")
    # create_index.py's BOLD_DUPLICATE_ID: 19 entries, 11 distinct
    assert len(ids) == 11 and {"7YpF6DntOYw", "914yZXz-iRs", "_mAfwH6i90E"} <= ids
    assert load_excluded_ids(None) == set() == load_excluded_ids("none")


@pytest.mark.parametrize(
    "name, found",
    [
        ("7YpF6DntOYw.mp4", {"7YpF6DntOYw"}),  # the id as the name
        ("7YpF6DntOYw&000123.mp4", {"7YpF6DntOYw"}),  # the release's folder names
        ("My talk [Db19rWN5BGo].webm", {"Db19rWN5BGo"}),  # yt-dlp's default template
        ("My talk-Db19rWN5BGo.mp4", {"Db19rWN5BGo"}),  # youtube-dl's old one
        ("holiday.mp4", set()),
    ],
)
def test_youtube_ids_from_file_names(name, found):
    assert youtube_ids(VideoItem(video=Path(name), video_id="x")) == found


def test_listed_videos_are_excluded_by_default_and_reported(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in NAMES:
        os.symlink(ANG, src / f"{name}.flv")
        (src / f"{name}.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nDon't forget a jacket\n")
    face = [150.0, 40.0, 330.0, 300.0, 0.9]
    boxes = write_boxes_json(tmp_path / "b.json", {n: (480, 360, 2.5, face) for n in NAMES})
    rules = ClipFilter(max_neutral=None, min_duration=1.0)
    cfg = dict(detector=f"json:{boxes}", scorer=KeywordScorer(), filter=rules)
    summary = prepare(src, tmp_path / "out", PrepareConfig(**cfg))
    assert summary["processed"] == 1 and summary["ok"] == 1
    assert sorted(e["youtube_id"] for e in summary["excluded"]) == [
        "7YpF6DntOYw",
        "CrlfWnsS7ac",
        "Db19rWN5BGo",
    ]
    everything = prepare(src, tmp_path / "all", PrepareConfig(**cfg, exclude_ids=None))
    assert everything["ok"] == 4 and everything["excluded"] == []
    mine = tmp_path / "ids.txt"
    mine.write_text("# my own list\nCrlfWnsS7ac\n")
    summary = prepare(src, tmp_path / "mine", PrepareConfig(**cfg, exclude_ids=mine))
    assert [e["youtube_id"] for e in summary["excluded"]] == ["CrlfWnsS7ac"] and summary["ok"] == 3
    with pytest.raises(FileError, match="cannot read the list of ids to exclude"):
        prepare(src, tmp_path / "x", PrepareConfig(**cfg, exclude_ids=tmp_path / "nope.txt"))
