"""Accuracy under corruption: one row per (corruption, severity), written as CSV, markdown and a plot."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from pytorch_lightning.loggers import WandbLogger
from sklearn.metrics import roc_auc_score
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

from dpn_lab.data.corruption import corrupt, seeded_generator
from dpn_lab.model.inference import in_chunks
from dpn_lab.model.network import DPNClassifier
from dpn_lab.viz.plots import accuracy_plot, reliability_diagram, save_figure, steps_plot, uncertainty_plot

log = logging.getLogger(__name__)
COLUMNS = (
    "corruption",
    "severity",
    "accuracy",
    "mean_potential",
    "mean_displacement",
    "denoising_ratio",
    "auroc_potential",
    "auroc_msp",
    "acc90_potential",
    "acc90_msp",
    "ece",
    "nll",
    "brier",
    "n",
)
STEPS_COLUMNS = ("test_steps", "corruption", "severity", "accuracy")
COVERAGE = 0.9


def index_digest(indices: Tensor) -> str:
    """A short fingerprint of a set of sample indices (to prove two evaluations used the same test set)."""
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def corrupted(inputs: Tensor, kind: str, severity: float, seed: int) -> Tensor:
    """The corrupted copy every model is evaluated on: the generator depends only on (seed, kind, severity)."""
    return corrupt(inputs, kind, severity, seeded_generator("eval", seed, kind, float(severity)))


def dpn_outputs(net: DPNClassifier, inputs: Tensor) -> dict[str, Tensor]:
    """Per input: the features x_0, the logits and predicted label, phi(x_0), phi(x_T), |x_T - x_0| and the
    maximum softmax probability."""

    def outputs(chunk: Tensor) -> dict[str, Tensor]:
        states = net.states(chunk)
        logits = net.classifier(states[-1])
        probabilities = logits.softmax(1)
        phi = net.potential.statistics([states[0], states[-1]]).potential
        return {
            "features": states[0],
            "refined": states[-1],
            "logits": logits,
            "predicted": probabilities.argmax(1),
            "msp": probabilities.max(1).values,
            "phi_x0": phi[0],
            "phi_xT": phi[-1],
            "displacement": (states[-1] - states[0]).norm(dim=1),
        }

    return {key: value.cpu() for key, value in in_chunks(net, outputs, inputs).items()}


def auroc(clean_scores: Tensor, corrupted_scores: Tensor) -> float:
    """Area under the ROC curve for telling corrupted (higher score) from clean inputs: the probability that
    a random corrupted input scores above a random clean one (ties count half). scikit-learn's routine sorts
    once, O(N log N): no N x N comparison (800 MB per temporary at 10,000 images)."""
    scores = torch.cat([clean_scores, corrupted_scores]).double().numpy()
    is_corrupted = [0] * len(clean_scores) + [1] * len(corrupted_scores)
    return float(roc_auc_score(is_corrupted, scores))


CALIBRATION_BINS = 15  # equal-width confidence bins of the top label (Ovadia et al. 2019)


def calibration(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """ece: expected calibration error of the top label over CALIBRATION_BINS equal-width bins
    (torchmetrics), nll: mean negative log-likelihood, brier: mean over inputs of sum_c (p_c - [c = y])^2."""
    probabilities = logits.double().softmax(1)
    onehot = torch.nn.functional.one_hot(labels, probabilities.shape[1]).double()
    ece = multiclass_calibration_error(
        probabilities, labels, probabilities.shape[1], n_bins=CALIBRATION_BINS, norm="l1"
    )
    return {
        "ece": float(ece),
        "nll": float(torch.nn.functional.cross_entropy(logits.double(), labels)),
        "brier": float((probabilities - onehot).pow(2).sum(1).mean()),
    }


def accuracy_at_coverage(correct: Tensor, confidence: Tensor, coverage: float = COVERAGE) -> float:
    """Accuracy on the `coverage` share of inputs with the highest confidence (the rest are rejected)."""
    keep = max(1, round(coverage * len(correct)))
    return float(correct[confidence.argsort(descending=True)[:keep]].float().mean())


def denoising_ratio(clean: Mapping[str, Tensor], corrupted: Mapping[str, Tensor]) -> float:
    """rms |x_T(corrupted) - x_0(clean)| / rms |x_0(corrupted) - x_0(clean)| over the inputs."""
    left = (corrupted["refined"] - clean["features"]).double().pow(2).sum(1).mean()
    right = (corrupted["features"] - clean["features"]).double().pow(2).sum(1).mean()
    return float((left / right).sqrt())


def robustness_rows(
    predict: Callable[[Tensor], dict[str, Tensor]],
    inputs: Tensor,
    labels: Tensor,
    levels: Mapping[str, Sequence[float]],
    seed: int,
) -> list[dict[str, float | str]]:
    """One row (COLUMNS) per corruption level; `predict(inputs)` gives "predicted" and, for a DPN, the
    other per-input outputs of `dpn_outputs` (missing ones give NaN columns).

    The potential as an uncertainty score: auroc_potential is the AUROC of -phi(x_0) for telling the
    corrupted test inputs from the clean ones (NaN at severity 0), auroc_msp the same for the maximum
    softmax probability; acc90_* is the accuracy when the 10% least likely inputs (lowest phi(x_0), lowest
    MSP) are rejected; ece, nll and brier are the calibration of its softmax (`calibration`).
    denoising_ratio = rms_b |x_T(corrupted) - x_0(clean)| / rms_b |x_0(corrupted) - x_0(clean)| (NaN at
    severity 0): below 1 the refinement carried the corrupted features toward the clean ones.
    """
    nan = float("nan")
    clean = predict(inputs)
    rows = []
    for kind, severities in levels.items():
        for severity in severities:
            out = predict(corrupted(inputs, kind, severity, seed)) if severity else clean
            correct = out["predicted"] == labels
            row = {
                "corruption": kind,
                "severity": float(severity),
                "accuracy": float(correct.float().mean()),
                "n": len(labels),
            }
            has = {key: key in out for key in ("phi_x0", "msp")}
            row["mean_potential"] = float(out["phi_xT"].mean()) if "phi_xT" in out else nan
            row["mean_displacement"] = float(out["displacement"].mean()) if "displacement" in out else nan
            row["denoising_ratio"] = denoising_ratio(clean, out) if "refined" in out and severity else nan
            for name, key in (("potential", "phi_x0"), ("msp", "msp")):
                separable = has[key] and severity
                row[f"auroc_{name}"] = auroc(-clean[key], -out[key]) if separable else nan
                row[f"acc90_{name}"] = accuracy_at_coverage(correct, out[key]) if has[key] else nan
            undefined = dict.fromkeys(("ece", "nll", "brier"), nan)
            row.update(calibration(out["logits"], labels) if "logits" in out else undefined)
            rows.append(row)
    return rows


@torch.no_grad()
def steps_rows(
    net: DPNClassifier,
    inputs: Tensor,
    labels: Tensor,
    levels: Mapping[str, Sequence[float]],
    seed: int,
    test_steps: Sequence[int],
) -> list[dict[str, float | str]]:
    """Accuracy of one trained network evaluated with other numbers of refinement steps T (eval.test_steps),
    on every corruption level: {test_steps, corruption, severity, accuracy}, ordered by test_steps.

    The features x_0 of a corrupted copy do not depend on T, so the extractor sees each copy once: it is
    most of the cost, and a 6-step-count sweep would otherwise run it 6 times per level."""

    def predicted(features: Tensor) -> Tensor:
        return net.classifier(net.refined(features)).softmax(1).argmax(1)

    rows = []
    for kind, severities in levels.items():
        for severity in severities:
            shifted = corrupted(inputs, kind, severity, seed) if severity else inputs
            features = in_chunks(net, net.features, shifted)
            for steps in test_steps:
                with net.potential.using_steps(steps):
                    correct = in_chunks(net, predicted, features).cpu() == labels
                row = {
                    "corruption": kind,
                    "severity": float(severity),
                    "accuracy": float(correct.float().mean()),
                }
                rows.append({"test_steps": steps, **row})
    return sorted(
        rows, key=lambda row: list(test_steps).index(row["test_steps"])
    )  # stable: levels keep order


def write_rows(rows: list[dict], path: Path, columns: Sequence[str] = COLUMNS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], columns: Sequence[str] = COLUMNS) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "–" if value != value else f"{value:.4f}"  # NaN: not defined for this row
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_robustness(rows: list[dict], directory: Path, figures: bool) -> dict[str, Path]:
    """robustness.csv/.md and, with `figures`, robustness.png (accuracy) and uncertainty.png (AUROC of the
    potential and of the MSP)."""
    paths = {kind: directory / f"robustness.{kind}" for kind in ("csv", "md")}
    write_rows(rows, paths["csv"])
    paths["md"].write_text(markdown_table(rows))
    if figures:
        paths["png"] = save_figure(
            accuracy_plot({"this model": rows}, "Accuracy under corruption"), directory / "robustness.png"
        )
        paths["uncertainty"] = save_figure(uncertainty_plot(rows), directory / "uncertainty.png")
    return paths


def write_reliability(net, inputs: Tensor, labels: Tensor, levels, seed: int, directory: Path) -> Path:
    """reliability.png: the reliability diagram of the clean inputs and of the most severe level of the
    first corruption (the same corrupted copy as its robustness row)."""
    kind = next(iter(levels))
    severity = max(levels[kind])
    panels = {"clean": (dpn_outputs(net, inputs)["logits"].softmax(1), labels)}
    if severity:
        shifted = dpn_outputs(net, corrupted(inputs, kind, severity, seed))["logits"].softmax(1)
        panels[f"{kind} {severity:g}"] = (shifted, labels)
    return save_figure(reliability_diagram(panels, CALIBRATION_BINS), directory / "reliability.png")


def write_steps(rows: list[dict], directory: Path, figures: bool) -> dict[str, Path]:
    """test_steps.csv/.md (and .png with `figures`): accuracy against the number of refinement steps used at
    test time."""
    paths = {kind: directory / f"test_steps.{kind}" for kind in ("csv", "md")}
    write_rows(rows, paths["csv"], STEPS_COLUMNS)
    paths["md"].write_text(markdown_table(rows, STEPS_COLUMNS))
    if figures:
        paths["png"] = save_figure(steps_plot(rows), directory / "test_steps.png")
    return paths


def evaluate_and_report(
    net: DPNClassifier, datamodule, eval_cfg, directory: Path, loggers: Sequence = ()
) -> list[dict]:
    """Rows for every corruption in eval_cfg (corruptions, levels, seed) on the datamodule's `eval.split`
    (test by default; val to choose settings without looking at the test set).

    Writes robustness.csv/.md/.png and robustness.json (rows, levels, the data config and a digest of the
    test indices, which the sweep comparison uses to fit baselines on the same split), and for a W&B
    logger the table robustness/table and the image robustness/accuracy_vs_severity.
    """
    levels = {kind: [float(v) for v in eval_cfg.levels[kind]] for kind in eval_cfg.corruptions}
    split = eval_cfg.split
    test = datamodule.splits[split]
    rows = robustness_rows(lambda x: dpn_outputs(net, x), test.inputs, test.labels, levels, eval_cfg.seed)
    paths = write_robustness(rows, directory, eval_cfg.figures)
    if eval_cfg.figures:
        paths["reliability"] = write_reliability(
            net, test.inputs, test.labels, levels, eval_cfg.seed, directory
        )
    if eval_cfg.get("test_steps"):
        steps = steps_rows(net, test.inputs, test.labels, levels, eval_cfg.seed, eval_cfg.test_steps)
        paths.update({f"steps_{k}": v for k, v in write_steps(steps, directory, eval_cfg.figures).items()})
        print(f"\naccuracy against test-time steps ({split} set)\n" + markdown_table(steps, STEPS_COLUMNS))
    meta = {
        "rows": rows,
        "levels": levels,
        "eval_seed": int(eval_cfg.seed),
        "data": datamodule.state_dict(),
        "split": split,
        "test_index_digest": index_digest(datamodule.split_indices[split]),
    }
    (directory / "robustness.json").write_text(json.dumps(meta, indent=1))
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(
                key="robustness/table", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in rows]
            )
            for key, path in (
                ("robustness/accuracy_vs_severity", "png"),
                ("robustness/uncertainty_auroc", "uncertainty"),
                ("robustness/reliability", "reliability"),
            ):
                if path in paths:
                    logger.log_image(key=key, images=[str(paths[path])])
    return rows


def report_robustness(
    model, datamodule, eval_cfg, output_dir: Path, loggers: Sequence = ()
) -> dict[str, float]:
    """Accuracy of the tested weights under each corruption level: files, W&B, a printed table, metrics."""
    log.info(f"Robustness: {', '.join(eval_cfg.corruptions)}")
    rows = evaluate_and_report(model.net, datamodule, eval_cfg, output_dir, loggers)
    print(f"\naccuracy under corruption ({eval_cfg.split} set)\n" + markdown_table(rows))
    return {f"robust/{row['corruption']}@{row['severity']:g}": row["accuracy"] for row in rows}
