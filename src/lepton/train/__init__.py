"""Training: the :class:`Trainer` loop, optimizers and schedules, atomic checkpoints."""

from lepton.train._checkpoint import (
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    load_checkpoint,
)
from lepton.train._optim import add_penalty_gradients, build_optimizer, build_scheduler, decay_split
from lepton.train._trainer import (
    FitResult,
    Monitor,
    Trainer,
    TrainingInterrupted,
    resolve_device,
    seed_everything,
)

__all__ = [
    "FitResult",
    "Monitor",
    "Trainer",
    "TrainingInterrupted",
    "add_penalty_gradients",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "build_optimizer",
    "build_scheduler",
    "decay_split",
    "load_checkpoint",
    "resolve_device",
    "seed_everything",
]
