"""Progressive Layered Extraction (Tang, Liu, Zhao & Gong, RecSys 2020)."""

from __future__ import annotations

from collections.abc import Sequence

from lepton.models._cgc import ExtractionNetwork
from lepton.models._trunk import register_trunk


@register_trunk("ple")
class PLE(ExtractionNetwork):
    """Progressive Layered Extraction: ``num_levels`` stacked CGC layers with shared gates.

    At every level but the last, a shared gate mixes all experts of the level (every task's and
    the shared ones) into the input of the next level's shared experts, while each task's gate
    output becomes that task's input at the next level (Tang et al., RecSys 2020, section 4.3).
    ``num_levels=1`` is :class:`~lepton.models.CGC`.

    ``last_gates``: the last level under the task names; lower levels under
    ``"level{l}/{task}"`` and ``"level{l}/shared"``.

    Parameters
    ----------
    hidden, dropout, batch_norm, activation:
        Every expert, at every level, is an MLP with widths ``hidden``.
    num_shared_experts, num_task_experts:
        Shared experts and experts per task, at every level.
    num_levels:
        Number of extraction levels.

    Examples
    --------
    >>> import torch
    >>> trunk = PLE(8, ["a", "b"], hidden=[16], num_levels=2)
    >>> rep = trunk(torch.randn(5, 8))
    >>> sorted(trunk.last_gates)
    ['a', 'b', 'level1/a', 'level1/b', 'level1/shared']
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
        num_levels: int = 2,
    ) -> None:
        super().__init__(in_dim, tasks)
        self._build(
            in_dim, hidden, dropout, batch_norm, activation, num_shared_experts,
            num_task_experts, num_levels,
        )  # fmt: skip
