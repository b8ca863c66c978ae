"""Random generators: explicit, seedable objects.

Note on reproducibility: every generator draws on the host with NumPy's PCG64 and copies
to the device, so the same seed gives the same numbers on every rank and on CPU and GPU
alike. ``default_generator`` serves ops that are given no generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.checkpoint import register_rng_state


class Generator:
    """A seedable random stream (``torch.Generator``-like).

    Example::

        g = ax.Generator().manual_seed(0)
        ax.randn(3, generator=g)
    """

    def __init__(self, device: Any = "cpu", seed: int | None = None) -> None:
        self.device = device
        self._seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> "Generator":
        """Reset the stream to ``seed``; returns self."""
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self) -> int:
        """Reseed from entropy; returns the new seed."""
        return self.manual_seed(int(np.random.SeedSequence().entropy % (2**63)))._seed

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict:
        """A picklable snapshot of the stream position."""
        return {"seed": self._seed, "bit_generator": self._rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self._seed = int(state["seed"])
        self._rng = np.random.Generator(np.random.PCG64())
        self._rng.bit_generator.state = state["bit_generator"]

    @property
    def numpy(self) -> np.random.Generator:
        """The underlying NumPy generator (host side)."""
        return self._rng


default_generator = Generator(seed=0)


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (and return it), as ``torch.manual_seed``."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> dict:
    """The default generator's state (for checkpoints and activation recomputation)."""
    return default_generator.get_state()


def set_rng_state(state: dict) -> None:
    default_generator.set_state(state)


def get_generator(generator: Generator | None) -> np.random.Generator:
    return (generator or default_generator)._rng


register_rng_state(get_rng_state, set_rng_state)
