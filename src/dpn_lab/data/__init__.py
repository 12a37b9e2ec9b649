"""Data sources, one LightningDataModule each, all on `TensorDataModule`."""

from dpn_lab.data.base import TensorDataModule
from dpn_lab.data.blobs import BlobsDataModule
from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.data.mnist5k import MNIST5kDataModule
from dpn_lab.data.registry import DATA_MODULES, build_data_module
from dpn_lab.data.torchvision_sets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "BlobsDataModule",
    "CIFAR10DataModule",
    "DATA_MODULES",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "MNIST5kDataModule",
    "MNISTDataModule",
    "TensorDataModule",
    "build_data_module",
]
