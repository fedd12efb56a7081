"""Tabular data: reading, bundled datasets, preprocessing, splits, batches, augmentation."""

from lepton.data.augment import TabularAugment
from lepton.data.datasets import (
    DatasetInfo,
    available_datasets,
    get_dataset,
    make_synthetic,
    register_dataset,
)
from lepton.data.io import iter_table, read_table, table_columns, write_table
from lepton.data.prepare import (
    Frames,
    PreparedData,
    from_frame,
    load_frames,
    prepare_data,
    split_frame,
)
from lepton.data.preprocess import Preprocessor, TargetInfo, category_key
from lepton.data.tensors import Batch, BatchLoader, TensorData

__all__ = [
    "Batch",
    "BatchLoader",
    "DatasetInfo",
    "Frames",
    "PreparedData",
    "Preprocessor",
    "TabularAugment",
    "TargetInfo",
    "TensorData",
    "available_datasets",
    "category_key",
    "from_frame",
    "get_dataset",
    "iter_table",
    "load_frames",
    "make_synthetic",
    "prepare_data",
    "read_table",
    "register_dataset",
    "split_frame",
    "table_columns",
    "write_table",
]
