"""python -m dpn_lab.analyze ckpt_path=PATH: every figure of a trained checkpoint and a markdown summary."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dpn_lab.checkpoint_io import data_module_from_checkpoint, model_from_checkpoint, read_checkpoint
from dpn_lab.cli_errors import check_overrides, exit_on_user_error
from dpn_lab.config_resolvers import register_resolvers
from dpn_lab.config_validation import validate_config
from dpn_lab.data.registry import build_data_module
from dpn_lab.figure_report import write_figures
from dpn_lab.lit_module import DPNLitModule

log = logging.getLogger("dpn_lab.analyze")
register_resolvers()


def training_history(checkpoint: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """The per-epoch history that FigureLogger stores in checkpoints (empty if it was not used)."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("FigureLogger") and "history" in state:
            return {k: [tuple(p) for p in v] for k, v in state["history"].items()}
    return {}


@torch.no_grad()
def test_accuracy(model: DPNLitModule, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(chunk).argmax(1) for chunk in inputs.split(512)])
    return float((predictions == labels).float().mean())


def summary_markdown(model: DPNLitModule, checkpoint: dict[str, Any], accuracy: float, ckpt_path: str) -> str:
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
        f"T={potential.n_steps} steps, precision `{potential.precision}`, grad_mode `{potential.grad_mode}`",
        f"- parameters: {sum(counts.values()):,} ("
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        + ")",
        f"- step sizes eta_t: {etas}",
        f"- test accuracy: {accuracy:.4f}",
        "",
        "| component | weight w_i (normalised exp c_i) | log det covariance |",
        "|---|---|---|",
    ]
    logdet = torch.linalg.slogdet(potential.covariance_matrices().detach()).logabsdet
    lines += [f"| {i} | {float(weights[i]):.4f} | {float(logdet[i]):.2f} |" for i in order]
    return "\n".join(lines) + "\n"


def analyze(cfg: DictConfig, output_dir: Path) -> dict[str, Path]:
    """load checkpoint -> data -> model -> figures + summary.md. Returns {kind: path} of what was written."""
    validate_config(cfg, for_eval=True)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    datamodule = (
        build_data_module(OmegaConf.to_container(cfg.data, resolve=True), "data")
        if cfg.get("data")
        else data_module_from_checkpoint(checkpoint, cfg.ckpt_path)
    )
    datamodule.setup()
    model = model_from_checkpoint(checkpoint, cfg.ckpt_path)
    train = datamodule.splits["train"]
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed or 0))[: cfg.n_samples]
    inputs, labels = train.__getitems__(pick.tolist())
    written = write_figures(
        model.net,
        inputs,
        labels,
        model.hparams.n_classes,
        training_history(checkpoint),
        output_dir / "figures",
        "final",
        cfg.n_paths,
    )
    test = datamodule.splits["test"]
    summary = summary_markdown(
        model, checkpoint, test_accuracy(model, test.inputs, test.labels), cfg.ckpt_path
    )
    written["summary"] = output_dir / "summary.md"
    written["summary"].write_text(summary)
    log.info(f"analysis written to {output_dir}")
    print(summary)
    return written


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(lambda: analyze(cfg, Path(HydraConfig.get().runtime.output_dir)))


def main() -> None:
    """The command line: overrides are checked in one line before Hydra starts the job."""
    exit_on_user_error(lambda: check_overrides("analyze", sys.argv[1:]))
    hydra_main()


if __name__ == "__main__":
    main()
