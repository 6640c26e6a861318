"""The pieces under feature extraction: the core prefetcher, the image loader, the model handling."""

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import emotionclip
from emotionclip._io import FileError
from emotionclip._prefetch import prefetch
from emotionclip.evaluate.datasets import Sample
from emotionclip.evaluate.features import Protocol, extract_features
from emotionclip.video_io import ImageError, load_image
from evaluate_media import write_counting_video


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("emotionclip-prefetch")}


def test_prefetch_keeps_order_with_several_workers():
    def slow_square(i):
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        return i * i

    assert list(prefetch(range(40), slow_square, workers=3, depth=4)) == [i * i for i in range(40)]
    assert list(prefetch(iter(range(5)))) == list(range(5))  # no fn: the items, iterated ahead
    assert not _threads()


def test_prefetch_stays_bounded_and_stops_when_the_consumer_does():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(items(), lambda i: i, workers=2, depth=3)
    assert next(stream) == 0
    time.sleep(0.2)  # the producer runs ahead only as far as depth allows
    assert len(produced) <= 3 + 2
    stream.close()  # a consumer that stops early (break, exception) stops the threads
    assert len(produced) < 10 and not _threads()


def test_prefetch_reraises_errors_of_fn_and_of_the_items_in_the_consumer():
    def boom(i):
        if i == 3:
            raise OSError("item 3 is broken")
        return i

    got = []
    with pytest.raises(OSError, match="item 3 is broken"):
        for v in prefetch(range(10), boom, workers=2):
            got.append(v)
    assert got == [0, 1, 2]

    def items():
        yield 1
        raise ValueError("the listing failed")

    with pytest.raises(ValueError, match="the listing failed"):
        list(prefetch(items()))
    assert not _threads()


def test_prefetch_without_workers_runs_in_the_calling_thread():
    caller = threading.get_ident()
    assert set(prefetch(range(3), lambda _: threading.get_ident(), workers=0)) == {caller}


def test_load_image_paths_pil_and_arrays(tmp_path):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (6, 5, 3) and image.dtype == np.uint8 and image[0, 0, 0] == 200
    assert load_image(Image.open(tmp_path / "a.png")).shape == (6, 5, 3)
    assert load_image(image) is image
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"bad\.jpg: cannot read as an image") as err:
        load_image(tmp_path / "bad.jpg")
    assert isinstance(err.value, FileError)
    with pytest.raises(ImageError, match=r"gone\.png: no such file"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(ValueError, match="uint8 RGB"):
        load_image(np.zeros((4, 4), np.float32))


def test_extraction_leaves_the_callers_model_as_it_was(tmp_path):
    model = emotionclip.create_model(backbone="tiny", video_len=4, head_layers=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = write_counting_video(tmp_path / "v.mp4", frames=8)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 100)
    samples = [Sample("v", str(video), {}), Sample("b", str(broken), {}), Sample("w", str(video), {})]
    feats = extract_features(
        model, samples, Protocol(num_frames=4, image_size=model.image_size), num_workers=2
    )
    assert feats.keys == ["v", "w"] and feats.failed[0]["key"] == "b"
    assert feats.failed[0]["reason"].startswith(str(broken))  # "PATH: problem"
    np.testing.assert_allclose(feats.features[0], feats.features[1], atol=1e-6)
    assert model.training  # eval for the extraction, then back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_zero_shot_classifier_and_the_head_or_classes_rule():
    from emotionclip.heads import check_head_or_classes, zero_shot_classifier

    model = emotionclip.create_model(backbone="tiny", video_len=4, head_layers=1).train()
    cls = zero_shot_classifier(model, ["joy", "anger"], ["a {} face."], device="cpu")
    assert cls.shape[0] == 2 and model.training  # eval for the prompts, then back
    np.testing.assert_allclose(cls.norm(dim=-1).numpy(), 1, atol=1e-5)
    check_head_or_classes(None, ["joy"])
    check_head_or_classes("head_dir", None)
    with pytest.raises(ValueError, match="not both"):
        check_head_or_classes("head_dir", ["joy"])


def test_evaluate_claims_its_output_folder(tmp_path, caplog):
    from emotionclip._io import OutputDirError
    from emotionclip.cli import main
    from emotionclip.evaluate import evaluate

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(OutputDirError, match="did not write"):
        evaluate(tmp_path / "no.pt", "bold", tmp_path, out_dir=mine)
    args = ["evaluate", "--checkpoint", str(tmp_path / "no.pt"), "--dataset", "bold", "--root", str(tmp_path)]
    assert main([*args, "--out", str(mine)]) == 2  # one clear line, no traceback
    assert "did not write" in caplog.text
    assert (mine / "notes.txt").read_text() == "a user's file"
    assert main([*args, "--out", str(tmp_path / "new"), "--precision", "fp16", "--device", "cpu"]) == 2
    assert "fp16 needs a CUDA device" in caplog.text


def test_inference_on_another_device_uses_a_copy():
    from emotionclip.runner import as_runner

    class Encoder(torch.nn.Sequential):
        def encode_text(self, x):
            self.seen_training = self.training
            return self(x)

    model = Encoder(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).train()
    runner = as_runner(model, "meta")  # "meta": a second device on any machine
    runner.encode_text(torch.zeros(1, 3))
    assert runner.model is not model and runner.device.type == "meta" and not runner.model.seen_training
    assert next(runner.model.parameters()).device.type == "meta"
    assert next(model.parameters()).device.type == "cpu" and model.training
    runner = as_runner(model)
    runner.encode_text(torch.zeros(1, 3))
    assert runner.model is model and not model.seen_training and runner.device.type == "cpu"
    assert model.training
