"""python -m dpn_lab.analyze ckpt_path=PATH [key=value ...]: every figure of a trained checkpoint (centers,
refinement trajectories, covariances, responsibilities, training curves) and summary.md (parameters, step
sizes, test accuracy, the potential's diagnostics, each component's weight); writes outputs/analyze/runs/<run>/.

Key options:
  ckpt_path=PATH (required)   n_samples=1000 (training images drawn)   n_paths=60 (trajectories drawn)
  data=... (analyze on other data than the checkpoint's)

Example:
  python -m dpn_lab.analyze ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt n_paths=20
"""

from __future__ import annotations

from dpn_lab.runs.preflight import preflight

if __name__ == "__main__":
    preflight("analyze", __doc__)  # before the imports below, which take seconds: a mistake is one line now

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from dpn_lab.callbacks.figure_logger import FigureLogger
from dpn_lab.checkpoints import data_module_from_checkpoint, model_from_checkpoint, read_checkpoint
from dpn_lab.config import validate_config
from dpn_lab.model.diagnostics import component_label_counts, potential_diagnostics
from dpn_lab.model.inference import in_chunks
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.runs.resolvers import register_resolvers
from dpn_lab.runs.task import command_line, run_task
from dpn_lab.viz.report import write_figures

log = logging.getLogger("dpn_lab.analyze")
register_resolvers()


def test_accuracy(model: DPNLitModule, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = in_chunks(model.net, lambda chunk: model.net(chunk).argmax(1), inputs)
    return float((predictions.cpu() == labels).float().mean())


@torch.no_grad()
def validation_diagnostics(model: DPNLitModule, datamodule) -> dict[str, float]:
    """The potential/ diagnostics on the validation split; components vote the labels of the training split."""

    def states(inputs: torch.Tensor) -> list[torch.Tensor]:
        return in_chunks(model.net, model.net.states, inputs)

    train, val = datamodule.splits["train"], datamodule.splits["val"]
    counts = component_label_counts(
        model.net.potential, states(train.inputs)[-1], train.labels, model.hparams.n_classes
    )
    return potential_diagnostics(
        model.net.potential, model.net.classifier, states(val.inputs), val.labels, counts.argmax(1)
    )


def summary_markdown(
    model: DPNLitModule,
    checkpoint: dict[str, Any],
    accuracy: float,
    ckpt_path: str,
    diagnostics: dict[str, float],
) -> str:
    hp, potential = model.hparams, model.net.potential
    counts = {
        name: sum(p.numel() for p in part.parameters())
        for name, part in (
            ("extractor", model.net.extractor),
            ("potential", potential),
            ("classifier", model.net.classifier),
        )
    }
    weights = potential.weights().detach()
    order = torch.argsort(weights, descending=True).tolist()
    epoch = checkpoint.get("epoch")
    trained = epoch + 1 if isinstance(epoch, int) else "?"
    etas = ", ".join(f"{float(e):.4g}" for e in potential.step_sizes().detach()) or "(no steps)"
    lines = [
        f"# DPN analysis of `{ckpt_path}`",
        "",
        f"- trained epochs: {trained}, global step {checkpoint.get('global_step', '?')}",
        f"- extractor `{hp.extractor}`, feature dim D={potential.dim}, K={potential.n_components} components, "
        f"T={potential.n_steps} steps, covariance `{potential.covariance}`, grad_mode `{potential.grad_mode}`",
        f"- parameters: {sum(counts.values()):,} ("
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        + ")",
        f"- step sizes eta_t: {etas}",
        f"- test accuracy: {accuracy:.4f}",
        "",
        "Diagnostics of the potential on the validation split (README: what each means):",
        "",
        "| diagnostic | value |",
        "|---|---|",
        *(f"| potential/{key} | {value:.4g} |" for key, value in diagnostics.items()),
        "",
        "| component | weight w_i (normalised exp c_i) | log det covariance |",
        "|---|---|---|",
    ]
    logdet = torch.linalg.slogdet(potential.covariance_matrices().detach()).logabsdet
    lines += [f"| {i} | {float(weights[i]):.4f} | {float(logdet[i]):.2f} |" for i in order]
    return "\n".join(lines) + "\n"


def analyze(cfg: DictConfig, output_dir: Path) -> tuple[dict[str, float], None]:
    """load checkpoint -> data -> model -> figures + summary.md. Returns ({test/acc}, None)."""
    validate_config(cfg, "analyze")
    checkpoint = read_checkpoint(cfg.ckpt_path)
    datamodule = data_module_from_checkpoint(checkpoint, cfg.ckpt_path, cfg.get("data"))
    datamodule.setup()
    model = model_from_checkpoint(checkpoint, cfg.ckpt_path)
    inputs, labels = datamodule.splits["train"].sample(cfg.n_samples, cfg.seed or 0)
    history = FigureLogger.history_in(checkpoint)
    write_figures(
        model.net,
        inputs,
        labels,
        model.hparams.n_classes,
        history,
        output_dir / "figures",
        "final",
        cfg.n_paths,
    )
    test = datamodule.splits["test"]
    accuracy = test_accuracy(model, test.inputs, test.labels)
    summary = summary_markdown(
        model, checkpoint, accuracy, cfg.ckpt_path, validation_diagnostics(model, datamodule)
    )
    (output_dir / "summary.md").write_text(summary)
    log.info(f"analysis written to {output_dir}")
    print(summary)
    return {"test/acc": accuracy}, None


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def hydra_main(cfg: DictConfig) -> None:
    run_task(cfg, lambda output_dir, _: analyze(cfg, output_dir))


if __name__ == "__main__":
    command_line("analyze", __doc__, hydra_main)
