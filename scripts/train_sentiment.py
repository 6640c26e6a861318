"""Train the shipped default sentiment model on GoEmotions and export it as plain arrays.

    python scripts/train_sentiment.py [--data ../shared/text/goemotions] [--out PATH] [--force]
        [--C 1.0 --class-weight none] [--meld ../shared/formats/meld/dev_sent_emo.csv]

Model: TF-IDF of word 1-2-grams and character 2-5-grams (within words), each L2-normalised, then a
multinomial logistic regression over the 7 classes (anger, disgust, fear, joy, neutral, sadness,
surprise). C and class weighting are chosen by macro-F1 on the dev split (or fixed with ``--C`` and
``--class-weight``); test metrics are printed.

Calibration: one temperature T, fitted on the dev split by the soft-target log-loss, divides the
logits (folded into the exported weights), so that probabilities, and with them the
``neutral <= 0.05`` filter of prepare, mean what they say. Expected calibration error (top label,
15 bins) and the neutral class's own calibration error are printed for dev and test, before and after.

``--meld``: also prints weighted F1, accuracy and the share kept by ``neutral <= 0.05`` on a MELD csv
(TV dialogue). Evaluation only: MELD is GPL-3.0, so nothing from it is trained on or stored.

Labels: each of GoEmotions' 27 emotions + neutral maps to one class through ``ekman_mapping.json``.
A comment with several labels: neutral is dropped when an emotion is also present; the remaining k
classes each get the row with weight 1/k (a soft target, so the model learns the mixture).
Evaluation: accuracy and macro-F1 on the rows with exactly one class after that rule (the
unambiguous ones), plus "any-match" accuracy over all rows (prediction among the row's classes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from emotionclip.constants import SENTIMENT_CLASSES
from emotionclip.sentiment import DEFAULT_ARTEFACT, TfidfSentimentScorer, pack_strings

ROOT = Path(__file__).resolve().parents[1]
FEATURES = {
    "word_ngram_range": [1, 2],
    "word_token_pattern": r"(?u)\b\w\w+\b|[!?]",
    "word_min_df": 2,
    "word_max_features": 30000,
    "char_ngram_range": [2, 5],
    "char_min_df": 3,
    "char_max_features": 50000,
    "sublinear_tf": True,
}
GRID = [(c, w) for c in (0.5, 1.0) for w in (None, "balanced")]


def load_split(data: Path, split: str, label_to_class: dict[int, int]) -> tuple[list[str], list[list[int]]]:
    """Texts and, per row, the sorted class ids after the multi-label rule."""
    texts, targets = [], []
    for line in (data / f"original_{split}.tsv").read_text(encoding="utf-8").splitlines():
        text, ids, _ = line.split("\t")
        classes = {label_to_class[int(i)] for i in ids.split(",")}
        if len(classes) > 1:
            classes.discard(SENTIMENT_CLASSES.index("neutral"))
        texts.append(text)
        targets.append(sorted(classes))
    return texts, targets


def expand(x: sp.csr_matrix, targets: list[list[int]]) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """One row per (comment, class) with weight 1/k."""
    rows = np.repeat(np.arange(len(targets)), [len(t) for t in targets])
    y = np.concatenate([t for t in targets])
    w = np.concatenate([np.full(len(t), 1.0 / len(t)) for t in targets])
    return x[rows], y, w


def evaluate(pred: np.ndarray, targets: list[list[int]]) -> dict[str, float]:
    single = np.array([len(t) == 1 for t in targets])
    y1 = np.array([t[0] for t in targets])[single]
    return {
        "accuracy": float(accuracy_score(y1, pred[single])),
        "macro_f1": float(f1_score(y1, pred[single], average="macro", labels=range(len(SENTIMENT_CLASSES)))),
        "any_match_accuracy": float(np.mean([p in t for p, t in zip(pred, targets)])),
        "n_single": int(single.sum()),
        "n_all": len(targets),
    }


def soft_targets(targets: list[list[int]]) -> np.ndarray:
    y = np.zeros((len(targets), len(SENTIMENT_CLASSES)))
    for i, t in enumerate(targets):
        y[i, t] = 1.0 / len(t)
    return y


def fit_temperature(logits: np.ndarray, targets: list[list[int]]) -> float:
    """The T > 0 minimising the soft-target log-loss of softmax(logits / T)."""
    y = soft_targets(targets)

    def nll(log_t: float) -> float:
        return float(-(y * log_softmax(logits / np.exp(log_t), 1)).sum(1).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def calibration_errors(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Expected calibration error of the top label and of P(neutral) (equal-width bins)."""
    edges = np.linspace(0, 1, bins + 1)

    def ece(p: np.ndarray, hit: np.ndarray) -> float:
        idx = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
        return float(
            sum(
                abs(hit[idx == b].mean() - p[idx == b].mean()) * (idx == b).mean()
                for b in range(bins)
                if (idx == b).any()
            )
        )

    neutral = SENTIMENT_CLASSES.index("neutral")
    return {
        "ece": ece(prob.max(1), prob.argmax(1) == y),
        "neutral_ece": ece(prob[:, neutral], y == neutral),
    }


def filter_stats(prob: np.ndarray, y: np.ndarray, max_neutral: float = 0.05) -> dict[str, float]:
    neutral = SENTIMENT_CLASSES.index("neutral")
    kept = prob[:, neutral] <= max_neutral
    return {
        "kept": float(kept.mean()),
        "neutral_among_kept": float((y[kept] == neutral).mean()) if kept.any() else 0.0,
    }


def meld_report(path: Path, scorer: TfidfSentimentScorer) -> str:
    import pandas as pd

    df = pd.read_csv(path)
    y = df["Emotion"].str.lower().map(SENTIMENT_CLASSES.index).to_numpy()
    prob = softmax(scorer.score(df["Utterance"].astype(str).tolist()).astype(np.float64), 1)
    pred = prob.argmax(1)
    f = filter_stats(prob, y)
    cal = calibration_errors(prob, y)
    majority = (y == np.bincount(y).argmax()).mean()
    return (
        f"MELD {path.name} (n={len(y)}): weighted F1 {f1_score(y, pred, average='weighted'):.3f}, "
        f"accuracy {accuracy_score(y, pred):.3f} (majority class {majority:.3f}); neutral <= 0.05 keeps "
        f"{f['kept']:.3f}, of which neutral {f['neutral_among_kept']:.3f}; ECE {cal['ece']:.3f}, "
        f"neutral ECE {cal['neutral_ece']:.3f}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "text" / "goemotions")
    ap.add_argument("--out", type=Path, default=DEFAULT_ARTEFACT)
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--C", type=float, default=None, help="fix C instead of the dev-split grid")
    ap.add_argument("--class-weight", default="none", choices=["none", "balanced"], help="with --C")
    ap.add_argument("--meld", type=Path, default=None, help="a MELD csv to evaluate on (never trained on)")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.force:
        sys.exit(f"{args.out}: exists; pass --force to replace it")

    names = (args.data / "original_labels.txt").read_text().split()
    mapping = json.loads((args.data / "ekman_mapping.json").read_text())
    if set(mapping) != set(SENTIMENT_CLASSES):
        sys.exit(f"{args.data / 'ekman_mapping.json'}: classes {sorted(mapping)} != {SENTIMENT_CLASSES}")
    by_name = {label: SENTIMENT_CLASSES.index(c) for c, labels in mapping.items() for label in labels}
    label_to_class = {i: by_name[n] for i, n in enumerate(names)}
    splits = {s: load_split(args.data, s, label_to_class) for s in ("train", "dev", "test")}

    f = FEATURES
    word = TfidfVectorizer(
        ngram_range=tuple(f["word_ngram_range"]),
        token_pattern=f["word_token_pattern"],
        min_df=f["word_min_df"],
        max_features=f["word_max_features"],
        sublinear_tf=f["sublinear_tf"],
        dtype=np.float64,
    )
    char = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=tuple(f["char_ngram_range"]),
        min_df=f["char_min_df"],
        max_features=f["char_max_features"],
        sublinear_tf=f["sublinear_tf"],
        dtype=np.float64,
    )
    train_texts, train_targets = splits["train"]
    x_train = sp.hstack([word.fit_transform(train_texts), char.fit_transform(train_texts)], format="csr")

    def featurise(texts):
        return sp.hstack([word.transform(texts), char.transform(texts)], format="csr")

    x_dev, x_test = featurise(splits["dev"][0]), featurise(splits["test"][0])
    xe, ye, we = expand(x_train, train_targets)
    print(f"train {len(train_texts)} comments -> {xe.shape[0]} weighted rows, {xe.shape[1]} features")

    best = None
    grid = GRID if args.C is None else [(args.C, None if args.class_weight == "none" else "balanced")]
    for c, cw in grid:
        t0 = time.time()
        clf = LogisticRegression(C=c, class_weight=cw, max_iter=1000).fit(xe, ye, sample_weight=we)
        dev = evaluate(clf.predict(x_dev), splits["dev"][1])
        print(
            f"C={c:<5} class_weight={cw!s:<9} dev acc {dev['accuracy']:.4f} macro-F1 {dev['macro_f1']:.4f} "
            f"({time.time() - t0:.0f} s)"
        )
        if best is None or dev["macro_f1"] > best[0]["macro_f1"]:
            best = (dev, clf, c, cw)
    dev, clf, c, cw = best
    test = evaluate(clf.predict(x_test), splits["test"][1])
    print(f"chosen C={c} class_weight={cw}")
    print(
        f"GoEmotions test (single-class rows, n={test['n_single']}): accuracy {test['accuracy']:.4f}  "
        f"macro-F1 {test['macro_f1']:.4f}"
    )
    print(
        f"GoEmotions test (all rows, n={test['n_all']}): any-match accuracy {test['any_match_accuracy']:.4f}"
    )

    # temperature on dev; reported on dev (where it is fitted) and test (held out)
    raw = {"dev": clf.decision_function(x_dev), "test": clf.decision_function(x_test)}
    temperature = fit_temperature(raw["dev"], splits["dev"][1])
    calibration = {"temperature": temperature}
    for split, z in raw.items():
        targets = splits[split][1]
        single = np.array([len(t) == 1 for t in targets])
        y1 = np.array([t[0] for t in targets])[single]
        for name, t in (("before", 1.0), ("after", temperature)):
            prob = softmax(z[single] / t, 1)
            calibration[f"{split}_{name}"] = {**calibration_errors(prob, y1), **filter_stats(prob, y1)}
        b, a = calibration[f"{split}_before"], calibration[f"{split}_after"]
        print(
            f"{split}: T={temperature:.3f}  ECE {b['ece']:.4f} -> {a['ece']:.4f}  neutral ECE "
            f"{b['neutral_ece']:.4f} -> {a['neutral_ece']:.4f}  neutral <= 0.05 keeps {b['kept']:.3f} -> "
            f"{a['kept']:.3f} (neutral among kept {b['neutral_among_kept']:.3f} -> {a['neutral_among_kept']:.3f})"
        )

    config = {
        "classes": list(SENTIMENT_CLASSES),
        "features": FEATURES,
        "model": {"type": "logistic_regression", "C": c, "class_weight": cw},
        "calibration": calibration,
        "trained_on": "GoEmotions original_train.tsv (Apache-2.0), ekman_mapping.json",
        "dev": dev,
        "test": test,
    }
    word_vocab = sorted(word.vocabulary_, key=word.vocabulary_.get)
    char_vocab = sorted(char.vocabulary_, key=char.vocabulary_.get)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        config=np.frombuffer(json.dumps(config).encode("utf-8"), np.uint8),
        word_vocab=pack_strings(word_vocab),
        word_idf=word.idf_.astype(np.float32),
        char_vocab=pack_strings(char_vocab),
        char_idf=char.idf_.astype(np.float32),
        coef=(clf.coef_ / temperature).astype(np.float16),
        intercept=(clf.intercept_ / temperature).astype(np.float32),
    )
    # the exported arrays must reproduce sklearn's logits before they replace the shipped model
    exported = TfidfSentimentScorer(tmp).score(splits["test"][0])
    gap = np.abs(exported - raw["test"] / temperature).max()
    agree = (exported.argmax(1) == clf.predict(x_test)).mean()
    if gap > 0.05 or agree < 0.999:
        os.remove(tmp)
        sys.exit(
            f"exported model differs from sklearn's (max logit gap {gap:.4f}, argmax agreement {agree:.4f})"
        )
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); max logit gap vs sklearn {gap:.4f}")
    if args.meld is not None:
        print(meld_report(args.meld, TfidfSentimentScorer(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
