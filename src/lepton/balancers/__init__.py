"""Balancing methods behind one interface: loss weighting and gradient aggregation.

``create(name, **hparams)`` builds a method by registry name; ``available()`` lists the names.
Every method offers ``backward(losses, shared_params, features=None)``.
"""

from lepton.balancers._base import (
    Balancer,
    GradientBalancer,
    LossWeighting,
    as_loss_vector,
    available,
    balancer_class,
    create,
    hyperparameters,
    register_balancer,
)
from lepton.balancers._weighting import EqualWeighting, StaticWeighting, UncertaintyWeighting

__all__ = [
    "Balancer",
    "EqualWeighting",
    "GradientBalancer",
    "LossWeighting",
    "StaticWeighting",
    "UncertaintyWeighting",
    "as_loss_vector",
    "available",
    "balancer_class",
    "create",
    "hyperparameters",
    "register_balancer",
]
