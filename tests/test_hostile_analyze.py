"""`emotionclip analyze` / `embed` under a hostile but realistic user: nothing of theirs is overwritten,
one process per output folder, truncated videos marked, bad class lists and boxes handled."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotionclip.cli import main


@pytest.fixture
def checkpoint(parity_dir):
    return str(parity_dir / "official_format_checkpoint.pt")


def _analyze(video, out, checkpoint, *extra):
    return main(
        ["analyze", str(video), "--checkpoint", checkpoint, "--out", str(out), "--keyframes", "2", *extra]
    )


def test_user_summary_json_is_never_overwritten(tmp_path, media_dir, checkpoint, caplog):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text("my own notes")
    assert _analyze(media_dir / "friday.mp4", out, checkpoint) == 2
    assert (out / "summary.json").read_text() == "my own notes"
    assert f"{out}: holds files that `emotionclip analyze` did not write" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_user_emotions_csv_in_a_video_folder_is_never_overwritten(tmp_path, media_dir, checkpoint, caplog):
    out = tmp_path / "mine"
    (out / "friday").mkdir(parents=True)
    (out / "friday" / "emotions.csv").write_text("start,joy\n0,1\n")
    assert _analyze(media_dir / "friday.mp4", out, checkpoint) == 2
    assert (out / "friday" / "emotions.csv").read_text() == "start,joy\n0,1\n"
    assert "skipped" not in caplog.text and "did not write" in caplog.text


def test_embed_never_reports_a_user_npz_as_skipped(tmp_path, media_dir, checkpoint, caplog):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "friday.npz").write_bytes(b"user data")
    code = main(["embed", str(media_dir / "friday.mp4"), "--checkpoint", checkpoint, "--out", str(out)])
    assert code == 2
    assert (out / "friday.npz").read_bytes() == b"user data" and not (out / "summary.json").exists()
    assert (
        "skipped" not in caplog.text
        and f"{out}: holds files that `emotionclip embed` did not write" in caplog.text
    )


def test_second_analyze_into_one_folder_is_refused_naming_the_holder(tmp_path, media_dir, checkpoint, caplog):
    out = tmp_path / "shared-out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom emotionclip._io import claim_output_dir\n"
            "with claim_output_dir(sys.argv[1], 'analyze'):\n    print('held', flush=True)\n    time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _analyze(media_dir / "friday.mp4", out, checkpoint) == 2
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert f"{out}: is being written by pid {holder.pid} (analyze)" in caplog.text
    assert not (out / "summary.json").exists() and not (out / "friday").exists()


def test_truncated_video_marks_its_padded_windows(tmp_path, media_dir, checkpoint):
    video = tmp_path / "cut.mp4"  # header says 6.2 s, the frames stop at 4 s
    data = (media_dir / "friday.mp4").read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    assert _analyze(video, out, checkpoint) == 0
    table = pd.read_csv(out / "cut" / "emotions.csv")
    padded = table.loc[table["padded_frames"] > 0, "window"].tolist()
    assert padded == [3, 4] and table["padded_frames"].tolist() == [0, 0, 0, 2, 4]  # 4 frames a window
    doc = json.loads((out / "cut" / "emotions.json").read_text())
    assert doc["padded_windows"] == padded and [w["padded_frames"] for w in doc["windows"]] == [0, 0, 0, 2, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"][0]["padded_windows"] == padded
    report = (out / "cut" / "report.html").read_text()
    assert "2 window(s) at the end repeat the last decoded frame" in report
    assert "2 padded window(s)" in (out / "index.html").read_text()
    emb = tmp_path / "emb"
    assert main(["embed", str(video), "--checkpoint", checkpoint, "--out", str(emb)]) == 0
    assert np.load(emb / "cut.npz")["padded_frames"].tolist() == [0, 0, 0, 2, 4]
    assert json.loads((emb / "summary.json").read_text())["done"][0]["padded_windows"] == padded


@pytest.mark.parametrize(
    "classes, problem",
    [
        ([""], "need one or more non-empty emotion class names"),
        (["happy", "happy", "sad"], "class names given twice: happy"),
        (["joy", "start"], "class names start are reserved column names"),
    ],
    ids=["empty", "duplicate", "reserved"],
)
def test_bad_class_lists_are_clear_errors(tmp_path, media_dir, checkpoint, caplog, classes, problem):
    out = tmp_path / "out"
    assert _analyze(media_dir / "friday.mp4", out, checkpoint, "--classes", *classes) == 2
    assert f"--classes: {problem}" in caplog.text and not out.exists()


def test_zero_shot_scorer_refuses_an_empty_class_list(parity_dir):
    from emotionclip.analyze import zero_shot_scorer
    from emotionclip.factory import load_model

    model = load_model(parity_dir / "official_format_checkpoint.pt")
    with pytest.raises(ValueError, match="non-empty emotion class names"):
        zero_shot_scorer(model, [])
    assert len(zero_shot_scorer(model, None).classes) == 7


def test_huge_and_inverted_boxes_still_give_a_complete_report(tmp_path, media_dir, checkpoint, caplog):
    boxes = tmp_path / "boxes.json"
    frames = [
        {"t": 0.25 + 0.5 * k, "boxes": [[-1e6, -1e6, 1e9, 1e9, 0.9], [500, 400, 100, 50, 0.95]]}
        for k in range(13)
    ]
    boxes.write_text(
        json.dumps(
            {
                "format": "emotionclip-boxes/1",
                "videos": {"friday.mp4": {"width": 640, "height": 480, "frames": frames}},
            }
        )
    )
    out = tmp_path / "out"
    code = _analyze(media_dir / "friday.mp4", out, checkpoint, "--detector", f"json:{boxes}")
    folder = out / "friday"
    if code == 2:  # the boxes file refused as it is read (json: validation): named, nothing written
        assert str(boxes) in caplog.text and "inverted" in caplog.text.lower()
        assert not folder.exists()
        return
    if code == 1:  # refused where the boxes enter: then with the reason, and no partial outputs
        assert str(boxes) in json.loads((out / "summary.json").read_text())["failed"][0]["error"]
        assert not folder.exists() or not any(folder.iterdir())
        return
    assert code == 0
    for name in ("emotions.csv", "emotions.json", "emotions.png", "report.html", "thumbnail.jpg"):
        assert (folder / name).stat().st_size > 0, name
    html = (folder / "report.html").read_text()
    data = json.loads(
        html.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    )
    drawn = [b for w in data["windows"] for frame in w["boxes"] for b in frame]
    assert drawn and all(0 <= b[0] < b[2] <= 640 and 0 <= b[1] < b[3] <= 480 for b in drawn)


def test_a_failing_report_writes_no_partial_outputs(tmp_path, media_dir, parity_dir, monkeypatch):
    from emotionclip.analyze import analyze_paths, report
    from emotionclip.factory import load_model

    def broken_plot(*args, **kwargs):
        raise RuntimeError("plot exploded")

    monkeypatch.setattr(report, "plot_png", broken_plot)
    model = load_model(parity_dir / "official_format_checkpoint.pt")
    out = tmp_path / "out"
    summary = analyze_paths(model, [media_dir / "friday.mp4"], out, keyframes=1, detector=None)
    assert "plot exploded" in summary["failed"][0]["error"]
    assert not (out / "friday").exists() or not any((out / "friday").iterdir())


@pytest.mark.parametrize("command", ["analyze", "embed"])
def test_out_that_is_a_file_is_a_clear_error(tmp_path, media_dir, checkpoint, caplog, command):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    code = main([command, str(media_dir / "friday.mp4"), "--checkpoint", checkpoint, "--out", str(out)])
    assert code == 2 and out.read_text() == "keep me"
    assert f"--out {out}: is a file, not a folder" in caplog.text


def test_kill_9_mid_batch_then_rerun_resumes_without_loss(tmp_path, media_dir, checkpoint):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "emotionclip",
        "analyze",
        str(media_dir / "friday.mp4"),
        str(media_dir / "flower.mp4"),
    ]
    cmd += [
        "--checkpoint",
        checkpoint,
        "--out",
        str(out),
        "--detector",
        "none",
        "--keyframes",
        "1",
        "--stride",
        "2",
    ]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # until the first video's report is in place (at most 2 min)
            if (out / "friday" / "report.html").exists() or run.poll() is not None:
                break
            time.sleep(0.1)
        run.send_signal(signal.SIGKILL)
    finally:
        run.kill()
        run.wait(timeout=30)
    assert (out / "friday" / "report.html").exists() and not (
        out / "summary.json"
    ).exists()  # killed mid-batch
    finished = (out / "friday" / "emotions.csv").read_bytes()
    # the dead process's lock is gone with it: the rerun gets the folder, keeps friday, does the rest
    assert main(cmd[3:]) == 0
    summary = json.loads((out / "summary.json").read_text())
    done = {Path(d["video"]).name for d in summary["done"]} | {
        Path(d["video"]).name for d in summary["skipped"]
    }
    assert done == {"friday.mp4", "flower.mp4"} and not summary["failed"]
    assert (out / "friday" / "emotions.csv").read_bytes() == finished
    assert (out / "flower" / "report.html").exists()


@pytest.mark.parametrize("classes", ["", "happy,happy,sad", " , "])
def test_zero_shot_command_refuses_empty_and_duplicate_classes(tmp_path, classes, capsys):
    from emotionclip.cli import main

    rc = main(
        [
            "zero-shot",
            "--checkpoint",
            str(tmp_path / "never-loaded.pt"),
            str(tmp_path / "x.mp4"),
            "--classes",
            classes,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "--classes" in err and ("non-empty" in err or "given twice" in err)


def test_zero_shot_api_refuses_duplicates_before_loading(tmp_path):
    from emotionclip.evaluate import zero_shot

    with pytest.raises(ValueError, match="given twice"):
        zero_shot(tmp_path / "never-loaded.pt", [tmp_path / "x.mp4"], ["joy", "joy"])
