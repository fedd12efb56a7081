"""Lepton: multi-task learning for PyTorch.

Declare tasks, train one shared model with any balancing method, evaluate it against
single-task baselines, and deploy it as a self-contained bundle.

>>> import lepton
>>> sorted(lepton.balancers.available())[:3]
['ew', 'static', 'uw']
"""

__version__ = "0.1.0"

from lepton import balancers, data, models
from lepton.balancers import Balancer, GradientBalancer, LossWeighting
from lepton.bundle import Bundle, Predictor, export_onnx, predict_file
from lepton.config import Config, config_from_dict, load_config
from lepton.data import Preprocessor, TensorData, prepare_data
from lepton.errors import (
    BundleError,
    ConfigError,
    DataError,
    ExportError,
    LeptonError,
    MissingDependencyError,
    RunDirError,
    ServeError,
    TrainingError,
)
from lepton.evaluate import EvalResult, delta_m, evaluate
from lepton.experiment import RunResult, run_experiment, train_baselines
from lepton.jacobian import jacobian
from lepton.models import MultiTaskModel
from lepton.tasks import Task
from lepton.train import FitResult, Trainer

__all__ = [
    "Balancer",
    "Bundle",
    "BundleError",
    "Config",
    "ConfigError",
    "DataError",
    "EvalResult",
    "ExportError",
    "FitResult",
    "GradientBalancer",
    "LeptonError",
    "LossWeighting",
    "MissingDependencyError",
    "MultiTaskModel",
    "Predictor",
    "Preprocessor",
    "RunDirError",
    "RunResult",
    "ServeError",
    "Task",
    "TensorData",
    "Trainer",
    "TrainingError",
    "__version__",
    "balancers",
    "config_from_dict",
    "data",
    "delta_m",
    "evaluate",
    "export_onnx",
    "jacobian",
    "load_config",
    "models",
    "predict_file",
    "prepare_data",
    "run_experiment",
    "train_baselines",
]
