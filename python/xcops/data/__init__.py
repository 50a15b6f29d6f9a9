"""XC data: file formats of the Extreme Classification Repository, tokenised text data sets,
and a synthetic data generator."""

from .dataset import XCTextDataset
from .formats import (
    read_bow,
    read_label_names,
    read_sparse,
    read_text,
    write_bow,
    write_sparse,
    write_text,
)
from .samplers import ClusterBatchSampler
from .synthetic import SyntheticXC, generate, make_synthetic, write_dataset
from .tokenize import SimpleTokenizer

__all__ = [
    "ClusterBatchSampler",
    "SimpleTokenizer",
    "SyntheticXC",
    "XCTextDataset",
    "generate",
    "make_synthetic",
    "read_bow",
    "read_label_names",
    "read_sparse",
    "read_text",
    "write_bow",
    "write_dataset",
    "write_sparse",
    "write_text",
]
