"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, no download."""

import torch
from sklearn.datasets import load_digits

from dpn_lab.data.base import TensorDataModule


class DigitsDataModule(TensorDataModule):
    """1,797 8x8 grey images of digits 0-9, pixel values 0..16 scaled to [0, 1]."""

    config_name = "digits"

    def load(self):
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return images, torch.as_tensor(digits.target, dtype=torch.long), None
