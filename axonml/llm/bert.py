"""BERT (Devlin et al. 2019): the encoder, with Hugging Face transformers' parameter names and checkpoints.

Example::

    import axonml as ax
    from axonml.llm import BertConfig, BertModel

    ax.manual_seed(0)
    model = BertModel(BertConfig.from_name("tiny")).eval()
    ids = ax.tensor([[2, 7, 9, 3, 0, 0]])
    out = model(ids, attention_mask=[[1, 1, 1, 1, 0, 0]], token_type_ids=[[0, 0, 1, 1, 0, 0]])
    out.last_hidden_state.shape   # (1, 6, 32)
    out.pooler_output.shape       # (1, 32)

The heads (``BertForMaskedLM``, ``BertForSequenceClassification``) live in ``bert_heads.py``.

Note on the module tree: it is transformers' own (``encoder.layer.0.attention.self.query``,
``attention.output.LayerNorm``, ``intermediate.dense``, ``output.dense`` ...), so ``state_dict``
names are the checkpoint names and loading is a name-by-name copy. ``BertLayer`` is post-LayerNorm:
``LN(x + attn(x))``, then ``LN(h + ffn(h))``.

Note on padding: ``attention_mask`` (B, T) marks real tokens with 1. Padded *keys* are removed
from every query's softmax by one additive (B, 1, 1, T) mask built once per forward; padded
*queries* are still computed (their outputs are meaningless, as in transformers). Without zeros
in the mask, attention runs unmasked. Positions default to ``0..T-1`` (BERT pads on the right).

Note on loading (``BertPreTrainedModel.load_hf_state_dict``): as in transformers, a checkpoint of
one BERT class loads into another: backbone tensors (``embeddings.*``, ``encoder.*``) with or
without the ``bert.`` prefix are required and shape-checked; head tensors the model lacks (an MLM
head loaded into a classifier, NSP's ``cls.seq_relationship``) are dropped, and head tensors the
checkpoint lacks (a new classifier) keep their fresh initialisation; both are logged. A backbone
tensor the model has no place for (an extra layer) is an error: the config and the weights disagree.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any

import numpy as np

from .. import nn
from ..autograd import is_grad_enabled, no_grad
from ..autograd.checkpoint import checkpoint
from ..errors import CheckpointError, DTypeError, ShapeError
from ..nn import functional as F
from ..tensor import Tensor, tensor
from . import _hf
from .bert_config import BertConfig, activation
from .outputs import BaseModelOutput

logger = logging.getLogger(__name__)

# top-level names of the backbone's tensors; anything else in a checkpoint belongs to some head
_BACKBONE = ("embeddings", "encoder")


def _as_index(x: Any, name: str, device: Any, shape: tuple[int, ...] | None = None) -> Tensor:
    """An int64 (B, T) tensor from a Tensor, NumPy array or nested list."""
    t = x if isinstance(x, Tensor) else tensor(np.asarray(x), device=device)
    if t.dtype.is_floating_point or t.dtype.name == "bool":
        raise DTypeError(f"BERT: {name} must hold integers (int64), got dtype {t.dtype}; convert with .long()")
    if t.ndim != 2:
        raise ShapeError(f"BERT: {name} must be (batch, seq_len), got shape {tuple(t.shape)}; add a batch dim with [None]")
    if shape is not None and tuple(t.shape) != shape:
        raise ShapeError(f"BERT: {name} must have the shape of input_ids {shape}, got {tuple(t.shape)}")
    return t if t.dtype.name == "int64" else t.long()


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, position_ids: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value`` projections."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = h // config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.attention_probs_dropout_prob = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, e = x.shape
        # (B, T, E) -> (B, H, T, D)
        q, k, v = (p(x).reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.query, self.key, self.value))
        drop = self.attention_probs_dropout_prob if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return y.transpose(1, 2).reshape(b, t, e)  # (B, T, H*D)


class BertSelfOutput(nn.Module):
    """``LayerNorm(dropout(dense(h)) + residual)``: back to ``hidden_size`` after attention (or, as
    :class:`BertOutput`, after the feed-forward)."""

    def __init__(self, config: BertConfig, in_features: int | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    """Self-attention (``self``) followed by its output projection and residual LayerNorm (``output``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    """``act(dense(x))`` up to ``intermediate_size``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.hidden_act = config.hidden_act

    def forward(self, x: Tensor) -> Tensor:
        return activation(self.hidden_act, self.dense(x))


class BertOutput(BertSelfOutput):
    """``LayerNorm(dropout(dense(h)) + residual)`` from ``intermediate_size`` back to ``hidden_size``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config, config.intermediate_size)


class BertLayer(nn.Module):
    """One post-LayerNorm transformer block (the unit of FSDP wrapping and of activation checkpointing)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    """``num_hidden_layers`` :class:`BertLayer` blocks in ``layer``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, mask: Tensor | None = None, output_hidden_states: bool = False) -> tuple[Tensor, tuple | None]:
        checkpointing = self.gradient_checkpointing and self.training and is_grad_enabled()
        hidden = [x] if output_hidden_states else None
        for blk in self.layer:
            x = checkpoint(lambda h, b=blk: b(h, mask), x) if checkpointing else blk(x, mask)
            if hidden is not None:
                hidden.append(x)
        return x, tuple(hidden) if hidden is not None else None


class BertPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``: the [CLS] token's state, for sentence-level heads."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.dense(h[:, 0]).tanh()


def init_bert_weights(modules: Any, std: float) -> None:
    """transformers' BERT init: N(0, std) Linear/Embedding weights (padding row zero), zero biases, unit LayerNorms."""
    with no_grad():
        for m in modules:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx] = 0.0
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class BertPreTrainedModel(nn.Module):
    """What every BERT class shares: the config, ``blocks``, gradient checkpointing and HF directories.

    Subclasses set ``prefix`` ("" for the bare backbone, "bert." for models with a head), build
    themselves from ``(config, **kwargs)`` and return the backbone from ``_backbone()``.
    """

    prefix = "bert."

    config: BertConfig

    def _backbone(self) -> "BertModel":
        return self.bert  # type: ignore[return-value]

    @property
    def blocks(self) -> nn.ModuleList:
        """The ``num_hidden_layers`` :class:`BertLayer` blocks (FSDP's wrapping unit)."""
        return self._backbone().encoder.layer

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each layer's activations in backward (training with grad only)."""
        self._backbone().encoder.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self._backbone().encoder.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._backbone().encoder.gradient_checkpointing

    def _tied_names(self) -> set[str]:
        """state_dict names that alias another parameter (neither loaded nor saved)."""
        return set()

    # -- Hugging Face directories -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: Any = None, **kwargs: Any) -> Any:
        """Load a folder written by transformers' ``save_pretrained`` of any BERT class (or ours).

        ``dtype``: the parameters' dtype (default: the default dtype, float32). Other keyword
        arguments override config fields (e.g. ``num_labels=3``), or are passed to the
        constructor (``add_pooling_layer`` of :class:`BertModel`).
        """
        cfg_dict, tensors = _hf.read_pretrained(directory)
        config = BertConfig.from_dict(cfg_dict)
        fields = {f.name for f in dataclasses.fields(BertConfig)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        if "num_labels" in overrides and "id2label" not in overrides:
            overrides["id2label"] = None
        config = dataclasses.replace(config, **overrides)
        model = cls(config, **kwargs)
        model.load_hf_state_dict(tensors, where=f"{cls.__name__}.from_pretrained({os.fspath(directory)!r})")
        if dtype is not None:
            model.to(dtype=dtype)
        return model

    def load_hf_state_dict(self, tensors: dict[str, np.ndarray], where: str | None = None) -> None:
        """Copy transformers-named BERT tensors into this model; see the module note on loading."""
        where = where or type(self).__name__
        tensors = _normalize_keys(tensors, self.prefix)
        tied = self._tied_names()
        own = self.state_dict()
        missing = [n for n in own if n not in tied and n not in tensors and _is_backbone(n, self.prefix)]
        extra = sorted(k for k in tensors if k not in own and _is_backbone(k, self.prefix))
        if missing or extra:
            raise CheckpointError(
                f"{where}: the config and the weights disagree: the checkpoint has {_count_layers(tensors)} encoder "
                f"layers, the config num_hidden_layers={self.config.num_hidden_layers}; backbone tensors missing from "
                f"the checkpoint: {missing[:6]}{' ...' if len(missing) > 6 else ''}; tensors the model has no place for: "
                f"{extra[:6]}{' ...' if len(extra) > 6 else ''}. Load with the config.json saved with these weights"
            )
        state: dict[str, np.ndarray] = {}
        fresh: list[str] = []
        for name, p in own.items():
            if name in tied:
                tensors.pop(name, None)
                continue
            if name not in tensors and not _is_backbone(name, self.prefix):
                fresh.append(name)
                continue
            state[name] = _hf.take(tensors, name, tuple(p.shape), where)
        if tensors:
            logger.info("%s: ignored head tensors the model does not use: %s", where, sorted(tensors)[:10])
        if fresh:
            msg = "%s: tensors %s were not in the checkpoint and keep their fresh initialisation; train this head before use"
            logger.warning(msg, where, fresh)
        with no_grad():
            for name, p in own.items():
                if name in state:
                    p.copy_(tensor(state[name], dtype=p.dtype, device=p.device))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors that transformers' class of the same name loads."""
        tied = self._tied_names()
        out = {name: np.ascontiguousarray(p.numpy()) for name, p in self.state_dict().items() if name not in tied}
        cfg = self.config.to_dict()
        cfg["architectures"] = [type(self).__name__]
        cfg["dtype"] = self._backbone().embeddings.word_embeddings.weight.dtype.name
        _hf.write_pretrained(directory, cfg, out)


def _is_backbone(name: str, prefix: str) -> bool:
    rest = name[len(prefix):] if prefix and name.startswith(prefix) else (None if prefix else name)
    return rest is not None and rest.split(".")[0] in _BACKBONE


def _count_layers(tensors: dict[str, np.ndarray]) -> int:
    """Encoder layers in a checkpoint: one more than the largest ``encoder.layer.<i>`` index."""
    idx = [int(m.group(1)) for k in tensors if (m := re.search(r"(?:^|\.)encoder\.layer\.(\d+)\.", k))]
    return max(idx) + 1 if idx else 0


def _normalize_keys(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Old-style names (LayerNorm ``gamma``/``beta``), the ``bert.`` prefix, and buffers that are not weights."""
    out: dict[str, np.ndarray] = {}
    for k, v in tensors.items():
        if k.endswith("position_ids"):
            continue  # a buffer older transformers versions saved
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    prefixed = any(k.startswith("bert.") for k in out)
    if prefix and not prefixed:  # a bare BertModel checkpoint loaded under a head
        out = {(prefix + k if k.split(".")[0] in (*_BACKBONE, "pooler") else k): v for k, v in out.items()}
    elif not prefix and prefixed:  # a head model's checkpoint loaded into the bare backbone
        out = {(k[len("bert."):] if k.startswith("bert.") else "head:" + k): v for k, v in out.items()}
    # the MLM decoder bias is the same tensor as cls.predictions.bias; some checkpoints store only one
    if "cls.predictions.decoder.bias" in out:
        bias = out.pop("cls.predictions.decoder.bias")
        out.setdefault("cls.predictions.bias", bias)
    return out


class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, ``num_hidden_layers`` post-LN blocks and (optionally) the pooler.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
    output_hidden_states=False)`` returns a :class:`BaseModelOutput` with ``last_hidden_state``
    (B, T, hidden) and ``pooler_output`` (B, hidden) (None without a pooler):

    - ``input_ids``: int64 (B, T), T <= ``max_position_embeddings``;
    - ``attention_mask``: (B, T), 1 = token, 0 = padding (padded keys are masked out);
    - ``token_type_ids``: (B, T) segment ids (default zeros); ``position_ids``: default 0..T-1;
    - ``output_hidden_states``: also return the embeddings and every layer's output (L + 1 tensors).

    Example::

        model = BertModel(BertConfig.from_name("tiny")).eval()
        out = model(ax.tensor([[2, 5, 6, 3]]))
        out.pooler_output.shape   # (1, 32)
    """

    prefix = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        init_bert_weights(self.modules(), config.initializer_range)

    def _backbone(self) -> "BertModel":
        return self

    def forward(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        device = self.embeddings.word_embeddings.weight.device
        ids = _as_index(input_ids, "input_ids", device)
        bsz, length = ids.shape
        if position_ids is None:
            if length > self.config.max_position_embeddings:
                raise ShapeError(
                    f"BERT: seq_len {length} is beyond max_position_embeddings={self.config.max_position_embeddings}; "
                    f"truncate the input (e.g. tokenizer truncation=True)"
                )
            pos = tensor(np.arange(length, dtype=np.int64)[None, :], device=device)
        else:
            pos = _as_index(position_ids, "position_ids", device)
            if pos.shape[1] != length or pos.shape[0] not in (1, bsz):
                raise ShapeError(f"BERT: position_ids must be ({bsz} or 1, {length}), got {tuple(pos.shape)}")
        if token_type_ids is None:
            types = tensor(np.zeros((1, length), dtype=np.int64), device=device)
        else:
            types = _as_index(token_type_ids, "token_type_ids", device, (bsz, length))
        x = self.embeddings(ids, types, pos)
        mask = self._attention_mask(attention_mask, bsz, length, x)
        h, hidden = self.encoder(x, mask, output_hidden_states)
        pooled = self.pooler(h) if self.pooler is not None else None
        return BaseModelOutput(last_hidden_state=h, pooler_output=pooled, hidden_states=hidden)

    @staticmethod
    def _attention_mask(attention_mask: Any, bsz: int, length: int, x: Tensor) -> Tensor | None:
        """The additive (B, 1, 1, T) key-padding mask, or None when nothing is padded."""
        if attention_mask is None:
            return None
        m = attention_mask.numpy() if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
        if m.shape != (bsz, length):
            raise ShapeError(
                f"BERT: attention_mask must be (batch, seq_len) = ({bsz}, {length}) with 1 = token, 0 = padding, "
                f"got shape {tuple(m.shape)}"
            )
        if bool(m.all()):
            return None
        add = np.where(m[:, None, None, :] != 0, 0.0, -np.inf).astype(np.float32)
        return tensor(add, dtype=x.dtype, device=x.device)


__all__ = [
    "BertAttention",
    "BertConfig",
    "BertEmbeddings",
    "BertEncoder",
    "BertIntermediate",
    "BertLayer",
    "BertModel",
    "BertOutput",
    "BertPooler",
    "BertPreTrainedModel",
    "BertSelfAttention",
    "BertSelfOutput",
]
