"""Models: encoders, sharing architectures (trunks), task and fusion heads.

Architectures (``model.architecture``): ``shared_bottom``, ``mmoe``, ``cgc``, ``ple``,
``cross_stitch``, ``dselect_k``, ``single_task``; see :func:`available_architectures`.
"""

from lepton.models._cgc import CGC
from lepton.models._cnn import BasicBlock, ConvEncoder
from lepton.models._cross_stitch import CrossStitch
from lepton.models._dselect_k import DSelectK, DSelectKGate, smooth_step
from lepton.models._encoder import TabularEncoder, TaskEncoders, default_embedding_dim
from lepton.models._experts import BatchedLinear, ExpertBank, SoftmaxGate
from lepton.models._heads import FusionHead, TaskHead
from lepton.models._mmoe import MMoE
from lepton.models._model import MultiTaskModel, representation_tasks
from lepton.models._ple import PLE
from lepton.models._single_task import SingleTask
from lepton.models._trunk import (
    SharedBottom,
    Trunk,
    available_architectures,
    create_trunk,
    register_trunk,
    trunk_options,
)

__all__ = [
    "CGC",
    "PLE",
    "BasicBlock",
    "BatchedLinear",
    "ConvEncoder",
    "CrossStitch",
    "DSelectK",
    "DSelectKGate",
    "ExpertBank",
    "FusionHead",
    "MMoE",
    "MultiTaskModel",
    "SharedBottom",
    "SingleTask",
    "SoftmaxGate",
    "TabularEncoder",
    "TaskEncoders",
    "TaskHead",
    "Trunk",
    "available_architectures",
    "create_trunk",
    "default_embedding_dim",
    "register_trunk",
    "representation_tasks",
    "smooth_step",
    "trunk_options",
]
