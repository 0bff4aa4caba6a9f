"""Count the operations that make the host wait for the device (a device-to-host copy of a value Python needs).

On a GPU each one drains the launch queue: the CPU stops running ahead, and the GPU idles while Python decides. The
counter sees ATen operations, so it works on CPU tensors too, where nothing waits: a test on 2 CPU cores proves a
step free of them before it ever runs on a GPU.
"""

import traceback
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .loop import StepHooks

aten = torch.ops.aten

# Operations whose result Python needs on the host (`.item()`, `int()`, `bool()`, `if tensor:`), or whose output
# shape depends on the values (the host must learn the size before it can allocate).
SYNCING_OPERATIONS = frozenset(
    {
        aten._local_scalar_dense.default,  # .item(), int(t), float(t), bool(t), `if t`
        aten.is_nonzero.default,
        aten.equal.default,
        aten.nonzero.default,  # also behind boolean-mask indexing and torch.where(cond) with one argument
        aten.masked_select.default,
        aten.unique_consecutive.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.repeat_interleave.Tensor,  # without output_size
        aten._assert_async.msg,
    }
)


# Code whose scalar reads are of host tensors by design, on any machine: non-fused optimizers' step counters, and
# the DataLoader's seed for each epoch's workers.
HOST_SIDE_CODE = ("/torch/optim/", "/torch/utils/data/")


def _origin(stack: traceback.StackSummary) -> str:
    """The innermost frame outside torch that led to the operation: `file:line (function)`."""
    for frame in reversed(stack):
        if "/torch/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno} ({frame.name})"
    return "torch"


def _in_host_side_code(stack: traceback.StackSummary) -> bool:
    return any(part in frame.filename for frame in stack for part in HOST_SIDE_CODE)


class HostSyncCounter(TorchDispatchMode):
    """`with HostSyncCounter() as syncs: ...` then `syncs.total`, `syncs.by_op`, `syncs.origins`.

    `ignore_host_side=True` leaves out reads that are of host tensors on every machine (`HOST_SIDE_CODE`): non-fused
    torch.optim optimizers keep each parameter's `step` on the host, and the DataLoader draws each epoch's seed from
    the CPU generator; on a GPU neither waits for the device.
    """

    supports_higher_order_operators = True  # flex_attention arrives whole; what runs inside it is not seen

    def __init__(self, ignore_host_side: bool = True) -> None:
        super().__init__()
        self.ignore_host_side = ignore_host_side
        self.by_op: Counter[str] = Counter()
        self.origins: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def reset(self) -> None:
        self.by_op.clear()
        self.origins.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPERATIONS:
            stack = traceback.extract_stack()
            if not (self.ignore_host_side and _in_host_side_code(stack)):
                self.by_op[str(func.overloadpacket.__name__)] += 1
                self.origins[_origin(stack)] += 1
        return func(*args, **(kwargs or {}))


class SyncsPerStep(StepHooks):
    """Step hooks for `train(..., hooks=[...])` under a `HostSyncCounter`: the syncs inside each step (`step`, by
    step number) and in the periodic work after it (`after`)."""

    def __init__(self, counter: HostSyncCounter) -> None:
        self.counter = counter
        self.step: dict[int, int] = {}
        self.after: dict[int, int] = {}
        self._mark, self._last = 0, None

    def on_step_begin(self, step: int) -> None:
        if self._last is not None:
            self.after[self._last] = self.counter.total - self._mark
        self._mark = self.counter.total

    def on_step_end(self, step: int) -> None:
        self.step[step] = self.counter.total - self._mark
        self._mark, self._last = self.counter.total, step


__all__ = ["HOST_SIDE_CODE", "SYNCING_OPERATIONS", "HostSyncCounter", "SyncsPerStep"]
