"""`emotionclip analyze` on real media with the parity checkpoint; the report in a real browser."""

import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotionclip.cli import main
from emotionclip.video_io import probe_video

CHROMIUM = Path(os.environ.get("EMOTIONCLIP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WINDOW, STRIDE = 2.0, 0.5


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, media_dir, parity_dir):
    out = tmp_path_factory.mktemp("analysis")
    videos = [media_dir / "friday.mp4", media_dir / "flower.mp4"]
    code = main(
        [
            "analyze",
            *map(str, videos),
            "--checkpoint",
            str(parity_dir / "official_format_checkpoint.pt"),
            "--out",
            str(out),
            "--window",
            str(WINDOW),
            "--stride",
            str(STRIDE),
            "--keyframes",
            "6",
        ]
    )
    assert code == 0
    return out, {v.stem: v for v in videos}


def test_outputs_and_window_count(analysed):
    out, videos = analysed
    for stem, video in videos.items():
        folder = out / stem
        for name in ("emotions.csv", "emotions.json", "emotions.png", "report.html"):
            assert (folder / name).stat().st_size > 0, name
        duration = probe_video(video).duration
        expected = (
            math.floor((duration - WINDOW) / STRIDE + 1e-6) + 1
        )  # starts 0, STRIDE apart, end <= duration
        table = pd.read_csv(folder / "emotions.csv")
        assert len(table) == expected
        assert np.allclose(table["start"], np.arange(expected) * STRIDE)
        assert np.allclose(table["end"] - table["start"], WINDOW)
        assert table["end"].max() <= duration
        doc = json.loads((folder / "emotions.json").read_text())
        classes = doc["classes"]
        assert doc["num_windows"] == expected and len(doc["windows"]) == expected
        assert np.allclose(table[classes].sum(axis=1), 1.0, atol=1e-4)
        assert (table["top_emotion"] == table[classes].idxmax(axis=1)).all()
    assert len(json.loads((out / "summary.json").read_text())["done"]) == 2


def test_person_flags(analysed):
    out, _ = analysed
    friday = pd.read_csv(out / "friday" / "emotions.csv")
    flower = pd.read_csv(out / "flower" / "emotions.csv")
    assert friday["has_person"].all()  # three people talking in every window
    assert not flower["has_person"].any()  # nature clip: scored all the same, marked as nobody
    assert flower[["joy", "neutral"]].notna().all().all()
    boxes = json.loads(friday["boxes"][0])
    assert len(boxes) == 4  # video_len frames, each a list of (x1, y1, x2, y2, score, track id)
    assert all(len(b) == 6 and 0 <= b[0] < b[2] <= 640 and b[4] > 0.5 for frame in boxes for b in frame)
    assert all(b[5] >= 1 and b[5] == int(b[5]) for frame in boxes for b in frame)
    assert json.loads(flower["boxes"][0]) == [[], [], [], []]


@pytest.mark.browser
def test_report_renders_in_headless_chromium(analysed):
    if not CHROMIUM.is_file() or not shutil.which(str(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    out, _ = analysed
    html = (out / "friday" / "report.html").read_text()
    assert not re.search(
        r"""(src|href)=["']?(https?:)?//|url\(\s*["']?https?:|fetch\(|XMLHttpRequest""", html
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto((out / "friday" / "report.html").as_uri(), wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => ({cls: i.className, w: i.naturalWidth, ok: i.complete}))"
            )
            title = page.title()
        finally:
            browser.close()
    plots = [i for i in images if i["cls"] == "plot"]
    keyframes = [i for i in images if i["cls"] == "keyframe"]
    assert len(plots) == 1 and plots[0]["ok"] and plots[0]["w"] > 0
    assert len(keyframes) == 6 and all(i["ok"] and i["w"] > 0 for i in keyframes)
    assert "friday.mp4" in title


def test_embed_cli_videos_and_images(tmp_path, media_dir, parity_dir):
    from PIL import Image

    from emotionclip.video_io import read_frames_at

    image = tmp_path / "still.png"
    Image.fromarray(read_frames_at(media_dir / "friday.mp4", [1.0])[0]).save(image)
    out = tmp_path / "emb"
    code = main(
        [
            "embed",
            str(media_dir / "friday.mp4"),
            str(image),
            str(tmp_path / "nope.mp4"),
            "--checkpoint",
            str(parity_dir / "official_format_checkpoint.pt"),
            "--out",
            str(out),
        ]
    )
    assert code == 1  # the missing file fails, alone
    video = np.load(out / "friday.npz")
    assert video["features"].shape == (5, 64) and np.allclose(video["starts"], [0, 1, 2, 3, 4])
    assert video["has_person"].all() and len(json.loads(str(video["boxes"]))) == 5
    assert np.load(out / "still.npz")["features"].shape == (1, 64)
    summary = json.loads((out / "summary.json").read_text())
    assert [f["input"] for f in summary["failed"]] == [str(tmp_path / "nope.mp4")]


def test_analyze_video_table_plots_and_shows_in_a_notebook(media_dir, parity_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emotionclip.analyze import EmotionTable, analyze_video
    from emotionclip.factory import load_model

    model = load_model(parity_dir / "official_format_checkpoint.pt")
    table = analyze_video(model, media_dir / "friday.mp4", detector=None)
    assert isinstance(table, EmotionTable) and isinstance(table, pd.DataFrame)
    assert table.classes == list(table.columns[-7:]) and len(table) == 5
    ax = table.plot()
    assert [line.get_label() for line in ax.get_lines()] == table.classes
    assert np.allclose(ax.get_lines()[0].get_ydata(), table[table.classes[0]])
    pandas_ax = table.plot.line(x="start", y="joy")  # pandas' own plot accessor still works
    assert pandas_ax.get_lines()[0].get_label() == "joy"
    plt.close("all")
    page = table._repr_html_()
    assert page.count("<rect") == 1 + len(table) and "<table" in page and "surprise" in page
    # scripts keep working: pandas operations give plain DataFrames, CSV round-trips
    assert type(table[table["joy"] > 0]) is pd.DataFrame
    assert pd.read_csv(io.StringIO(table.to_csv(index=False))).shape == table.shape


def test_spoken_lines_of_the_real_webvtt(media_dir):
    from emotionclip.analyze.subtitles import spoken_lines

    lines = spoken_lines(media_dir / "friday.mp4")
    assert lines.path == str(media_dir / "friday.vtt") and lines.skipped == 0 and lines.problem is None
    assert [c[2] for c in lines.cues][:2] == ["Hildy!", "How are you?"]
    assert lines.cues[-1] == (4.3, 6.0, "Somebody must've stolen the crown jewels")


def test_spoken_lines_decode_utf16_and_skip_broken_cues(tmp_path):
    from emotionclip.analyze.subtitles import spoken_lines

    srt = (
        "1\n00:00:01,000 --> 00:00:02,500\n<i>Ça va</i> &amp; toi?\n\n"
        "2\n00:00:05,000 --> 00:00:04,000\nbackwards\n\n"
        "3\n00:00:06,000 --> 99:59:59,000\nThis goes on forever\n\n"
        "4\n00:00:07,000 --> 00:00:08,000\n\n"
    )
    (tmp_path / "talk.srt").write_bytes(b"\xff\xfe" + srt.encode("utf-16-le"))  # UTF-16 with its BOM
    lines = spoken_lines(tmp_path / "talk.mp4")
    assert lines.cues == [(1.0, 2.5, "Ça va & toi?")] and lines.skipped == 3  # backwards, 100 h, no text
    (tmp_path / "talk.srt").write_bytes(b"\x00\xff garbage")
    broken = spoken_lines(tmp_path / "talk.mp4")
    assert broken.cues == [] and broken.problem == "no usable cue"
    assert spoken_lines(tmp_path / "silent.mp4").path is None
    (tmp_path / "film.en.vtt").write_text("WEBVTT\n\n00:00.500 --> 00:01.000\nHi\n")
    assert spoken_lines(tmp_path / "film.mkv").cues == [(0.5, 1.0, "Hi")]  # language-tagged name


def test_rerun_resumes_and_the_index_says_what_was_skipped(analysed, parity_dir):
    out, videos = analysed
    before = (out / "friday" / "emotions.csv").stat().st_mtime_ns
    args = ["--checkpoint", str(parity_dir / "official_format_checkpoint.pt"), "--out", str(out)]
    assert (
        main(["analyze", *map(str, videos.values()), *args, "--window", str(WINDOW), "--stride", str(STRIDE)])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["skipped"]) == 2 and not summary["done"]
    assert (out / "friday" / "emotions.csv").stat().st_mtime_ns == before
    index = (out / "index.html").read_text()
    assert index.count('data-status="skipped"') == 2 and index.count("skipped (outputs exist)") == 2
    assert 'href="friday/report.html"' in index and 'src="friday/thumbnail.jpg"' in index
