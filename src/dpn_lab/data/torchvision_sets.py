"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision: files under data_dir, download only when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dpn_lab.data.base import TensorDataModule
from dpn_lab.errors import DataError


class TorchvisionDataModule(TensorDataModule):
    """A torchvision classification set with an official train/test split, held as tensors in [0, 1]."""

    dataset_name = ""

    def __init__(self, batch_size: int = 128, **kwargs) -> None:
        super().__init__(batch_size=batch_size, **kwargs)

    def _dataset(self, train: bool):
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset_name)
        root = Path(self.hparams.data_dir).expanduser().resolve()
        try:
            return cls(str(root), train=train, download=self.hparams.download)
        except (
            Exception
        ) as error:  # missing or corrupt: torchvision says so by assert, RuntimeError, pickle...
            raise DataError(
                f"data={self.config_name}: no usable {self.dataset_name} files under {root} "
                f"({' '.join(str(error).split())[:160]}); set "
                f"data.download=true to fetch them there, or point data.data_dir at a copy"
            ) from None

    @staticmethod
    def _to_tensors(dataset) -> tuple[Tensor, Tensor]:
        images = torch.as_tensor(np.asarray(dataset.data), dtype=torch.float32) / 255.0
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # N x C x H x W
        return images.contiguous(), torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)

    def load(self):
        train = self._to_tensors(self._dataset(train=True))
        test = self._to_tensors(self._dataset(train=False))
        return train[0], train[1], test


class MNISTDataModule(TorchvisionDataModule):
    dataset_name, config_name = "MNIST", "mnist"


class FashionMNISTDataModule(TorchvisionDataModule):
    dataset_name, config_name = "FashionMNIST", "fashion_mnist"


class CIFAR10DataModule(TorchvisionDataModule):
    dataset_name, config_name = "CIFAR10", "cifar10"

    def __init__(self, augment: str = "crop_flip", **kwargs) -> None:
        super().__init__(augment=augment, **kwargs)
