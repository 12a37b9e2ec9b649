"""data.augment against torchvision's own functional crop and flip, drawn from the same seeded generator."""

from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dpn_lab.data.augment import augment
from dpn_lab.data.corruption import seeded_generator
from dpn_lab.data.synthetic import SyntheticCIFAR10DataModule


def reference(images: torch.Tensor, kind: str, padding: int, seed: int) -> torch.Tensor:
    """Image by image with torchvision: pad with zeros, crop at the drawn offset, mirror where drawn."""
    generator = torch.Generator().manual_seed(seed)
    B, _, H, W = images.shape
    top, left = torch.randint(0, 2 * padding + 1, (2, B, 1), generator=generator)
    out = [
        TF.crop(TF.pad(x, [padding]), int(t), int(s), H, W) for x, t, s in zip(images, top, left, strict=True)
    ]
    if kind == "crop_flip":
        flips = torch.rand(B, generator=generator) < 0.5
        out = [TF.horizontal_flip(x) if f else x for x, f in zip(out, flips, strict=True)]
    return torch.stack(out)


@pytest.mark.parametrize("kind, padding", [("crop", 4), ("crop_flip", 4), ("crop_flip", 1), ("crop", 0)])
def test_augment_is_torchvisions_crop_and_flip_per_image(kind, padding):
    images = torch.rand(16, 3, 32, 32)
    ours = augment(images, kind, padding, torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, reference(images, kind, padding, 5), rtol=0, atol=0)


def test_augment_draws_each_image_its_own_crop_and_none_is_the_identity():
    images = torch.rand(64, 1, 8, 8)
    assert augment(images, "none", 4, torch.Generator()) is images
    assert torch.equal(augment(images, "crop", 0, torch.Generator().manual_seed(0)), images)
    ones = torch.ones(64, 1, 8, 8)
    kept = augment(ones, "crop", 2, torch.Generator().manual_seed(0)).sum(dim=(1, 2, 3))
    assert len(kept.unique()) > 3  # the zero border differs from image to image
    mirrored = augment(images, "crop_flip", 0, torch.Generator().manual_seed(0))
    flipped = [torch.equal(m, x.flip(-1)) for m, x in zip(mirrored, images, strict=True)]
    assert 16 < sum(flipped) < 48  # about half, each an exact mirror or the image itself
    assert all(f or torch.equal(m, x) for f, m, x in zip(flipped, mirrored, images, strict=True))


def test_the_data_module_augments_training_batches_only_seeded_by_seed_epoch_batch_and_rank():
    dm = SyntheticCIFAR10DataModule(n_samples=40)
    assert dm.hparams.augment == "none"
    dm = SyntheticCIFAR10DataModule(n_samples=40, augment="crop_flip", augment_padding=4)
    dm.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0)
    batch = (torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long))
    torch.manual_seed(3)
    first, second = (dm.on_after_batch_transfer(batch, 0)[0] for _ in range(2))
    expected = augment(batch[0], "crop_flip", 4, seeded_generator("augment", 3, 0, 0, 0))
    assert torch.equal(first, expected) and not torch.equal(first, second)
    dm.trainer.training = False
    assert dm.on_after_batch_transfer(batch, 0) is batch


def test_batches_are_pinned_for_a_cuda_trainer_only():
    dm = SyntheticCIFAR10DataModule(n_samples=200)
    dm.setup()
    assert not dm.train_dataloader().pin_memory  # no trainer
    for device, pinned in (("cpu", False), ("cuda", True)):
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), world_size=1)
        assert dm.train_dataloader().pin_memory is pinned and dm.test_dataloader().pin_memory is pinned


def test_synthetic_cifar10_is_cifar10_shaped_in_range_and_seeded():
    dm, again = SyntheticCIFAR10DataModule(n_samples=200), SyntheticCIFAR10DataModule(n_samples=200)
    dm.setup()
    again.setup()
    train = dm.splits["train"]
    assert train.inputs.shape[1:] == (3, 32, 32) and dm.n_classes == 10
    assert 0 <= float(train.inputs.min()) and float(train.inputs.max()) <= 1
    assert set(train.labels.tolist()) == set(range(10))
    assert torch.equal(train.inputs, again.splits["train"].inputs)
