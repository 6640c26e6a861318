import json
import multiprocessing
import os
import shutil
import signal
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

from emotionclip.prepare import (
    ClipFilter,
    PrepareConfig,
    discover,
    merge_manifests,
    prepare,
)
from emotionclip.prepare.pipeline import exit_code
from emotionclip.sentiment import get_sentiment_scorer
from emotionclip.shards.writer import iter_tar
from prepare_support import CrashingDetector, KeywordScorer, write_boxes_json

CREMAD = [f"1001_DFA_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
KEEP_ALL = dict(max_neutral=None, min_person_fraction=0.0, min_duration=1.0)


def cremad_boxes(tmp_path, media_dir) -> str:
    face = [150.0, 40.0, 330.0, 300.0, 0.9]  # the actor, in the 480x360 source frame
    return "json:" + str(
        write_boxes_json(tmp_path / "boxes.json", {n: (480, 360, 2.5, face) for n in CREMAD})
    )


def read_shards(out_dir: Path) -> dict[str, dict]:
    """Samples of every finished shard: key -> {ext: bytes}."""
    samples: dict[str, dict] = {}
    for shard in sorted(out_dir.glob("*.tar")):
        for name, data in iter_tar(shard):
            key, ext = name.split(".", 1)
            samples.setdefault(key, {})[ext] = data
    return samples


def test_friday_people_and_flower_nobody(media_dir, tmp_path):
    """Real default person detector; friday's sentences -> one clip with the three people boxed."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("friday.mp4", "friday.vtt", "flower.mp4"):
        os.symlink(media_dir / name, src / name)
    (src / "flower.srt").write_text(
        "1\n00:00:00,500 --> 00:00:04,500\nLook at these flowers, they are lovely.\n"
    )
    out = tmp_path / "out"
    # the person filter is off by default (the release keeps every clip): turned on here
    rules = ClipFilter(max_neutral=None, min_person_fraction=0.5)
    summary = prepare(src, out, PrepareConfig(scorer=KeywordScorer(), filter=rules))
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (1, 1, 0)
    assert (
        "no people" in summary["skipped_videos"][0]["reason"]
        and "flower" in summary["skipped_videos"][0]["video"]
    )
    samples = read_shards(out)
    (key,) = samples
    sample = samples[key]
    meta = json.loads(sample["json"])
    assert sample["txt"].decode() == "Yes, he's in - in a bad humor Somebody must've stolen the crown jewels"
    assert (meta["start"], meta["end"]) == (3.0, 6.0)
    frames = sorted(k for k in sample if k.endswith(".jpg"))
    # frames 24..48 of the video's 8 fps grid, both ends included (the release's rule)
    assert len(frames) == 25 == len(meta["frame_times"])
    assert meta["frame_times"][0] == 3.0 and meta["frame_times"][-1] == 6.0
    boxes = json.loads(sample["boxes.json"])
    assert len(boxes) == 25 and meta["has_person"] >= 0.5
    assert max(len(b) for b in boxes) >= 2  # several people on screen
    assert meta["width"] == 341 and meta["height"] == 256
    assert np.argmax(meta["sentiment_logits"]) == 0  # "bad", "stolen": anger in the keyword lexicon
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clips"] == 1 and manifest["hours"] == pytest.approx(3 / 3600)
    assert manifest["detector"].startswith("movenet") and manifest["scorer"] == "keywords"
    fs = manifest["filter_stats"]
    # Hildy! / How are you? / the 1.5 s question are too short; the flower sentence has no person
    assert (fs["sentences"], fs["too_short"], fs["kept"], fs["no_person"]) == (5, 3, 1, 1)


def test_cremad_transcript_csv_as_one_cue_subtitles(media_dir, tmp_path):
    out = tmp_path / "out"
    # the shipped default sentiment scorer
    config = PrepareConfig(
        detector=cremad_boxes(tmp_path, media_dir), scorer="default", filter=ClipFilter(max_neutral=None)
    )
    summary = prepare(media_dir / "cremad" / "transcript.csv", out, config)
    assert summary["ok"] == 5
    # HAP lasts 1.87 s: under the release's 2 s minimum
    (skipped,) = summary["skipped_videos"]
    assert "HAP" in skipped["video"] and "too_short=1" in skipped["reason"]
    # the transcript also lists actor 1002, whose videos are not here: reported, not fatal
    assert summary["failed"] == 6 and all("video not found" in f["reason"] for f in summary["failures"])
    assert exit_code(summary) == 0
    samples = read_shards(out)
    assert len(samples) == 5
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        assert sample["txt"] == b"Don't forget a jacket"
        assert meta["start"] == 0.0 and 2.0 < meta["end"] < 2.4  # the whole video
        assert len([k for k in sample if k.endswith(".jpg")]) >= 16
        assert meta["has_person"] == 1.0 and key.startswith("1001_DFA_")
        logits = np.array(meta["sentiment_logits"])
        assert logits.shape == (7,) and np.isfinite(logits).all()
        assert meta["neutral"] == pytest.approx(np.exp(logits[4]) / np.exp(logits).sum(), abs=1e-4)
    assert json.loads((out / "manifest.json").read_text())["scorer"] == get_sentiment_scorer("default").name


def test_popeye_hevc_mkv_with_srt_manifest(media_dir, tmp_path):
    popeye = media_dir / "popeye"
    manifest = tmp_path / "list.jsonl"  # file names do not match (T03-4 <-> p1), so a manifest pairs them
    manifest.write_text(
        json.dumps({"video": str(popeye / "T03-4_pgs.mkv"), "subtitle": str(popeye / "popeye_p1.eng.srt")})
        + "\n"
    )
    (item,) = discover(manifest)
    assert item.subtitle.name == "popeye_p1.eng.srt"
    # a cartoon has no real people: keep clips whatever the detector says; only clips under 3 s
    # (3 of them) to keep the HEVC decoding short
    config = PrepareConfig(
        detector="json:" + str(write_boxes_json(tmp_path / "b.json", {"T03-4_pgs": (1440, 1074, 62, None)})),
        scorer=KeywordScorer(),
        filter=ClipFilter(**KEEP_ALL, max_duration=3.0),
    )
    summary = prepare(manifest, tmp_path / "out", config)
    assert summary["ok"] == 1, summary
    samples = read_shards(tmp_path / "out")
    assert len(samples) == 3
    texts = {s["txt"].decode() for s in samples.values()}
    assert "Sinbad the sailor!" in texts
    meta = json.loads(next(iter(samples.values()))["json"])
    assert (meta["width"], meta["height"]) == (343, 256)  # HEVC 1440x1074 decoded, short side 256


def _mux_with_subtitle_track(video: Path, srt: Path, out: Path) -> None:
    with av.open(str(video)) as vin, av.open(str(srt)) as sin, av.open(str(out), "w") as dst:
        v_out = dst.add_stream_from_template(vin.streams.video[0])
        s_out = dst.add_stream_from_template(sin.streams.subtitles[0])
        for src, stream in ((vin, v_out), (sin, s_out)):
            for packet in src.demux(src.streams[0] if src is sin else src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)


def test_embedded_text_subtitle_track(media_dir, tmp_path):
    srt = tmp_path / "track.srt"
    srt.write_text(
        "1\n00:00:00,500 --> 00:00:03,500\n<i>I hate waiting in this office!</i>\n\n"
        "2\n00:00:03,600 --> 00:00:06,000\nThe office is on the second floor.\n"
    )
    src = tmp_path / "in"
    src.mkdir()
    _mux_with_subtitle_track(media_dir / "friday.mp4", srt, src / "friday_subbed.mkv")
    (item,) = discover(src)
    assert item.subtitle is None and item.subtitle_stream == 1
    box = [0, 0, 640, 480, 0.9]
    config = PrepareConfig(
        detector="json:"
        + str(write_boxes_json(tmp_path / "b.json", {"friday_subbed": (640, 480, 6.2, box)})),
        scorer=KeywordScorer(),
        filter=ClipFilter(max_neutral=0.3),
    )
    summary = prepare(src, tmp_path / "out", config)
    assert summary["ok"] == 1
    (sample,) = read_shards(tmp_path / "out").values()
    assert sample["txt"] == b"I hate waiting in this office!"
    assert json.loads(sample["json"])["neutral"] <= 0.3
    stats = json.loads((tmp_path / "out" / "manifest.json").read_text())["filter_stats"]
    assert stats["too_neutral"] == 1 and stats["kept"] == 1  # the second sentence says nothing emotional


def make_damaged_inputs(media_dir: Path, root: Path) -> Path:
    src = root / "in"
    src.mkdir()
    for k, name in enumerate(CREMAD[:3]):  # three good videos, each with its own .srt
        os.symlink(media_dir / "cremad" / f"{name}.flv", src / f"{name}.flv")
        (src / f"{name}.srt").write_text(
            f"1\n00:00:00,000 --> 00:00:02,200\nDon't forget a jacket number {k}\n"
        )
    data = (media_dir / "friday.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(
        data[: len(data) // 2]
    )  # header intact, second half of the frames gone
    shutil.copy(media_dir / "friday.vtt", src / "truncated.vtt")
    os.symlink(media_dir / "cremad" / f"{CREMAD[3]}.flv", src / "garbage.flv")
    (src / "garbage.vtt").write_bytes(b"\x89PNG\r\n\x1a\n not a subtitle at all \x00\x01")
    os.symlink(media_dir / "cremad" / f"{CREMAD[4]}.flv", src / "empty.flv")
    (src / "empty.srt").write_text("")
    (src / "notavideo.mp4").write_text("hello")
    (src / "notavideo.srt").write_text("1\n00:00:00,000 --> 00:00:03,000\nWhatever it is\n")
    os.symlink(media_dir / "cremad" / f"{CREMAD[5]}.flv", src / "nosubs.flv")
    return src


def damaged_config(tmp_path, **kw) -> PrepareConfig:
    names = {
        n: (480, 360, 2.5, [100, 20, 380, 340, 0.9]) for n in CREMAD[:3] + ["garbage", "empty", "nosubs"]
    }
    names["truncated"] = (640, 480, 6.2, [0, 0, 640, 480, 0.9])
    detector = "json:" + str(write_boxes_json(tmp_path / "boxes.json", names))
    return PrepareConfig(
        detector=detector, scorer=KeywordScorer(), filter=ClipFilter(**KEEP_ALL), shard_clips=2, **kw
    )


def test_damaged_inputs_are_skipped_and_reported_then_rerun_resumes(media_dir, tmp_path):
    src = make_damaged_inputs(media_dir, tmp_path)
    out = tmp_path / "out"
    summary = prepare(src, out, damaged_config(tmp_path))
    reasons = {Path(f["video"]).stem: f["reason"] for f in summary["failures"]}
    assert summary["ok"] == 3 and set(reasons) == {"truncated", "garbage", "empty", "notavideo", "nosubs"}
    assert "truncated or corrupt" in reasons["truncated"] and "truncated.mp4" in reasons["truncated"]
    assert "garbage.vtt" in reasons["garbage"] and "WebVTT" in reasons["garbage"]
    assert "empty.srt" in reasons["empty"] and "empty subtitle file" in reasons["empty"]
    assert "notavideo.mp4" in reasons["notavideo"]
    assert "no subtitle" in reasons["nosubs"]
    assert exit_code(summary) == 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["failures"] == summary["failures"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clips"] == 3 and len(manifest["failures"]) == 5
    assert (out / "manifest.png").stat().st_size > 1000
    assert manifest["filter_stats"] == {"kept": 3, "sentences": 3}  # failed videos' partial counts left out
    assert [s["name"] for s in manifest["shards"]] == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]  # 2 clips per shard
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}

    again = prepare(
        src, out, damaged_config(tmp_path)
    )  # nothing left to do: done and failed videos are skipped
    assert again["processed"] == 0 and again["already_done"] == 8 and again["corpus_clips"] == 3
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
    assert exit_code(again) == 0

    retry = prepare(src, out, damaged_config(tmp_path, retry_failed=True))
    assert retry["processed"] == 5 and retry["failed"] == 5 and retry["corpus_clips"] == 3


def test_interrupted_run_state_is_recovered(media_dir, tmp_path):
    """What a kill -9 can leave behind: a half-written shard, a finished-but-unpacked video,
    a cut ledger line, a ledger entry whose shard never got renamed."""
    src = make_damaged_inputs(media_dir, tmp_path)
    out = tmp_path / "out"
    prepare(src, out, damaged_config(tmp_path))
    clean = read_shards(out)
    state = out / ".prepare"
    ledger_lines = (state / "progress.jsonl").read_text().splitlines()
    ok = [json.loads(line) for line in ledger_lines if '"status":"ok"' in line]
    # rebuild an interrupted state: shard-000001 was being written (in the state folder, where the
    # packer writes it before the rename); its video sits finished in pending/
    half = state / ".shard-000001.tar.tmp"
    (out / "shard-000001.tar").rename(half)
    last = ok[-1]
    assert last["shard"] == "shard-000001.tar"
    with (
        tarfile.open(state / "pending" / f"{last['video_id']}.tar", "w") as tar,
        tarfile.open(half) as src_tar,
    ):
        for member in src_tar.getmembers():
            tar.addfile(member, src_tar.extractfile(member))
    (state / "pending" / f"{last['video_id']}.json").write_text(
        json.dumps({k: v for k, v in last.items() if k != "shard"})
    )
    (state / "progress.jsonl").write_text("\n".join(ledger_lines) + '\n{"video_id": "cut-mid-wri')

    summary = prepare(src, out, damaged_config(tmp_path))
    assert not half.exists() and not list(out.glob("*.tmp")) and not list((state / "pending").iterdir())
    assert summary["processed"] == 1 and summary["ok"] == 1  # the unpacked video, not re-decoded
    assert read_shards(out).keys() == clean.keys()


def test_kill_9_leaves_no_partial_shard_and_rerun_completes(media_dir, tmp_path):
    src = make_damaged_inputs(media_dir, tmp_path)
    out = tmp_path / "out"
    config = damaged_config(tmp_path)
    config.shard_clips = 1
    # a real process running prepare(), killed with SIGKILL as soon as its first shard is out
    proc = multiprocessing.get_context("spawn").Process(target=prepare, args=(src, out, config))
    proc.start()
    deadline = time.time() + 60
    while time.time() < deadline and proc.is_alive() and not list(out.glob("*.tar")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    for shard in out.glob("*.tar"):  # whatever exists under a final name is a complete shard
        with tarfile.open(shard) as tar:
            assert any(n.endswith(".json") for n in tar.getnames())
    summary = prepare(src, out, config)
    assert exit_code(summary) == 0
    assert len(read_shards(out)) == 3 and not list(out.glob("*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clips"] == 3 and len(manifest["failures"]) == 5


def test_parts_with_worker_pool_then_merge(media_dir, tmp_path):
    out = tmp_path / "out"
    det = cremad_boxes(tmp_path, media_dir)
    inputs = media_dir / "cremad" / "transcript.csv"
    for part, workers in (("0/2", 1), ("1/2", 0)):  # part 0 through a worker process pool
        prepare(
            inputs,
            out,
            PrepareConfig(
                detector=det,
                scorer=KeywordScorer(),
                filter=ClipFilter(**KEEP_ALL),
                part=part,
                workers=workers,
            ),
        )
    m0, m1 = (json.loads((out / f"manifest.part-{i}-of-2.json").read_text()) for i in range(2))
    assert m0["clips"] + m1["clips"] == 6 and m0["clips"] and m1["clips"]
    # the part that completed the set merged them; --merge by hand gives the same
    auto = json.loads((out / "manifest.json").read_text())
    assert auto["clips"] == 6 and auto["parts"]["missing"] == []
    merged = merge_manifests(out)
    assert merged["shards"] == auto["shards"]
    assert merged["clips"] == 6 and merged["parts"]["missing"] == []
    assert len(merged["failures"]) == 6  # actor 1002 rows, from both parts
    names = [s["name"] for s in merged["shards"]]
    assert all((out / n).is_file() for n in names) and {n[:5] for n in names} == {"p0000", "p0001"}
    assert len(read_shards(out)) == 6


def test_cli_end_to_end_and_exit_codes(media_dir, tmp_path, monkeypatch):
    from emotionclip.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # for the py: scorer below
    src = make_damaged_inputs(media_dir, tmp_path)
    common = [
        "--detector",
        damaged_config(tmp_path).detector,
        "--scorer",
        "py:prepare_support:KeywordScorer",
        "--max-neutral",
        "1",
        "--min-person-fraction",
        "0",
    ]
    assert main(["prepare", str(src), str(tmp_path / "out"), *common]) == 0  # 3 ok, 5 reported
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["clips"] == 3
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    for name in ("garbage.flv", "garbage.vtt", "truncated.mp4", "truncated.vtt"):
        os.symlink(src / name, only_bad / name)
    assert (
        main(["prepare", str(only_bad), str(tmp_path / "out2"), *common]) == 1
    )  # nothing could be processed
    assert len(json.loads((tmp_path / "out2" / "summary.json").read_text())["failures"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["prepare", str(tmp_path / "empty"), str(tmp_path / "out3"), *common]) == 2  # no videos
    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert main(["prepare", "a", "b", "--part", "3/2"]) == 2
    assert (
        main(["prepare", "--merge", str(tmp_path / "out")]) == 2
    )  # no part manifests: an error, no traceback


def test_discovery_pairs_sidecars_and_reports_missing(tmp_path):
    for name in (
        "a.mp4",
        "a.srt",
        "b.mkv",
        "b.info.json",
        "b.de.vtt",
        "b.en.vtt",
        "c.webm",
        "c.info.json",
        "notes.txt",
    ):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.mp4").write_text("x")
    (tmp_path / "sub" / "a.vtt").write_text("x")
    items = {it.video.relative_to(tmp_path).as_posix(): it for it in discover(tmp_path)}
    assert set(items) == {"a.mp4", "b.mkv", "c.webm", "sub/a.mp4"}
    assert items["a.mp4"].subtitle.name == "a.srt" and items["sub/a.mp4"].subtitle.name == "a.vtt"
    assert items["b.mkv"].subtitle.name == "b.en.vtt"  # English preferred, yt-dlp's info.json is no subtitle
    assert items["c.webm"].subtitle is None and "no subtitle" in items["c.webm"].error
    ids = [it.video_id for it in items.values()]
    assert len(set(ids)) == 4 and not any("." in i for i in ids)  # unique, WebDataset-safe keys
    assert [it.video_id for it in discover(tmp_path)] == sorted(ids)  # deterministic order for --part


def test_a_worker_crash_fails_only_its_video(media_dir, tmp_path):
    src = make_damaged_inputs(media_dir, tmp_path)
    config = damaged_config(tmp_path, workers=2)
    config.detector = CrashingDetector(config.detector[len("json:") :], crash_on=CREMAD[1])
    summary = prepare(src, tmp_path / "out", config)
    reasons = {Path(f["video"]).stem: f["reason"] for f in summary["failures"]}
    assert "worker process died" in reasons[CREMAD[1]]
    assert summary["ok"] == 2 and summary["failed"] == 6 and summary["corpus_clips"] == 2


def test_detector_none_keeps_clips_without_boxes(tmp_path):
    from emotionclip.constants import SAMPLE_MEDIA

    src = tmp_path / "in"
    src.mkdir()
    os.symlink(SAMPLE_MEDIA / "cremad" / f"{CREMAD[0]}.flv", src / "clip.flv")
    (src / "clip.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nDon't forget a jacket\n")
    config = PrepareConfig(detector="none", scorer=KeywordScorer(), filter=ClipFilter(**KEEP_ALL))
    assert prepare(src, tmp_path / "out", config)["ok"] == 1
    (sample,) = read_shards(tmp_path / "out").values()
    assert json.loads(sample["json"])["has_person"] == 0.0 and all(
        b == [] for b in json.loads(sample["boxes.json"])
    )
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["detector"] == "none"
