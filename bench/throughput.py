"""Training throughput (images/s) of the default DPN through Lightning, for the input shapes of the digits,
mnist5k and cifar10 configs, on synthetic tensors of those shapes (nothing is downloaded).

    python bench/throughput.py                          # CPU
    python bench/throughput.py --accelerator gpu --precision bf16-mixed   # trainer=gpu, on a GPU machine
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import time

import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from dpn_lab.model.lit_module import DPNLitModule

SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "cifar10": (3, 32, 32)}


class StepTimer(L.Callback):
    """Wall time of the training steps after the first `skip` (warm-up, k-means, compilation)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.steps, self.start, self.seconds = skip, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.steps == self.skip:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def images_per_second(name: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    shape = SHAPES[name]
    n = args.batch_size * (args.steps + args.warmup)
    data = TensorDataset(torch.rand(n, *shape), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    model = DPNLitModule(list(shape), 10, optimizer=functools.partial(torch.optim.AdamW, lr=3e-3))
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return args.batch_size * (timer.steps - args.warmup) / timer.seconds


def main() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # the tables only
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    if args.accelerator == "cpu":
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)  # as DPNLitModule does on CPU
    device = torch.cuda.get_device_name() if args.accelerator in ("gpu", "cuda") else "CPU"
    print(
        f"training throughput on {device}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"precision {args.precision}, batch {args.batch_size}, {args.steps} timed steps, default DPN"
    )
    print(f"{'config':<10} {'input':>10} {'images/s':>10}")
    print("-" * 32)
    for name in args.configs:
        rate = images_per_second(name, args)
        print(f"{name:<10} {'x'.join(map(str, SHAPES[name])):>10} {rate:>10.0f}")


if __name__ == "__main__":
    main()
