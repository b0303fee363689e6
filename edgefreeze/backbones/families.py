"""The supported families, each only what differs from the others."""

from __future__ import annotations

from edgefreeze.backbones.registry import Backbone, register


@register("bert")
class BertBackbone(Backbone):
    embeddings = "bert.embeddings"
    layers = "bert.encoder.layer"
    head = ("bert.pooler", "classifier")


@register("roberta", "xlm-roberta", "camembert")
class RobertaBackbone(Backbone):
    embeddings = "roberta.embeddings"
    layers = "roberta.encoder.layer"
    head = ("classifier",)


@register("electra")
class ElectraBackbone(Backbone):
    embeddings = "electra.embeddings"
    layers = "electra.encoder.layer"
    head = ("classifier",)


@register("distilbert")
class DistilBertBackbone(Backbone):
    embeddings = "distilbert.embeddings"
    layers = "distilbert.transformer.layer"
    head = ("pre_classifier", "classifier")
