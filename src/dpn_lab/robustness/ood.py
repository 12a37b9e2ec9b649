"""Out-of-distribution detection: can a score tell the evaluated split's images from images of another kind?

OOD sets (all offline; each as large as the in-distribution split unless its source is smaller):
  uniform_noise     pixels drawn uniformly from [0, 1];
  permuted          the split's images with one fixed random permutation of their pixels (permuted MNIST);
  other_digits      the other embedded digit set (digits <-> mnist5k; mnist and fashion_mnist take digits),
                    its test split resampled to this one's height and width (bilinear, antialiased);
  held_out_classes  the split's images of the labels `data.classes` leaves out.
Scores, each higher for "more out of distribution":
  msp          -max softmax probability (Hendrycks & Gimpel 2017);
  energy       -logsumexp(logits) (Liu et al. 2020, T = 1);
  mahalanobis  min over classes c of (x_0 - mu_c)^T S^-1 (x_0 - mu_c), class means mu_c and one shared
               covariance S of the training features x_0 (Lee et al. 2018, without input preprocessing);
  phi_x0       -phi(x_0), the potential at the extracted features;
  phi_xT       -phi(x_T), the potential after the refinement.
Per (set, score): AUROC (in-distribution = 0, OOD = 1; scikit-learn's O(N log N) routine) and FPR95, the
share of OOD images kept at the threshold that keeps 95% of the in-distribution images.

Everything is drawn from generators seeded by (eval.seed, set), so every model sees the same OOD images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpn_lab.data.sources import SOURCES

if TYPE_CHECKING:  # torch is imported where it is used: validation reads OOD_SETS before torch loads
    from torch import Tensor

    from dpn_lab.model.network import DPNClassifier

log = logging.getLogger(__name__)
OOD_SETS = ("uniform_noise", "permuted", "other_digits", "held_out_classes")
SCORES = ("msp", "energy", "mahalanobis", "phi_x0", "phi_xT")
OTHER_DIGITS = {"digits": "mnist5k", "mnist5k": "digits", "mnist": "digits", "fashion_mnist": "digits"}
OOD_COLUMNS = ("ood_set", "score", "auroc", "fpr95", "n", "n_in")
KEPT = 0.95  # FPR95: the share of in-distribution images the threshold keeps


def ood_set_problem(
    ood_set: str, data: str, classes: Sequence[int] | None, n_classes: int | None
) -> str | None:
    """Why `ood_set` cannot be made for data source `data` (trained on `classes` of its `n_classes`
    labels), or None. Torch-free: the preflight asks it before anything loads."""
    source = SOURCES[data]
    if not source.pixel_range:
        return f"needs images in [0, 1]; data={data} has none"
    if ood_set == "other_digits" and data not in OTHER_DIGITS:
        return (
            f"resamples a one-channel digit set to the input's height and width: data={data} has "
            f"{source.input_shape[0]} channels; it works for data={', '.join(OTHER_DIGITS)}"
        )
    if ood_set == "held_out_classes" and not classes:
        return "needs data.classes, the labels to train on (e.g. [0,1,2,3,4]); the rest are the OOD set"
    if ood_set == "held_out_classes" and n_classes is not None and len(set(classes)) >= n_classes:
        return f"needs data.classes to leave a label out; it keeps all {n_classes}"
    return None


def fpr_at_95(in_scores: Tensor, out_scores: Tensor) -> float:
    """The share of OOD scores at or below the threshold that keeps (score <= threshold) KEPT of the
    in-distribution scores: the ceil(KEPT n)-th smallest of them."""
    threshold = in_scores.sort().values[math.ceil(KEPT * len(in_scores)) - 1]
    return float((out_scores <= threshold).double().mean())


@dataclass
class Mahalanobis:
    """The Mahalanobis score of Lee et al. (2018) on features: class means, one shared covariance."""

    means: Tensor  # C x D
    whiten: Tensor  # D x D, L^-1 for S = L L^T

    @classmethod
    def fit(cls, features: Tensor, labels: Tensor) -> Mahalanobis:
        """Means of the classes present in labels (a class without an image has no mean: a fast dev run's one
        batch can miss one) and their pooled within-class covariance, in float64; a ridge of 1e-6 of the mean
        variance keeps S invertible when features are collinear."""
        import torch

        x = features.double()
        present, position = labels.unique(return_inverse=True)
        means = torch.stack([x[position == i].mean(0) for i in range(len(present))])
        centred = x - means[position]
        covariance = centred.T @ centred / len(x)
        ridge = 1e-6 * covariance.diagonal().mean().clamp(min=1e-12)
        covariance = covariance + ridge * torch.eye(len(covariance), dtype=x.dtype)
        lower = torch.linalg.cholesky(covariance)
        whiten = torch.linalg.solve_triangular(lower, torch.eye(len(lower), dtype=x.dtype), upper=False)
        return cls(means, whiten)

    def __call__(self, features: Tensor) -> Tensor:
        import torch

        return torch.cdist(features.double() @ self.whiten.T, self.means @ self.whiten.T).pow(2).min(1).values


def ood_scores(net: DPNClassifier, inputs: Tensor, mahalanobis: Mahalanobis) -> dict[str, Tensor]:
    """SCORES of every input, higher for more out of distribution."""
    from dpn_lab.robustness.evaluate import dpn_outputs

    out = dpn_outputs(net, inputs)
    return {
        "msp": -out["msp"],
        "energy": -out["logits"].double().logsumexp(1),
        "mahalanobis": mahalanobis(out["features"]),
        "phi_x0": -out["phi_x0"],
        "phi_xT": -out["phi_xT"],
    }


def ood_inputs(ood_set: str, datamodule, split: str, seed: int) -> Tensor:
    """The images of `ood_set` against the datamodule's `split` (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from dpn_lab.data.corruption import seeded_generator
    from dpn_lab.data.registry import build_data_module

    inputs = datamodule.splits[split].inputs
    generator = seeded_generator("ood", seed, ood_set)
    if ood_set == "uniform_noise":
        return torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype)
    if ood_set == "permuted":
        order = torch.randperm(inputs[0].numel(), generator=generator)
        return inputs.flatten(1)[:, order].view_as(inputs)
    if ood_set == "held_out_classes":
        return datamodule.held_out[split].inputs
    other = build_data_module(
        {"name": OTHER_DIGITS[datamodule.config_name], "args": {"data_dir": datamodule.hparams.data_dir}},
        "eval.ood other_digits",
    )
    other.setup()
    images = other.splits["test"].inputs
    images = images[torch.randperm(len(images), generator=generator)[: len(inputs)]]
    return F.interpolate(images, size=tuple(inputs.shape[-2:]), mode="bilinear", antialias=True).clamp(0, 1)


def ood_rows(net: DPNClassifier, datamodule, eval_cfg) -> list[dict[str, Any]]:
    """One row (OOD_COLUMNS) per (set in eval.ood, score) against the `eval.split` images."""
    from dpn_lab.errors import DataError
    from dpn_lab.model.inference import in_chunks
    from dpn_lab.robustness.evaluate import auroc

    for ood_set in eval_cfg.ood:
        classes = datamodule.hparams.classes
        problem = ood_set_problem(ood_set, datamodule.config_name, classes, datamodule.source_classes or None)
        if problem:
            raise DataError(f"eval.ood={ood_set} is not possible here: it {problem}")
    train = datamodule.splits["train"]
    features = in_chunks(net, lambda chunk: {"x0": net.features(chunk)}, train.inputs)["x0"].cpu()
    mahalanobis = Mahalanobis.fit(features, train.labels)
    inside = ood_scores(net, datamodule.splits[eval_cfg.split].inputs, mahalanobis)
    rows = []
    for ood_set in eval_cfg.ood:
        outside = ood_scores(net, ood_inputs(ood_set, datamodule, eval_cfg.split, eval_cfg.seed), mahalanobis)
        for score in SCORES:
            rows.append(
                {
                    "ood_set": ood_set,
                    "score": score,
                    "auroc": auroc(inside[score], outside[score]),
                    "fpr95": fpr_at_95(inside[score], outside[score]),
                    "n": len(outside[score]),
                    "n_in": len(inside[score]),
                }
            )
    return rows


def write_ood(rows: list[dict[str, Any]], directory: Path, figures: bool) -> dict[str, Path]:
    """ood.csv/.md and, with `figures`, ood.png (AUROC per set and score)."""
    from dpn_lab.robustness.evaluate import markdown_table, write_rows
    from dpn_lab.viz.plots import ood_plot, save_figure

    paths = {kind: directory / f"ood.{kind}" for kind in ("csv", "md")}
    write_rows(rows, paths["csv"], OOD_COLUMNS)
    paths["md"].write_text(markdown_table(rows, OOD_COLUMNS))
    if figures:
        paths["png"] = save_figure(ood_plot(rows), directory / "ood.png")
    return paths


def report_ood(net: DPNClassifier, datamodule, eval_cfg, directory: Path, loggers: Sequence = ()) -> dict:
    """OOD detection of the tested weights: files, W&B table and plot, a printed table, the metrics."""
    from pytorch_lightning.loggers import WandbLogger

    from dpn_lab.robustness.evaluate import markdown_table

    log.info(f"OOD detection: {', '.join(eval_cfg.ood)} against the {eval_cfg.split} images")
    rows = ood_rows(net, datamodule, eval_cfg)
    paths = write_ood(rows, directory, eval_cfg.figures)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(
                key="ood/table", columns=list(OOD_COLUMNS), data=[[r[c] for c in OOD_COLUMNS] for r in rows]
            )
            if "png" in paths:
                logger.log_image(key="ood/auroc", images=[str(paths["png"])])
    print(f"\nOOD detection ({eval_cfg.split} set in distribution)\n" + markdown_table(rows, OOD_COLUMNS))
    return {f"ood/{r['ood_set']}/{r['score']}_auroc": r["auroc"] for r in rows}
