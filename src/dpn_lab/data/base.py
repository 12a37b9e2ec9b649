"""The shared base of every data source: tensors in memory, stratified splits, corruption, DDP batch size."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as L
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dpn_lab.data.augment import augment
from dpn_lab.data.corruption import corrupt, seeded_generator
from dpn_lab.data.sources import SOURCES, classes_problem
from dpn_lab.errors import DataError


class TensorBatches(Dataset):
    """(inputs, labels) held as tensors; a whole batch is one indexing operation, not B Python calls."""

    def __init__(self, inputs: Tensor, labels: Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.inputs[index], self.labels[index]

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """n items (all if fewer) drawn without replacement, the same ones for the same seed."""
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.__getitems__(pick.tolist())


def _already_batched(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class TensorDataModule(L.LightningDataModule):
    """Base for the sources in `dpn_lab.data`: subclasses implement `load()` and set the class attributes.

    Args:
        batch_size: global batch size; under DDP each device gets batch_size / world_size.
        train_corruption, test_corruption: None or {kind: <a kind of dpn_lab.data.corruption.CORRUPTIONS>,
            severity: float}. Training corruption is drawn fresh for every batch from a generator seeded by
            (run seed, epoch, batch index, rank); test/val corruption is drawn once from split_seed.
        augment, augment_padding: training-time augmentation of each batch on its device, before any
            training corruption (dpn_lab.data.augment: none, crop, crop_flip), seeded like it; images only.
        val_fraction, test_fraction: stratified split fractions (test_fraction is ignored for sources with
            an official test set).
        split_seed: seed of the deterministic stratified split (separate from the training seed).
        classes: None (every label), or the labels to train and test on, e.g. [0, 1, 2, 3, 4]: the splits
            are drawn from all the data as without it, then keep these labels, renumbered 0..len-1 in the
            order given; the other labels' images of each split are `held_out[split]` (an OOD set).
        num_workers, data_dir, download: DataLoader workers; where files live; whether to fetch them.
    """

    config_name: str = ""  # the data/ group option, and the name stored checkpoints rebuild it by
    # from dpn_lab.data.sources.SOURCES[config_name] (a source whose arguments set them sets them itself)
    input_shape: tuple[int, ...] = ()
    source_classes: int = 0  # labels in the source; n_classes counts those kept by `classes`
    pixel_range: bool = True  # inputs are images in [0, 1]; corruptions need that

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.config_name in SOURCES:
            source = SOURCES[cls.config_name]
            cls.input_shape, cls.source_classes = source.input_shape or (), source.n_classes or 0
            cls.pixel_range = source.pixel_range

    def __init__(
        self,
        batch_size: int = 64,
        train_corruption: dict[str, Any] | None = None,
        test_corruption: dict[str, Any] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_workers: int = 0,
        data_dir: str = "data",
        download: bool = False,
        classes: list[int] | None = None,
        augment: str = "none",
        augment_padding: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if (train_corruption or test_corruption) and not self.pixel_range:
            raise DataError(
                f"{type(self).__name__} inputs have no pixel range: corruptions apply to images only"
            )
        if augment != "none" and not self.pixel_range:
            raise DataError(f"data.augment={augment}: {type(self).__name__} inputs are no images; use none")
        self.batch_size_per_device = batch_size
        self.splits: dict[str, TensorBatches] = {}
        self.split_indices: dict[str, Tensor] = {}  # positions in the source (test: in the official test set)
        self.held_out: dict[str, TensorBatches] = {}  # classes only: the other labels' val and test images
        self._noise_epoch, self._noise_batch = -1, 0

    @property
    def n_classes(self) -> int:
        classes = self.hparams.classes
        return len(classes) if classes else self.source_classes

    def _check_classes(self) -> None:
        classes = self.hparams.classes
        problem = None if classes is None else classes_problem(list(classes), self.source_classes)
        if problem:
            raise DataError(f"data.classes={list(classes)} {problem}")

    def load(self) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """(inputs, labels, official (test_inputs, test_labels) or None). Inputs as float, images in [0, 1]."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            world = self.trainer.world_size
            if self.hparams.batch_size % world:
                raise DataError(
                    f"data.batch_size={self.hparams.batch_size} is not divisible by the {world} devices"
                )
            self.batch_size_per_device = self.hparams.batch_size // world
        if self.splits:
            return
        inputs, labels, official_test = self.load()
        seed = self.hparams.split_seed
        index = torch.arange(len(labels))
        if official_test is None:
            rest, test = train_test_split(
                index, test_size=self.hparams.test_fraction, stratify=labels, random_state=seed
            )
            test_inputs, test_labels = inputs[test], labels[test]
        else:
            rest, (test_inputs, test_labels) = index, official_test
            test = torch.arange(len(test_labels))
        train, val = train_test_split(
            rest, test_size=self.hparams.val_fraction, stratify=labels[rest], random_state=seed
        )
        self._check_classes()
        generator = seeded_generator("test_corruption", seed)
        splits = {
            "train": (inputs[train], labels[train], train),
            "val": (self._corrupt_fixed(inputs[val], generator), labels[val], val),
            "test": (self._corrupt_fixed(test_inputs, generator), test_labels, test),
        }
        if self.hparams.classes:
            splits, held_out = self._keep_classes(splits)
            self.held_out = {name: TensorBatches(*held_out[name]) for name in ("val", "test")}
        self.split_indices = {name: index for name, (_, _, index) in splits.items()}
        self.splits = {name: TensorBatches(x, y) for name, (x, y, _) in splits.items()}

    def fast_dev_run_images(self) -> int | None:
        """Images in a fast dev run's batches (trainer.fast_dev_run=n runs n per stage), None outside one."""
        batches = self.trainer.fast_dev_run if self.trainer is not None else 0
        return int(batches) * self.batch_size_per_device or None

    def keep_first(self, n: int) -> None:
        """Cut every split, its source positions and the held-out classes' images to their first n items."""

        def cut(splits: dict[str, TensorBatches]) -> dict[str, TensorBatches]:
            return {name: TensorBatches(s.inputs[:n], s.labels[:n]) for name, s in splits.items()}

        self.splits, self.held_out = cut(self.splits), cut(self.held_out)
        self.split_indices = {name: index[:n] for name, index in self.split_indices.items()}

    def _keep_classes(self, splits: dict[str, tuple]) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """(kept, held out) per split: kept has the labels of `classes`, renumbered by their position
        in it; held out has the rest, with their source labels."""
        classes = torch.as_tensor(list(self.hparams.classes))
        renumber = torch.full((self.source_classes,), -1, dtype=torch.long)
        renumber[classes] = torch.arange(len(classes))
        kept, held_out = {}, {}
        for name, (x, y, index) in splits.items():
            keep = renumber[y] >= 0
            kept[name] = (x[keep], renumber[y[keep]], index[keep])
            held_out[name] = (x[~keep], y[~keep])
        return kept, held_out

    def _corrupt_fixed(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        spec = self.hparams.test_corruption
        return corrupt(inputs, spec["kind"], spec["severity"], generator) if spec else inputs

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        hp = self.hparams
        if (
            not (hp.train_corruption or hp.augment != "none")
            or self.trainer is None
            or not self.trainer.training
        ):
            return batch
        if not isinstance(batch, list | tuple):  # the model summary's example input passes through here too
            return batch
        inputs, labels = batch
        epoch = self.trainer.current_epoch
        if epoch != self._noise_epoch:
            self._noise_epoch, self._noise_batch = epoch, 0
        # seeded by (run seed, epoch, batch, rank): a deterministic run reproduces, DDP ranks differ
        keys = (torch.initial_seed(), epoch, self._noise_batch, self.trainer.global_rank)
        self._noise_batch += 1
        if hp.augment != "none":
            inputs = augment(inputs, hp.augment, hp.augment_padding, seeded_generator("augment", *keys))
        if hp.train_corruption:
            spec = hp.train_corruption
            inputs = corrupt(
                inputs, spec["kind"], spec["severity"], seeded_generator("train_corruption", *keys)
            )
        return inputs, labels

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size_per_device,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=_already_batched,
            persistent_workers=self.hparams.num_workers > 0,
            # page-locked batches copy to a GPU asynchronously (Lightning moves them with non_blocking)
            pin_memory=self.trainer is not None and self.trainer.strategy.root_device.type == "cuda",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Stored in every checkpoint as plain data (name and arguments, never an import path), so
        `dpn_lab.eval` rebuilds the exact data through `dpn_lab.data.registry` without being told."""
        return {"name": self.config_name, "args": dict(self.hparams)}
