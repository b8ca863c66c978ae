"""Model output containers, named like Hugging Face transformers' ``modeling_outputs``.

Each is a plain dataclass: read fields by attribute (``out.logits``); fields a model does not
compute stay ``None``.

Example::

    out = model(input_ids, labels=input_ids)
    out.loss.backward()
    next_token = out.logits[:, -1].argmax(-1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class BaseModelOutput:
    """Output of a backbone without a head.

    Attributes:
        last_hidden_state: (B, T, hidden) final hidden states.
        past_key_values: the ``KVCache`` updated by this call (decoders with ``use_cache=True``).
        pooler_output: (B, hidden) pooled first-token state (encoders with a pooler).
        hidden_states: tuple of per-layer hidden states when requested.
    """

    last_hidden_state: Any = None
    past_key_values: Any = None
    pooler_output: Any = None
    hidden_states: Any = None


@dataclass
class CausalLMOutput:
    """Output of a decoder language model.

    Attributes:
        loss: scalar mean next-token cross-entropy when ``labels`` were given.
        logits: (B, T, vocab) scores of the next token at every position.
        past_key_values: the ``KVCache`` (with ``use_cache=True``).
        hidden_states: tuple of per-layer hidden states when requested.
    """

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Any = None


@dataclass
class MaskedLMOutput:
    """Output of a masked language model (BERT-style): ``logits`` (B, T, vocab), ``loss`` over masked positions."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None


@dataclass
class SequenceClassifierOutput:
    """Output of a sequence classifier: ``logits`` (B, num_labels), ``loss`` when labels were given."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None


__all__ = ["BaseModelOutput", "CausalLMOutput", "MaskedLMOutput", "SequenceClassifierOutput"]
