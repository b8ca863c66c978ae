"""Model definitions written once against a framework namespace, so the very same code
builds an AxonML model (``fw=axonml``) and a PyTorch model (``fw=torch``). Used by the
benchmarks to compare like with like; weights are copied across with state dicts."""

from __future__ import annotations

from typing import Any


def tiny_gpt(fw: Any, vocab: int = 512, width: int = 256, layers: int = 4, heads: int = 4, seq: int = 128) -> Any:
    nn, F = fw.nn, fw.nn.functional

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(width)
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)
            self.ln2 = nn.LayerNorm(width)
            self.fc = nn.Linear(width, 4 * width)
            self.out = nn.Linear(4 * width, width)

        def forward(self, x: Any) -> Any:
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
            q = q.view(b, t, heads, c // heads).transpose(1, 2)  # (b, heads, t, head_dim)
            k = k.view(b, t, heads, c // heads).transpose(1, 2)
            v = v.view(b, t, heads, c // heads).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).reshape(b, t, c)
            x = x + self.proj(y)
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, width)
            self.pos = nn.Embedding(seq, width)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)

        def forward(self, idx: Any, targets: Any) -> Any:
            t = idx.shape[1]
            x = self.tok(idx) + self.pos(fw.arange(t, device=idx.device))
            for blk in self.blocks:
                x = blk(x)
            logits = self.head(self.ln_f(x))
            return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    return GPT()


def small_cnn(fw: Any, classes: int = 10) -> Any:
    nn = fw.nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, classes),
    )


def copy_weights(src_torch: Any, dst_ax: Any) -> None:
    """torch -> axonml through the state dict (names are equal by design)."""
    dst_ax.load_state_dict({k: v.detach().numpy() for k, v in src_torch.state_dict().items()})
