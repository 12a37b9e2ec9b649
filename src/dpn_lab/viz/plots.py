"""Figures of a DPN: plain functions from tensors to matplotlib figures (no Lightning, no files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from dpn_lab.data.corruption import CORRUPTIONS


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG (110 dpi, the size every dpn_lab figure is written at) and free it."""
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


FIGURE_KINDS = ("prototypes", "feature_map", "trajectories", "covariance", "training_curves")


def pca_plane(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean D, basis 2 x D of the two leading principal directions, their explained-variance ratios 2)."""
    mean = features.mean(0)
    _, s, vh = torch.linalg.svd(features - mean, full_matrices=False)
    variance = s**2
    basis, explained = vh[:2], variance[:2] / variance.sum()
    missing = 2 - len(basis)  # D = 1 (model.feature_dim=1): the second axis is empty, points lie on a line
    return (
        mean,
        torch.cat([basis, basis.new_zeros(missing, basis.shape[1])]),
        torch.cat([explained, explained.new_zeros(missing)]),
    )


def project(points: Tensor, mean: Tensor, basis: Tensor) -> np.ndarray:
    """Coordinates of points (... x D) in the plane (... x 2)."""
    return ((points - mean) @ basis.T).cpu().numpy()


def _axis_labels(ax, explained: Tensor) -> None:
    ax.set_xlabel(f"PC 1 ({100 * float(explained[0]):.0f}% of feature variance)")
    ax.set_ylabel(f"PC 2 ({100 * float(explained[1]):.0f}% of feature variance)")


def _class_colors(n_classes: int):
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n_classes)]


def prototype_grid(
    images: Tensor,
    features: Tensor,
    centers: Tensor,
    weights: Tensor,
    per_center: int = 8,
    max_centers: int = 12,
) -> Figure:
    """For each center (heaviest first, one row) the training images whose features are nearest to it.

    Drawn as one montage image with a white 1-pixel grid, not an axes per image: 96 axes took ~2 s to lay
    out and save, paid at the end of every run.
    """
    order = torch.argsort(weights, descending=True)[:max_centers]
    distances = torch.cdist(centers[order], features)  # centers x N
    nearest = distances.topk(min(per_center, len(features)), largest=False).indices
    rows, cols = nearest.shape
    tiles = images[nearest.flatten()].cpu().float().clamp(0, 1)  # rows*cols x C x H x W
    channels, height, width = tiles.shape[1:]
    white = float(channels != 1)  # 0 under gray_r, 1 in RGB
    # a white line above and left of each tile, the tiles laid out row by row, then the closing lines
    tiles = torch.nn.functional.pad(tiles, (1, 0, 1, 0), value=white)
    grid = tiles.view(rows, cols, channels, height + 1, width + 1).permute(2, 0, 3, 1, 4)
    montage = torch.nn.functional.pad(
        grid.reshape(channels, rows * (height + 1), cols * (width + 1)), (0, 1, 0, 1), value=white
    )
    fig, ax = plt.subplots(figsize=(1.1 * cols + 1.6, 1.1 * rows + 0.8))
    if channels == 1:
        ax.imshow(montage[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
    else:
        ax.imshow(montage.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks(
        [(r + 0.5) * (height + 1) for r in range(rows)],
        [f"center {center}\nw={float(weights[center]):.3f}" for center in order.tolist()],
        fontsize=8,
    )
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    ax.set_title(
        f"Prototypes: nearest training images to each center, {rows} heaviest of {len(weights)}\n"
        "(w: normalised weight exp(c_i); left = nearest)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def feature_map(features: Tensor, labels: Tensor, centers: Tensor, weights: Tensor, n_classes: int) -> Figure:
    """Features on their two leading principal directions, coloured by class, centers marked."""
    mean, basis, explained = pca_plane(features)
    points, marks = project(features, mean, basis), project(centers, mean, basis)
    fig, ax = plt.subplots(figsize=(8.5, 6))
    colors = _class_colors(n_classes)
    for k in range(n_classes):
        chosen = (labels == k).cpu().numpy()
        ax.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.6, color=colors[k], label=f"class {k}")
    sizes = 40 + 300 * (weights / weights.max()).cpu().numpy()
    ax.scatter(
        marks[:, 0],
        marks[:, 1],
        s=sizes,
        marker="X",
        c="black",
        edgecolors="white",
        linewidths=1.0,
        label="centers (size ~ weight)",
    )
    _axis_labels(ax, explained)
    ax.set_title("Unrefined features x_0 (PCA) and potential centers")
    legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for handle in legend.legend_handles:  # legend markers at one readable size, whatever the data sizes
        handle.set_sizes([40])
    legend.legend_handles[-1].set_sizes([90])  # the centers' X
    fig.tight_layout()
    return fig


def trajectory_map(
    features: Tensor,
    trajectories: Tensor,
    labels: Tensor,
    potential_on_plane,
    n_classes: int,
    resolution: int = 80,
) -> Figure:
    """Refinement paths (B x (T+1) x D) projected on the PCA plane of `features`, over contours of phi on it.

    `potential_on_plane(points N x D) -> N` evaluates phi; the contours show phi restricted to the plane,
    while each path is the projection of a path in R^D, so a path need not follow the plane's gradient.
    """
    mean, basis, explained = pca_plane(features)
    paths = project(trajectories, mean, basis)  # B x (T+1) x 2
    cloud = np.concatenate([project(features, mean, basis), paths.reshape(-1, 2)])
    low, high = cloud.min(0), cloud.max(0)
    pad = 0.08 * (high - low)
    a = np.linspace(low[0] - pad[0], high[0] + pad[0], resolution)
    b = np.linspace(low[1] - pad[1], high[1] + pad[1], resolution)
    grid_a, grid_b = np.meshgrid(a, b)
    plane = torch.as_tensor(np.stack([grid_a.ravel(), grid_b.ravel()], 1), dtype=features.dtype)
    phi = (
        potential_on_plane(mean + plane.to(features.device) @ basis)
        .reshape(resolution, resolution)
        .cpu()
        .numpy()
    )
    fig, ax = plt.subplots(figsize=(7.5, 6))
    levels = np.linspace(np.percentile(phi, 2), phi.max(), 25)  # the far tail would take every level
    filled = ax.contourf(grid_a, grid_b, phi, levels=levels, cmap="viridis", extend="min")
    fig.colorbar(filled, ax=ax, label="phi on the plane (log-density up to a constant)")
    colors = _class_colors(n_classes)
    for path, label in zip(paths, labels.tolist(), strict=True):
        ax.plot(path[:, 0], path[:, 1], color=colors[label], linewidth=1.2, alpha=0.9)
        ax.scatter(
            path[0, 0], path[0, 1], s=12, color=colors[label], edgecolors="black", linewidths=0.4, zorder=3
        )
        ax.scatter(
            path[-1, 0],
            path[-1, 1],
            s=30,
            marker="*",
            color=colors[label],
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
        )
    _axis_labels(ax, explained)
    ax.set_title(
        f"Refinement paths ({trajectories.shape[1] - 1} steps; dot = x_0, star = x_T, colour = class)"
    )
    fig.tight_layout()
    return fig


def covariance_figure(covariances: Tensor, weights: Tensor, n_components: int = 4) -> Figure:
    """Covariance heatmaps of the heaviest components (top) and the eigenvalue spectra of each (bottom)."""
    order = torch.argsort(weights, descending=True)[:n_components].tolist()
    fig, axes = plt.subplots(
        2, len(order), figsize=(3.4 * len(order) + 1, 6.5), squeeze=False, layout="constrained"
    )
    limit = float(max(covariances[i].abs().max() for i in order))
    for col, i in enumerate(order):
        cov = covariances[i].cpu().numpy()
        image = axes[0, col].imshow(cov, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[0, col].set_title(f"component {i}, w={float(weights[i]):.3f}", fontsize=9)
        axes[0, col].set_xlabel("feature dimension")
        eigenvalues = np.linalg.eigvalsh(cov)[::-1]
        axes[1, col].plot(np.arange(1, len(eigenvalues) + 1), eigenvalues, marker=".")
        if eigenvalues[0] > 20 * eigenvalues[-1] > 0:  # log scale only where the spectrum spans decades
            axes[1, col].set_yscale("log")
        axes[1, col].set_xlabel("eigenvalue rank")
        axes[1, col].grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("feature dimension")
    axes[1, 0].set_ylabel("covariance eigenvalue")
    fig.colorbar(image, ax=list(axes[0]), label="covariance (shared scale)", shrink=0.9)
    fig.suptitle("Covariance Sigma_i = (A_i^T A_i)^-1 of the heaviest components", fontsize=11)
    return fig


def training_curves(history: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss, accuracy, step size and potential gain per epoch from {metric: [(epoch, value), ...]}."""
    panels = [
        ("loss", ["train/loss", "val/loss"]),
        ("accuracy", ["train/acc", "val/acc"]),
        ("step size eta", ["refine/step_size"]),
        ("potential gain phi(x_T) - phi(x_0)", ["val/potential_gain"]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (title, keys) in zip(axes.flat, panels, strict=True):
        for key in keys:
            if history.get(key):
                epochs, values = zip(*history[key], strict=True)
                ax.plot(epochs, values, marker=".", label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle("Training dynamics", fontsize=11)
    fig.tight_layout()
    return fig


def accuracy_plot(
    curves: Mapping[str, list[dict]], title: str, units: Mapping[str, str] | None = None
) -> Figure:
    """Accuracy vs severity, one panel per corruption, one line per model ({label: rows}); rows may carry
    `accuracy_std` for error bars. `units` names the x axis of each panel (default: the corruption's)."""
    kinds = list(dict.fromkeys(row["corruption"] for rows in curves.values() for row in rows))
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False, layout="constrained"
    )
    for ax, kind in zip(axes[0], kinds, strict=True):
        for label, rows in curves.items():
            mine = [r for r in rows if r["corruption"] == kind]
            ax.errorbar(
                [r["severity"] for r in mine],
                [r["accuracy"] for r in mine],
                yerr=[r.get("accuracy_std", 0.0) for r in mine],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set_title(kind)
        ax.set_xlabel((units or {}).get(kind) or CORRUPTIONS[kind].unit)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    return fig


def _per_corruption_axes(kinds: list[str], ylabel: str):
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False, layout="constrained"
    )
    for ax, kind in zip(axes[0], kinds, strict=True):
        ax.set_title(kind)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    return fig, axes[0]


def uncertainty_plot(rows: list[dict]) -> Figure:
    """AUROC of -phi(x_0) and of -MSP for telling corrupted from clean inputs, against severity."""
    kinds = list(dict.fromkeys(row["corruption"] for row in rows))
    fig, axes = _per_corruption_axes(kinds, "AUROC (corrupted vs clean)")
    for ax, kind in zip(axes, kinds, strict=True):
        mine = [r for r in rows if r["corruption"] == kind and r["severity"] > 0]
        for key, label in (("auroc_potential", "-phi(x_0)"), ("auroc_msp", "-max softmax")):
            ax.plot([r["severity"] for r in mine], [r[key] for r in mine], marker="o", label=label)
        ax.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
        ax.set_xlabel(CORRUPTIONS[kind].unit)
        ax.set_ylim(0, 1.02)
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle("The potential as an uncertainty score (0.5 = chance)")
    return fig


def ood_plot(rows: list[dict]) -> Figure:
    """AUROC of every OOD score on every OOD set, grouped by set (0.5 = chance)."""
    sets = list(dict.fromkeys(row["ood_set"] for row in rows))
    scores = list(dict.fromkeys(row["score"] for row in rows))
    auroc = {(row["ood_set"], row["score"]): row["auroc"] for row in rows}
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(sets), 3.4))
    width = 0.8 / len(scores)
    for i, score in enumerate(scores):
        positions = np.arange(len(sets)) + (i - (len(scores) - 1) / 2) * width
        ax.bar(positions, [auroc.get((s, score), np.nan) for s in sets], width, label=score)
    ax.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("AUROC (OOD vs in-distribution)")
    ax.legend(fontsize=7, ncol=len(scores), loc="lower center")
    fig.suptitle("Out-of-distribution detection (higher score = more OOD)")
    return fig


def steps_plot(rows: list[dict]) -> Figure:
    """Accuracy against the number of refinement steps used at test time, one line per severity."""
    kinds = list(dict.fromkeys(row["corruption"] for row in rows))
    fig, axes = _per_corruption_axes(kinds, "accuracy")
    for ax, kind in zip(axes, kinds, strict=True):
        mine = [r for r in rows if r["corruption"] == kind]
        for severity in dict.fromkeys(r["severity"] for r in mine):
            line = [r for r in mine if r["severity"] == severity]
            ax.plot(
                [r["test_steps"] for r in line],
                [r["accuracy"] for r in line],
                marker="o",
                label=f"{severity:g}",
            )
        ax.set_xlabel("refinement steps T at test time")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, title=CORRUPTIONS[kind].unit, loc="lower left")
    fig.suptitle("Accuracy against test-time refinement steps")
    return fig


def reliability_diagram(panels: Mapping[str, tuple[Tensor, Tensor]], n_bins: int = 15) -> Figure:
    """Accuracy against confidence of the top label in n_bins equal-width bins, a panel per
    {title: (probabilities N x C, labels N)}; the diagonal is perfect calibration, bar width the bin."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, layout="constrained"
    )
    edges = torch.linspace(0, 1, n_bins + 1)
    for ax, (title, (probabilities, labels)) in zip(axes[0], panels.items(), strict=True):
        confidence, predicted = probabilities.float().max(1)
        correct = (predicted == labels).float()
        which = torch.bucketize(confidence, edges[1:-1], right=True)
        counts = torch.bincount(which, minlength=n_bins).float()
        accuracy = torch.bincount(which, weights=correct, minlength=n_bins) / counts.clamp_min(1)
        centers = (edges[:-1] + edges[1:]) / 2
        filled = counts > 0
        ax.bar(
            centers[filled].numpy(),
            accuracy[filled].numpy(),
            width=1 / n_bins,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
        ax.set_title(title)
        ax.set_xlabel("confidence (top label)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def forest_plot(table: pd.DataFrame, title: str) -> Figure:
    """comparison_forest.png (a verdict table of dpn_lab.robustness.verdicts): per endpoint, recipe and treatment, its paired 95% interval against each reference,
    zero and the equivalence margin (grey band) marked."""
    groups = list(table.groupby(["endpoint", "recipe", "treatment"], sort=False))
    references = list(dict.fromkeys(table["reference"]))
    figure, ax = plt.subplots(figsize=(10, 0.3 * len(groups) + 1.4), layout="constrained")
    several = table["treatment"].nunique() > 1
    colors = dict(zip(references, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    for y, (_, rows) in enumerate(groups):
        margin = rows["margin"].iloc[0]
        ax.fill_betweenx([y - 0.45, y + 0.45], -margin, margin, color="0.9", lw=0)
        for k, (_, r) in enumerate(rows.iterrows()):
            offset = (k - (len(rows) - 1) / 2) * 0.25
            ax.errorbar(
                r["diff"],
                y + offset,
                xerr=[[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]],
                fmt="o",
                ms=3.5,
                color=colors[r["reference"]],
                capsize=2,
                label=f"{r['treatment'] if not several else 'model'} − {r['reference']}" if y == 0 else None,
            )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(
        np.arange(len(groups)),
        [f"{e} | {r or '–'}" + (f" | {t}" if several else "") for (e, r, t), _ in groups],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("paired difference, 95% interval over seeds (grey: equivalence margin)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return figure
