"""One training epoch through DPNLitModule + Lightning against a plain PyTorch loop over the same model and data.

    python bench/lightning_overhead.py              # the default config: CNN DPN on digits
    python bench/lightning_overhead.py --extractor mlp --epochs 8

Both sides run the same loss (DPNLitModule._loss_and_logits), optimizer, batch size and batches. The Lightning
side logs its metrics as in training (train/loss, train/acc, step size) but has no progress bar, logger,
checkpointing or validation, which are features rather than overhead. Epoch times are medians after one
warm-up epoch.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

import pytorch_lightning as L
import torch

from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.model.lit_module import DPNLitModule


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def make_module(extractor: str) -> DPNLitModule:
    torch.manual_seed(0)
    return DPNLitModule(
        [1, 8, 8],
        10,
        extractor=extractor,
        feature_dim=32,
        n_components=16,
        n_steps=5,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
    )


def lightning_epochs(datamodule: DigitsDataModule, extractor: str, epochs: int) -> list[float]:
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs + 1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(make_module(extractor), datamodule=datamodule)
    return timer.seconds[1:]


def plain_epochs(datamodule: DigitsDataModule, extractor: str, epochs: int) -> list[float]:
    module = make_module(extractor)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    loader = datamodule.train_dataloader()
    seconds = []
    for _ in range(epochs + 1):
        start = time.perf_counter()
        for images, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _, _ = module._loss_and_logits(images, labels)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def main() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # the tables only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extractor", default="cnn", choices=["cnn", "mlp"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two sides")
    args = parser.parse_args()
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # as DPNLitModule does on CPU: both sides alike
    datamodule = DigitsDataModule(batch_size=args.batch_size)
    datamodule.setup()
    steps = len(datamodule.train_dataloader())
    # alternate the two sides so that machine noise hits both alike
    lightning, plain = [], []
    for _ in range(args.rounds):
        plain += plain_epochs(datamodule, args.extractor, max(1, args.epochs // args.rounds))
        lightning += lightning_epochs(datamodule, args.extractor, max(1, args.epochs // args.rounds))
    p, li = statistics.median(plain), statistics.median(lightning)
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    print(
        f"Lightning overhead on {cpu}: torch {torch.__version__}, {torch.get_num_threads()} threads; one epoch of "
        f"digits ({steps} steps of {args.batch_size}), {args.extractor} DPN, median of {len(plain)} epochs"
    )
    print(f"{'loop':<22} {'epoch ms':>9} {'ms/step':>8} {'ratio':>7}")
    print("-" * 49)
    print(f"{'plain PyTorch loop':<22} {1e3 * p:>9.1f} {1e3 * p / steps:>8.2f} {1.0:>6.3f}x")
    print(f"{'Lightning':<22} {1e3 * li:>9.1f} {1e3 * li / steps:>8.2f} {li / p:>6.3f}x")


if __name__ == "__main__":
    main()
