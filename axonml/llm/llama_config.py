"""``LlamaConfig``: the hyper-parameters of the LLaMA-style decoder (``llama.py``), under the key
names of transformers' ``LlamaConfig`` / config.json, with the published sizes."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from ..nn import functional as F

logger = logging.getLogger(__name__)

# transformers' ACT2FN names this model accepts for hidden_act
_ACTIVATIONS = {
    "silu": F.silu, "swish": F.silu, "gelu": F.gelu, "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
_TINY = dict(
    vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
)
# published sizes: (hidden, intermediate, layers, heads, kv heads, vocab, max positions)
_PRESETS = {
    "llama-2-7b": (4096, 11008, 32, 32, 32, 32000, 4096),
    "llama-2-13b": (5120, 13824, 40, 40, 40, 32000, 4096),
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000, 2048),
}


@dataclass(frozen=True)
class LlamaConfig:
    """LLaMA hyper-parameters, under the key names of transformers' ``LlamaConfig`` / config.json.

    ``num_key_value_heads=None`` means multi-head attention (as many key/value heads as query
    heads); ``head_dim=None`` means ``hidden_size // num_attention_heads``.

    Example::

        LlamaConfig.from_name("tiny")                       # a test-sized model (GQA: 4 heads, 2 kv heads)
        LlamaConfig.from_name("tinyllama-1.1b")             # published sizes
        dataclasses.replace(config, num_hidden_layers=4)    # configs are frozen: derive new ones
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    head_dim: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None and isinstance(self.num_attention_heads, int) and self.num_attention_heads > 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings", "head_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"LlamaConfig: {name} must be a positive int, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"LlamaConfig: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}) for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"LlamaConfig: hidden_act {self.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        for name in ("rms_norm_eps", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LlamaConfig: {name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"LlamaConfig: attention_dropout must be in [0, 1), got {self.attention_dropout!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"LlamaConfig: pad_token_id {self.pad_token_id} is outside the vocabulary 0..{self.vocab_size - 1}")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "LlamaConfig":
        """A published size ("llama-2-7b", "llama-2-13b", "tinyllama-1.1b") or "tiny" (tests), with overrides."""
        if name == "tiny":
            base: dict[str, Any] = dict(_TINY)
        elif name in _PRESETS:
            keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "vocab_size", "max_position_embeddings")
            base = dict(zip(keys, _PRESETS[name]))
            if name.startswith("tinyllama"):
                base["rms_norm_eps"] = 1e-5
        else:
            raise ValueError(f"LlamaConfig.from_name: unknown name {name!r}; choose one of {sorted(_PRESETS) + ['tiny']}")
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict transformers' ``LlamaConfig`` reads (both the 4.x ``rope_theta`` and
        the 5.x ``rope_parameters`` spellings)."""
        d = dataclasses.asdict(self)
        d.update(
            model_type="llama", architectures=["LlamaForCausalLM"], rope_scaling=None,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
        """Read a transformers config dict: unknown keys are ignored, features this model lacks are errors."""
        if d.get("model_type", "llama") != "llama":
            raise ValueError(f"LlamaConfig.from_dict: model_type is {d['model_type']!r}, not 'llama'; load it with its own class")
        d = dict(d)
        if d.get("rope_scaling") is not None:
            raise ValueError(
                f"LlamaConfig.from_dict: rope_scaling={d['rope_scaling']!r} is not supported (only plain RoPE); "
                f"use a checkpoint without RoPE scaling, or set rope_scaling to null to run it unscaled"
            )
        rope = d.get("rope_parameters")
        if rope is not None:
            kind = rope.get("rope_type", rope.get("type", "default"))
            if kind != "default":
                raise ValueError(
                    f"LlamaConfig.from_dict: rope_parameters={rope!r} asks for RoPE type {kind!r}; only 'default' "
                    f"(unscaled rotary embeddings) is supported"
                )
            if "rope_theta" in rope:
                d["rope_theta"] = rope["rope_theta"]
        if d.get("pretraining_tp", 1) not in (1, None):
            logger.info("LlamaConfig: pretraining_tp=%s only splits matmuls in transformers; ignored", d["pretraining_tp"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def num_parameters(self) -> int:
        """Parameters of ``LlamaForCausalLM(self)``, computed without building it (a tied head counted once)."""
        h, inter, hd = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv + h if self.attention_bias else 0)
        mlp = 3 * h * inter + (2 * inter + h if self.mlp_bias else 0)
        total = self.vocab_size * h + self.num_hidden_layers * (attn + mlp + 2 * h) + h
        return total if self.tie_word_embeddings else total + self.vocab_size * h


__all__ = ["LlamaConfig"]
