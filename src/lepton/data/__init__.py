"""Data (tables and images): reading, bundled datasets, preprocessing, splits, batches,
augmentation."""

from lepton.data.augment import Augment, ImageAugment, TabularAugment, build_augment
from lepton.data.datasets import (
    DatasetInfo,
    available_datasets,
    get_dataset,
    make_mmoe_synthetic,
    make_synthetic,
    register_dataset,
)
from lepton.data.images import from_arrays, read_image_file
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
    "Augment",
    "Batch",
    "BatchLoader",
    "DatasetInfo",
    "Frames",
    "ImageAugment",
    "PreparedData",
    "Preprocessor",
    "TabularAugment",
    "TargetInfo",
    "TensorData",
    "available_datasets",
    "build_augment",
    "category_key",
    "from_arrays",
    "from_frame",
    "get_dataset",
    "iter_table",
    "load_frames",
    "make_mmoe_synthetic",
    "make_synthetic",
    "prepare_data",
    "read_image_file",
    "read_table",
    "register_dataset",
    "split_frame",
    "table_columns",
    "write_table",
]
