"""Architecture adapters and freezing on tiny random configs of every registered family."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from edgefreeze.backbones import backbone_for, supported_model_types
from edgefreeze.errors import ConfigError
from edgefreeze.freeze import make_plan
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks import task_for
from edgefreeze.train.loop import check_gradients
from tests.conftest import TEXT

TINY = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}
DISTIL = {
    "vocab_size": 99,
    "dim": 32,
    "n_layers": 4,
    "n_heads": 2,
    "hidden_dim": 37,
    "max_position_embeddings": 64,
}
# DeBERTa-v3's attention (relative positions in buckets, both disentangled terms, no
# absolute positions) and deberta-v2-xlarge's convolution after layer 0.
DEBERTA_V3 = {
    **TINY,
    "relative_attention": True,
    "position_biased_input": False,
    "pos_att_type": ["p2c", "c2p"],
    "norm_rel_ebd": "layer_norm",
    "position_buckets": 8,
    "max_relative_positions": -1,
    "share_att_key": True,
    "conv_kernel_size": 3,
    "pooler_hidden_size": 32,
}
# ModernBERT with a sliding window narrower than the test's sequences, so that its local
# layers mask differently from its global ones; its special tokens inside the tiny vocabulary.
MODERNBERT = {
    **TINY,
    "local_attention": 4,
    "global_attn_every_n_layers": 2,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "cls_token_id": 1,
    "sep_token_id": 2,
    "reference_compile": False,
}


def tiny_model(
    model_type: str,
    attention: str | None = None,
    model_class=AutoModelForSequenceClassification,
    **settings,
) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"distilbert": DISTIL, "deberta-v2": DEBERTA_V3, "modernbert": MODERNBERT}.get(
        model_type, TINY
    )
    config = AutoConfig.for_model(model_type, **{"num_labels": 3, **kwargs, **settings})
    return model_class.from_config(config, attn_implementation=attention)


def assert_split_is_whole(model: torch.nn.Module, backbone) -> dict:
    """Stem then top equals the model's own forward at every boundary, on a padded batch;
    returns the inputs used."""
    ids = torch.randint(5, 99, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        expected = model(**inputs).logits
        for boundary in range(backbone.depth + 1):
            got = backbone.top(backbone.stem(inputs, boundary), mask, boundary)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    return inputs


@pytest.mark.parametrize("model_type", supported_model_types("text"))
@pytest.mark.parametrize("trainable_layers", [0, 1, 4])
def test_freeze_trains_exactly_the_top_and_head(model_type, trainable_layers):
    backbone = backbone_for(tiny_model(model_type), TEXT)
    plan = make_plan(TopKSpec(trainable_layers=trainable_layers), backbone)
    assert plan.trainable_layers == tuple(range(4 - trainable_layers, 4))
    assert plan.boundary == 4 - trainable_layers
    assert plan.kept_rows == (1 if trainable_layers == 0 else None)
    stack = backbone.layer_stack()
    for index, layer in enumerate(stack):
        expected = index >= 4 - trainable_layers
        assert all(p.requires_grad == expected for p in layer.parameters()), index
    assert not any(p.requires_grad for p in backbone.embedding_module().parameters())
    assert all(p.requires_grad for m in backbone.head_modules() for p in m.parameters())

    plan.begin_epoch(backbone.model, 1)
    assert plan.cacheable == (trainable_layers < 4)  # all 4 train: nothing frozen to cache
    assert not backbone.embedding_module().training
    assert [layer.training for layer in stack] == [i >= 4 - trainable_layers for i in range(4)]

    groups = plan.parameter_groups(backbone.model, {"top": 1e-4, "head": 1e-3}, 0.01)
    in_groups = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in backbone.model.parameters() if p.requires_grad}
    assert in_groups == trainable
    assert sum(p.numel() for g in groups for p in g["params"]) == plan.trainable_parameters

    ids = torch.randint(5, 99, (2, 7))
    loss = backbone.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum()
    loss.backward()
    check_gradients(backbone.model, plan.parameters())  # these and only these got gradients
    assert all(p.grad is None for p in backbone.embedding_module().parameters())


def test_unknown_architecture_is_a_config_error():
    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(ConfigError, match="not supported .*supported: bert, camembert"):
        backbone_for(model, TEXT)


def test_albert_is_refused_for_sharing_its_layers_weights():
    config = AutoConfig.for_model(
        "albert",
        num_hidden_layers=2,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        embedding_size=8,
        vocab_size=50,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(ConfigError, match="albert layers share one set of weights.*bert, "):
        backbone_for(model, TEXT)


def test_gradient_check_catches_a_parameter_off_the_loss_path():
    backbone = backbone_for(tiny_model("bert"), TEXT)
    plan = make_plan(TopKSpec(trainable_layers=1), backbone)
    ids = torch.randint(5, 99, (2, 7))
    backbone.model.bert(input_ids=ids).last_hidden_state.sum().backward()  # skips the head
    with pytest.raises(Exception, match="received no gradient"):
        check_gradients(backbone.model, plan.parameters())


@pytest.mark.parametrize("model_type", supported_model_types("text"))
@pytest.mark.parametrize("attention", ["eager", None])  # None: the family's default (sdpa)
def test_stem_then_top_is_the_models_own_forward(model_type, attention):
    """Training runs stem and top apart; export runs the whole model: they must agree."""
    model = tiny_model(model_type, attention).eval()
    backbone = backbone_for(model, TEXT)
    inputs = assert_split_is_whole(model, backbone)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        head_only = backbone.top(
            backbone.stem(inputs, backbone.depth)[:, :1], mask[:, :1], backbone.depth
        )
        torch.testing.assert_close(head_only, model(**inputs).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "spec, hub",
    [
        ("roberta-base", True),
        ("distilbert/distilbert-base-uncased", True),
        ("../nowhere", False),
        ("a/b/c", False),
    ],
)
def test_model_names_a_hub_id_only_when_it_can_be_one(tmp_path, spec, hub):
    """Legacy canonical ids (no org) are hub ids too; paths that are not folders are not."""
    from edgefreeze.backbones.loader import _locate

    if hub:  # tmp_path stands for the pipeline's folder, which holds none of these
        assert _locate(spec, tmp_path.joinpath) == (spec, False)
    else:
        with pytest.raises(ConfigError, match="neither a folder"):
            _locate(spec, tmp_path.joinpath)


@pytest.mark.parametrize("model_type", supported_model_types("text"))
def test_stem_then_top_is_the_tagger_s_own_forward(model_type):
    """The token-classification head of each family, split at every boundary."""
    model = tiny_model(model_type, model_class=AutoModelForTokenClassification, num_labels=5).eval()
    assert_split_is_whole(model, backbone_for(model, task_for("token-classification")))


@pytest.mark.parametrize("model_type", supported_model_types("text"))
@pytest.mark.parametrize("method", ["lora", "ia3", "adapter", "prefix"])
def test_every_method_fits_every_family(model_type, method):
    """Each parameter-efficient method attaches to each family by role, keeps stem-then-top
    equal to the model's own forward, and sees a text the same alone or padded in a batch."""
    from edgefreeze.schema import PipelineSpec

    backbone = backbone_for(tiny_model(model_type), TEXT)
    peft = PipelineSpec.model_validate(
        {"name": "x", "model": "x", "data": {"source": "x"}, "peft": {"method": method}}
    ).peft
    if method == "prefix" and backbone.no_virtual_tokens:  # DeBERTa, ModernBERT: refused
        with pytest.raises(ConfigError, match=f"prefix does not fit {model_type}: .* have none"):
            make_plan(TopKSpec(trainable_layers=2), backbone, peft)
        return
    plan = make_plan(TopKSpec(trainable_layers=2), backbone, peft)
    with torch.no_grad():  # what training does to the added weights: they matter
        for p in plan.parts["top"]:
            p.normal_(0.0, 0.5)
    ids = torch.randint(5, 99, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    model = backbone.model.eval()
    with torch.no_grad():
        whole = model(input_ids=ids, attention_mask=mask).logits
        split = backbone.top(backbone.stem({"input_ids": ids, "attention_mask": mask}, 2), mask, 2)
        alone = model(input_ids=ids[1:, :4], attention_mask=mask[1:, :4]).logits
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], whole[1], atol=1e-5, rtol=1e-5)


def test_modernbert_mean_pooling_reads_every_row_even_head_only():
    """With `classifier_pooling: mean` ModernBERT's head averages all real tokens: stem then
    top must still equal the model, and head-only caching must keep every row."""
    model = tiny_model("modernbert", classifier_pooling="mean").eval()
    backbone = backbone_for(model, TEXT)
    assert backbone.head_rows is None and TEXT.head_rows == 1
    assert_split_is_whole(model, backbone)
