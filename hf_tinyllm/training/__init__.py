"""Training: the Accelerate loop (`train`), its arguments, optimizers, checkpoints and final artifacts."""

from .arguments import (
    DataArguments,
    ModelArguments,
    OptimArguments,
    ProbeArguments,
    RunArguments,
    parse_train_arguments,
)
from .loop import NonFiniteLossError, accumulate_gradients, train

__all__ = [
    "DataArguments",
    "ModelArguments",
    "NonFiniteLossError",
    "OptimArguments",
    "ProbeArguments",
    "RunArguments",
    "accumulate_gradients",
    "parse_train_arguments",
    "train",
]
