"""Issue 23 (items 2-7): outputs never read back as inputs, the demo never overwrites a user's files,
no silently wrong scores, one-line errors instead of tracebacks, checks before the work."""

import json
import shutil

import numpy as np
import pytest
import torch

import emotionclip
from emotionclip._io import OUTPUT_MARKER
from emotionclip.cli import main


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = emotionclip.create_model("tiny").eval()
    return emotionclip.save_model(model, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def clip_folder(tmp_path, media_dir):
    """A user's folder with one FLV clip (the browser cannot play it: analyze writes a video.mp4 copy)."""
    folder = tmp_path / "n"
    folder.mkdir()
    shutil.copy(media_dir / "cremad" / "1001_DFA_HAP_XX.flv", folder / "clip.flv")
    return folder


def _analyze(inputs, out, checkpoint, *extra):
    return main(
        ["analyze", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out), "--detector", "none"]
        + ["--keyframes", "1", *extra]
    )


# ---- 2: an output folder inside the input folder is never read back --------------------------------


def test_2_an_analysis_inside_its_input_folder_is_not_analysed_again(clip_folder, tiny_checkpoint):
    out = clip_folder / "results"
    assert _analyze(clip_folder, out, tiny_checkpoint) == 0
    assert (out / "clip" / "video.mp4").is_file()  # the browser copy a second run must not read
    assert _analyze(clip_folder, out, tiny_checkpoint) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["video"] for s in summary["skipped"]] == [str(clip_folder / "clip.flv")]
    assert summary["done"] == [] and summary["failed"] == []
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["clip"]
    # embed beside it reads neither the copy nor the report's PNG and thumbnail
    emb = clip_folder / "embeddings"
    code = main(["embed", str(clip_folder), "--checkpoint", str(tiny_checkpoint), "--out", str(emb)])
    assert code == 0
    summary = json.loads((emb / "summary.json").read_text())
    assert [d["input"] for d in summary["done"]] == [str(clip_folder / "clip.flv")]


def test_2_prepare_discovery_skips_marked_output_folders(tmp_path, media_dir):
    from emotionclip.prepare.discovery import discover

    shutil.copy(media_dir / "friday.mp4", tmp_path / "friday.mp4")
    (tmp_path / "results" / "friday").mkdir(parents=True)
    (tmp_path / "results" / OUTPUT_MARKER).write_text('{"tool": "analyze", "format": 1}')
    shutil.copy(media_dir / "friday.mp4", tmp_path / "results" / "friday" / "video.mp4")
    assert [it.video.name for it in discover(tmp_path, identify_content=False)] == ["friday.mp4"]


# ---- 4 / 5: probe heads ------------------------------------------------------------------------


def _head(folder, weight):
    from emotionclip.heads import ProbeHead

    return ProbeHead("multinomial", weight, np.zeros(len(weight), np.float32), ("a", "b")).save(folder)


def test_4_a_head_with_nan_weights_is_refused(tmp_path, media_dir, tiny_checkpoint, caplog):
    weight = np.ones((2, emotionclip.load_model(tiny_checkpoint).embed_dim), np.float32)
    weight[1, 3] = np.nan
    head = _head(tmp_path / "head", weight)
    out = tmp_path / "out"
    assert _analyze(media_dir / "friday.mp4", out, tiny_checkpoint, "--head", str(head)) == 2
    assert f"{head / 'head.safetensors'}: 1 weight(s) are NaN or infinite" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("kind", ["random file", "corrupt safetensors"])
def test_5_a_broken_head_is_one_line_before_the_model_loads(tmp_path, media_dir, caplog, kind):
    if kind == "random file":
        head = tmp_path / "notes.txt"
        head.write_text("not a head")
        problem = "is a file, not a probe head"
    else:
        head = _head(tmp_path / "head", np.ones((2, 8), np.float32))
        (head / "head.safetensors").write_bytes(b"\x00garbage" * 10)
        problem = "broken probe head"
    missing = tmp_path / "no-such-checkpoint"  # never reached: the head is checked first
    assert _analyze(media_dir / "friday.mp4", tmp_path / "out", missing, "--head", str(head)) == 2
    assert f"--head {head}: {problem}" in caplog.text
    assert "cannot load the model" not in caplog.text


# ---- 5: exports ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from emotionclip.export import export_model

    return export_model(emotionclip.load_model(tiny_checkpoint), tmp_path_factory.mktemp("e") / "x", "onnx")


def test_5_a_truncated_onnx_graph_is_one_line(export_dir, tmp_path, media_dir, caplog):
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    graph = broken / "frame_encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:5000])
    with pytest.raises(ValueError, match=f"{graph}: onnxruntime cannot load this graph"):
        emotionclip.load_runner(broken, backend="onnxruntime")
    image = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.full((64, 48, 3), 128, np.uint8)).save(image)
    args = ["embed", str(image), "--checkpoint", str(broken), "--backend", "onnxruntime"]
    assert main([*args, "--out", str(tmp_path / "out"), "--detector", "none"]) == 2
    assert f"{graph}: onnxruntime cannot load this graph" in caplog.text


def test_5_an_export_without_backend_says_add_backend(export_dir):
    with pytest.raises(emotionclip.CheckpointError, match="is an export .*: add --backend onnxruntime"):
        emotionclip.load_model(export_dir)


def test_5_a_corrupt_cached_export_is_made_again(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    from emotionclip.backends import load_backend

    monkeypatch.setenv("EMOTIONCLIP_CACHE", str(tmp_path / "cache"))
    model = emotionclip.load_model(tiny_checkpoint)
    load_backend(model, "onnxruntime")
    (graph,) = (tmp_path / "cache" / "exports").glob("*/onnx-fp32/frame_encoder.onnx")
    graph.write_bytes(graph.read_bytes()[:5000])  # a full disk, a crash mid-copy
    again = load_backend(model, "onnxruntime")
    assert "exporting the model again" in caplog.text
    video = torch.randn(1, model.video_len, 3, 224, 224)
    ref = model.encode_video(video).detach()
    assert torch.nn.functional.cosine_similarity(again.encode_video(video), ref).min() > 0.9999
    caplog.clear()
    load_backend(model, "onnxruntime")  # repaired for good
    assert "again" not in caplog.text


# ---- 6: leftovers and checks before the work ---------------------------------------------------


def test_6_a_proxy_temporary_left_by_sigterm_is_removed_on_rerun(clip_folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    assert _analyze(clip_folder / "clip.flv", out, tiny_checkpoint) == 0
    stale = out / "clip" / ".video.mp4.k2j4h1.tmp"
    stale.write_bytes(b"half a proxy")
    assert _analyze(clip_folder / "clip.flv", out, tiny_checkpoint) == 0
    assert not stale.exists() and (out / "clip" / "video.mp4").is_file()


def test_6_fp16_on_the_cpu_is_refused_before_any_video(tmp_path, media_dir, tiny_checkpoint, caplog):
    out = tmp_path / "out"
    assert _analyze(media_dir / "friday.mp4", out, tiny_checkpoint, "--precision", "fp16") == 2
    assert "--precision fp16: fp16 needs a CUDA device" in caplog.text
    assert not out.exists()


def test_6_zero_shot_checks_output_and_templates_before_loading(tmp_path, media_dir, capsys):
    missing = str(tmp_path / "no-such-checkpoint")  # a load would fail: nothing may get that far
    taken = tmp_path / "results.json"
    taken.write_text("mine")
    video = str(media_dir / "friday.mp4")
    assert main(["zero-shot", video, "--checkpoint", missing, "--output", str(taken)]) == 2
    assert f"{taken}: already exists" in capsys.readouterr().err and taken.read_text() == "mine"
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of someone\n")
    assert main(["zero-shot", video, "--checkpoint", missing, "--templates-file", str(templates)]) == 2
    assert f"{templates}: every template needs a '{{}}'" in capsys.readouterr().err


# ---- 4 / 7: training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from _train_util import micro_backbone, write_shards

    folder = tmp_path_factory.mktemp("corpus")
    return write_shards(folder, n_shards=1, clips_per_shard=8), micro_backbone(folder)


def _train(corpus, run, *extra):
    pattern, backbone = corpus
    return main(
        ["train", "--data", pattern, "--output", str(run), "--backbone", backbone, "--pretrained", "none"]
        + ["--batch-size", "4", "--workers", "0", "--device", "cpu", "--warmup-steps", "0", *extra]
    )


def test_7_train_on_the_cpu_runs_at_the_devices_precision_by_default(corpus, tmp_path):
    import yaml

    run = tmp_path / "run"
    assert _train(corpus, run, "--head-layers", "1", "--video-len", "4", "--max-steps", "1") == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["precision"] == "fp32"  # what ran


def test_4_train_init_refuses_conflicting_architecture_and_records_the_truth(corpus, tmp_path, caplog):
    import yaml

    first, fp32 = tmp_path / "first", ("--precision", "fp32")
    assert _train(corpus, first, "--head-layers", "1", "--video-len", "4", "--max-steps", "1", *fp32) == 0
    init = sorted(first.rglob("*.pt"))[-1]
    conflict = tmp_path / "conflict"
    code = _train(corpus, conflict, "--init", str(init), "--video-len", "6", "--head-layers", "3", *fp32)
    assert code == 2
    assert (
        f"{init}: --init fixes the architecture; drop or correct --video-len 6 (the checkpoint's is 4)"
        in (caplog.text)
    )
    assert "--head-layers 3 (the checkpoint's is 1)" in caplog.text
    assert not list(conflict.glob("*.pt")) and not list(conflict.glob("checkpoints/*"))
    # the defaults (8 frames, 6 layers) give way to the checkpoint's, and config.yaml says so
    fine = tmp_path / "fine"
    assert _train(corpus, fine, "--init", str(init), "--max-steps", "1", *fp32) == 0
    recorded = yaml.safe_load((fine / "config.yaml").read_text())
    assert (recorded["video_len"], recorded["head_layers"]) == (4, 1)
    assert "training its architecture (video_len 4, head_layers 1)" in caplog.text


# ---- 3 / 5: the demo follows analyze's folder rules ------------------------------------------------


def test_3_demo_never_overwrites_a_users_files(tmp_path, caplog):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.html").write_text("my page")
    (out / "corpus_manifest.csv").write_text("my,table\n")
    assert main(["demo", "--out", str(out), "--train-steps", "1"]) == 2
    assert f"{out}: holds files that `emotionclip demo` did not write" in caplog.text
    assert (out / "index.html").read_text() == "my page"
    assert (out / "corpus_manifest.csv").read_text() == "my,table\n"
    assert sorted(p.name for p in out.iterdir()) == ["corpus_manifest.csv", "index.html"]


@pytest.mark.parametrize("case", ["out is a file", "no training steps"])
def test_5_demo_dead_ends_are_one_line(tmp_path, caplog, case):
    out = tmp_path / "demo"
    if case == "out is a file":
        out.write_text("notes")
        args, problem = ["--out", str(out)], f"{out}: is a file, not a folder"
    else:
        args, problem = ["--out", str(out), "--train-steps", "0"], "--train-steps must be >= 1 (got 0)"
    assert main(["demo", *args]) == 2
    assert problem in caplog.text
    assert out.is_file() if case == "out is a file" else not out.exists()


# ---- 7: a newcomer's first impressions -----------------------------------------------------------------


def test_7_readme_python_lines_run_as_written_on_the_demo_model(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    import pandas as pd

    from emotionclip.demo import MODEL_DIR, DemoConfig

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python in") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # the model the demo trains (train_tiny's architecture) where the demo saves it
    model = emotionclip.create_model(
        "tiny", pretrained=None, video_len=DemoConfig.video_len, head_layers=1
    ).eval()
    emotionclip.save_model(model, tmp_path / DemoConfig.out / MODEL_DIR)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    with torch.no_grad():
        exec(compile(code, "README.md", "exec"), names)  # noqa: S102 (our own README)
    assert isinstance(names["table"], pd.DataFrame) and len(names["table"]) >= 4
    assert tuple(names["feats"].shape) == (1, model.embed_dim)
    assert tuple(names["texts"].shape) == (1, model.embed_dim)


def test_7_flat_scores_give_no_dominant_emotion_never_a_confident_label(clip_folder, tmp_path):
    import re

    import pandas as pd

    from emotionclip.heads import DOMINANCE_MARGIN, top_emotions

    flat = np.full((2, 7), 1 / 7) + np.array([[0, 1e-4, 0, 0, 0, 0, 0], [0.3, 0, 0, 0, 0, 0, 0]])
    assert top_emotions(flat, list("abcdefg")).tolist() == ["", "a"]
    # a model whose temperature has collapsed (as the demo's tiny one) scores every class 1/7
    torch.manual_seed(0)
    model = emotionclip.create_model("tiny").eval()
    with torch.no_grad():
        model.logit_scale.fill_(-12.0)
    checkpoint = emotionclip.save_model(model, tmp_path / "flat-model")
    out = tmp_path / "out"
    assert _analyze(clip_folder / "clip.flv", out, checkpoint) == 0
    table = pd.read_csv(out / "clip" / "emotions.csv", keep_default_na=False)
    classes = json.loads((out / "clip" / "emotions.json").read_text())["classes"]
    ranked = np.sort(table[classes].to_numpy(), axis=1)
    flat_rows = ranked[:, -1] - ranked[:, -2] < DOMINANCE_MARGIN
    assert flat_rows.all()  # the premise: this model carries no signal here
    assert (table["top_emotion"] == "").all()
    report = (out / "clip" / "report.html").read_text()
    assert "No window has a dominant emotion" in report and "no dominant emotion" in report
    index = (out / "index.html").read_text()
    assert '<span class="chip flat">no dominant emotion</span>' in index
    assert not re.search(r'<span class="chip" [^>]*>\w+ \d+%</span>', index)  # no "disgust 100 %"
    from emotionclip.evaluate.zeroshot import zero_shot  # the same rule for zero-shot

    (result,) = zero_shot(checkpoint, [clip_folder / "clip.flv"], device="cpu")["results"]
    assert result["top"] == "" and max(result["scores"].values()) == pytest.approx(1 / 7, abs=1e-3)


@pytest.mark.browser
def test_7_report_layout_fits_at_1280_and_420_px(tmp_path, media_dir, tiny_checkpoint):
    from test_report_html import CHROMIUM, FLAGS

    if not CHROMIUM.is_file() or not shutil.which(str(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    deep = tmp_path / ("a-rather-long-folder-name-without-any-spaces-" * 2) / "friday.mp4"
    deep.parent.mkdir()
    shutil.copy(media_dir / "friday.mp4", deep)  # a long unbroken path in the metadata line
    out = tmp_path / "out"
    # stride 0.35 s: 13 windows over the 6.2 s clip, so the strip holds the full 12 keyframes
    args = ["analyze", str(deep), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--stride", "0.35"]
    assert main(args) == 0
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            for width in (1280, 420):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto((out / "friday" / "report.html").as_uri(), wait_until="load")
                cut = page.evaluate(
                    "() => [...document.querySelectorAll('.strip figure, .meta')]"
                    ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5"
                    " || e.scrollWidth > e.clientWidth + 1).length"
                )
                assert page.evaluate("document.querySelectorAll('.strip figure').length") == 12
                assert cut == 0, f"{cut} keyframe(s) or metadata line cut at {width} px"
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                page.close()
        finally:
            browser.close()


def test_7_demo_help_and_readme_give_the_same_measured_time(capsys):
    from pathlib import Path

    from emotionclip.demo import DEMO_TIME

    with pytest.raises(SystemExit):
        main(["--help"])
    assert DEMO_TIME in " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert readme.count(DEMO_TIME) >= 2 and "about a minute" not in readme
