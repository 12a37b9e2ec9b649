"""Synthetic Gaussian clusters: quick experiments and tests."""

import torch
from sklearn.datasets import make_blobs

from dpn_lab.data.base import TensorDataModule


class BlobsDataModule(TensorDataModule):
    """`n_classes` isotropic Gaussian clusters in R^n_features (flat inputs, no pixel range)."""

    config_name = "blobs"

    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 16,
        n_classes: int = 4,
        cluster_std: float = 2.0,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.input_shape, self.source_classes = (n_features,), n_classes

    def load(self):
        hp = self.hparams
        x, y = make_blobs(
            hp.n_samples,
            n_features=hp.n_features,
            centers=hp.n_classes,
            cluster_std=hp.cluster_std,
            random_state=hp.data_seed,
        )
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long), None
