"""The PyTorch peers of bench/gpt.py: transformers' ``GPT2LMHeadModel`` (the reference
implementation, loaded from the directory AxonML's ``save_pretrained`` wrote) and a minimal
nanoGPT-style GPT-2 twin (one fused qkv ``nn.Linear``, ``F.scaled_dot_product_attention``,
tied embeddings) that takes AxonML's state dict as it is: both use HF's parameter names
with ``nn.Linear``'s (out, in) weight layout.

Imported only by the benchmark (never by ``axonml``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TwinAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=-1)
        # (b, t, c) -> (b, heads, t, head_dim)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class TwinMLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class TwinBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, eps: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=eps)
        self.attn = TwinAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, eps=eps)
        self.mlp = TwinMLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TwinGPT2(nn.Module):
    """GPT-2 in the nanoGPT style; ``forward(input_ids, labels)`` returns the shifted LM loss.

    Example::

        twin = TwinGPT2(vocab_size=2048, n_positions=128, n_embd=256, n_layer=4, n_head=4)
        twin.load_axonml_state(ax_model.state_dict())
        loss = twin(ids, ids)
    """

    def __init__(self, vocab_size: int, n_positions: int, n_embd: int, n_layer: int, n_head: int,
                 layer_norm_epsilon: float = 1e-5) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(n_positions, n_embd),
            h=nn.ModuleList([TwinBlock(n_embd, n_head, layer_norm_epsilon) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd, eps=layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as GPT-2

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, vocab) next-token scores."""
        t = input_ids.shape[1]
        tr = self.transformer
        x = tr.wte(input_ids) + tr.wpe(torch.arange(t, device=input_ids.device))
        for block in tr.h:
            x = block(x)
        return self.lm_head(tr.ln_f(x))

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.logits(input_ids)
        # predict token t+1 from position t (labels shifted inside, as transformers does)
        v = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100)

    def load_axonml_state(self, state: Mapping[str, Any]) -> None:
        """Load an AxonML GPT2LMHeadModel state dict (same names, same (out, in) layout); buffers are skipped."""
        own = self.state_dict()
        arrays = {k: torch.from_numpy(np.ascontiguousarray(_as_numpy(v))) for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(arrays) - {"lm_head.weight"})
        if missing:
            raise KeyError(f"TwinGPT2.load_axonml_state: the AxonML state dict lacks {missing[:8]}")
        if "lm_head.weight" not in arrays:
            arrays["lm_head.weight"] = arrays["transformer.wte.weight"]
        self.load_state_dict(arrays, strict=True)


def _as_numpy(v: Any) -> np.ndarray:
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def hf_from_pretrained(directory: str) -> Any:
    """transformers' GPT2LMHeadModel from ``directory`` with the SDPA attention (its fastest CPU path)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers.GPT2LMHeadModel.from_pretrained(directory, attn_implementation="sdpa")
