"""Built-in DDP communication hooks (``torch.distributed.algorithms.ddp_comm_hooks``).

A hook is ``hook(state, bucket) -> Future`` (register it with
``ddp.register_comm_hook(state, hook)``); the future's value is the bucket's averaged flat
buffer. ``state`` is the process group (or None for the world) for the simple hooks and a
:class:`PowerSGDState` for PowerSGD.

Note on compression (fp16/bf16): the buffer is divided by the group size and cast before
the all-reduce, and cast back after, so the result carries the rounding of the low
precision, as in PyTorch. A backend without native low-precision reductions (tcp, mpi)
reduces through float32 copies, so on those the hooks change the numbers, not the bytes
on the wire; NCCL sends half the bytes.

Note on PowerSGD (Vogels et al., 2019, as in PyTorch's ``powerSGD_hook``): each gradient
matrix M (n x m, a parameter reshaped to (shape[0], -1)) that is worth compressing is
approximated as P Q^T of rank r: P = M Q is all-reduced and orthogonalized, Q = M^T P is
all-reduced, and M ~ P Q^T / world_size. Vectors and matrices too small to gain are
all-reduced as they are, in one flat tensor. The error of the approximation is fed back
into the next iteration's gradient (``use_error_feedback``); Q is reused across
iterations (``warm_start``). Before ``start_powerSGD_iter`` the plain all-reduce runs. The
uncompressed all-reduce and the P all-reduce are launched together from the hook (while
backward continues); the Q all-reduce is launched when DDP waits for the bucket (see
:mod:`.futures` for why callbacks run there).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..autograd.variable import make_tensor
from ..collectives.api import resolve_group
from ..collectives.functional import all_reduce
from ..runtime import get_array_module
from ..runtime.dtypes import bfloat16, float16
from ..tensor.tensor import Tensor
from .futures import Future
from .reducer import GradBucket

__all__ = [
    "allreduce_hook",
    "fp16_compress_hook",
    "bf16_compress_hook",
    "PowerSGDState",
    "powerSGD_hook",
]

logger = logging.getLogger(__name__)


def _allreduce_fut(group: Any, tensor: Tensor) -> Future:
    """Divide ``tensor`` by the group size in place, all-reduce it (SUM) asynchronously."""
    pg = resolve_group(group, "allreduce_hook")
    xp = tensor.device.xp
    xp.multiply(tensor._data, 1.0 / pg.size(), out=tensor._data)
    return Future.from_work(all_reduce(tensor, group=pg, async_op=True), tensor)


def allreduce_hook(process_group: Any, bucket: GradBucket) -> Future:
    """Average the bucket across the ranks (what DDP does without a hook).

    Example::

        ddp.register_comm_hook(None, allreduce_hook)
    """
    return _allreduce_fut(process_group, bucket.buffer())


def _compress_hook(process_group: Any, bucket: GradBucket, dtype: Any, what: str) -> Future:
    pg = resolve_group(process_group, what)
    buf = bucket.buffer()
    xp = buf.device.xp
    compressed = make_tensor(xp.multiply(buf._data, 1.0 / pg.size()).astype(dtype.np), buf.device)
    work = all_reduce(compressed, group=pg, async_op=True)

    def decompress(fut: Future) -> Tensor:
        buf._data[...] = fut.value()._data.astype(buf._data.dtype)
        return buf

    return Future.from_work(work, compressed).then(decompress)


def fp16_compress_hook(process_group: Any, bucket: GradBucket) -> Future:
    """Average the bucket in float16: divide, cast to float16, all-reduce, cast back.

    Example::

        ddp.register_comm_hook(None, fp16_compress_hook)
    """
    return _compress_hook(process_group, bucket, float16, "fp16_compress_hook")


def bf16_compress_hook(process_group: Any, bucket: GradBucket) -> Future:
    """Average the bucket in bfloat16: divide, cast to bfloat16, all-reduce, cast back."""
    return _compress_hook(process_group, bucket, bfloat16, "bf16_compress_hook")


# -- PowerSGD ----------------------------------------------------------------------------------------


class PowerSGDState:
    """The state of :func:`powerSGD_hook` (PyTorch's ``PowerSGDState``, same arguments).

    Args:
        process_group: the group (None: the world).
        matrix_approximation_rank: the rank r of the approximation (1 compresses most).
        start_powerSGD_iter: iterations of plain all-reduce before compressing (must be > 1
            with error feedback or warm start: buckets are rebuilt after the first).
        min_compression_rate: compress a matrix only when (n + m) r * rate < n m.
        use_error_feedback: add the previous approximation error to the gradient.
        warm_start: reuse Q from the previous iteration instead of a new random one.
        orthogonalization_epsilon: added to norms in Gram-Schmidt (0: none).
        random_seed: seeds the random Q (the same on every rank).
        compression_stats_logging_frequency: log compression statistics every this many iterations.
        batch_tensors_with_same_shape: accepted for compatibility (matrices are processed one by one).

    Example::

        state = PowerSGDState(None, matrix_approximation_rank=2, start_powerSGD_iter=10)
        ddp.register_comm_hook(state, powerSGD_hook)
    """

    def __init__(self, process_group: Any, matrix_approximation_rank: int = 1, start_powerSGD_iter: int = 1_000,
                 min_compression_rate: float = 2, use_error_feedback: bool = True, warm_start: bool = True,
                 orthogonalization_epsilon: float = 0, random_seed: int = 0,
                 compression_stats_logging_frequency: int = 10_000, batch_tensors_with_same_shape: bool = False) -> None:
        if int(matrix_approximation_rank) < 1:
            raise ValueError(f"matrix_approximation_rank must be >= 1, got {matrix_approximation_rank}")
        if (use_error_feedback or warm_start) and start_powerSGD_iter <= 1:
            raise ValueError(
                f"start_powerSGD_iter must be > 1 when use_error_feedback or warm_start is on (got {start_powerSGD_iter}): "
                "DDP rebuilds its buckets after the first iteration, so per-bucket state can only start after it"
            )
        self.process_group = process_group
        self.matrix_approximation_rank = int(matrix_approximation_rank)
        self.start_powerSGD_iter = int(start_powerSGD_iter)
        self.min_compression_rate = float(min_compression_rate)
        self.use_error_feedback = bool(use_error_feedback)
        self.warm_start = bool(warm_start)
        self.orthogonalization_epsilon = float(orthogonalization_epsilon)
        self.rng = np.random.RandomState(random_seed)
        self.compression_stats_logging_frequency = max(1, int(compression_stats_logging_frequency))
        self.batch_tensors_with_same_shape = bool(batch_tensors_with_same_shape)
        self.error_dict: dict[int, Any] = {}
        self.p_memory_dict: dict[int, Any] = {}
        self.q_memory_dict: dict[int, Any] = {}
        self.iter = 0
        self.total_numel_before_compression = 0
        self.total_numel_after_compression = 0

    def maybe_increase_iter(self, bucket: GradBucket) -> None:
        """Count an iteration when the last bucket of one is processed."""
        if bucket.is_last():
            self.iter += 1
            if self.iter == self.start_powerSGD_iter:
                logger.info("PowerSGD compression starts at iteration %d", self.iter)

    def compression_stats(self) -> tuple[float, int, int]:
        """(compression rate, elements before, elements after) over all compressed iterations."""
        after = self.total_numel_after_compression
        rate = self.total_numel_before_compression / after if after else 0.0
        return rate, self.total_numel_before_compression, after

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("process_group", None)  # a process group does not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.process_group = None


def _should_compress(n: int, m: int, r: int, min_rate: float) -> bool:
    return (n + m) * r * min_rate < n * m


def _orthogonalize(mat: Any, eps: float) -> None:
    """Gram-Schmidt on the columns of ``mat`` (n x r), in place."""
    xp = get_array_module(mat)
    r = mat.shape[1]
    for i in range(r):
        col = mat[:, i]
        norm = xp.sqrt(xp.sum(col * col))
        col /= (norm + eps) if eps else norm
        if i + 1 < r:
            rest = mat[:, i + 1:]
            rest -= xp.outer(col, col @ rest)


def powerSGD_hook(state: PowerSGDState, bucket: GradBucket) -> Future:  # noqa: N802  (PyTorch's name)
    """Low-rank compressed averaging of the bucket (see the module note).

    Example::

        ddp.register_comm_hook(PowerSGDState(None, start_powerSGD_iter=2), powerSGD_hook)
    """
    pg = resolve_group(state.process_group, "powerSGD_hook")
    world = pg.size()
    if state.iter < state.start_powerSGD_iter:
        state.maybe_increase_iter(bucket)
        return _allreduce_fut(pg, bucket.buffer())
    buf = bucket.buffer()
    dev = buf.device
    xp = dev.xp
    flat = buf._data
    idx = bucket.index()
    if state.use_error_feedback:
        if idx in state.error_dict:
            flat += state.error_dict[idx]
        else:
            state.error_dict[idx] = xp.zeros_like(flat)
        flat_before = flat.copy()
    r_max = state.matrix_approximation_rank
    mats, ranks, plain = [], [], []
    for g in bucket.gradients():
        a = g._data
        if a.ndim > 1:
            n = a.shape[0]
            m = a.size // n
            r = min(n, m, r_max)
            if _should_compress(n, m, r, state.min_compression_rate):
                mats.append(a.reshape(n, m))  # (n, m) view of the bucket
                ranks.append(r)
                continue
        plain.append(a)
    total_p = sum(mat.shape[0] * r for mat, r in zip(mats, ranks))
    total_q = sum(mat.shape[1] * r for mat, r in zip(mats, ranks))
    state.total_numel_before_compression += sum(mat.size for mat in mats)
    state.total_numel_after_compression += total_p + total_q
    # the plain tensors travel together, uncompressed
    plain_flat = make_tensor(xp.concatenate([a.reshape(-1) for a in plain]) if plain else xp.zeros(0, flat.dtype), dev)
    need_random_q = not state.warm_start or idx not in state.p_memory_dict
    if need_random_q:
        state.p_memory_dict[idx] = xp.empty(total_p, dtype=flat.dtype)
        state.q_memory_dict[idx] = xp.empty(total_q, dtype=flat.dtype)
    p_mem, q_mem = state.p_memory_dict[idx], state.q_memory_dict[idx]
    ps, qs = [], []
    po = qo = 0
    for mat, r in zip(mats, ranks):
        n, m = mat.shape
        ps.append(p_mem[po:po + n * r].reshape(n, r))
        qs.append(q_mem[qo:qo + m * r].reshape(m, r))
        po += n * r
        qo += m * r
    if need_random_q:
        gen = np.random.default_rng(state.rng.randint(1_000_000_000))
        for q in qs:
            q[...] = xp.asarray(gen.standard_normal(q.shape).astype(q.dtype))
            _orthogonalize(q, state.orthogonalization_epsilon)
    for mat, p, q in zip(mats, ps, qs):
        xp.matmul(mat, q, out=p)
    p_tensor = make_tensor(p_mem, dev)
    plain_work = all_reduce(plain_flat, group=pg, async_op=True) if plain else None
    p_work = all_reduce(p_tensor, group=pg, async_op=True) if mats else None

    def after_p(_fut: Future) -> Any:
        if plain_work is not None:
            plain_work.wait()
            vals = plain_flat._data / world
            off = 0
            for a in plain:
                a[...] = vals[off:off + a.size].reshape(a.shape)
                off += a.size
        if p_work is None:
            return None
        p_work.wait()
        for mat, p, q in zip(mats, ps, qs):
            _orthogonalize(p, state.orthogonalization_epsilon)
            xp.matmul(mat.T, p, out=q)
        q_tensor = make_tensor(q_mem, dev)
        return Future.from_work(all_reduce(q_tensor, group=pg, async_op=True), q_tensor)

    def decompress(_fut: Future) -> Tensor:
        for mat, p, q in zip(mats, ps, qs):
            xp.matmul(p, q.T, out=mat)
            mat /= world
        if state.use_error_feedback:
            state.error_dict[idx] = flat_before - flat
        if not state.warm_start:
            state.p_memory_dict.clear()
            state.q_memory_dict.clear()
        state.maybe_increase_iter(bucket)
        if state.iter % state.compression_stats_logging_frequency == 0 and bucket.is_last():
            logger.info("PowerSGD compression rate %.2f", state.compression_stats()[0])
        return buf

    return Future.completed(None).then(after_p).then(decompress)
