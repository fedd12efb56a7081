"""Customized Gate Control (Tang, Liu, Zhao & Gong, RecSys 2020), and the extraction layer that
Progressive Layered Extraction (``_ple.py``) stacks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lepton.models._experts import ExpertBank, SoftmaxGate, mix
from lepton.models._layers import check_int
from lepton.models._trunk import Trunk, register_trunk


class ExtractionLayer(nn.Module):
    """One CGC / PLE extraction layer.

    Each task ``t`` has ``num_task`` experts of its own reading the task's input, and a gate that
    mixes its own experts with the ``num_shared`` shared experts (columns: the task's experts,
    then the shared ones). With ``shared_gate``, a further gate mixes *every* expert of the layer
    (each task's, in task order, then the shared ones) into the next layer's shared input.
    """

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        num_shared: int,
        num_task: int,
        hidden: Sequence[int],
        dropout: float,
        batch_norm: bool,
        activation: str,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.num_shared, self.num_task = num_shared, num_task
        args = (in_dim, hidden, dropout, batch_norm, activation)
        self.shared = ExpertBank(num_shared, *args)
        self.task_experts = nn.ModuleDict({t: ExpertBank(num_task, *args) for t in self.tasks})
        self.gates = nn.ModuleDict(
            {t: SoftmaxGate(in_dim, num_task + num_shared) for t in self.tasks}
        )
        self.shared_gate = (
            SoftmaxGate(in_dim, len(self.tasks) * num_task + num_shared) if shared_gate else None
        )
        self.out_dim = self.shared.out_dim

    def forward(
        self, task_inputs: dict[str, torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor]]:
        """``(outputs per task, next shared input or None, gate weights)``; the gate of the
        shared branch is under the key ``"shared"``."""
        shared = self.shared(shared_input)
        outputs: dict[str, torch.Tensor] = {}
        gates: dict[str, torch.Tensor] = {}
        own: list[torch.Tensor] = []
        for t in self.tasks:
            mine = self.task_experts[t](task_inputs[t])
            own.append(mine)
            g = self.gates[t](task_inputs[t])
            gates[t] = g
            outputs[t] = mix(g, torch.cat([mine, shared], dim=0))
        next_shared = None
        if self.shared_gate is not None:
            g = self.shared_gate(shared_input)
            gates["shared"] = g
            next_shared = mix(g, torch.cat([*own, shared], dim=0))
        return outputs, next_shared, gates

    def labels(self) -> dict[str, list[str]]:
        shared = [f"shared.expert{i}" for i in range(self.num_shared)]
        out = {t: [f"{t}.expert{i}" for i in range(self.num_task)] + shared for t in self.tasks}
        if self.shared_gate is not None:
            out["shared"] = [
                f"{t}.expert{i}" for t in self.tasks for i in range(self.num_task)
            ] + shared
        return out


class ExtractionNetwork(Trunk):
    """``num_levels`` stacked extraction layers (the machinery of :class:`CGC` and :class:`PLE`).

    Level 1 reads the encoded inputs everywhere; at a higher level, task ``t``'s experts and gate
    read task ``t``'s output of the level below, and the shared experts read the shared gate's
    output of the level below. The last level has no shared gate; its task outputs are the
    representations the heads read.

    Which parameters are shared follows from that flow: the last level's task experts and gates
    reach their own task only, and so does each task gate of the level below the last (its
    output feeds that task's experts and gate only); every other parameter reaches every task
    (lower levels' task experts feed the shared gate).
    """

    shares_representation = False

    def _build(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float,
        batch_norm: bool,
        activation: str,
        num_shared_experts: int,
        num_task_experts: int,
        num_levels: int,
    ) -> None:
        self.num_shared_experts = check_int("num_shared_experts", num_shared_experts)
        self.num_task_experts = check_int("num_task_experts", num_task_experts)
        self.num_levels = check_int("num_levels", num_levels)
        self.levels = nn.ModuleList()
        d = in_dim
        for level in range(self.num_levels):
            layer = ExtractionLayer(
                d,
                self.task_names,
                self.num_shared_experts,
                self.num_task_experts,
                hidden,
                dropout,
                batch_norm,
                activation,
                shared_gate=level < self.num_levels - 1,
            )
            self.levels.append(layer)
            d = layer.out_dim
        self.out_dim = d

    def _key(self, level: int, name: str) -> str:
        return name if level == self.num_levels - 1 else f"level{level + 1}/{name}"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        task_inputs = dict.fromkeys(self.task_names, x)
        shared: torch.Tensor | None = x
        recorded: dict[str, torch.Tensor] = {}
        for level, layer in enumerate(self.levels):
            assert shared is not None
            task_inputs, shared, gates = layer(task_inputs, shared)
            recorded.update({self._key(level, k): g.detach() for k, g in gates.items()})
        self.last_gates = recorded
        return task_inputs

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        last = self.levels[-1]
        yield from last.task_experts[task].parameters()
        yield from last.gates[task].parameters()
        if self.num_levels > 1:
            yield from self.levels[-2].gates[task].parameters()

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        own = {id(p) for t in self.task_names for p in self.task_parameters(t)}
        return (p for p in self.parameters() if id(p) not in own)

    def gate_labels(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for level, layer in enumerate(self.levels):
            out.update({self._key(level, k): v for k, v in layer.labels().items()})
        return out


@register_trunk("cgc")
class CGC(ExtractionNetwork):
    """Customized Gate Control: shared experts, task-specific experts, one gate per task.

    Task ``t`` reads ``z_t = Σ_i g_t(x)_i · e_i(x)`` over its own ``num_task_experts`` experts
    followed by the ``num_shared_experts`` shared ones (Tang, Liu, Zhao & Gong, *Progressive
    Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
    Recommendations*, RecSys 2020, section 4.2). The shared experts are shared; a task's experts
    and gate belong to that task. ``last_gates[task]``: ``(B, num_task_experts +
    num_shared_experts)``.

    Parameters
    ----------
    hidden, dropout, batch_norm, activation:
        Every expert is an MLP with widths ``hidden``.
    num_shared_experts, num_task_experts:
        Experts shared by all tasks; experts of each task.

    Examples
    --------
    >>> trunk = CGC(8, ["a", "b"], hidden=[16], num_shared_experts=2, num_task_experts=1)
    >>> _ = trunk(torch.randn(5, 8))
    >>> tuple(trunk.last_gates["a"].shape), trunk.gate_labels()["a"]
    ((5, 3), ['a.expert0', 'shared.expert0', 'shared.expert1'])
    """

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        *,
        num_shared_experts: int = 2,
        num_task_experts: int = 1,
    ) -> None:
        super().__init__(in_dim, tasks)
        self._build(
            in_dim, hidden, dropout, batch_norm, activation, num_shared_experts,
            num_task_experts, 1,
        )  # fmt: skip
