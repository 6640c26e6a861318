"""Window rule, streaming sampler, embeddings, and bad inputs in a batch."""

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import emotionclip
from emotionclip.analyze import embed_image, embed_video, plan_windows, window_starts
from emotionclip.analyze.batch import analyze_paths
from emotionclip.analyze.windows import iter_windows, prefetch
from emotionclip.transform import model_transform
from emotionclip.video_io import probe_video, read_frames_at

TINY_BACKBONE = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = emotionclip.EmotionCLIPConfig(backbone=TINY_BACKBONE, video_len=4, head_layers=1, head_ffn=64)
    return emotionclip.EmotionCLIP(cfg).eval()


def write_video(path: Path, seconds: float, fps: int = 10, size=(96, 72)) -> Path:
    """A moving gradient; each frame's mean brightness encodes its index so order is checkable."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        w, h = size
        ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
        for i in range(int(round(seconds * fps))):
            img = np.broadcast_to(ramp + 3 * i, (h, w, 3)).clip(0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        out.mux(stream.encode())
    return path


# ---- the window rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, window, stride, expected",
    [
        (10.0, 2.0, 1.0, 9),  # starts 0..8, last ends at 10
        (10.5, 2.0, 1.0, 9),  # tail of 0.5 s after the last full window: no window
        (6.166, 2.0, 1.0, 5),
        (6.166, 1.5, 0.5, 10),
        (6.0, 2.0, 2.0, 3),
        (6.0, 2.0, 4.0, 2),  # stride > window leaves gaps, still start + window <= duration
        (1.2, 2.0, 1.0, 1),  # shorter than one window: one window over the whole video
    ],
)
def test_window_count_rule(duration, window, stride, expected):
    starts = window_starts(duration, window, stride)
    assert len(starts) == expected
    assert len(starts) == max(1, math.floor((duration - window) / stride + 1e-6) + 1)
    plan = plan_windows(duration, window, stride, 4)
    assert np.all(plan.ends <= duration + 1e-9)
    assert np.allclose(np.diff(plan.starts), stride)


def test_window_rule_rejects_nonsense():
    with pytest.raises(ValueError, match="positive"):
        window_starts(5.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        window_starts(5.0, 2.0, -1.0)
    with pytest.raises(ValueError, match="duration"):
        window_starts(0.0, 2.0, 1.0)


def test_grid_gives_uniform_centres():
    plan = plan_windows(10.0, 2.0, 1.0, 8)
    times = (plan.grid_index + 0.5) * plan.grid_step
    expected = plan.starts[:, None] + (np.arange(8) + 0.5) * 2.0 / 8
    assert np.allclose(times, expected)


# ---- streaming ---------------------------------------------------------------------------------


def test_windows_match_direct_decoding(tmp_path):
    path = write_video(tmp_path / "ramp.mp4", 5.0)
    info = probe_video(path)
    plan = plan_windows(info.duration, 2.0, 1.0, 4)
    windows = list(iter_windows(path, info, plan, detector=None, short_side=72))
    assert [w.index for w in windows] == list(range(len(plan)))
    for w in windows:
        assert np.allclose(w.times, w.start + (np.arange(4) + 0.5) * 0.5)
        direct = read_frames_at(path, w.times.tolist(), short_side=72)
        assert np.array_equal(w.frames, direct)
        assert all(b.shape == (0, 5) for b in w.boxes)


def test_embed_video_equals_model_on_the_same_frames(tmp_path, model):
    path = write_video(tmp_path / "ramp.mp4", 4.0)
    result = embed_video(model, path, window=2.0, stride=1.0, detector=None, batch_size=2)
    assert result.features.shape == (3, model.embed_dim)
    assert not result.has_person.any()
    tf = model_transform(model)
    for i, (start, end) in enumerate(zip(result.starts, result.ends, strict=True)):
        times = np.linspace(start, end, 5)[:-1] + (end - start) / 8
        pixels, _ = tf(read_frames_at(path, times.tolist(), short_side=72))
        with torch.no_grad():
            expected = model.encode_video(pixels[None], None)[0]  # no person = no subject token
        assert torch.allclose(result.features[i], expected, atol=1e-5)


def test_bf16_close_to_fp32(tmp_path, model):
    path = write_video(tmp_path / "ramp.mp4", 3.0)
    fp32 = embed_video(model, path, detector=None).normalized
    bf16 = embed_video(model, path, detector=None, precision="bf16").normalized
    assert (fp32 * bf16).sum(-1).min() > 0.98


def test_prefetch_reraises_producer_errors():
    def items():
        yield 1
        raise ValueError("broken producer")

    got = []
    with pytest.raises(ValueError, match="broken producer"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1]


def test_embed_image_subject_changes_features(model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(path)
    plain = embed_image(model, path, detector=None)
    boxed = embed_image(model, path, boxes=np.array([[10, 10, 60, 70, 0.9]], np.float32))
    assert plain.shape == (model.embed_dim,)
    assert not torch.allclose(plain, boxed)
    with pytest.raises(ValueError, match="cannot read as an image"):
        embed_image(model, _garbage(tmp_path / "x.png"), detector=None)


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not an image" * 10)
    return path


# ---- bad inputs in a batch ---------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    audio = tmp_path / "audio_only.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        out.mux(stream.encode())
    empty = tmp_path / "zero_seconds.avi"  # a video stream with a header and no frames
    out = av.open(str(empty), "w")
    stream = out.add_stream("mpeg4", rate=10)
    stream.width, stream.height = 64, 48
    out.start_encoding()
    out.close()
    return {"corrupt": corrupt, "audio": audio, "empty": empty, "missing": tmp_path / "missing.mp4"}


def test_bad_inputs_fail_alone_and_batch_goes_on(tmp_path, model):
    good = write_video(tmp_path / "good.mp4", 3.0)
    bad = _bad_inputs(tmp_path)
    out = tmp_path / "out"
    videos = [bad["corrupt"], good, bad["audio"], bad["empty"], bad["missing"]]
    summary = analyze_paths(model, videos, out, window=2.0, stride=1.0, detector=None)

    assert [d["video"] for d in summary["done"]] == [str(good)]
    assert (out / "good" / "report.html").is_file()
    errors = {Path(f["video"]).name: f["error"] for f in summary["failed"]}
    assert set(errors) == {p.name for p in bad.values()}
    for name, error in errors.items():
        assert error.startswith(str(tmp_path / name)), error  # the message names the file
    assert "no video stream" in errors["audio_only.m4a"]
    assert "no such file" in errors["missing.mp4"]
    assert "cannot open" in errors["corrupt.mp4"] or "decod" in errors["corrupt.mp4"]
    assert "empty (0 s)" in errors["zero_seconds.avi"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["failed"] == summary["failed"]

    # a second run resumes: the finished video is skipped, not overwritten
    before = (out / "good" / "emotions.csv").stat().st_mtime_ns
    again = analyze_paths(model, [good], out, window=2.0, stride=1.0, detector=None)
    assert again["skipped"] and not again["done"]
    assert (out / "good" / "emotions.csv").stat().st_mtime_ns == before


def test_a_rerun_with_other_settings_says_the_old_outputs_stay(tmp_path, model, caplog):
    import logging

    good = write_video(tmp_path / "good.mp4", 3.0)
    out = tmp_path / "out"
    analyze_paths(model, [good], out, window=2.0, stride=1.0, detector=None)
    with caplog.at_level(logging.WARNING, logger="emotionclip.jobs"):
        same = analyze_paths(model, [good], out, window=2.0, stride=1.0, detector=None)
    assert same["skipped"] and "other settings" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="emotionclip.jobs"):
        other = analyze_paths(model, [good], out, window=2.0, stride=0.5, detector=None)
    assert (
        other["skipped"]
        and "other settings (stride: 1.0 -> 0.5)" in caplog.text
        and "--overwrite" in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emotionclip.jobs"):
        redone = analyze_paths(model, [good], out, window=2.0, stride=0.5, detector=None, overwrite=True)
    assert redone["done"] and "other settings" not in caplog.text


# ---- scores ------------------------------------------------------------------------------------


def test_zero_shot_table_over_custom_classes(tmp_path, model):
    from emotionclip.analyze import analyze_video

    path = write_video(tmp_path / "ramp.mp4", 3.0)
    table = analyze_video(
        model, path, classes=["calm", "angry", "amused"], window=1.0, stride=0.5, detector=None
    )
    assert list(table.columns) == [
        "window",
        "start",
        "end",
        "has_person",
        "padded_frames",
        "boxes",
        "top_emotion",
        "calm",
        "angry",
        "amused",
    ]
    assert len(table) == 5  # starts 0, 0.5, ..., 2.0
    assert np.allclose(table[["calm", "angry", "amused"]].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="given twice"):
        analyze_video(model, path, classes=["joy", "joy"], detector=None)


def test_probe_head_scores(tmp_path, model):
    from emotionclip.analyze import analyze_video
    from emotionclip.analyze.embed import embed_video as embed
    from emotionclip.heads import ProbeHead

    rng = np.random.default_rng(0)
    head = ProbeHead(
        "multinomial", rng.normal(size=(3, model.embed_dim)), rng.normal(size=3), ("low", "mid", "high")
    )
    head.save(tmp_path / "head")
    path = write_video(tmp_path / "ramp.mp4", 3.0)
    table = analyze_video(model, path, head=tmp_path / "head", detector=None)
    expected = head.predict(embed(model, path, detector=None).features)
    assert np.allclose(table[["low", "mid", "high"]].to_numpy(), expected, atol=1e-5)
    wrong = ProbeHead("ovr", rng.normal(size=(2, model.embed_dim + 1)), np.zeros(2), ("a", "b"))
    wrong.save(tmp_path / "wrong")
    with pytest.raises(ValueError, match="expects 33-d features"):
        analyze_video(model, path, head=tmp_path / "wrong", detector=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tmp_path, model):
    path = write_video(tmp_path / "ramp.mp4", 3.0)
    cpu = embed_video(model, path, detector=None).features
    gpu = embed_video(model, path, detector=None, device="cuda").features
    half = embed_video(model, path, detector=None, device="cuda", precision="fp16").normalized
    model.to("cpu")
    assert torch.allclose(cpu, gpu, atol=1e-3)
    assert (torch.nn.functional.normalize(cpu, dim=-1) * half).sum(-1).min() > 0.98


def test_windows_with_gaps_between_them(tmp_path):
    path = write_video(tmp_path / "ramp.mp4", 6.0)
    info = probe_video(path)
    plan = plan_windows(info.duration, 1.0, 2.5, 4)  # windows 0-1, 2.5-3.5, 5-6
    windows = list(iter_windows(path, info, plan, detector=None))
    assert [w.start for w in windows] == [0.0, 2.5, 5.0]
    for w in windows:
        assert np.array_equal(w.frames, read_frames_at(path, w.times.tolist()))


def test_cli_refuses_a_bad_checkpoint_or_arguments(tmp_path, caplog):
    from emotionclip.cli import main

    video = write_video(tmp_path / "ok.mp4", 2.0)
    bad = tmp_path / "weights.pt"
    bad.write_text("not a checkpoint")
    assert main(["analyze", str(video), "--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in caplog.text
    assert main(["analyze", str(video), "--checkpoint", str(bad), "--stride", "0"]) == 2
    assert "--stride must be positive" in caplog.text or "must be positive" in caplog.text
    assert not (tmp_path / "o").exists()


def test_same_names_from_different_folders_do_not_collide(tmp_path, model):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_video(tmp_path / "a" / "clip.mp4", 2.0)
    second = write_video(tmp_path / "b" / "clip.mp4", 3.0)
    out = tmp_path / "out"
    summary = analyze_paths(model, [first, second], out, detector=None)
    assert [d["html"] for d in summary["done"]] == [
        str(out / "clip" / "report.html"),
        str(out / "clip-2" / "report.html"),
    ]
    # a later run with only the second video finds its own results, not the first one's
    again = analyze_paths(model, [second], out, detector=None)
    assert again["skipped"] == [{"video": str(second), "out": str(out / "clip-2")}]
