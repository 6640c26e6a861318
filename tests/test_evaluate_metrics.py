import numpy as np
import pytest
from sklearn import metrics as skm

from emotionclip.evaluate import metrics as M


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_multilabel_ap_and_auc_match_sklearn_with_ties(rng):
    y = (rng.uniform(size=(300, 12)) < 0.3).astype(int)
    scores = rng.normal(size=(300, 12)) + y
    scores[:, :4] = np.round(scores[:, :4], 1)  # many tied scores
    assert M.macro_map(y, scores) == pytest.approx(
        skm.average_precision_score(y, scores, average="macro"), abs=1e-12
    )
    assert M.macro_roc_auc(y, scores) == pytest.approx(
        skm.roc_auc_score(y, scores, average="macro"), abs=1e-12
    )
    per_class = [skm.average_precision_score(y[:, k], scores[:, k]) for k in range(12)]
    np.testing.assert_allclose(M.average_precision(y, scores), per_class, atol=1e-12)


def test_macro_average_skips_classes_without_positives(rng):
    y = (rng.uniform(size=(100, 5)) < 0.4).astype(int)
    y[:, 2] = 0
    s = rng.normal(size=(100, 5))
    keep = [0, 1, 3, 4]
    assert np.isnan(M.roc_auc(y, s)[2])
    assert M.macro_roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y[:, keep], s[:, keep], average="macro"))
    assert M.macro_map(y, s) == pytest.approx(
        skm.average_precision_score(y[:, keep], s[:, keep], average="macro")
    )


def test_release_macro_map_counts_an_absent_class_as_sklearn_does(rng):
    y = (rng.uniform(size=(60, 6)) < 0.4).astype(int)
    y[:, 2] = 0  # absent from the split: sklearn (the release) counts AP 0
    y[:, 4] = 1  # in every sample: AP 1
    s = rng.normal(size=(60, 6)) + y
    with pytest.warns(UserWarning, match="No positive class"):
        release = skm.average_precision_score(y, s, average="macro")
    assert M.macro_map(y, s, "release") == pytest.approx(release, abs=1e-12)
    keep = [0, 1, 3, 5]
    assert M.macro_map(y, s) == pytest.approx(skm.average_precision_score(y[:, keep], s[:, keep]), abs=1e-12)
    assert M.macro_map(y, s, "release") < M.macro_map(y, s)  # the numbers differ on such a split
    with pytest.raises(ValueError, match="macro mode"):
        M.macro_map(y, s, "all")


def test_classification_and_regression_metrics_match_sklearn(rng):
    t = rng.integers(0, 7, 500)
    p = np.where(rng.uniform(size=500) < 0.5, t, rng.integers(0, 7, 500))
    p[p == 5] = 4  # a class never predicted: its F1 is 0
    assert M.weighted_f1(t, p) == pytest.approx(skm.f1_score(t, p, average="weighted"), abs=1e-12)
    assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))
    y = rng.normal(size=(200, 3))
    yp = y + rng.normal(scale=0.5, size=(200, 3))
    assert M.r2(y, yp) == pytest.approx(skm.r2_score(y, yp), abs=1e-12)
    y[:, 2] = 5.0  # constant column: scikit-learn's convention
    assert M.r2(y, yp) == pytest.approx(skm.r2_score(y, yp), abs=1e-12)
    np.testing.assert_allclose(M.mse(y, yp), skm.mean_squared_error(y, yp, multioutput="raw_values"))
    np.testing.assert_allclose(
        M.pearson_r(y[:, :2], yp[:, :2]), [np.corrcoef(y[:, j], yp[:, j])[0, 1] for j in range(2)]
    )


def test_top1_hit_hand_computed():
    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0]])
    scores = np.array(
        [
            [0.1, 0.9, 0.3, 0.0],  # top class 1, not a label -> miss
            [0.2, 0.7, 0.1, 0.0],  # top class 1, a label -> hit
            [0.5, 0.1, 0.1, 0.4],  # top class 0, not a label -> miss
            [0.3, 0.2, 0.1, 0.0],  # top class 0, a label -> hit
        ]
    )
    assert M.top1_hit(labels, scores) == 0.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        M.macro_map(np.zeros((4, 3)), np.zeros((4, 2)))
