"""Deployable bundles (safetensors + JSON) and prediction from raw records."""

from lepton.bundle._bundle import BUNDLE_VERSION, Bundle
from lepton.bundle._predictor import Predictor, decode, prediction_columns

__all__ = ["BUNDLE_VERSION", "Bundle", "Predictor", "decode", "prediction_columns"]
