"""Accuracy under corruption: one row per (corruption, severity), written as CSV, markdown and a plot."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from dpn_lab.data.corruption import corrupt
from dpn_lab.model.network import FullArchitecture
from dpn_lab.viz.plots import accuracy_plot, save_figure

log = logging.getLogger(__name__)
COLUMNS = ("corruption", "severity", "accuracy", "mean_potential", "mean_displacement", "n")


def index_digest(indices: Tensor) -> str:
    """A short fingerprint of a set of sample indices (to prove two evaluations used the same test set)."""
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def corrupted(inputs: Tensor, kind: str, severity: float, seed: int) -> Tensor:
    """The corrupted copy every model is evaluated on: the generator depends only on (seed, kind, severity)."""
    generator = torch.Generator().manual_seed(
        seed * 1_000_003 + zlib.crc32(f"{kind}:{float(severity)}".encode())
    )
    return corrupt(inputs, kind, severity, generator)


@torch.no_grad()
def dpn_predictions(
    net: FullArchitecture, inputs: Tensor, batch_size: int = 512
) -> tuple[Tensor, float, float]:
    """(predicted labels, mean phi(x_T), mean ||x_T - x_0||) of a DPN on inputs."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    predictions, potentials, displacements = [], [], []
    for chunk in inputs.split(batch_size):
        states = net.states(chunk.to(device))
        predictions.append(net.classifier(states[-1]).argmax(1).cpu())
        potentials.append(net.potential.compute_potential(states[-1]).cpu())
        displacements.append((states[-1] - states[0]).norm(dim=1).cpu())
    net.train(was_training)
    return torch.cat(predictions), float(torch.cat(potentials).mean()), float(torch.cat(displacements).mean())


def robustness_rows(
    predict: Callable[[Tensor], tuple[Tensor, float, float]],
    inputs: Tensor,
    labels: Tensor,
    levels: Mapping[str, Sequence[float]],
    seed: int,
) -> list[dict[str, float | str]]:
    """Evaluate `predict(inputs) -> (labels, mean potential, mean displacement)` on every corruption level."""
    rows = []
    for kind, severities in levels.items():
        for severity in severities:
            predicted, potential, displacement = predict(corrupted(inputs, kind, severity, seed))
            accuracy = float((predicted == labels).float().mean())
            rows.append(
                dict(
                    zip(
                        COLUMNS,
                        (kind, float(severity), accuracy, potential, displacement, len(labels)),
                        strict=True,
                    )
                )
            )
    return rows


def write_rows(rows: list[dict], path: Path, columns: Sequence[str] = COLUMNS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], columns: Sequence[str] = COLUMNS) -> str:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_robustness(rows: list[dict], directory: Path) -> dict[str, Path]:
    """robustness.csv, robustness.md and robustness.png in directory."""
    paths = {kind: directory / f"robustness.{kind}" for kind in ("csv", "md", "png")}
    write_rows(rows, paths["csv"])
    paths["md"].write_text(markdown_table(rows))
    figure = accuracy_plot({"this model": rows}, "Accuracy under corruption")
    save_figure(figure, paths["png"])
    return paths


def evaluate_and_report(
    net: FullArchitecture, datamodule, eval_cfg, directory: Path, loggers: Sequence = ()
) -> list[dict]:
    """Rows for every corruption in eval_cfg (corruptions, levels, seed) on the datamodule's test split.

    Writes robustness.csv/.md/.png and robustness.json (rows, levels, the data config and a digest of the
    test indices, which the sweep comparison uses to fit baselines on the same split), and for a W&B
    logger the table robustness/table and the image robustness/accuracy_vs_severity.
    """
    levels = {kind: [float(v) for v in eval_cfg.levels[kind]] for kind in eval_cfg.corruptions}
    test = datamodule.splits["test"]
    rows = robustness_rows(lambda x: dpn_predictions(net, x), test.inputs, test.labels, levels, eval_cfg.seed)
    paths = write_robustness(rows, directory)
    meta = {
        "rows": rows,
        "levels": levels,
        "eval_seed": int(eval_cfg.seed),
        "data": datamodule.state_dict(),
        "test_index_digest": index_digest(datamodule.split_indices["test"]),
    }
    (directory / "robustness.json").write_text(json.dumps(meta, indent=1))
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_table(
                key="robustness/table", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in rows]
            )
            logger.log_image(key="robustness/accuracy_vs_severity", images=[str(paths["png"])])
    return rows


def report_robustness(
    model, datamodule, eval_cfg, output_dir: Path, loggers: Sequence = ()
) -> dict[str, float]:
    """Accuracy of the tested weights under each corruption level: files, W&B, a printed table, metrics."""
    log.info(f"Robustness: {', '.join(eval_cfg.corruptions)}")
    if not datamodule.splits:  # ddp_spawn set the data up in its worker processes only
        datamodule.setup("test")
    rows = evaluate_and_report(model.net, datamodule, eval_cfg, output_dir, loggers)
    print("\naccuracy under corruption (test set)\n" + markdown_table(rows))
    return {f"robust/{row['corruption']}@{row['severity']:g}": row["accuracy"] for row in rows}
