import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emotionclip.constants import SENTIMENT_CLASSES
from emotionclip.sentiment import (
    DEFAULT_ARTEFACT,
    SentimentScorer,
    TfidfSentimentScorer,
    get_sentiment_scorer,
    neutral_probability,
)

JOY, NEUTRAL = SENTIMENT_CLASSES.index("joy"), SENTIMENT_CLASSES.index("neutral")


@pytest.fixture(scope="module")
def default_scorer():
    return get_sentiment_scorer("default")


def test_default_artefact_is_small_and_loads(default_scorer):
    assert DEFAULT_ARTEFACT.stat().st_size < 5e6
    assert isinstance(default_scorer, SentimentScorer) and default_scorer.classes == SENTIMENT_CLASSES
    assert default_scorer.config["classes"] == list(SENTIMENT_CLASSES)
    assert default_scorer.config["test"]["macro_f1"] > 0.4  # the metrics the training script measured


def test_default_scores_obvious_sentences(default_scorer):
    texts = [
        "I am so happy, this is wonderful!",
        "I'm so angry, I hate you!",
        "I am terrified and scared of what comes next.",
        "I miss her so much, I feel so sad and lonely.",
        "Wow, I did not expect that at all!",
        "That is disgusting, gross.",
        "The meeting is on Tuesday at ten.",
    ]
    logits = default_scorer.score(texts)
    assert logits.shape == (7, 7) and logits.dtype == np.float32
    assert [SENTIMENT_CLASSES[i] for i in logits.argmax(1)[:6]] == [
        "joy",
        "anger",
        "fear",
        "sadness",
        "surprise",
        "disgust",
    ]
    p = neutral_probability(logits)
    assert p.shape == (7,) and ((p > 0) & (p < 1)).all()
    assert p[6] > 0.5 and p[6] > 5 * p[:6].max()
    np.testing.assert_allclose(default_scorer.neutral_probability(texts), p, rtol=1e-6)
    assert default_scorer.score([]).shape == (0, 7)


def test_neutral_probability_is_the_softmax_column():
    logits = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32) * 10
    expected = torch.softmax(torch.from_numpy(logits), 1)[:, NEUTRAL].numpy()
    np.testing.assert_allclose(neutral_probability(logits), expected, rtol=1e-5)


def test_default_matches_goemotions_labels_on_test_rows(default_scorer, shared_dir):
    """A held-out sanity check: well above chance (the majority class is ~35%) on GoEmotions test."""
    data = shared_dir / "text" / "goemotions"
    names = (data / "original_labels.txt").read_text().split()
    mapping = json.loads((data / "ekman_mapping.json").read_text())
    to_class = {label: SENTIMENT_CLASSES.index(c) for c, labels in mapping.items() for label in labels}
    texts, y = [], []
    for line in (data / "original_test.tsv").read_text(encoding="utf-8").splitlines()[:1500]:
        text, ids, _ = line.split("\t")
        classes = {to_class[names[int(i)]] for i in ids.split(",")}
        if len(classes) == 1:
            texts.append(text)
            y.append(classes.pop())
    acc = (default_scorer.score(texts).argmax(1) == np.array(y)).mean()
    assert acc > 0.55, acc


def _goemotions(data, split, limit=None):
    names = (data / "original_labels.txt").read_text().split()
    mapping = json.loads((data / "ekman_mapping.json").read_text())
    to_class = {label: SENTIMENT_CLASSES.index(c) for c, labels in mapping.items() for label in labels}
    texts, y = [], []
    for line in (data / f"original_{split}.tsv").read_text(encoding="utf-8").splitlines()[:limit]:
        text, ids, _ = line.split("\t")
        classes = {to_class[names[int(i)]] for i in ids.split(",")}
        if len(classes) == 1:
            texts.append(text)
            y.append(classes.pop())
    return texts, np.array(y)


def _train_script():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import train_sentiment
    finally:
        sys.path.pop(0)
    return train_sentiment


def test_temperature_fit_recovers_a_known_temperature():
    ts = _train_script()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 7)) * 3
    p = np.exp(logits / 2.5)
    p /= p.sum(1, keepdims=True)
    y = [[int(rng.choice(7, p=row))] for row in p]  # labels drawn at temperature 2.5
    assert ts.fit_temperature(logits, y) == pytest.approx(2.5, rel=0.08)
    probs = np.eye(7)[[t[0] for t in y]] * 0.999 + 0.001 / 7  # confident and right: ECE ~ 0
    assert ts.calibration_errors(probs, np.array([t[0] for t in y]))["ece"] < 0.01


def test_default_is_calibrated_on_goemotions_test(default_scorer, shared_dir):
    """Held-out rows: confidence matches accuracy, and neutral <= 0.05 keeps few neutral comments."""
    ts = _train_script()
    cal = default_scorer.config["calibration"]
    assert 0.2 < cal["temperature"] < 5
    assert cal["dev_after"]["ece"] <= cal["dev_before"]["ece"] + 1e-6  # fitted there: never worse
    texts, y = _goemotions(shared_dir / "text" / "goemotions", "test", 2500)
    prob = torch.softmax(torch.from_numpy(default_scorer.score(texts)).double(), 1).numpy()
    errors = ts.calibration_errors(prob, y)
    assert errors["ece"] < 0.04 and errors["neutral_ece"] < 0.04, errors
    kept = ts.filter_stats(prob, y)
    assert kept["kept"] > 0.1 and kept["neutral_among_kept"] < 0.06, kept


def test_default_on_meld_dialogue_beats_the_majority_class_f1(default_scorer, shared_dir):
    """MELD (GPL-3.0) is read from ../shared for evaluation only; nothing of it is trained on or kept."""
    pd = pytest.importorskip("pandas")
    from sklearn.metrics import f1_score

    path = shared_dir / "formats" / "meld" / "dev_sent_emo.csv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    df = pd.read_csv(path)
    y = df["Emotion"].map(SENTIMENT_CLASSES.index).to_numpy()
    pred = default_scorer.score(df["Utterance"].astype(str).tolist()).argmax(1)
    majority = f1_score(y, np.full_like(y, NEUTRAL), average="weighted")
    assert f1_score(y, pred, average="weighted") > majority + 0.05


def test_bad_artefacts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        get_sentiment_scorer(str(tmp_path / "missing.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        TfidfSentimentScorer(junk)
    partial = tmp_path / "partial.npz"
    np.savez(partial, coef=np.zeros((7, 3), np.float32))
    with pytest.raises(ValueError, match="partial.npz: sentiment artefact lacks"):
        TfidfSentimentScorer(partial)
    with pytest.raises(TypeError, match="list of strings"):
        get_sentiment_scorer("default").score("a single string")


# --- Hugging Face transformers ---------------------------------------------------------------------

WORDS = (
    "[PAD] [UNK] [CLS] [SEP] i am so happy sad angry the a is it this that what you we they ! ? . ,".split()
)


def _tiny_hf_model(path, labels):
    """A 2-layer DistilBERT with a 27-word vocabulary, random weights, saved like a hub model."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast

    tk = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]")
    config = DistilBertConfig(
        vocab_size=len(WORDS),
        dim=16,
        n_layers=2,
        n_heads=2,
        hidden_dim=32,
        max_position_embeddings=128,
        initializer_range=0.5,  # large random weights: every token moves the logits visibly
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return tok, model


def test_hf_scorer_reorders_labels(tmp_path):
    pytest.importorskip("transformers")
    labels = ["Joy", "anger", "neutral", "sadness", "fear", "surprise", "disgust"]  # not our order
    tok, model = _tiny_hf_model(tmp_path / "tiny", labels)
    scorer = get_sentiment_scorer(str(tmp_path / "tiny"), batch_size=2)
    assert scorer.name == f"hf:{tmp_path / 'tiny'}"
    texts = ["I am so happy!", "what is this ?", "they are sad", "you"]
    logits = scorer.score(texts)
    assert logits.shape == (4, 7) and logits.dtype == np.float32
    with torch.inference_mode():
        raw = model(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    order = [[label.lower() for label in labels].index(c) for c in SENTIMENT_CLASSES]
    np.testing.assert_allclose(logits, raw[:, order], atol=1e-5)
    assert scorer.score([]).shape == (0, 7)


def test_hf_scorer_pads_and_truncates_to_77_tokens_like_the_release(tmp_path):
    pytest.importorskip("transformers")
    labels = list(SENTIMENT_CLASSES)
    tok, model = _tiny_hf_model(tmp_path / "tiny", labels)
    scorer = get_sentiment_scorer(str(tmp_path / "tiny"), batch_size=4)
    assert scorer.max_length == 77
    words = (WORDS[4:] * 5)[:100]  # 100 tokens, one per word
    long = " ".join(words)
    with torch.inference_mode():
        enc = tok(
            [long, "i am so happy"], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        release = model(**enc).logits.numpy()  # the release's tokenizer call
    assert enc["input_ids"].shape == (2, 77)
    np.testing.assert_allclose(scorer.score([long, "i am so happy"]), release, atol=1e-5)
    np.testing.assert_allclose(scorer.score([" ".join(words[:77])]), release[:1], atol=1e-5)
    assert np.abs(scorer.score([" ".join(words[:76])]) - release[:1]).max() > 1e-3
    # padding is masked: a short sentence scores the same alone and beside a long one
    np.testing.assert_allclose(scorer.score(["i am so happy"]), release[1:], atol=1e-5)


def test_hf_scorer_rejects_other_labels(tmp_path):
    pytest.importorskip("transformers")
    _tiny_hf_model(tmp_path / "sst", ["negative", "positive"])
    with pytest.raises(
        ValueError, match=r"sst: model labels \['negative', 'positive'\] are not the 7 classes"
    ):
        get_sentiment_scorer(str(tmp_path / "sst"))
    with pytest.raises(FileNotFoundError, match="no_such_dir: no such model directory"):
        get_sentiment_scorer(str(tmp_path / "no_such_dir"))
