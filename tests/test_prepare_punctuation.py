"""Punctuation restoration by a token-classification model, wired as a segmenter step.

The model is a tiny BERT built here (no download): no encoder layers, so a token's logits are its
layer-normalised embedding times the classifier. "there" and "sam" are given embeddings that the
classifier maps to ".", every other token to "0" (no mark) — a model whose output is known exactly.
"""

import pytest
import torch

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from emotionclip.prepare import PrepareConfig
from emotionclip.prepare.punctuation import PunctuatedSegmenter, PunctuationRestorer
from emotionclip.prepare.subtitles import Cue, ReleaseSegmenter, cues_to_sentences, get_segmenter

LABELS = ["0", ".", ",", "?", "-", ":"]  # the release model's label set
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "there", "sam", "##my", "is", "my", "name"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("punct")
    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=8,
        num_hidden_layers=0,
        num_attention_heads=2,
        intermediate_size=8,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model = BertForTokenClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.bert.embeddings.LayerNorm.weight.fill_(1.0)
        for word in ("there", "sam"):
            model.bert.embeddings.word_embeddings.weight[vocab[word], :2] = torch.tensor([5.0, -5.0])
        model.classifier.weight[LABELS.index("."), :2] = torch.tensor([1.0, -1.0])
        model.classifier.bias[LABELS.index("0")] = 1.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_labels_per_word_last_subtoken_wins(tiny_model):
    restorer = PunctuationRestorer(tiny_model)
    # "sammy" = sam + ##my: labelled by its last piece, as deepmultilingualpunctuation does
    assert restorer.labels("hello there sammy is sam".split()) == ["0", ".", "0", "0", "."]
    assert restorer.labels([]) == []


def test_long_transcripts_are_labelled_in_overlapping_chunks(tiny_model):
    words = "hello there my".split() * 170  # 510 words: three chunks of 230 with overlaps of 5
    labels = PunctuationRestorer(tiny_model).labels(words)
    assert len(labels) == len(words)
    assert labels == ["." if w == "there" else "0" for w in words]


def test_release_segmenter_with_the_model_ignores_the_subtitles_own_marks(tiny_model):
    cues = [Cue(0.0, 3.0, "Hello, there is my name!"), Cue(3.0, 5.0, "Hello sam? My name there hello")]
    seg = get_segmenter("release", punctuation=tiny_model)
    assert isinstance(seg, ReleaseSegmenter) and seg.name == f"release:{tiny_model}"
    sentences = cues_to_sentences(cues, seg)
    # labels: "there" and "sam" end sentences; the words before the first and after the last are dropped
    assert [s.text for s in sentences] == ["is my name Hello sam", "My name there"]
    times = [t for s in sentences for t in (s.start, s.end)]
    assert times == pytest.approx([1.2, 3 + 2 / 3, 3 + 2 / 3, 4 + 2 / 3])
    assert cues_to_sentences(cues, f"release:{tiny_model}") == sentences


def test_rule_segmenter_on_restored_punctuation(tiny_model):
    seg = get_segmenter("punctuation", punctuation=tiny_model)
    assert isinstance(seg, PunctuatedSegmenter)
    sentences = cues_to_sentences([Cue(0.0, 4.0, "hello there. my name is sam my name")], seg)
    assert [s.text for s in sentences] == ["hello there.", "my name is sam.", "my name"]


def test_restorer_travels_to_workers_without_its_weights(tiny_model):
    import pickle

    restorer = PunctuationRestorer(tiny_model)
    restorer.labels(["hello"])
    clone = pickle.loads(pickle.dumps(ReleaseSegmenter(restorer)))
    assert clone.punctuation._model is None and clone.punctuation.labels(["there"]) == ["."]
    assert PrepareConfig(segmenter="release", punctuation=tiny_model).punctuation == tiny_model


def test_a_missing_model_is_named_before_any_video_is_read(tmp_path):
    from emotionclip.cli import main

    with pytest.raises(ValueError, match=f"{tmp_path / 'nope'}: cannot load the punctuation model"):
        PunctuationRestorer(str(tmp_path / "nope")).labels(["hi"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_text("never opened")
    args = ["prepare", str(tmp_path / "in"), str(tmp_path / "out"), "--punctuation", str(tmp_path / "nope")]
    assert main([*args, "--detector", "none"]) == 2 and not (tmp_path / "out" / "manifest.json").exists()


def test_cli_release_segmenter_with_a_punctuation_model(tiny_model, tmp_path, monkeypatch):
    import json
    import os
    import tarfile

    from emotionclip.cli import main
    from emotionclip.constants import SAMPLE_MEDIA
    from prepare_support import write_boxes_json

    monkeypatch.syspath_prepend(os.path.dirname(__file__))  # for the py: scorer
    src = tmp_path / "in"
    src.mkdir()
    os.symlink(SAMPLE_MEDIA / "cremad" / "1001_DFA_ANG_XX.flv", src / "clip.flv")
    (src / "clip.srt").write_text("1\n00:00:00,000 --> 00:00:02,100\nhello there my name is sam hello\n")
    boxes = write_boxes_json(tmp_path / "b.json", {"clip": (480, 360, 2.5, [150, 40, 330, 300, 0.9])})
    out = tmp_path / "out"
    args = ["prepare", str(src), str(out), "--segmenter", "release", "--punctuation", tiny_model]
    args += ["--detector", f"json:{boxes}", "--scorer", "py:prepare_support:KeywordScorer"]
    assert main([*args, "--min-duration", "0.5", "--max-neutral", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["segmenter"] == f"release:{tiny_model}" and manifest["clips"] == 1
    with tarfile.open(out / manifest["shards"][0]["name"]) as tar:
        (txt,) = [tar.extractfile(n).read() for n in tar.getnames() if n.endswith(".txt")]
    assert txt == b"my name is sam"  # between the model's two full stops, marks removed
