"""GPT-2 (Radford et al. 2019), with Hugging Face transformers' parameter names and checkpoints.

Example::

    import axonml as ax
    from axonml.llm import GPT2Config, GPT2LMHeadModel

    ax.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config.from_name("tiny"))
    ids = ax.tensor([[1, 2, 3, 4]])
    out = model(ids, labels=ids)            # out.loss, out.logits (1, 4, vocab)
    out.loss.backward()
    model.generate(ids, max_new_tokens=8)   # (1, 12) int64

Note on names and layouts: parameters carry the names of transformers' ``GPT2LMHeadModel``
(``transformer.h.0.attn.c_attn.weight`` ...), but projections are ordinary ``nn.Linear``
layers whose weights are (out, in); transformers' ``Conv1D`` stores (in, out), so
``from_pretrained``/``save_pretrained`` transpose the ``c_attn``, ``c_proj`` and ``c_fc`` weights.

Note on attention paths: without a cache and without padding, attention is one fused causal
``scaled_dot_product_attention`` per layer (the training path). Padding (``attention_mask``
with zeros) or a cached prefix with more than one new token needs an explicit mask: one additive
float mask (B or 1, 1, T, past+T) is built per forward on the host and shared by all layers;
its causal part is aligned to the bottom right (query i sits at position past+i). A single new
token with a cache and no padding attends to everything and needs no mask.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import nn
from ..errors import ShapeError
from ..nn import functional as F
from ..tensor import Tensor, tensor
from ._decoder import DecoderLM, DecoderModel, as_ids, causal_lm_loss, decoder_attention_mask, decoder_position_ids
from .cache import KVCache
from .outputs import BaseModelOutput, CausalLMOutput

logger = logging.getLogger(__name__)

# transformers' Conv1D layers: their weights are stored (in, out) in a checkpoint
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers old transformers versions saved alongside the weights; not parameters
_IGNORED = (".attn.bias", ".attn.masked_bias")

_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish")
# published sizes: (n_embd, n_layer, n_head)
_PRESETS = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20), "gpt2-xl": (1600, 48, 25)}
_TINY = dict(vocab_size=256, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=255, eos_token_id=255)


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2 hyper-parameters, under the key names of transformers' ``GPT2Config`` / config.json.

    Example::

        GPT2Config.from_name("gpt2")                 # 124M: n_embd=768, n_layer=12, n_head=12
        GPT2Config.from_name("tiny", n_layer=4)      # a test-sized model
        dataclasses.replace(config, attn_pdrop=0.0)  # configs are frozen: derive new ones
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"GPT2Config: {name} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPT2Config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ValueError(f"GPT2Config: n_inner must be None (4 * n_embd) or a positive int, got {self.n_inner!r}")
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(
                f"GPT2Config: activation_function {self.activation_function!r} is not supported; use one of {_ACTIVATIONS}"
            )
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPT2Config: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"GPT2Config: layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "GPT2Config":
        """A published size ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl") or "tiny" (tests), with overrides."""
        if name == "tiny":
            base: dict[str, Any] = dict(_TINY)
        elif name in _PRESETS:
            e, n_layer, n_head = _PRESETS[name]
            base = {"n_embd": e, "n_layer": n_layer, "n_head": n_head}
        else:
            raise ValueError(f"GPT2Config.from_name: unknown name {name!r}; choose one of {sorted(_PRESETS) + ['tiny']}")
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict transformers' ``GPT2Config`` reads."""
        d = dataclasses.asdict(self)
        d.update(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_ctx=self.n_positions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GPT2Config":
        """Read a transformers config dict: unknown keys are ignored, features this model lacks are errors."""
        if d.get("model_type", "gpt2") != "gpt2":
            raise ValueError(f"GPT2Config.from_dict: model_type is {d['model_type']!r}, not 'gpt2'; load it with its own class")
        if d.get("add_cross_attention", False):
            raise ValueError("GPT2Config.from_dict: add_cross_attention=True (encoder-decoder GPT-2) is not supported")
        if not d.get("scale_attn_weights", True):
            raise ValueError("GPT2Config.from_dict: scale_attn_weights=False (unscaled attention) is not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def num_parameters(self) -> int:
        """Parameters of ``GPT2LMHeadModel(self)``, computed without building it (the tied head counted once)."""
        e, inner = self.n_embd, self.n_inner if self.n_inner is not None else 4 * self.n_embd
        attn = 3 * e * e + 3 * e + e * e + e
        mlp = e * inner + inner + inner * e + e
        block = attn + mlp + 4 * e  # + two LayerNorms
        total = self.vocab_size * e + self.n_positions * e + self.n_layer * block + 2 * e
        return total if self.tie_word_embeddings else total + self.vocab_size * e



class GPT2Attention(nn.Module):
    """Causal multi-head self-attention with one fused query/key/value projection ``c_attn``."""

    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        e = config.n_embd
        self.layer_idx = layer_idx
        self.num_heads = config.n_head
        self.head_dim = e // config.n_head
        self.scale = 1.0 / math.sqrt(self.head_dim)
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)
        self.attn_pdrop = config.attn_pdrop
        self.resid_pdrop = config.resid_pdrop
        self.c_attn = nn.Linear(e, 3 * e)
        self.c_proj = nn.Linear(e, e)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        b, t, e = x.shape
        qkv = self.c_attn(x).reshape(b, t, 3, self.num_heads, self.head_dim)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, H, past + T, D)
        drop = self.attn_pdrop if self.training else 0.0
        if mask is None and k.shape[2] == t:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True, scale=self.scale)
        else:  # a given mask, or one new token after a cached prefix (attends to every key)
            if mask is not None and mask.dtype is not q.dtype:  # autocast computes q in its own dtype
                mask = mask.to(q.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=self.scale)
        y = y.transpose(1, 2).reshape(b, t, e)  # (B, T, H*D)
        return F.dropout(self.c_proj(y), self.resid_pdrop, self.training)


class GPT2MLP(nn.Module):
    """``c_proj(act(c_fc(x)))`` with the inner width ``n_inner`` (default 4 * n_embd)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, inner)
        self.c_proj = nn.Linear(inner, config.n_embd)
        self.activation = config.activation_function
        self.resid_pdrop = config.resid_pdrop

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        if self.activation in ("gelu_new", "gelu_pytorch_tanh"):
            h = F.gelu(h, approximate="tanh")
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "relu":
            h = F.relu(h)
        else:  # "silu" / "swish" (GPT2Config validated the name)
            h = F.silu(h)
        return F.dropout(self.c_proj(h), self.resid_pdrop, self.training)


class GPT2Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2Model(DecoderModel):
    """The GPT-2 backbone: token and position embeddings, ``n_layer`` blocks, a final LayerNorm.

    ``forward`` takes the shared decoder arguments (see :class:`GPT2LMHeadModel`) and returns a
    :class:`BaseModelOutput` whose ``last_hidden_state`` is (B, T, n_embd).
    """

    _label, _logger = "GPT2", logger
    _embed_name, _blocks_name, _norm_name = "wte", "h", "ln_f"

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self._init_weights()

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (the unit of FSDP wrapping and of activation checkpointing)."""
        return self.h

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations in backward (training with grad only)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def _init_weights(self) -> None:
        # transformers' GPT-2 init: N(0, 0.02) weights, zero biases, unit LayerNorms, and the
        # projections that write into the residual stream scaled by 1/sqrt(2 * n_layer)
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.h:
            for proj in (blk.attn.c_proj, blk.mlp.c_proj):
                nn.init.normal_(proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layer))

    def forward(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        device = self.wte.weight.device
        ids = as_ids(input_ids, "input_ids", device, "GPT2")
        bsz, length = ids.shape
        cache, checkpointing, past, mask = self._prepare(attention_mask, past_key_values, use_cache, bsz, length)
        if position_ids is None:
            pos = decoder_position_ids(mask, bsz, past, length)
            pos_t = tensor(pos, device=device)
        else:
            pos_t = as_ids(position_ids, "position_ids", device, "GPT2")
            pos = pos_t.numpy()
        if pos.size and int(pos.max()) >= self.config.n_positions:
            raise ShapeError(
                f"GPT2: position {int(pos.max())} is beyond n_positions={self.config.n_positions} "
                f"(past={past} + seq_len={length}); truncate the input or use a config with more positions"
            )
        x = self.drop(self.wte(ids) + self.wpe(pos_t))
        attn_mask = decoder_attention_mask(mask, past, length, x.dtype, device)
        keep_cache = use_cache or past_key_values is not None
        return self._run_blocks(x, (attn_mask,), cache, checkpointing, output_hidden_states, keep_cache)


class GPT2LMHeadModel(DecoderLM):
    """GPT-2 with a language-model head (tied to the token embedding by default).

    ``forward(input_ids, attention_mask=None, position_ids=None, past_key_values=None,
    use_cache=False, labels=None, output_hidden_states=False)`` returns a :class:`CausalLMOutput`:

    - ``input_ids``: int64 (B, T); ``attention_mask``: (B, past+T), 1 = token, 0 = padding;
    - ``position_ids``: default ``cumsum(attention_mask) - 1`` (clipped at 0), else past..past+T-1;
    - ``past_key_values``/``use_cache``: a :class:`KVCache` to extend (one is made when
      ``use_cache`` and none is given) and returned in ``.past_key_values``;
    - ``labels``: (B, T) int64; the loss predicts token t+1 from position t, ignoring -100.

    Example::

        model = GPT2LMHeadModel(GPT2Config.from_name("tiny"))
        out = model(ids, labels=ids); out.loss.backward()
    """

    base_model_prefix, config_class, _hf_name = "transformer", GPT2Config, "GPT2LMHeadModel"
    _hf_ignored, _hf_transposed = _IGNORED, _CONV1D

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config, GPT2Model(config), config.n_embd)

    def forward(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        labels: Any = None,
        output_hidden_states: bool = False,
    ) -> CausalLMOutput:
        base = self.transformer(input_ids, attention_mask, position_ids, past_key_values, use_cache, output_hidden_states)
        return self._lm_output(base, labels)

    def load_hf_state_dict(self, tensors: dict[str, np.ndarray], where: str = "GPT2LMHeadModel") -> None:
        """Copy transformers-named, (in, out)-layout GPT-2 tensors into this model (the dict is consumed)."""
        if tensors and not any(k.startswith("transformer.") for k in tensors):
            tensors = {"transformer." + k: v for k, v in tensors.items()}  # a bare GPT2Model checkpoint
        self._load_hf_tensors(tensors, where)


__all__ = [
    "GPT2Attention", "GPT2Block", "GPT2Config", "GPT2LMHeadModel", "GPT2MLP", "GPT2Model",
    "causal_lm_loss", "decoder_attention_mask", "decoder_position_ids",
]
