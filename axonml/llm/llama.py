"""A LLaMA-style decoder (Touvron et al. 2023), with Hugging Face transformers' names and checkpoints.

Pre-RMSNorm blocks, rotary position embeddings, grouped-query attention and a SwiGLU MLP;
the same architecture as transformers' ``LlamaForCausalLM`` (Llama 1/2/3 without RoPE scaling,
TinyLlama, SmolLM, ...), whose ``save_pretrained`` folders load here and back.

Example::

    import axonml as ax
    from axonml.llm import LlamaConfig, LlamaForCausalLM

    ax.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig.from_name("tiny"))
    ids = ax.tensor([[1, 2, 3, 4]])
    out = model(ids, labels=ids)            # out.loss, out.logits (1, 4, vocab)
    out.loss.backward()
    model.generate(ids, max_new_tokens=8)   # (1, 12) int64

Note on rotary embeddings: ``cos``/``sin`` tables are computed once per forward on the host,
in float32 as transformers does (inverse frequencies ``theta ** -(2i / head_dim)``, angles
``position * inv_freq``), then cast to the activations' dtype and shared by every layer. Keys are
rotated before they enter the :class:`KVCache`, so cached keys never need re-rotation.

Note on attention paths (as in GPT-2): without a cache and without padding, attention is one
fused causal ``scaled_dot_product_attention`` per layer; padding or a cached prefix with more
than one new token uses one additive (B or 1, 1, T, past+T) mask per forward, bottom-right
aligned; one new token after a cache with no padding needs no mask. Key/value heads are
repeated to the query heads inside attention (``enable_gqa``); the cache keeps only the
``num_key_value_heads`` heads.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..errors import ShapeError
from ..nn import functional as F
from ..tensor import Tensor, cat, tensor
from ._decoder import DecoderLM, DecoderModel, as_ids, decoder_attention_mask, decoder_position_ids
from .cache import KVCache
from .llama_config import _ACTIVATIONS, LlamaConfig
from .outputs import BaseModelOutput, CausalLMOutput

logger = logging.getLogger(__name__)

# tensors some transformers versions saved beside the weights; recomputed here, never parameters
_IGNORED = ("rotary_emb.inv_freq",)


class LlamaRMSNorm(nn.RMSNorm):
    """RMSNorm as transformers' ``LlamaRMSNorm``: normalise in float32, cast back, then scale by ``weight``.

    For float32 activations this is ``nn.RMSNorm``; for float16/bfloat16 the normalised values are
    rounded to the input dtype before the weight multiplies them, as transformers does.

    Example: ``LlamaRMSNorm(64, eps=1e-6)(ax.randn(2, 5, 64))``
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, device: Any = None, dtype: Any = None) -> None:
        super().__init__(hidden_size, eps=eps, device=device, dtype=dtype)

    def forward(self, input: Tensor) -> Tensor:
        if input.dtype.itemsize >= 4:
            return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)
        return F.rms_norm(input, self.normalized_shape, None, self.eps) * self.weight


class LlamaRotaryEmbedding(nn.Module):
    """Rotary position embedding tables: ``forward(position_ids)`` gives ``cos, sin`` of shape
    (B or 1, 1, T, head_dim), ready to broadcast over (B, heads, T, head_dim).

    Angles follow transformers: ``inv_freq[i] = theta ** -(2i / head_dim)`` for i < head_dim / 2,
    and each half of the head dim uses the same frequencies (the ``rotate_half`` layout).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = float(theta)
        # float32 as in transformers, so tables match checkpoints trained there
        exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        self.inv_freq = (np.float32(1.0) / np.power(np.float32(self.theta), exponent)).astype(np.float32)

    def forward(self, position_ids: np.ndarray, dtype: Any = None, device: Any = None) -> tuple[Tensor, Tensor]:
        pos = np.asarray(position_ids)
        freqs = pos[..., None].astype(np.float32) * self.inv_freq  # (B, T, D/2)
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None]  # (B, 1, T, D)
        np_dtype = dtype.np if dtype is not None else np.float32
        cos = tensor(np.cos(emb).astype(np_dtype), device=device)
        sin = tensor(np.sin(emb).astype(np_dtype), device=device)
        return cos, sin

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}"


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    half = x.shape[-1] // 2
    return cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary_pos_emb(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate queries and keys (B, H, T, D) by the angles in ``cos``/``sin`` (B or 1, 1, T, D)."""
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class LlamaAttention(nn.Module):
    """Causal self-attention with rotary embeddings and grouped-query key/value heads."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        h, hd = config.hidden_size, config.head_dim
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = hd
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(h, self.num_heads * hd, bias=config.attention_bias)
        self.k_proj = nn.Linear(h, self.num_key_value_heads * hd, bias=config.attention_bias)
        self.v_proj = nn.Linear(h, self.num_key_value_heads * hd, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * hd, h, bias=config.attention_bias)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        b, t, _ = x.shape
        hd = self.head_dim
        q = self.q_proj(x).reshape(b, t, self.num_heads, hd).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).reshape(b, t, self.num_key_value_heads, hd).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).reshape(b, t, self.num_key_value_heads, hd).transpose(1, 2)  # (B, Hkv, T, D)
        if cos.dtype is not q.dtype:  # float32 tables, bf16/fp16 activations under autocast (as HF casts them)
            cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if mask is not None and mask.dtype.is_floating_point and mask.dtype is not q.dtype:
            mask = mask.to(q.dtype)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, past + T, D)
        drop = self.attention_dropout if self.training else 0.0
        gqa = self.num_key_value_heads != self.num_heads
        if mask is None and k.shape[2] == t:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True, enable_gqa=gqa)
        else:  # a given mask, or one new token after a cached prefix (attends to every key)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(b, t, self.num_heads * hd)  # (B, T, H*D)
        return self.o_proj(y)


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward: ``down_proj(act(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        h, inter = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, inter, bias=config.mlp_bias)
        self.up_proj = nn.Linear(h, inter, bias=config.mlp_bias)
        self.down_proj = nn.Linear(inter, h, bias=config.mlp_bias)
        self.activation = config.hidden_act

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(_ACTIVATIONS[self.activation](self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """Pre-RMSNorm block: ``x + self_attn(input_layernorm(x))``, then ``x + mlp(post_attention_layernorm(x))``."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(DecoderModel):
    """The LLaMA backbone: ``embed_tokens``, ``num_hidden_layers`` decoder ``layers``, a final ``norm``.

    ``forward`` takes the shared decoder arguments (see :class:`LlamaForCausalLM`) and returns a
    :class:`BaseModelOutput` whose ``last_hidden_state`` is (B, T, hidden_size).
    """

    _label, _logger = "Llama", logger
    _embed_name, _blocks_name, _norm_name = "embed_tokens", "layers", "norm"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # transformers' Llama init: N(0, initializer_range) weights, zero biases, unit norms, zero padding row
        std = self.config.initializer_range
        with no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, std)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
            if self.config.pad_token_id is not None:
                self.embed_tokens.weight[self.config.pad_token_id] = 0.0

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        inputs_embeds: Tensor | None = None,
    ) -> BaseModelOutput:
        device = self.embed_tokens.weight.device
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LlamaModel: pass exactly one of input_ids (B, T) and inputs_embeds (B, T, hidden_size)")
        if inputs_embeds is not None:
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ShapeError(
                    f"LlamaModel: inputs_embeds must be (batch, seq_len, {self.config.hidden_size}), "
                    f"got shape {tuple(inputs_embeds.shape)}"
                )
            x = inputs_embeds
        else:
            x = self.embed_tokens(as_ids(input_ids, "input_ids", device, "Llama"))
        bsz, length = x.shape[0], x.shape[1]
        cache, checkpointing, past, mask = self._prepare(attention_mask, past_key_values, use_cache, bsz, length)
        if position_ids is None:
            pos = decoder_position_ids(mask, bsz, past, length)
        else:
            pos = as_ids(position_ids, "position_ids", device, "Llama").numpy()
            if pos.shape[0] not in (1, bsz) or pos.shape[1] != length:
                raise ShapeError(
                    f"Llama: position_ids must be (batch or 1, seq_len) = ({bsz} or 1, {length}), got shape {pos.shape}"
                )
        cos, sin = self.rotary_emb(pos, x.dtype, device)
        attn_mask = decoder_attention_mask(mask, past, length, x.dtype, device)
        keep_cache = use_cache or past_key_values is not None
        return self._run_blocks(x, (cos, sin, attn_mask), cache, checkpointing, output_hidden_states, keep_cache)


class LlamaForCausalLM(DecoderLM):
    """The LLaMA decoder with a language-model head (untied by default, ``tie_word_embeddings`` ties it).

    ``forward(input_ids, attention_mask=None, position_ids=None, past_key_values=None,
    use_cache=False, labels=None, output_hidden_states=False)`` returns a :class:`CausalLMOutput`:

    - ``input_ids``: int64 (B, T); ``attention_mask``: (B, past+T), 1 = token, 0 = padding (left);
    - ``position_ids``: default ``cumsum(attention_mask) - 1`` (clipped at 0), else past..past+T-1;
    - ``past_key_values``/``use_cache``: a :class:`KVCache` to extend (one is made when
      ``use_cache`` and none is given) and returned in ``.past_key_values``;
    - ``labels``: (B, T) int64; the loss predicts token t+1 from position t, ignoring -100.

    Example::

        model = LlamaForCausalLM(LlamaConfig.from_name("tiny"))
        out = model(ids, labels=ids); out.loss.backward()
    """

    base_model_prefix, config_class, _hf_name = "model", LlamaConfig, "LlamaForCausalLM"
    _hf_ignored = _IGNORED

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config, LlamaModel(config), config.hidden_size)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        labels: Any = None,
        output_hidden_states: bool = False,
        inputs_embeds: Tensor | None = None,
    ) -> CausalLMOutput:
        base = self.model(
            input_ids, attention_mask, position_ids, past_key_values, use_cache, output_hidden_states, inputs_embeds
        )
        return self._lm_output(base, labels)

    def load_hf_state_dict(self, tensors: dict[str, np.ndarray], where: str = "LlamaForCausalLM") -> None:
        """Copy transformers-named Llama tensors into this model (the dict is consumed)."""
        if tensors and not any(k.startswith("model.") for k in tensors):
            tensors = {("model." + k if not k.startswith("lm_head.") else k): v for k, v in tensors.items()}  # a bare LlamaModel
        self._load_hf_tensors(tensors, where)


__all__ = [
    "LlamaAttention",
    "LlamaConfig",
    "LlamaDecoderLayer",
    "LlamaForCausalLM",
    "LlamaMLP",
    "LlamaModel",
    "LlamaRMSNorm",
    "LlamaRotaryEmbedding",
    "apply_rotary_pos_emb",
    "rotate_half",
]
