"""`emotionclip prepare` against a hostile-but-realistic user: each test holds one promise of
docs/reliability.md (numbers refer to that list)."""

import json
import math
import multiprocessing
import os
import random
import signal
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

from emotionclip._io import LOCK_OWNER, OutputDirError
from emotionclip.constants import SAMPLE_MEDIA
from emotionclip.detect.json_boxes import JsonBoxDetector, JsonBoxesError
from emotionclip.prepare import ClipFilter, PrepareConfig, discover, prepare
from emotionclip.prepare.pipeline import merge
from emotionclip.prepare.subtitles import cue_problem, validate_cues
from emotionclip.subtitles import Cue, SubtitleError, load_subtitles
from prepare_support import KeywordScorer, SlowDetector, write_boxes_json

CREMAD = SAMPLE_MEDIA / "cremad"
ANG, SAD, FEA = (CREMAD / f"1001_DFA_{e}_XX.flv" for e in ("ANG", "SAD", "FEA"))
SRT = "1\n00:00:00,000 --> 00:00:02,000\nDon't forget a jacket, it is bad\n"
KEEP_ALL = ClipFilter(max_neutral=None, min_duration=1.0)


def boxes_for(tmp_path: Path, *names: str) -> str:
    face = [150.0, 40.0, 330.0, 300.0, 0.9]
    path = write_boxes_json(tmp_path / "boxes.json", {n: (480, 360, 2.5, face) for n in names})
    return "json:" + str(path)


def folder(root: Path, videos: dict[str, Path], srt: str = SRT) -> Path:
    """A user's input folder: ``{name: source video}``, each with a subtitle beside it."""
    root.mkdir(parents=True)
    for name, src in videos.items():
        os.symlink(src, root / f"{name}.flv")
        (root / f"{name}.srt").write_text(srt)
    return root


def config(tmp_path: Path, *names: str, **kw) -> PrepareConfig:
    return PrepareConfig(detector=boxes_for(tmp_path, *names), scorer=KeywordScorer(), filter=KEEP_ALL, **kw)


def shard_clips(path: Path) -> int:
    with tarfile.open(path) as tar:
        return sum(n.endswith(".txt") for n in tar.getnames())


def assert_manifest_is_the_disk(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {s["name"]: s["clips"] for s in manifest["shards"]}
    assert listed == {p.name: shard_clips(p) for p in out.glob("*.tar")}
    assert manifest["clips"] == sum(listed.values())
    return manifest


# ---------------------------------------------------------------- 1: identity by content


def test_1_same_name_other_content_is_a_new_video_and_the_manifest_lists_every_shard(tmp_path):
    out = tmp_path / "out"
    cfg = config(tmp_path, "clip")
    first = prepare(folder(tmp_path / "a", {"clip": ANG}), out, cfg)
    second = prepare(folder(tmp_path / "b", {"clip": SAD}), out, cfg)  # same relative name, other video
    assert first["ok"] == 1 and second["processed"] == 1 and second["ok"] == 1
    assert second["corpus_clips"] == 2
    manifest = assert_manifest_is_the_disk(out)
    assert manifest["videos"]["ok"] == 2 and len(manifest["shards"]) == 2
    again = prepare(tmp_path / "a", out, cfg)  # the first folder again: already done
    assert again["processed"] == 0 and again["already_done"] == 1
    (tmp_path / "a" / "clip.flv").unlink()  # the same path, now another file (re-downloaded)
    os.symlink(FEA, tmp_path / "a" / "clip.flv")
    replaced = prepare(tmp_path / "a", out, cfg)
    assert replaced["processed"] == 1 and replaced["corpus_clips"] == 3
    assert_manifest_is_the_disk(out)


# ---------------------------------------------------------------- 2: only our own folders and files


def test_2_a_folder_with_the_users_files_is_refused_and_foreign_temporaries_survive(tmp_path):
    src = folder(tmp_path / "in", {"clip": ANG})
    users = tmp_path / "mine"
    users.mkdir()
    (users / "summary.json").write_text('{"my": "notes"}')
    (users / "shard-000000.tar.tmp").write_text("my half-finished upload")
    with pytest.raises(OutputDirError, match="holds files that `emotionclip prepare` did not write"):
        prepare(src, users, config(tmp_path, "clip"))
    assert (users / "summary.json").read_text() == '{"my": "notes"}'
    assert sorted(p.name for p in users.iterdir()) == ["shard-000000.tar.tmp", "summary.json"]

    out = tmp_path / "out"
    prepare(src, out, config(tmp_path, "clip"))
    (out / "shard-000009.tar.tmp").write_text("not written by prepare")  # e.g. a user's copy job
    folder(tmp_path / "more", {"clip2": SAD})
    prepare(tmp_path / "more", out, config(tmp_path, "clip2"))
    assert (out / "shard-000009.tar.tmp").read_text() == "not written by prepare"
    with pytest.raises(OutputDirError, match="output folder of `emotionclip train`"):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / ".emotionclip-output.json").write_text('{"tool": "train"}')
        prepare(src, tmp_path / "run", config(tmp_path, "clip"))


# ---------------------------------------------------------------- 3: one writer at a time, parts share


def _start(target, *args):
    proc = multiprocessing.get_context("fork").Process(target=target, args=args)
    proc.start()
    return proc


def _wait_for(path: Path, proc, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared"


def test_3_a_second_prepare_is_refused_naming_the_holder_and_parts_share_the_folder(tmp_path):
    src = folder(tmp_path / "in", {"a": ANG, "b": SAD, "c": FEA, "d": ANG})
    det = boxes_for(tmp_path, "a", "b", "c", "d")[len("json:") :]
    slow = PrepareConfig(detector=SlowDetector(det, 0.5), scorer=KeywordScorer(), filter=KEEP_ALL)
    out = tmp_path / "out"
    proc = _start(prepare, src, out, slow)
    try:
        _wait_for(out / LOCK_OWNER, proc)
        with pytest.raises(OutputDirError, match=f"being written by pid {proc.pid} \\(prepare\\)"):
            prepare(src, out, config(tmp_path, "a", "b", "c", "d"))
    finally:
        proc.join(120)
    assert proc.exitcode == 0 and json.loads((out / "manifest.json").read_text())["clips"] == 4

    parts = tmp_path / "parts"
    part0 = PrepareConfig(**{**slow.__dict__, "part": "0/2"})
    proc = _start(prepare, src, parts, part0)
    try:
        _wait_for(parts / ".prepare" / "part-0-of-2" / LOCK_OWNER, proc)
        fast = config(tmp_path, "a", "b", "c", "d")
        prepare(src, parts, PrepareConfig(**{**fast.__dict__, "part": "1/2"}))  # concurrently: fine
        with pytest.raises(OutputDirError, match=f"pid {proc.pid}"):  # the same part twice: refused
            prepare(src, parts, PrepareConfig(**{**fast.__dict__, "part": "0/2"}))
        with pytest.raises(OutputDirError, match="being written"):  # --merge needs the folder alone
            merge(parts)
    finally:
        proc.join(120)
    assert proc.exitcode == 0
    assert merge(parts)["clips"] == 4


# ---------------------------------------------------------------- 4: workers die with their parent


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_4_kill_9_of_prepare_leaves_no_worker_alive(tmp_path):
    src = folder(tmp_path / "in", {f"v{k}": ANG for k in range(6)})
    det = boxes_for(tmp_path, *(f"v{k}" for k in range(6)))[len("json:") :]
    cfg = PrepareConfig(detector=SlowDetector(det, 5.0), scorer=KeywordScorer(), filter=KEEP_ALL, workers=2)
    proc = _start(prepare, src, tmp_path / "out", cfg)
    deadline = time.time() + 60
    while len(_children(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    time.sleep(0.5)  # let them get into their (slow) work
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    deadline = time.time() + 15
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them running if the test fails
        os.kill(w, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"


# ---------------------------------------------------------------- 9: subtitles


def test_9_random_bytes_after_a_webvtt_header_are_rejected(tmp_path):
    path = tmp_path / "noise.vtt"
    path.write_bytes(b"WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n" + random.Random(0).randbytes(4000))
    with pytest.raises(SubtitleError, match="binary data") as err:
        load_subtitles(path)
    assert str(err.value).startswith(f"{path}: ")


def test_9_absurd_cues_are_skipped_counted_and_listed_the_rest_is_kept(tmp_path):
    srt = (
        "1\n00:00:00,000 --> 99:59:59,000\nThis cue never ends\n\n"
        "2\n00:00:00,100 --> 00:00:02,000\nDon't forget a jacket, it is bad\n\n"
        "3\n00:00:00,200 --> 00:00:01,900\n" + " ".join(["word"] * 10_000) + "\n"
    )
    src = folder(tmp_path / "in", {"clip": ANG}, srt=srt)
    out = tmp_path / "out"
    summary = prepare(src, out, config(tmp_path, "clip"))
    with tarfile.open(next(out.glob("*.tar"))) as tar:
        texts = [tar.extractfile(n).read().decode() for n in tar.getnames() if n.endswith(".txt")]
    assert texts == ["Don't forget a jacket, it is bad"]  # no 2 s clip of "This", no 60k-character text
    assert summary["bad_cues"] == 2
    (entry,) = summary["warnings"]
    srt_path = str(src / "clip.srt")
    assert entry["warnings"][0].startswith(f"{srt_path}: cue 1 at 0 s: lasts 359999 s")
    assert entry["warnings"][1].startswith(f"{srt_path}: cue 3 at 0.2 s: 10000 words in 1.7 s")
    stats = json.loads((out / "manifest.json").read_text())["filter_stats"]
    assert stats["bad_cue_too_long"] == 1 and stats["bad_cue_too_many_words"] == 1


def test_9_broken_times_are_named_as_such(tmp_path):
    path = tmp_path / "clip.json"
    path.write_text(
        '[{"text": "late", "start": 5.0, "end": 3.0}, {"text": "nan", "start": NaN, "duration": 1.0},'
        ' {"text": "backwards", "start": 1.0, "duration": -0.5}, {"text": "early", "start": -2.0, "duration": 1.0}]'
    )
    good, problems = validate_cues(load_subtitles(path), 10.0, stats := Counter(), where=str(path))
    assert good == [] and stats == {
        "bad_cue_end_before_start": 2,
        "bad_cue_not_a_number": 1,
        "bad_cue_negative_time": 1,
    }
    assert [p.split(": ", 2)[2] for p in problems] == [
        "ends before it starts (5 s -> 3 s)",
        "time is not a number (start nan, end nan)",
        "ends before it starts (1 s -> 0.5 s)",
        "negative start time (-2 s)",
    ]
    # through the pipeline: the video fails with the file named and the first problem given
    src = tmp_path / "in"
    src.mkdir()
    os.symlink(ANG, src / "clip.flv")
    path.rename(src / "clip.json")
    summary = prepare(src, tmp_path / "out", config(tmp_path, "clip"))
    (failure,) = summary["failures"]
    assert failure["reason"].startswith(f"{src / 'clip.json'}: no usable cues: all 4 are bad")
    assert "ends before it starts" in failure["reason"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32"])
def test_9_bom_marked_unicode_srt_is_decoded(tmp_path, codec):
    path = tmp_path / "clip.srt"
    text = "1\n00:00:01,000 --> 00:00:03,500\nCafé crème, naïve\n"
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)
    assert load_subtitles(path) == [Cue(1.0, 3.5, "Café crème, naïve")]


def test_9_cue_checks_leave_real_cues_alone():
    assert cue_problem(Cue(0.0, 2.0, "Don't forget a jacket")) is None
    assert cue_problem(Cue(0.0, math.inf, "a manifest's text spanning the video"), 2.0) is None
    assert cue_problem(Cue(0.0, 1.0, " ".join(["fast"] * 12))) is None  # a short burst may be quick


# ---------------------------------------------------------------- 10: boxes from json files


@pytest.mark.parametrize(
    "box, problem",
    [
        ([float("nan"), 0, 10, 10, 0.9], "is not finite"),
        ([50, 50, 10, 10, 0.9], "is inverted or empty"),
        ([10, 10, 10, 50, 0.9], "is inverted or empty"),  # width 0
        ([900, 900, 1000, 1000, 0.9], "lies outside the 480x360 frame"),
    ],
)
def test_10_bad_boxes_are_refused_where_they_enter(tmp_path, box, problem):
    path = tmp_path / "boxes.json"
    doc = {
        "format": "emotionclip-boxes/1",
        "videos": {"a": {"width": 480, "height": 360, "frames": [{"t": 0.5, "boxes": [box]}]}},
    }
    path.write_text(json.dumps(doc))  # NaN as JSON writes it
    with pytest.raises(JsonBoxesError, match=problem) as err:
        JsonBoxDetector(path)
    assert str(err.value).startswith(f"{path}: video 'a' t=0.500: box ")


def test_10_huge_boxes_are_clipped_and_counted_and_lookups_fail_as_path_problem(tmp_path):
    import numpy as np

    path = tmp_path / "boxes.json"
    frames = [{"t": 0.0, "boxes": [[-100, -50, 5000, 4000, 0.9], [10, 10, 20, 20, 0.8]]}]
    doc = {"format": "emotionclip-boxes/1", "videos": {"a": {"width": 480, "height": 360, "frames": frames}}}
    path.write_text(json.dumps(doc))
    det = JsonBoxDetector(path)
    assert det.clipped == 1
    (boxes,) = det.detect(np.zeros((1, 360, 480, 3), np.uint8), video="a.mp4", times=[0.0])
    assert boxes.tolist() == [[0, 0, 480, 360, pytest.approx(0.9)], [10, 10, 20, 20, pytest.approx(0.8)]]
    with pytest.raises(JsonBoxesError) as err:  # a FileError "PATH: problem", not a quoted KeyError
        det.detect(np.zeros((1, 36, 48, 3), np.uint8), video="b.mp4", times=[0.0])
    assert str(err.value) == f"{path}: no boxes for video 'b.mp4'"
    doc["videos"]["a"]["width"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(JsonBoxesError, match="frame size 0x360 must be positive"):
        JsonBoxDetector(path)


# ---------------------------------------------------------------- 11: manifests


def test_11_manifest_rows_are_checked_and_named_by_file_and_line(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "elsewhere").mkdir()
    for name, src in (("good", ANG), ("abc", SAD)):
        os.symlink(src, data / f"{name}.flv")
    os.symlink(FEA, tmp_path / "elsewhere" / "up.flv")
    os.symlink(SAD, tmp_path / "elsewhere" / "abs.flv")
    manifest = data / "list.csv"
    manifest.write_text(
        "video,text,start,end\n"
        "good.flv,Don't forget a jacket it is bad,0,2\n"
        "abc.flv,Don't forget a jacket,abc,2\n"
        "../elsewhere/up.flv,Don't forget a jacket it is bad,0,2\n"
        f"{tmp_path / 'elsewhere' / 'abs.flv'},Don't forget a jacket it is bad,0,2\n"
        "missing.flv,Nobody here,0,2\n"
    )
    summary = prepare(manifest, tmp_path / "out", config(tmp_path, "good", "up", "abs"))
    assert summary["ok"] == 3
    reasons = {Path(f["video"]).name: f["reason"] for f in summary["failures"]}
    assert reasons["abc.flv"].endswith(f"manifest {manifest} line 3: start 'abc' is not a number")
    assert reasons["missing.flv"].endswith(f"video not found (manifest {manifest} line 6)")
    assert str(data / "missing.flv") in reasons["missing.flv"]
    notes = [w for entry in summary["warnings"] for w in entry["warnings"]]
    assert len(notes) == 2 and all("is outside the manifest's folder" in n for n in notes)
    assert "line 4: ../elsewhere/up.flv" in notes[0] and str(tmp_path / "elsewhere" / "up.flv") in notes[0]
    assert "line 5" in notes[1]
    monkeypatch.chdir(tmp_path)  # a manifest named relative to the working folder resolves the same
    relative = {it.video.name: it.error for it in discover(Path("data") / "list.csv")}
    assert (
        relative["good.flv"] is None and relative["up.flv"] is None and "not found" in relative["missing.flv"]
    )

    jsonl = data / "list.jsonl"
    jsonl.write_text(json.dumps({"video": "good.flv", "text": "Don't forget it is bad"}) + "\n{broken\n")
    summary = prepare(jsonl, tmp_path / "out2", config(tmp_path, "good"))
    assert summary["ok"] == 1
    (failure,) = summary["failures"]
    assert failure["reason"].startswith(f"{jsonl}: line 2: not valid JSON")


# ---------------------------------------------------------------- 16: dead ends


def test_16_out_is_a_file_and_merge_without_parts_are_clear_errors(tmp_path, caplog):
    from emotionclip.cli import main

    src = folder(tmp_path / "in", {"clip": ANG})
    target = tmp_path / "out.txt"
    target.write_text("mine")
    common = ["--detector", boxes_for(tmp_path, "clip"), "--scorer", "py:prepare_support:KeywordScorer"]
    assert main(["prepare", str(src), str(target), *common]) == 2
    assert f"{target}: is a file, not a folder" in caplog.text and target.read_text() == "mine"
    out = tmp_path / "out"
    assert main(["prepare", str(src), str(out), *common, "--min-duration", "1", "--max-neutral", "1"]) == 0
    caplog.clear()
    assert main(["prepare", "--merge", str(out)]) == 2
    assert f"{out}: no manifest.part-*-of-*.json to merge" in caplog.text
    assert main(["prepare", "--merge", str(tmp_path / "nowhere")]) == 2
    assert "Traceback" not in caplog.text


def test_2_temporaries_of_every_atomic_writer_are_recognised_and_nothing_else(tmp_path):
    from emotionclip._io import atomic_dir, atomic_path, remove_temporaries
    from emotionclip.shards.writer import AtomicTar

    # what a kill -9 leaves: each writer entered and never left (kept referenced, so none cleans up)
    writing = [atomic_path(tmp_path / "manifest.json"), atomic_dir(tmp_path / "model")]
    file_tmp, dir_tmp = (w.__enter__() for w in writing)
    (dir_tmp / "weights.bin").write_bytes(b"half")
    tar = AtomicTar(tmp_path / "video.tar")
    tar.add([("a.txt", b"x")])
    for name in ("notes.tmp", ".hidden", "shard-000001.tar.tmp"):  # not ours by name: kept
        (tmp_path / name).write_text("user")
    removed = remove_temporaries(tmp_path)
    assert set(removed) == {file_tmp, dir_tmp, tar.tmp}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "notes.tmp", "shard-000001.tar.tmp"]
