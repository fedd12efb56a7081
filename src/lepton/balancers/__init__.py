"""Balancing methods behind one interface: loss weighting and gradient aggregation.

``create(name, **hparams)`` builds a method by registry name; ``available()`` lists the names.
Every method offers ``backward(losses, shared_params, features=None, valid=None)``, which writes
``.grad`` like ``loss.backward()`` and works in any training loop. Gradient methods also offer
``aggregate(G)`` on a K×P matrix of per-task gradients; loss weightings ``weights(losses)``.
See ``docs/balancers.md`` for the table of methods.
"""

from lepton.balancers._aligned_mtl import AlignedMTL
from lepton.balancers._bargaining import FairGrad, NashMTL
from lepton.balancers._base import (
    Balancer,
    GradientBalancer,
    GramianBalancer,
    LossWeighting,
    PreferenceBalancer,
    as_loss_vector,
    available,
    balancer_class,
    create,
    hyperparameters,
    register_balancer,
)
from lepton.balancers._cagrad import CAGrad
from lepton.balancers._conflict_free import ConFIG
from lepton.balancers._db_mtl import DBMTL
from lepton.balancers._dual_cone import DualProj, UPGrad
from lepton.balancers._dwa import DynamicWeightAverage
from lepton.balancers._excess_mtl import ExcessMTL
from lepton.balancers._famo import FAMO
from lepton.balancers._graddrop import GradDrop
from lepton.balancers._gradnorm import GradNorm
from lepton.balancers._imtl import IMTL
from lepton.balancers._mgda import MGDA
from lepton.balancers._moco import MoCo
from lepton.balancers._rlw import RandomLossWeighting
from lepton.balancers._scalarization import (
    GeometricLossStrategy,
    ScaleInvariantLoss,
    SmoothTchebycheff,
)
from lepton.balancers._surgery import GradVac, PCGrad
from lepton.balancers._weighting import EqualWeighting, StaticWeighting, UncertaintyWeighting

__all__ = [
    "DBMTL",
    "FAMO",
    "IMTL",
    "MGDA",
    "AlignedMTL",
    "Balancer",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "DynamicWeightAverage",
    "EqualWeighting",
    "ExcessMTL",
    "FairGrad",
    "GeometricLossStrategy",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientBalancer",
    "GramianBalancer",
    "LossWeighting",
    "MoCo",
    "NashMTL",
    "PCGrad",
    "PreferenceBalancer",
    "RandomLossWeighting",
    "ScaleInvariantLoss",
    "SmoothTchebycheff",
    "StaticWeighting",
    "UPGrad",
    "UncertaintyWeighting",
    "as_loss_vector",
    "available",
    "balancer_class",
    "create",
    "hyperparameters",
    "register_balancer",
]
