"""Models: encoders, sharing architectures (trunks), task and fusion heads."""

from lepton.models._encoder import TabularEncoder, default_embedding_dim
from lepton.models._heads import FusionHead, TaskHead
from lepton.models._model import MultiTaskModel
from lepton.models._trunk import (
    SharedBottom,
    Trunk,
    available_architectures,
    create_trunk,
    register_trunk,
    trunk_options,
)

__all__ = [
    "FusionHead",
    "MultiTaskModel",
    "SharedBottom",
    "TabularEncoder",
    "TaskHead",
    "Trunk",
    "available_architectures",
    "create_trunk",
    "default_embedding_dim",
    "register_trunk",
    "trunk_options",
]
