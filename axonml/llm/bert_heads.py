"""BERT with task heads: masked language modelling and sequence classification (transformers' names).

Example::

    import axonml as ax
    from axonml.llm import BertConfig, BertForMaskedLM, BertForSequenceClassification

    ax.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig.from_name("tiny"))
    ids = ax.tensor([[2, 7, 4, 3]])
    labels = ax.tensor([[-100, 9, -100, -100]])   # predict the token at position 1 only
    out = mlm(ids, labels=labels)                  # out.loss, out.logits (1, 4, vocab)
    out.loss.backward()

    clf = BertForSequenceClassification(BertConfig.from_name("tiny", num_labels=3))
    clf(ids, labels=ax.tensor([2])).loss

Note on tying: the MLM decoder's weight *is* the word-embedding matrix (``tie_word_embeddings``,
on by default) and its bias *is* ``cls.predictions.bias``, as in transformers; the aliases
(``cls.predictions.decoder.weight``/``.bias``) appear in ``state_dict`` but are neither saved
nor loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..errors import DTypeError, ShapeError
from ..nn import functional as F
from ..tensor import Tensor, tensor
from .bert import BertConfig, BertModel, BertPreTrainedModel, activation, init_bert_weights
from .outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput


class BertPredictionHeadTransform(nn.Module):
    """``LayerNorm(act(dense(h)))`` before the vocabulary projection."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hidden_act = config.hidden_act

    def forward(self, h: Tensor) -> Tensor:
        return self.LayerNorm(activation(self.hidden_act, self.dense(h)))


class BertLMPredictionHead(nn.Module):
    """``transform`` then ``decoder`` (hidden -> vocab; weight tied to the word embeddings) plus ``bias``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias  # one parameter under two names, as in transformers

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.transform(h))


class BertOnlyMLMHead(nn.Module):
    """The MLM head of ``BertForMaskedLM`` (``cls.predictions``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, h: Tensor) -> Tensor:
        return self.predictions(h)


def _labels(labels: Any, device: Any) -> Tensor:
    return labels if isinstance(labels, Tensor) else tensor(np.asarray(labels), device=device)


class _BertWithHead(BertPreTrainedModel):
    """The forward of the BERT models with a task head: the backbone ``bert``, then the head's ``_head``."""

    def forward(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        labels: Any = None,
        output_hidden_states: bool = False,
    ) -> MaskedLMOutput | SequenceClassifierOutput:
        base = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        return self._head(base, labels)

    def _head(self, base: BaseModelOutput, labels: Any) -> MaskedLMOutput | SequenceClassifierOutput:
        raise NotImplementedError


class BertForMaskedLM(_BertWithHead):
    """BERT (without pooler) and the masked-LM head: ``logits`` (B, T, vocab) at every position.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
    output_hidden_states=False)`` returns a :class:`MaskedLMOutput`. ``labels`` (B, T) int64 holds
    the original token at masked positions and -100 elsewhere; the loss is the mean cross-entropy
    over the positions that are not -100 (no shift: position t predicts its own token).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        pred = self.cls.predictions
        init_bert_weights(pred.transform.modules(), config.initializer_range)
        nn.init.zeros_(pred.bias)
        if config.tie_word_embeddings:
            pred.decoder.weight = self.bert.embeddings.word_embeddings.weight
        else:
            init_bert_weights([pred.decoder], config.initializer_range)

    def _tied_names(self) -> set[str]:
        tied = {"cls.predictions.decoder.bias"}
        if self.config.tie_word_embeddings:
            tied.add("cls.predictions.decoder.weight")
        return tied

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def _head(self, base: BaseModelOutput, labels: Any) -> MaskedLMOutput:
        logits = self.cls(base.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            b, t, v = logits.shape
            lab = _labels(labels, logits.device)
            if tuple(lab.shape) != (b, t):
                raise ShapeError(f"BertForMaskedLM: labels must be (batch, seq_len) = ({b}, {t}) like input_ids, "
                                 f"got {tuple(lab.shape)}")
            if lab.dtype.is_floating_point or lab.dtype.name == "bool":
                raise DTypeError(f"BertForMaskedLM: labels must be int64 token ids (-100 = ignore), got dtype {lab.dtype}")
            loss = F.cross_entropy(logits.reshape(b * t, v), lab.long().reshape(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=base.hidden_states)


class BertForSequenceClassification(_BertWithHead):
    """BERT, the pooled [CLS] state, dropout and a linear ``classifier`` to ``num_labels`` scores.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
    output_hidden_states=False)`` returns a :class:`SequenceClassifierOutput` with ``logits``
    (B, num_labels). The loss follows ``config.problem_type``, or when it is None (as in transformers):

    - ``num_labels == 1``: regression, mean squared error against float labels (B,);
    - integer labels (B,): single-label classification, cross-entropy;
    - float labels (B, num_labels): multi-label classification, binary cross-entropy with logits.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_bert_weights([self.classifier], config.initializer_range)

    def _head(self, base: BaseModelOutput, labels: Any) -> SequenceClassifierOutput:
        logits = self.classifier(self.dropout(base.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self._loss(logits, _labels(labels, logits.device))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=base.hidden_states)

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        b, n = logits.shape
        kind = self.config.problem_type
        if kind is None:
            if n == 1:
                kind = "regression"
            elif not labels.dtype.is_floating_point and labels.dtype.name != "bool":
                kind = "single_label_classification"
            else:
                kind = "multi_label_classification"
        if kind == "regression":
            if labels.numel() != b * n:
                raise ShapeError(f"BertForSequenceClassification: regression labels must have {b * n} values "
                                 f"(batch {b} x num_labels {n}), got shape {tuple(labels.shape)}")
            return F.mse_loss(logits.reshape(-1), labels.reshape(-1).to(dtype=logits.dtype))
        if kind == "single_label_classification":
            if labels.dtype.is_floating_point or labels.dtype.name == "bool":
                raise DTypeError(f"BertForSequenceClassification: single-label classification needs int64 class ids, "
                                 f"got dtype {labels.dtype}")
            if labels.numel() != b:
                raise ShapeError(f"BertForSequenceClassification: labels must be (batch,) = ({b},) class ids in "
                                 f"[0, {n}), got shape {tuple(labels.shape)}")
            return F.cross_entropy(logits, labels.long().reshape(-1))
        if tuple(labels.shape) != (b, n):
            raise ShapeError(f"BertForSequenceClassification: multi-label labels must be (batch, num_labels) = ({b}, {n}) "
                             f"of 0/1 floats, got shape {tuple(labels.shape)}")
        return F.binary_cross_entropy_with_logits(logits, labels.to(dtype=logits.dtype))


__all__ = [
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertLMPredictionHead",
    "BertOnlyMLMHead",
    "BertPredictionHeadTransform",
]
