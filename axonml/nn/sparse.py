"""``Embedding``: a lookup table of vectors indexed by integer ids.

Note on ``padding_idx``: the row at ``padding_idx`` is initialised to zeros and receives no
gradient (``F.embedding`` masks it), so it stays a fixed "pad" vector during training, as in
PyTorch. Gradients are dense (``sparse=True`` is refused with a clear error).
"""

from __future__ import annotations

from typing import Any

from ..autograd.grad_mode import no_grad
from ..tensor import Tensor, empty
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def _check_padding_idx(padding_idx: int | None, num_embeddings: int) -> int | None:
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(
            f"Embedding: padding_idx={padding_idx} must be within [{-num_embeddings}, {num_embeddings - 1}] "
            f"for num_embeddings={num_embeddings}"
        )
    return padding_idx % num_embeddings


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``; ``forward(ids)``
    returns ``weight[ids]`` with shape ``(*ids.shape, embedding_dim)``.

    Args:
        num_embeddings: table size.
        embedding_dim: vector size.
        padding_idx: a row that is zero-initialised and gets no gradient.
        max_norm: renormalise looked-up rows whose ``norm_type``-norm exceeds this (in place).
        norm_type: the p of that norm (default 2).
        scale_grad_by_freq: scale gradients by the inverse frequency of ids in the batch.
        sparse: must be False (dense gradients only).

    The weight is initialised from N(0, 1), as in PyTorch.

    Example::

        emb = ax.nn.Embedding(10, 3, padding_idx=0)
        emb(ax.tensor([[0, 2], [4, 9]])).shape  # (2, 2, 3)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Tensor | None = None,
        _freeze: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if sparse:
            raise NotImplementedError("Embedding(sparse=True): axonml has dense gradients only; use sparse=False")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _check_padding_idx(padding_idx, num_embeddings)
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            self.weight = Parameter(empty(num_embeddings, embedding_dim, device=device, dtype=dtype), requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(
                    f"Embedding: _weight has shape {tuple(_weight.shape)}, expected ({num_embeddings}, {embedding_dim})"
                )
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self) -> None:
        if self.padding_idx is not None:
            with no_grad():
                self.weight._data[self.padding_idx] = 0
                self.weight._vc[0] += 1

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(
            input, self.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += ", scale_grad_by_freq=True"
        if self.sparse:
            s += ", sparse=True"
        return s

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Tensor,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ) -> "Embedding":
        """An ``Embedding`` whose weight is ``embeddings`` (2-D; shared, not copied).
        With ``freeze`` (default) the weight does not require grad.

        Example: ``ax.nn.Embedding.from_pretrained(ax.randn(10, 3), freeze=False)``
        """
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"Embedding.from_pretrained expects a 2-D Tensor, got {shape}")
        rows, cols = tuple(embeddings.shape)
        return cls(
            rows, cols, _weight=embeddings.detach(), _freeze=freeze, padding_idx=padding_idx, max_norm=max_norm,
            norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse,
        )
