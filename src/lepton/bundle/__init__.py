"""Deployable bundles (safetensors + JSON), prediction from raw records and files, ONNX export."""

from lepton.bundle._bundle import BUNDLE_VERSION, Bundle, bundle_dir
from lepton.bundle._onnx import (
    OnnxExport,
    export_onnx,
    sample_image_input,
    sample_records,
    verify_onnx,
)
from lepton.bundle._predictor import Predictor, decode, prediction_columns
from lepton.bundle._stream import PredictFileResult, predict_file

__all__ = [
    "BUNDLE_VERSION",
    "Bundle",
    "OnnxExport",
    "PredictFileResult",
    "Predictor",
    "bundle_dir",
    "decode",
    "export_onnx",
    "predict_file",
    "prediction_columns",
    "sample_image_input",
    "sample_records",
    "verify_onnx",
]
