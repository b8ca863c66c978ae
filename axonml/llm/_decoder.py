"""What the decoder models (GPT-2, LLaMA) share: default position ids, the additive attention
mask, the causal language-modelling loss, input-id checks, and the base classes of their
backbones (:class:`DecoderModel`) and of their language models (:class:`DecoderLM`)."""

from __future__ import annotations

import logging
import os
from typing import Any, Self

import numpy as np

from .. import nn
from ..autograd import is_grad_enabled, no_grad
from ..autograd.checkpoint import checkpoint
from ..errors import CheckpointError, DTypeError, ShapeError
from ..nn import functional as F
from ..tensor import Tensor, tensor
from . import _hf
from .cache import KVCache
from .generation import generate
from .outputs import BaseModelOutput, CausalLMOutput


def decoder_position_ids(mask: np.ndarray | None, batch: int, past: int, length: int) -> np.ndarray:
    """Default position ids (``batch`` or 1, T) of ``length`` new tokens after ``past`` cached ones:
    ``cumsum(mask) - 1`` clipped at 0 when a (B, past+T) 0/1 mask is given, else ``arange`` (one row
    that broadcasts over the batch). Shared by the decoders of this package."""
    if mask is None:
        return np.arange(past, past + length, dtype=np.int64)[None, :]
    pos = np.cumsum(mask.astype(np.int64), axis=1) - 1
    return np.maximum(pos[:, -length:], 0)


def decoder_attention_mask(mask: np.ndarray | None, past: int, length: int, dtype: Any, device: Any) -> Tensor | None:
    """The additive mask (B or 1, 1, T, past+T) for ``length`` queries after ``past`` cached keys,
    or None when plain causal attention (or, for one query, no mask at all) is exact. Shared by the
    decoders of this package; cast it to the query's dtype under autocast."""
    padded = mask is not None and not bool(mask.all())
    if not padded and (past == 0 or length == 1):
        return None
    total = past + length
    # query i (at position past + i) may see keys 0..past+i: a bottom-right aligned triangle
    allowed = np.arange(total)[None, :] <= (past + np.arange(length))[:, None]  # (T, S)
    allowed = allowed[None, None]  # (1, 1, T, S)
    if padded:
        allowed = allowed & (mask[:, None, None, :] != 0)  # (B, 1, T, S)
    return tensor(np.where(allowed, 0.0, -np.inf).astype(np.float32), dtype=dtype, device=device)


def causal_lm_loss(logits: Tensor, labels: Any) -> Tensor:
    """Mean next-token cross-entropy: position t predicts ``labels[:, t+1]``; -100 labels are ignored.

    The labels are shifted (not the logits), so the (B*T, V) logits need no copy.
    """
    b, t, v = logits.shape
    lab = labels.numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if lab.shape != (b, t):
        raise ShapeError(f"causal LM loss: labels must be (batch, seq_len) = ({b}, {t}) like input_ids, got {lab.shape}")
    if lab.dtype.kind not in "iu":
        raise DTypeError(f"causal LM loss: labels must be integers (int64, -100 = ignore), got dtype {lab.dtype}")
    shifted = np.full((b, t), -100, dtype=np.int64)
    shifted[:, :-1] = lab[:, 1:]
    target = tensor(shifted.reshape(-1), device=logits.device)
    return F.cross_entropy(logits.reshape(b * t, v), target, ignore_index=-100)


def as_ids(x: Any, name: str, device: Any, label: str) -> Tensor:
    """An int64 (B, T) tensor from a Tensor, NumPy array or nested list; ``label`` starts the error messages."""
    t = x if isinstance(x, Tensor) else tensor(np.asarray(x), device=device)
    if t.dtype.is_floating_point or t.dtype.name == "bool":
        raise DTypeError(f"{label}: {name} must hold integers (int64), got dtype {t.dtype}; convert with .long()")
    if t.ndim != 2:
        raise ShapeError(f"{label}: {name} must be (batch, seq_len), got shape {tuple(t.shape)}; add a batch dim with [None]")
    return t if t.dtype.name == "int64" else t.long()


class DecoderModel(nn.Module):
    """What the decoder backbones (``GPT2Model``, ``LlamaModel``) share around their own embeddings:
    the KV cache and padding-mask setup, and the loop over the blocks (with optional activation
    checkpointing and hidden-state collection) that ends in the final norm.

    Subclasses name their pieces: ``_label`` and ``_logger`` (the prefix of their error messages and
    the logger of their warnings), ``_embed_name``, ``_blocks_name`` and ``_norm_name`` (the attributes
    holding the token embedding, the ``ModuleList`` of blocks and the final norm); their ``__init__``
    sets ``gradient_checkpointing``.
    """

    _label = "decoder"
    _logger = logging.getLogger(__name__)
    _embed_name = _blocks_name = _norm_name = ""
    gradient_checkpointing: bool

    def _prepare(
        self, attention_mask: Any, past_key_values: KVCache | None, use_cache: bool, bsz: int, length: int
    ) -> tuple[KVCache | None, bool, int, np.ndarray | None]:
        """``(cache, checkpointing, past, mask)`` for ``length`` new tokens: the cache to extend (a new
        one with ``use_cache``; none under gradient checkpointing in training), whether to checkpoint,
        the number of cached positions, and the checked (B, past+T) 0/1 mask as a NumPy array."""
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(len(getattr(self, self._blocks_name)))
        checkpointing = self.gradient_checkpointing and self.training and is_grad_enabled()
        if checkpointing and cache is not None:
            self._logger.warning(
                f"{self._label}: use_cache is ignored with gradient checkpointing in training (recomputation would re-append)"
            )
            cache = None
        past = cache.seq_length if cache is not None else 0
        mask = None
        if attention_mask is not None:
            mask = attention_mask.numpy() if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
            if mask.shape != (bsz, past + length):
                raise ShapeError(
                    f"{self._label}: attention_mask must be (batch, past + seq_len) = ({bsz}, {past + length}) "
                    f"(past={past} cached positions), got shape {tuple(mask.shape)}"
                )
        return cache, checkpointing, past, mask

    def _run_blocks(
        self, x: Tensor, block_args: tuple, cache: KVCache | None, checkpointing: bool, output_hidden_states: bool,
        return_cache: bool,
    ) -> BaseModelOutput:
        """Run every block as ``block(x, *block_args, cache)`` (recomputed in backward, without the
        cache, when ``checkpointing``), then the final norm. The hidden states are each block's input
        and the normed output; the cache is returned when ``return_cache``."""
        hidden: list[Tensor] = []
        for blk in getattr(self, self._blocks_name):
            if output_hidden_states:
                hidden.append(x)
            if checkpointing:
                x = checkpoint(lambda h, b=blk: b(h, *block_args), x)
            else:
                x = blk(x, *block_args, cache)
        x = getattr(self, self._norm_name)(x)
        if output_hidden_states:
            hidden.append(x)
        return BaseModelOutput(
            last_hidden_state=x,
            past_key_values=cache if return_cache else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )


class DecoderLM(nn.Module):
    """What the decoder language models (``GPT2LMHeadModel``, ``LlamaForCausalLM``) share: a
    :class:`DecoderModel` backbone, an ``lm_head`` (tied to the token embedding with
    ``tie_word_embeddings``), ``blocks``, gradient checkpointing, the causal-LM output, generation
    and Hugging Face directories.

    Subclasses set ``base_model_prefix`` (the backbone's attribute, as transformers names it),
    ``config_class``, ``_hf_name`` (the class name in messages), ``_hf_ignored`` (checkpoint tensors
    that are not parameters) and ``_hf_transposed`` (weights a checkpoint stores (in, out)); their
    ``forward`` ends in :meth:`_lm_output`, and their ``load_hf_state_dict`` maps a checkpoint's key
    prefixes, then calls :meth:`_load_hf_tensors`.
    """

    base_model_prefix = ""
    config_class: Any = None
    _hf_name = ""
    _hf_ignored: tuple[str, ...] = ()
    _hf_transposed: tuple[str, ...] = ()

    def __init__(self, config: Any, backbone: DecoderModel, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        setattr(self, self.base_model_prefix, backbone)
        self.lm_head = nn.Linear(hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = getattr(backbone, backbone._embed_name).weight
        else:
            nn.init.normal_(self.lm_head.weight, 0.0, config.initializer_range)

    def _backbone(self) -> DecoderModel:
        return getattr(self, self.base_model_prefix)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (FSDP's wrapping unit and the unit of activation checkpointing)."""
        backbone = self._backbone()
        return getattr(backbone, backbone._blocks_name)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations in backward (training with grad only)."""
        self._backbone().gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self._backbone().gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._backbone().gradient_checkpointing

    def _lm_output(self, base: BaseModelOutput, labels: Any) -> CausalLMOutput:
        """The head on the backbone's output: logits (B, T, V), and the loss when ``labels`` are given."""
        logits = self.lm_head(base.last_hidden_state)  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(loss=loss, logits=logits, past_key_values=base.past_key_values, hidden_states=base.hidden_states)

    def generate(self, input_ids: Any, attention_mask: Any = None, **kwargs: Any) -> Tensor:
        """Greedy or sampled continuation; see :func:`axonml.llm.generation.generate` for the arguments."""
        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)

    # -- Hugging Face directories -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: Any = None) -> Self:
        """Load a folder written by ``save_pretrained`` of transformers' class of the same name (or ours).

        ``dtype``: the parameters' dtype (default: the default dtype, float32; bfloat16 weights are upcast).
        """
        cfg_dict, tensors = _hf.read_pretrained(directory)
        config = cls.config_class.from_dict(cfg_dict)
        with no_grad():
            model = cls(config)
        model.load_hf_state_dict(tensors, where=f"{cls._hf_name}.from_pretrained({os.fspath(directory)!r})")
        if dtype is not None:
            model.to(dtype=dtype)
        return model

    def load_hf_state_dict(self, tensors: dict[str, np.ndarray], where: str) -> None:
        """Map a checkpoint's key prefixes to this model's names, then :meth:`_load_hf_tensors` (per model)."""
        raise NotImplementedError

    def _load_hf_tensors(self, tensors: dict[str, np.ndarray], where: str) -> None:
        """Copy transformers-named tensors (keys already under this model's names) into this model; the
        dict is consumed. A tied head is skipped; a missing, misshapen or unexpected tensor is an error."""
        for k in [k for k in tensors if k.endswith(self._hf_ignored)]:
            del tensors[k]
        own = self.state_dict()
        state: dict[str, np.ndarray] = {}
        for name, p in own.items():
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                tensors.pop(name, None)  # tied: the embedding is the head
                continue
            transposed = name.endswith(self._hf_transposed)
            shape = tuple(p.shape)[::-1] if transposed else tuple(p.shape)
            arr = _hf.take(tensors, name, shape, where)
            state[name] = np.ascontiguousarray(arr.T) if transposed else arr
        if tensors:
            raise CheckpointError(f"{where}: unexpected tensors in the checkpoint: {sorted(tensors)[:10]}")
        with no_grad():
            for name, p in own.items():
                if name in state:
                    p.copy_(tensor(state[name].astype(p.dtype.np, copy=False), device=p.device))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors that transformers' class of the same name loads."""
        out: dict[str, np.ndarray] = {}
        for name, p in self.state_dict().items():
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            arr = p.numpy()
            out[name] = np.ascontiguousarray(arr.T) if name.endswith(self._hf_transposed) else np.ascontiguousarray(arr)
        backbone = self._backbone()
        cfg = self.config.to_dict()
        cfg["dtype"] = getattr(backbone, backbone._embed_name).weight.dtype.name
        _hf.write_pretrained(directory, cfg, out)
