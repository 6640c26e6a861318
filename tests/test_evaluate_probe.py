import json

import numpy as np
import pytest

from emotionclip.evaluate import metrics as M
from emotionclip.evaluate.probe import LinearProbe, ProbeHead, fit_sklearn, fit_torch


def _features(rng, n, d=48):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = _features(rng, 600)
    w = rng.normal(size=(48, 10))
    z = 4 * x @ w + rng.normal(size=(600, 10))
    return {
        "x": x,
        "multi": (z > 1.0).astype(np.float32),
        "single": (x @ w[:, :5] * 3 + rng.normal(size=(600, 5))).argmax(1),
        "reg": x @ w[:, :3] + 0.3 * rng.normal(size=(600, 3)),
    }


def test_fast_ovr_probe_matches_sklearn(data):
    x, y, names = data["x"], data["multi"], [f"c{i}" for i in range(10)]
    ref = fit_sklearn("ovr", x[:400], y[:400], names, c=3.16)
    fast = fit_torch("ovr", x[:400], y[:400], names, c=3.16, device="cpu")
    ps, pf = ref.predict(x[400:]), fast.predict(x[400:])
    for metric in (M.macro_map, M.macro_roc_auc):
        assert abs(100 * metric(y[400:], ps) - 100 * metric(y[400:], pf)) < 0.1
    assert np.abs(ps - pf).max() < 0.01  # the same optimum, not just similar metrics
    assert 100 * M.macro_map(y[400:], pf) > 60  # it learned something (chance ~ 30)


def test_fast_multinomial_and_ridge_match_sklearn(data):
    x, y, names = data["x"], data["single"], [f"e{i}" for i in range(5)]
    ref = fit_sklearn("multinomial", x[:400], y[:400], names, c=8)
    fast = fit_torch("multinomial", x[:400], y[:400], names, c=8, device="cpu")
    ps, pf = ref.predict(x[400:]).argmax(1), fast.predict(x[400:]).argmax(1)
    assert abs(100 * M.weighted_f1(y[400:], ps) - 100 * M.weighted_f1(y[400:], pf)) < 0.1
    assert abs(M.accuracy(y[400:], ps) - M.accuracy(y[400:], pf)) <= 0.005
    r, names3 = data["reg"], ["v", "a", "d"]
    ref = fit_sklearn("ridge", x[:400], r[:400], names3, c=1.0)
    fast = fit_torch("ridge", x[:400], r[:400], names3, c=1.0, device="cpu")
    np.testing.assert_allclose(fast.predict(x[400:]), ref.predict(x[400:]), atol=1e-4)


def test_constant_training_column_and_unseen_class(data):
    x, y = data["x"][:200], data["multi"][:200].copy()
    y[:, 0] = 0
    head = fit_sklearn("ovr", x, y, [f"c{i}" for i in range(10)], c=1)
    assert head.predict(x)[:, 0].max() < 1e-6
    single = np.where(data["single"][:200] == 4, 0, data["single"][:200])  # class 4 never seen
    head = fit_sklearn("multinomial", x, single, [f"e{i}" for i in range(5)], c=1)
    assert (head.predict(x).argmax(1) != 4).all()


def test_probe_head_save_load_roundtrip(tmp_path, data):
    head = LinearProbe("ovr", 2.5).fit(data["x"][:200], data["multi"][:200], [f"c{i}" for i in range(10)])
    head.meta["dataset"] = "emotic"
    path = head.save(tmp_path / "head")
    again = ProbeHead.load(path)
    assert again.kind == "ovr" and again.classes == head.classes and again.meta["dataset"] == "emotic"
    np.testing.assert_array_equal(again.predict(data["x"][:5]), head.predict(data["x"][:5]))
    # unnormalised features give the same scores: the head normalises them
    np.testing.assert_allclose(again.predict(3 * data["x"][:5]), head.predict(data["x"][:5]), atol=1e-6)
    with pytest.raises(FileExistsError):
        head.save(path)
    cfg = json.loads((path / "head.json").read_text())
    cfg.pop("kind")
    (path / "head.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="broken probe head"):
        ProbeHead.load(path)
    with pytest.raises(FileNotFoundError, match="not a probe head"):
        ProbeHead.load(tmp_path)


def test_bad_labels_are_rejected(data):
    with pytest.raises(ValueError, match=r"labels \[N, 3\]"):
        fit_torch("ovr", data["x"], data["multi"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="class indices"):
        fit_torch("multinomial", data["x"], data["single"], ["a", "b"])
    with pytest.raises(ValueError, match="solver"):
        LinearProbe("ovr", 1.0, solver="liblinear").fit(data["x"], data["multi"], list("abcdefghij"))


def test_fast_probe_matches_sklearn_on_a_meld_like_problem():
    """Seven emotions, neutral-heavy like MELD, multinomial with the release's C = 8."""
    rng = np.random.default_rng(11)
    x = _features(rng, 900, 64)
    logits = 5 * x @ rng.normal(size=(64, 7)) + rng.gumbel(size=(900, 7))
    logits[:, 0] += 1.5  # "neutral" is the most frequent class
    y = logits.argmax(1)
    names = [f"e{i}" for i in range(7)]
    ref = fit_sklearn("multinomial", x[:600], y[:600], names, c=8)
    fast = fit_torch("multinomial", x[:600], y[:600], names, c=8, device="cpu")
    ps, pf = ref.predict(x[600:]), fast.predict(x[600:])
    assert np.abs(ps - pf).max() < 0.01
    for metric in (M.weighted_f1, M.accuracy):
        assert abs(100 * metric(y[600:], ps.argmax(1)) - 100 * metric(y[600:], pf.argmax(1))) < 0.1
    assert M.accuracy(y[600:], pf.argmax(1)) > 0.4  # it learned something (majority ~ 0.3)


def test_fast_probe_matches_sklearn_on_a_moviegraphs_like_problem():
    """26 clustered labels, one to three per clip, one-vs-rest with the release's C = 10."""
    rng = np.random.default_rng(12)
    x = _features(rng, 900, 64)
    z = 5 * x @ rng.normal(size=(64, 26)) + rng.normal(size=(900, 26))
    y = np.zeros((900, 26), np.float32)
    top = np.argsort(-z, axis=1)
    y[np.arange(900), top[:, 0]] = 1
    y[np.arange(900), top[:, 1]] = rng.random(900) < 0.5
    ref = fit_sklearn("ovr", x[:600], y[:600], [f"c{i}" for i in range(26)], c=10)
    fast = fit_torch("ovr", x[:600], y[:600], [f"c{i}" for i in range(26)], c=10, device="cpu")
    ps, pf = ref.predict(x[600:]), fast.predict(x[600:])
    assert np.abs(ps - pf).max() < 0.01
    assert abs(100 * M.top1_hit(y[600:], ps) - 100 * M.top1_hit(y[600:], pf)) < 0.1
    assert 100 * M.top1_hit(y[600:], pf) > 30  # chance ~ 6
