"""`emotionclip demo` end to end on the bundled sample media, with a few training steps."""

import json

import pytest

import emotionclip
from emotionclip.demo import MODEL_DIR, SAMPLE_MEDIA, DemoConfig, run_demo, sample_videos


def test_sample_media_is_bundled_with_attribution():
    assert (SAMPLE_MEDIA / "ATTRIBUTION.md").read_text().count("CC0") >= 2
    assert all(p.is_file() for p in sample_videos()) and len(sample_videos()) == 8
    assert (SAMPLE_MEDIA / "friday.vtt").is_file() and (SAMPLE_MEDIA / "cremad" / "transcript.csv").is_file()


@pytest.mark.slow
def test_demo_prepares_trains_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_demo(DemoConfig(out=out, train_steps=3)) == 0
    printed = capsys.readouterr().out
    assert "not a trained EmotionCLIP" in printed and str((out / "index.html").resolve()) in printed
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    assert manifest["clips"] > 0
    summary = json.loads((out / "analysis" / "summary.json").read_text())
    assert len(summary["done"]) == 8 and not summary["failed"]
    report = (out / "analysis" / "friday" / "report.html").read_text()
    assert "NOT a trained EmotionCLIP" in report
    model = emotionclip.load_model(out / MODEL_DIR)  # where the README's Python lines load it from
    assert (model.video_len, model.config.head_layers) == (DemoConfig.video_len, 1)
    index = (out / "index.html").read_text()
    assert index.count('<tr data-status="done"') == 8 and 'href="analysis/friday/report.html"' in index
