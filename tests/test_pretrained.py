"""Where models come from: the named release entry (a local copy), hf-hub: ids, Hub-shaped folders.

Nothing here downloads: the release file is built in the release's layout from the packaged
key -> shape table, and the Hub is a local cache laid out as huggingface_hub writes it, read with
HF_HUB_OFFLINE=1.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import emotionclip
from emotionclip import pretrained
from emotionclip.pretrained import PretrainedError

RELEASE = pretrained.PRETRAINED["emotionclip-release"]


@pytest.fixture(scope="session")
def release_file(tmp_path_factory):
    """A full-size checkpoint in the release's format and layout (zero weights; ~680 MB)."""
    sd = {
        k: torch.arange(shape[0]) if k.endswith("position_ids") else torch.zeros(shape)
        for k, shape in RELEASE.expected_shapes().items()
    }
    path = tmp_path_factory.mktemp("release") / RELEASE.filename
    torch.save({"model": sd, "epoch": 25}, path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(RELEASE.path_env, raising=False)
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


def test_entry_is_data():
    assert "emotionclip-release" in emotionclip.list_pretrained()
    assert RELEASE.url.startswith("https://drive.google.com/") and RELEASE.sha256 is None
    assert RELEASE.architecture["backbone"] == "ViT-B-32" and RELEASE.architecture["video_len"] == 8
    shapes = RELEASE.expected_shapes()
    assert shapes["backbone.visual.conv1.weight"] == [768, 3, 32, 32]
    assert shapes["visual_head.frame_position_embedding.weight"] == [8, 512]


def test_release_entry_loads_a_full_size_local_copy(release_file, cache):
    (cache / RELEASE.filename).symlink_to(release_file)
    model = emotionclip.load_model("emotionclip-release")
    cfg = model.config
    assert cfg.backbone["vision_cfg"]["layers"] == 12 and cfg.backbone["vision_cfg"]["width"] == 768
    assert (cfg.video_len, cfg.head_layers, cfg.temporal_fusion) == (8, 6, "transformer")
    assert (cfg.preprocess.crop_size, cfg.preprocess.resize) == (224, 256)
    assert not model.training


def test_release_path_variable(release_file, cache, monkeypatch):
    monkeypatch.setenv(RELEASE.path_env, str(release_file))
    assert pretrained.locate(RELEASE) == release_file
    monkeypatch.setenv(RELEASE.path_env, str(cache / "nowhere.pt"))
    with pytest.raises(PretrainedError, match=r"nowhere\.pt: EMOTIONCLIP_RELEASE_PATH points here"):
        emotionclip.load_model("emotionclip-release")


def test_missing_release_says_where_to_get_it(cache):
    with pytest.raises(PretrainedError) as e:
        emotionclip.load_model("emotionclip-release")
    msg = str(e.value)
    assert msg.startswith(str(cache / RELEASE.filename) + ":")
    assert RELEASE.url in msg and RELEASE.path_env in msg and "put it at" in msg


def test_wrong_file_under_the_release_name(cache):
    model = emotionclip.create_model("tiny", video_len=4, head_layers=1)
    torch.save({"model": model.state_dict()}, cache / RELEASE.filename)
    with pytest.raises(PretrainedError) as e:
        emotionclip.load_model("emotionclip-release")
    msg = str(e.value)
    assert msg.startswith(str(cache / RELEASE.filename) + ": is not the emotionclip-release checkpoint")
    assert "shape mismatches" in msg
    assert "backbone.token_embedding.weight: file [49408, 64] vs release [49408, 512]" in msg
    assert "missing keys" in msg  # the tiny towers have 2 of the 12 layers


def test_a_local_path_is_not_taken_for_the_entry(tmp_path, monkeypatch):
    model = emotionclip.create_model("tiny", video_len=2, head_layers=1)
    emotionclip.save_model(model, tmp_path / "emotionclip-release")
    monkeypatch.chdir(tmp_path)
    assert emotionclip.load_model("emotionclip-release").config == model.config


# ---- the Hugging Face Hub ----------------------------------------------------------------------
def test_save_pretrained_writes_a_hub_folder(tmp_path):
    model = emotionclip.create_model("tiny", video_len=3, head_layers=1, preprocess={"resize": 240})
    out = emotionclip.save_pretrained(model, tmp_path / "hub")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: emotionclip" in card and "license: mit" in card
    assert "short side 240" in card
    assert json.loads((out / "preprocessor_config.json").read_text())["resize"] == 240
    assert emotionclip.load_model(out).config == model.config
    with pytest.raises(FileExistsError):
        emotionclip.save_pretrained(model, out)


def _hub_cache(root, repo: str, folder) -> str:
    """Lay ``folder`` out as huggingface_hub's cache does: blobs, a snapshot of links, refs/main."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    revision = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(f"../../blobs/{blob.name}")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return revision


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "hf"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import; the call sites use these
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def test_load_from_a_local_hub_cache_offline(tmp_path, offline_hub):
    torch.manual_seed(2)
    model = emotionclip.create_model("tiny", video_len=3, head_layers=1).eval()
    revision = _hub_cache(
        offline_hub, "someone/emotionclip-tiny", emotionclip.save_pretrained(model, tmp_path / "m")
    )
    for spec in ("hf-hub:someone/emotionclip-tiny", f"hf-hub:someone/emotionclip-tiny@{revision}"):
        loaded = emotionclip.load_model(spec)
        assert loaded.config == model.config
        for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), k


def test_hub_model_not_in_the_cache(offline_hub):
    with pytest.raises(PretrainedError, match="hf-hub:nobody/nothing: not in the local Hugging Face cache"):
        emotionclip.load_model("hf-hub:nobody/nothing")


def test_bad_hub_id():
    with pytest.raises(ValueError, match="expected hf-hub:ORG/NAME"):
        emotionclip.load_model("hf-hub:just-a-name")


def test_named_weights_resolve_to_the_local_copy(cache):
    """What load_model reads is what other tools (the evaluation cache key) hash."""
    from emotionclip.evaluate.features import checkpoint_hash

    (cache / RELEASE.filename).write_bytes(b"not really weights")
    path, entry = pretrained.resolve_checkpoint("emotionclip-release")
    assert (path, entry) == (cache / RELEASE.filename, RELEASE)
    assert checkpoint_hash("emotionclip-release") == checkpoint_hash(path)
    assert pretrained.resolve_checkpoint("some/file.pt") == (Path("some/file.pt"), None)
