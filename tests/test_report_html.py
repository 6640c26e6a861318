"""The interactive report and the batch overview in Debian's Chromium: offline, the player, the timeline."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotionclip.cli import main

CHROMIUM = Path(os.environ.get("EMOTIONCLIP_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SHOTS = Path("/tmp/report-shots")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def batch(tmp_path_factory, media_dir, parity_dir):
    tmp = tmp_path_factory.mktemp("report-html")
    broken = tmp / "broken.mp4"
    broken.write_bytes(os.urandom(4096))
    flv = media_dir / "cremad" / "1001_DFA_HAP_XX.flv"  # FLV/VP6: the report needs an H.264 copy
    out = tmp / "out"
    code = main(
        [
            "analyze",
            str(media_dir / "friday.mp4"),
            str(flv),
            str(broken),
            "--checkpoint",
            str(parity_dir / "official_format_checkpoint.pt"),
            "--out",
            str(out),
            "--keyframes",
            "3",
        ]
    )
    assert code == 1  # the broken file fails, alone
    return out, media_dir / "friday.mp4", broken


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file() or not shutil.which(str(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str, requests: list[str]):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # anything but a local file is aborted and counted: the report must need no network
    context.route(
        "**/*",
        lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_(),
    )
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")
    return context, page, errors


def _save_shot(page, path: Path) -> None:
    page.screenshot(path=str(path))
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


def test_report_plays_seeks_and_explains_offline(batch, browser, tmp_path):
    out, friday, _ = batch
    report = out / "friday" / "report.html"
    table = pd.read_csv(out / "friday" / "emotions.csv")
    requests: list[str] = []
    context, page, errors = _open(browser, report.as_uri(), requests)
    try:
        page.evaluate("() => { const v = document.getElementById('video'); v.muted = true; v.play(); }")
        page.wait_for_function(
            "() => { const v = document.getElementById('video'); return v.readyState >= 2 && v.currentTime > 0 }",
            timeout=15000,
        )
        page.evaluate("() => document.getElementById('video').pause()")
        duration = page.evaluate("() => document.getElementById('video').duration")
        # the cursor follows playback: at the paused time's place on the timeline's time axis
        played, cursor, width = page.evaluate(
            "() => [document.getElementById('video').currentTime,"
            " +document.getElementById('cursor').getAttribute('x1'),"
            " document.querySelector('#timeline svg').getAttribute('width')]"
        )
        assert played > 0 and abs(cursor - (44 + played / duration * (float(width) - 88))) < 2

        box = page.locator("#timeline").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("() => !document.getElementById('video').seeking", timeout=5000)
        now = page.evaluate("() => document.getElementById('video').currentTime")
        assert abs(now - duration / 2) < 0.1, (now, duration)
        # the spoken line at the middle of the scene, the subject boxes drawn over the frame
        assert page.inner_text("#line") == "Yes, he's in - in a bad humor"
        painted = page.evaluate(
            "() => { const c = document.getElementById('boxes');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }"
        )
        assert painted > 100

        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        tooltip = page.locator("#tooltip")
        tooltip.wait_for(state="visible", timeout=5000)
        rows = tooltip.locator("tr.score")
        assert rows.count() == 7
        window = int(page.inner_text("#tooltip div").split("window ")[1].split()[0])
        for k in range(7):
            name, value = rows.nth(k).inner_text().split()
            assert abs(float(value) - table[name][window]) < 1e-3
        _save_shot(page, tmp_path / "report-friday.png")
    finally:
        context.close()
    assert not errors
    allowed = (out / "friday").resolve().as_uri() + "/"
    assert requests and all(u.startswith(allowed) or u == friday.resolve().as_uri() for u in requests), (
        requests
    )


def test_unplayable_video_gets_an_h264_copy(batch, browser):
    out, _, _ = batch
    folder = out / "1001_DFA_HAP_XX"
    assert (folder / "video.mp4").stat().st_size > 0
    requests: list[str] = []
    context, page, errors = _open(browser, (folder / "report.html").as_uri(), requests)
    try:
        page.wait_for_function("() => document.getElementById('video').readyState >= 2", timeout=15000)
        src = page.evaluate("() => document.getElementById('video').getAttribute('src')")
    finally:
        context.close()
    assert src == "video.mp4" and not errors
    assert all(u.startswith(folder.resolve().as_uri() + "/") for u in requests), requests


def test_index_lists_every_video_with_failures(batch, browser, tmp_path):
    out, _, broken = batch
    summary = json.loads((out / "summary.json").read_text())
    requests: list[str] = []
    context, page, errors = _open(browser, (out / "index.html").as_uri(), requests)
    try:
        rows = page.locator("#videos tbody tr")
        names = sorted(rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count()))
        failed = page.locator("#videos tr.failed .reason").inner_text()
        thumbs = page.evaluate("() => Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        page.click("th:has-text('duration')")
        order = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]
        _save_shot(page, tmp_path / "index.png")
        page.click("#videos a:has-text('friday.mp4')")
        page.wait_for_load_state("load")
        assert page.url == (out / "friday" / "report.html").resolve().as_uri()
    finally:
        context.close()
    assert names == ["1001_DFA_HAP_XX.flv", "broken.mp4", "friday.mp4"]
    assert failed == summary["failed"][0]["error"] and str(broken) in failed
    assert len(thumbs) == 2 and all(thumbs)
    assert order == ["broken.mp4", "1001_DFA_HAP_XX.flv", "friday.mp4"]  # by duration; failed first
    assert not errors and all(u.startswith("file://") for u in requests)


@pytest.fixture(scope="module")
def per_person(tmp_path_factory, media_dir, parity_dir):
    out = tmp_path_factory.mktemp("report-persons") / "out"
    checkpoint = str(parity_dir / "official_format_checkpoint.pt")
    # NanoDet boxes all three women of friday (MoveNet rarely the one seen from behind)
    args = ["analyze", str(media_dir / "friday.mp4"), "--checkpoint", checkpoint, "--out", str(out)]
    assert main([*args, "--per-person", "--detector", "nanodet", "--keyframes", "3"]) == 0
    return out / "friday"


def _expected_labels(table: pd.DataFrame, t: float) -> list[str]:
    """What the report must write over the video at ``t``: each scored person's box with its top emotion."""
    union = table[table["person"] == "all"].reset_index(drop=True)
    i = int(np.argmin(np.abs((union["start"] + union["end"]) / 2 - t)))
    w = union.iloc[i]
    frames = json.loads(w["boxes"])
    k = min(len(frames) - 1, max(0, int((t - w["start"]) / (w["end"] - w["start"]) * len(frames))))
    rows = table[(table["window"] == i) & (table["person"] != "all")].set_index("person")
    labels = []
    for b in frames[k]:
        person = str(int(b[5]))
        if person in rows.index:
            top = rows.loc[person, "top_emotion"]
            labels.append(f"{person}: {top} {rows.loc[person, top]:.2f}")
    return labels


def test_per_person_report_has_a_lane_per_person(per_person, browser, tmp_path):
    table = pd.read_csv(per_person / "emotions.csv", dtype={"person": str})
    requests: list[str] = []
    context, page, errors = _open(browser, (per_person / "report.html").as_uri(), requests)
    try:
        page.wait_for_function("() => document.getElementById('video').readyState >= 1", timeout=15000)
        assert page.locator("#timeline g.lane").count() == 3
        assert [page.locator("#timeline g.lane").nth(k).get_attribute("data-person") for k in range(3)] == [
            "1",
            "2",
            "3",
        ]
        thumbs = page.evaluate("() => Array.from(document.querySelectorAll('#timeline image.thumb')).length")
        assert thumbs == 3
        duration = page.evaluate("() => document.getElementById('video').duration")
        width = float(page.locator("#timeline svg").get_attribute("width"))
        box = page.locator("#timeline").bounding_box()
        lane = page.locator("#timeline g.lane").nth(1).bounding_box()
        # a click on a person's lane seeks the video to the time under the pointer
        page.mouse.click(box["x"] + 44 + 0.7 * (width - 88), lane["y"] + lane["height"] / 2)
        page.wait_for_function("() => !document.getElementById('video').seeking", timeout=5000)
        now = page.evaluate("() => document.getElementById('video').currentTime")
        assert abs(now - 0.7 * duration) < 0.1, (now, duration)
        # hovering a lane shows that person's scores
        page.mouse.move(box["x"] + 44 + 0.3 * (width - 88), lane["y"] + lane["height"] / 2)
        page.locator("#tooltip").wait_for(state="visible", timeout=5000)
        assert "person 2" in page.inner_text("#tooltip div")

        seen = []
        for t in (0.3, 2.6, 4.4):
            page.evaluate(f"() => {{ document.getElementById('video').currentTime = {t}; }}")
            page.wait_for_function(
                f"() => {{ const v = document.getElementById('video'); return !v.seeking && Math.abs(v.currentTime - {t}) < 0.05 }}",
                timeout=5000,
            )
            page.wait_for_timeout(100)
            labels = json.loads(page.evaluate("() => document.getElementById('boxes').dataset.labels"))
            assert labels == _expected_labels(table, t), t
            assert len(page.locator("#people-now .person-now").all()) == 3
            seen.append(labels)
        assert len({json.dumps(s) for s in seen}) > 1  # the labels follow the playing time
        _save_shot(page, tmp_path / "report-friday-persons.png")
    finally:
        context.close()
    assert not errors
    assert all(u.startswith("file://") for u in requests)
