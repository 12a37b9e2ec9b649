"""CIFAR-10-shaped images made in memory from a seed: the shape and label count of data=cifar10 without its
files, for tests, benchmarks and bench/gpu_check.sh on machines that cannot download."""

import torch

from dpn_lab.data.base import TensorDataModule


class SyntheticCIFAR10DataModule(TensorDataModule):
    """`n_samples` 3x32x32 images in [0, 1], 10 classes: each class a smooth random template (8x8 noise
    upsampled), each image its class's template, shifted by up to 4 pixels and mixed with its own pixel noise,
    so that a classifier has something to learn and a crop augmentation something to undo."""

    config_name = "cifar10_synthetic"

    def __init__(self, n_samples: int = 2000, data_seed: int = 0, batch_size: int = 128, **kwargs) -> None:
        super().__init__(batch_size=batch_size, **kwargs)

    def load(self):
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.data_seed)
        coarse = torch.rand(self.source_classes, *self.input_shape[:1], 8, 8, generator=generator)
        templates = torch.nn.functional.interpolate(coarse, size=self.input_shape[1:], mode="bilinear")
        labels = torch.arange(hp.n_samples) % self.source_classes
        shifts = torch.randint(-4, 5, (hp.n_samples, 2), generator=generator)
        images = torch.stack(
            [templates[y].roll(tuple(s.tolist()), dims=(1, 2)) for y, s in zip(labels, shifts, strict=True)]
        )
        noise = torch.rand(images.shape, generator=generator)
        return (0.7 * images + 0.3 * noise).clamp(0, 1), labels, None
