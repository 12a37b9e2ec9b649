"""Extra memory of an evaluation at 10,000 test images: calibration under corruption and OOD detection.

The mnist5k test split repeated to --images images (28x28), the mnist5k DPN of experiment=robustness_mnist5k
(D=64, K=32, untrained: memory does not depend on the weights). Each phase runs after the data, the model and
the OOD sets' sources are in memory; its figure is the process's peak resident memory during the phase (Linux
VmHWM, reset before it through /proc/self/clear_refs) minus the resident memory when it started.

    python bench/evaluation_memory.py              # 10,000 images
    python bench/evaluation_memory.py --images 500
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dpn_lab.data.base import TensorBatches
from dpn_lab.data.mnist5k import MNIST5kDataModule
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.robustness.evaluate import evaluate_and_report
from dpn_lab.robustness.ood import ood_rows, write_ood


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def extra_peak(phase) -> tuple[float, float]:
    """(seconds, MiB of peak resident memory above the resident memory at the start) of phase()."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    start = memory_kib("VmRSS")
    began = time.perf_counter()
    phase()
    return time.perf_counter() - began, (memory_kib("VmHWM") - start) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    torch.manual_seed(0)
    datamodule = MNIST5kDataModule(split_seed=0)
    datamodule.setup()
    test = datamodule.splits["test"]
    repeats = -(-args.images // len(test))
    datamodule.splits["test"] = TensorBatches(
        test.inputs.repeat(repeats, 1, 1, 1)[: args.images], test.labels.repeat(repeats)[: args.images]
    )
    net = DPNLitModule([1, 28, 28], 10, feature_dim=64, n_components=32).eval().net
    eval_cfg = OmegaConf.create(
        {
            "corruptions": ["gaussian"],
            "levels": {"gaussian": [0.0, 0.1, 0.2, 0.3, 0.4]},
            "seed": 0,
            "split": "test",
            "test_steps": None,
            "figures": True,
            "ood": ["uniform_noise", "permuted", "other_digits"],
        }
    )
    ood_rows(net, datamodule, OmegaConf.merge(eval_cfg, {"ood": ["other_digits"]}))  # loads digits once
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        phases = {
            "calibration under corruption (5 levels: robustness.csv, reliability.png)": lambda: (
                evaluate_and_report(net, datamodule, eval_cfg, out)
            ),
            "OOD detection (3 sets x 5 scores: ood.csv, ood.png)": lambda: write_ood(
                ood_rows(net, datamodule, eval_cfg), out, eval_cfg.figures
            ),
        }
        cpu = platform.processor() or platform.machine()
        print(
            f"evaluation memory on {cpu} ({os.cpu_count()} cores): torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {args.images} test images 1x28x28 "
            f"({datamodule.splits['test'].inputs.nbytes / 2**20:.0f} MiB)"
        )
        print("| phase | seconds | extra peak memory (MiB) |\n|---|---|---|")
        for name, phase in phases.items():
            seconds, mib = extra_peak(phase)
            print(f"| {name} | {seconds:.1f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
