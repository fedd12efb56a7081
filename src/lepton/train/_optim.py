"""Optimizers, learning-rate schedules and explicit L1/L2 penalties."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from lepton.config import OptimConfig


def decay_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, others): matrices/kernels of Linear/Conv/Embedding layers vs biases and norms."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            is_norm = isinstance(
                module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm
            )
            (no_decay if name.endswith("bias") or is_norm or p.dim() < 2 else decay).append(p)
    return decay, no_decay


def build_optimizer(
    cfg: OptimConfig, model: nn.Module, extra: Iterable[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """Optimizer over the model (weight decay on weights only) plus ``extra`` parameters
    (e.g. a balancer's learnable weights, never decayed)."""
    decay, no_decay = decay_split(model)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = [p for p in extra if p.requires_grad]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, epochs: int, maximize: bool = False
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The schedule of ``cfg.scheduler``, stepped once per epoch (``None`` for ``none``)."""
    s = cfg.scheduler
    sched = torch.optim.lr_scheduler
    warm = min(s.warmup_epochs, max(0, epochs - 1))
    main: sched.LRScheduler | None
    if s.name == "plateau":
        return sched.ReduceLROnPlateau(
            optimizer,
            mode="max" if maximize else "min",
            factor=s.factor,
            patience=s.patience,
            min_lr=s.min_lr,
        )
    if s.name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warm), eta_min=s.min_lr)
    elif s.name == "step":
        main = sched.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    else:
        main = None
    if warm == 0:
        return main
    warmup = sched.LinearLR(optimizer, start_factor=1.0 / (warm + 1), total_iters=warm)
    if main is None:
        return warmup
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warm])


def add_penalty_gradients(params: Sequence[nn.Parameter], l1: float, l2: float) -> None:
    """Add the gradients of ``l1·‖w‖₁ + 0.5·l2·‖w‖²`` to ``params``' ``.grad``."""
    if l1 == 0 and l2 == 0:
        return
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            if l1:
                p.grad.add_(torch.sign(p), alpha=l1)
            if l2:
                p.grad.add_(p, alpha=l2)
