"""Adversarial evaluation (torchattacks): white-box PGD in the Linf and L2 balls through the whole unrolled
refinement, the same with the refinement's backward replaced by the identity (BPDA, Athalye et al. 2018),
the score-based Square attack (Andriushchenko et al. 2020) as the check that the gradients are not masked,
and AutoAttack (Croce & Hein 2020, standard version) as an opt-in kind for final numbers.

What a kind is, its norm and its largest eps are written once, in ATTACKS (validation reads them before
torch loads). Every attack runs on the same `eval.attack_samples` test images, drawn from `eval.seed`, with
the model in eval mode, where the refinement is deterministic (Langevin noise is drawn only in training), so
no expectation over draws (EOT) is needed: `tests/robustness/test_attacks.py` checks that two passes agree.

The masking checks, reported in the `check` column and never silent:
  (a) PGD Linf at `eval.masking_eps` (0.5 by default) must bring accuracy down to chance (+ 0.05);
  (b) the black-box Square attack must not beat the white-box PGD at the same eps by more than 0.02;
  (c) full gradient and BPDA must agree within 0.02; the `worst` row reports the stronger of the two.
      A model without a refinement (the T = 0 ablation) has nothing for BPDA to bypass: it runs `full` only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: validation reads ATTACKS before torch loads
    from torch import Tensor, nn

    from dpn_lab.model.network import DPNClassifier


@dataclass(frozen=True)
class AttackKind:
    norm: str  # "Linf" or "L2": the ball the perturbation lies in
    white_box: bool  # uses gradients (then `full` and `bpda` are both run)
    max_eps: float | None  # the largest radius allowed (None: no bound)
    meaning: str


ATTACKS: dict[str, AttackKind] = {
    "pgd_linf": AttackKind("Linf", True, 1.0, "PGD with a random start in the Linf ball (Madry et al. 2018)"),
    "pgd_l2": AttackKind("L2", True, None, "PGD with a random start in the L2 ball"),
    "square_linf": AttackKind(
        "Linf", False, 1.0, "Square, score-based black box, Linf (Andriushchenko et al. 2020)"
    ),
    "autoattack": AttackKind(
        "Linf", True, 1.0, "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020)"
    ),
}
log = logging.getLogger(__name__)
GRADIENTS = ("full", "bpda")
PAIR_STEPS = 7  # PGD steps for an adversarial training pair unless noise_pairs.steps says otherwise
ATTACK_COLUMNS = ("attack", "eps", "gradient", "accuracy", "n", "check")
CHANCE_MARGIN, AGREEMENT = 0.05, 0.02  # masking checks (a) and (b, c)


def attacked(net: DPNClassifier, gradient: str) -> nn.Module:
    """images -> logits of `net`, whose refinement back-propagates exactly (`full`) or as the identity
    (`bpda`: x_T = x_0 + stopgrad(x_T - x_0))."""
    from torch import nn

    class Attacked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: Tensor) -> Tensor:
            features = self.net.features(images)
            refined = self.net.refined(features)
            if gradient == "bpda":
                refined = features + (refined - features).detach()
            return self.net.classifier(refined)

    return Attacked()


def build_attack(kind: str, model: nn.Module, eps: float, cfg: Mapping[str, Any], n_classes: int, seed: int):
    """The torchattacks attack `kind` at radius eps; PGD's step is attack_step_size * eps / attack_steps."""
    try:
        import torchattacks
    except ImportError:
        from dpn_lab.errors import ConfigError

        raise ConfigError(
            "eval.attacks needs torchattacks, which `make install` installs: pip install --no-deps -c "
            "constraints.txt torchattacks (without --no-deps it would downgrade requests, which it never imports)"
        ) from None

    steps, alpha = int(cfg["attack_steps"]), float(cfg["attack_step_size"]) * eps / int(cfg["attack_steps"])
    if kind == "pgd_linf":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if kind == "pgd_l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if kind == "square_linf":
        return torchattacks.Square(
            model, norm="Linf", eps=eps, n_queries=int(cfg["attack_queries"]), n_restarts=1, seed=seed
        )
    return torchattacks.AutoAttack(
        model, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=seed
    )


def robust_accuracy(
    model: nn.Module,
    kind: str,
    eps: float,
    inputs: Tensor,
    labels: Tensor,
    cfg: Mapping[str, Any],
    n_classes: int,
    seed: int,
) -> float:
    """The fraction of inputs classified correctly under every one of `attack_restarts` runs of the attack
    (an input counts as broken once any restart breaks it); eps = 0 is the clean accuracy."""
    import torch

    model.eval()
    with torch.no_grad():
        correct = model(inputs).argmax(1) == labels
    if eps == 0:
        return float(correct.float().mean())
    for restart in range(int(cfg["attack_restarts"])):
        with torch.random.fork_rng(devices=[inputs.device] if inputs.is_cuda else []):  # a reproducible start
            torch.manual_seed(seed + restart)
            attack = build_attack(kind, model, eps, cfg, n_classes, seed + restart)
            adversarial = attack(inputs, labels)
        with torch.no_grad():
            correct &= model(adversarial).argmax(1) == labels
    return float(correct.float().mean())


def adversarial_copy(
    net: DPNClassifier, spec: Mapping[str, Any], images: Tensor, labels: Tensor, seed: int
) -> Tensor:
    """The adversarial pair of a training batch (model.noise_pairs={kind: pgd_linf, severity: eps, steps: k}):
    the attack against the current network, through the refinement, with PGD's random start drawn from
    `seed`. torchattacks runs it in eval mode and puts the network back in the mode it was in."""
    import torch

    cfg = {
        "attack_steps": spec.get("steps", PAIR_STEPS),
        "attack_step_size": 2.5,
        "attack_queries": PAIR_STEPS,
    }
    model = attacked(net, "full").train(net.training)
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        attack = build_attack(
            spec["kind"], model, float(spec["severity"]), cfg, net.classifier.out_features, seed
        )
        return attack(images, labels).detach()


def attack_subset(n_total: int, n: int, seed: int) -> Tensor:
    """The positions of the `n` test images every model is attacked on: the same for the same seed."""
    import torch

    from dpn_lab.data.corruption import seeded_generator

    return torch.randperm(n_total, generator=seeded_generator("attack_subset", seed))[:n].sort().values


def adversarial_rows(
    net: DPNClassifier, inputs: Tensor, labels: Tensor, cfg: Mapping[str, Any], n_classes: int
) -> list[dict[str, Any]]:
    """One row (ATTACK_COLUMNS) per (attack, eps, gradient), a `worst` row per white-box (attack, eps) and
    the masking-check row, with each failed check named in `check`."""
    seed = int(cfg["seed"])
    device = next(net.parameters()).device
    pick = attack_subset(len(labels), int(cfg["attack_samples"]), seed)
    x, y = inputs[pick].to(device), labels[pick].to(device)
    rows: list[dict[str, Any]] = []

    def measure(kind: str, eps: float) -> list[dict[str, Any]]:
        if not ATTACKS[kind].white_box:
            gradients = ["none"]
        else:  # without a refinement BPDA is the full gradient: run once
            gradients = list(cfg["attack_gradient"]) if net.refines else ["full"]
        found = [
            {
                "attack": kind,
                "eps": float(eps),
                "gradient": gradient,
                "accuracy": robust_accuracy(
                    attacked(net, "full" if gradient == "none" else gradient),
                    kind,
                    eps,
                    x,
                    y,
                    cfg,
                    n_classes,
                    seed,
                ),
                "n": len(y),
                "check": "",
            }
            for gradient in gradients
        ]
        if len(found) > 1:
            accuracies = [r["accuracy"] for r in found]
            worst = {**found[0], "gradient": "worst", "accuracy": min(accuracies)}
            if max(accuracies) - min(accuracies) > AGREEMENT:
                worst["check"] = f"(c) full and BPDA differ by {max(accuracies) - min(accuracies):.3f}"
            found.append(worst)
        return found

    for kind in cfg["attacks"]:
        for eps in cfg["attack_eps"][kind]:
            rows += measure(kind, float(eps))
    if "pgd_linf" in cfg["attacks"]:
        check = measure("pgd_linf", float(cfg["masking_eps"]))[-1]
        chance = 1.0 / n_classes
        check["gradient"] = "masking check"
        if check["accuracy"] > chance + CHANCE_MARGIN:
            check["check"] = (
                f"(a) {check['accuracy']:.3f} > chance {chance:.2f} at eps {cfg['masking_eps']:g}"
            )
        rows.append(check)
    _black_box_check(rows)
    return rows


def _black_box_check(rows: list[dict[str, Any]]) -> None:
    """(b): where Square beats the white-box PGD (worst over gradients) by more than AGREEMENT at the same
    eps, PGD's gradients are suspect: its worst row is marked."""
    square = {r["eps"]: r["accuracy"] for r in rows if r["attack"] == "square_linf"}
    for row in rows:
        is_pgd_result = row["attack"] == "pgd_linf" and row["gradient"] in ("worst", "masking check")
        if is_pgd_result and row["eps"] in square and square[row["eps"]] < row["accuracy"] - AGREEMENT:
            mark = f"(b) Square {square[row['eps']]:.3f} < PGD"
            row["check"] = f"{row['check']}; {mark}" if row["check"] else mark


def summary_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """adversarial/<attack>@<eps>: the accuracy under the strongest variant, for the loggers and result.json."""
    best: dict[str, float] = {}
    for row in rows:
        if row["gradient"] != "masking check":
            key = f"adversarial/{row['attack']}@{row['eps']:g}"
            best[key] = min(best.get(key, 1.0), row["accuracy"])
    return best


def write_adversarial(rows: list[dict[str, Any]], directory: Path, figures: bool) -> dict[str, Path]:
    """adversarial.csv/.md (and .png with `figures`): a row per (attack, eps, gradient); the plot has a panel
    per attack."""
    from dpn_lab.robustness.evaluate import markdown_table, write_rows
    from dpn_lab.viz.plots import accuracy_plot, save_figure

    paths = {kind: directory / f"adversarial.{kind}" for kind in ("csv", "md")}
    write_rows(rows, paths["csv"], ATTACK_COLUMNS)
    paths["md"].write_text(markdown_table(rows, ATTACK_COLUMNS) + MARKS)
    if not figures:
        return paths
    curves: dict[str, list[dict]] = {}
    for row in rows:
        if row["gradient"] != "masking check":
            curves.setdefault(row["gradient"], []).append(
                {"corruption": row["attack"], "severity": row["eps"], **row}
            )
    units = {kind: f"eps ({spec.norm})" for kind, spec in ATTACKS.items()}
    paths["png"] = save_figure(
        accuracy_plot(curves, "Accuracy under attack", units), directory / "adversarial.png"
    )
    return paths


MARKS = (
    "\ncheck: (a) PGD Linf at the masking eps leaves accuracy above chance + 0.05; (b) the black-box Square "
    "attack beats the white-box PGD by more than 0.02; (c) full gradient and BPDA differ by more than 0.02 "
    "(the `worst` row is the stronger). A marked row may overstate robustness.\n"
)


def report_attacks(
    net: DPNClassifier, datamodule, eval_cfg, n_classes: int, directory: Path, loggers: Sequence = ()
) -> dict[str, float]:
    """Attack the `eval.split` images: files, W&B table and plot, a printed table, and the metrics."""
    from pytorch_lightning.loggers import WandbLogger

    from dpn_lab.errors import ConfigError
    from dpn_lab.robustness.evaluate import markdown_table

    split = datamodule.splits[eval_cfg.split]
    if eval_cfg.attack_samples > len(split.labels):
        raise ConfigError(
            f"eval.attack_samples={eval_cfg.attack_samples} is out of range: the {eval_cfg.split} split has "
            f"{len(split.labels)} images"
        )
    log.info(f"Attacks: {', '.join(eval_cfg.attacks)} on {eval_cfg.attack_samples} {eval_cfg.split} images")
    rows = adversarial_rows(net, split.inputs, split.labels, eval_cfg, n_classes)
    paths = write_adversarial(rows, directory, eval_cfg.figures)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(
                key="adversarial/table",
                columns=list(ATTACK_COLUMNS),
                data=[[r[c] for c in ATTACK_COLUMNS] for r in rows],
            )
            if "png" in paths:
                logger.log_image(key="adversarial/accuracy_vs_eps", images=[str(paths["png"])])
    print(f"\naccuracy under attack ({eval_cfg.split} set)\n" + markdown_table(rows, ATTACK_COLUMNS))
    return summary_metrics(rows)
