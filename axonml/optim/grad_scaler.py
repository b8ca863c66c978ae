"""``GradScaler``: dynamic loss scaling for float16 training.

Note on the cycle (PyTorch's): ``scale(loss).backward()`` makes scaled gradients;
``step(opt)`` unscales them (unless ``unscale_`` already did, e.g. for clipping), skips
the optimizer step when any gradient is inf/NaN, and ``update()`` then halves the scale
after an overflow or doubles it after ``growth_interval`` clean steps.
"""

from __future__ import annotations

from typing import Any

from ..autograd.grad_mode import no_grad
from ..errors import AxonError


class GradScaler:
    """Scale the loss so small float16 gradients do not flush to zero.

    Example::

        scaler = ax.optim.GradScaler()
        with ax.autocast("cpu", dtype=ax.float16):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    """

    def __init__(
        self,
        device: str = "cpu",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        if growth_factor <= 1.0:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be >= 1, got {growth_interval}")
        self.device = device
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._per_opt: dict[int, dict] = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def get_scale(self) -> float:
        return self._scale if self._enabled else 1.0

    def scale(self, outputs: Any) -> Any:
        """Multiply a tensor (or nested list/tuple of tensors) by the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * self._scale

    def unscale_(self, optimizer: Any) -> None:
        """Divide the optimizer's gradients by the scale in place and record overflow."""
        if not self._enabled:
            return
        st = self._per_opt.setdefault(id(optimizer), {"unscaled": False, "found_inf": False})
        if st["unscaled"]:
            raise AxonError("unscale_() was already called on this optimizer since the last update()")
        inv = 1.0 / self._scale
        finite: dict = {}  # per device, an on-device "all finite so far": one host sync per device, not per parameter
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad._data
                    xp = p.grad.device.xp
                    g *= inv
                    p.grad._vc[0] += 1
                    ok = xp.isfinite(g).all()
                    key = p.grad.device
                    finite[key] = ok if key not in finite else xp.logical_and(finite[key], ok)
        st["unscaled"] = True
        st["found_inf"] = not all(bool(ok) for ok in finite.values())

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Unscale if needed, then ``optimizer.step()`` unless a gradient overflowed."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        st = self._per_opt.get(id(optimizer))
        if st is None or not st["unscaled"]:
            self.unscale_(optimizer)
            st = self._per_opt[id(optimizer)]
        if st.get("stepped"):
            raise AxonError("step() was already called on this optimizer since the last update()")
        st["stepped"] = True
        if st["found_inf"]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | None = None) -> None:
        """Adjust the scale for the next iteration (or set it to ``new_scale``)."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale)
        else:
            overflow = any(st["found_inf"] for st in self._per_opt.values())
            if overflow:
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_opt = {}

    def state_dict(self) -> dict:
        return (
            {
                "scale": self._scale,
                "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker,
            }
            if self._enabled
            else {}
        )

    def load_state_dict(self, state: dict) -> None:
        if not self._enabled:
            return
        if "scale" not in state:
            raise AxonError("the GradScaler state dict is empty: it was saved from a disabled scaler")
        self._scale = float(state["scale"])
        self._growth_factor = float(state["growth_factor"])
        self._backoff_factor = float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])
