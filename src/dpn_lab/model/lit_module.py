"""DPNLitModule: training, validation and test of a DPNClassifier under Lightning."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dpn_lab.data.corruption import corrupt, seeded_generator
from dpn_lab.errors import ConfigError, DivergenceError, NonFiniteRefinementError
from dpn_lab.model.diagnostics import component_label_counts, potential_diagnostics
from dpn_lab.model.extractors import build_extractor, extractor_arguments
from dpn_lab.model.network import DPNClassifier
from dpn_lab.model.options import FITTED_OBJECTIVES, PotentialConfig, TrainingConfig, training_problem
from dpn_lab.model.potential import DenoisingPotential
from dpn_lab.model.residual_control import ResidualMLP, matched_width
from dpn_lab.robustness.attacks import ATTACKS, adversarial_copy

log = logging.getLogger(__name__)


# only guards the division: a larger absolute floor rewards shrinking the features below it
CONSISTENCY_VARIANCE_FLOOR = 1e-4


def consistency(corrupted: Tensor, clean: Tensor) -> Tensor:
    """mean_b |corrupted_b - clean_b|^2 / max(total variance of clean, floor) (scale-free)."""
    variance = clean.var(0).sum().clamp_min(CONSISTENCY_VARIANCE_FLOOR)
    return (corrupted - clean).pow(2).sum(1).mean() / variance


class DPNLitModule(L.LightningModule):
    """Cross-entropy on the refined features' logits, plus an optional consistency term.

    loss = CE(logits of x_T) + consistency_weight * |x_T(corrupted) - stopgrad x_0(clean)|^2 / max(var x_0(clean), floor)

    The options are TrainingConfig's and PotentialConfig's fields (dpn_lab.model.options, where each is
    defined with its meaning), flat, as the `model.*` keys of the config give them. `noise_pairs` trains every
    batch on its clean and its corrupted copy (the CE terms cover both); an attack kind makes the copy an attack
    on the current network, through the refinement; the noise comes from a generator seeded by (run seed,
    epoch, batch index, rank). `center_update=ema` moves each center after every optimizer step toward the
    responsibility-weighted mean of the clean features of the batches that step used (all micro-batches under
    gradient accumulation), identical on all DDP ranks. `refinement=residual_mlp` replaces the ascent by the
    capacity-matched control (dpn_lab.model.residual_control). Hyperparameters are plain values, so
    checkpoints load with weights_only=True; the optimizer and scheduler factories (Hydra `_partial_`) are
    not stored in them.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        potential_names = {f.name for f in fields(PotentialConfig)}
        config = PotentialConfig(**{k: v for k, v in options.items() if k in potential_names})
        self.options = TrainingConfig(**{k: v for k, v in options.items() if k not in potential_names})
        attack = bool(self.options.noise_pairs) and self.options.noise_pairs["kind"] in ATTACKS
        problem = training_problem(SimpleNamespace(**asdict(config), **asdict(self.options)), attack)
        if problem:
            raise ConfigError(f"model.{problem}")
        extractor_kwargs = extractor_arguments(self.options.extractor, self.options.extractor_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        # every option, defaults included, in checkpoints
        self.hparams.update({**asdict(config), **asdict(self.options), "extractor_kwargs": extractor_kwargs})
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        backbone = build_extractor(
            self.options.extractor, tuple(input_shape), config.feature_dim, **extractor_kwargs
        )
        self.net = self._network(backbone, config, n_classes, self.options.refinement)
        if self.options.freeze_extractor:
            self.net.extractor.requires_grad_(False)
        if self.options.potential_objective in FITTED_OBJECTIVES:
            self.net.potential.requires_grad_(False)
        self.example_input_array = torch.zeros(1, *input_shape)  # the model summary counts FLOPs with it
        if self.options.compile:  # the ascent only: an attribute over the method, so state_dict keys stay
            self.net.potential.refine = torch.compile(self.net.potential.refine)
        # micro: the fraction of correct predictions, what "accuracy" means in a results table
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(n_classes, average="micro") for _ in range(3)
        )
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_gain, self.test_gain = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        # (component, label) counts of the training epoch, for the responsibility classifier diagnostic
        self.register_buffer(
            "component_counts", torch.zeros(config.n_components, n_classes), persistent=False
        )
        self._val_states: list[list[Tensor]] = []
        self._val_labels: list[Tensor] = []
        # center_update=ema: the clean features of the micro-batches since the last optimizer step
        self._step_features: list[Tensor] = []
        # train/loss kept on the device and logged as the mean of each log_every_n_steps window: one
        # self.log per window (each call moves Lightning's metric state, ~0.7 ms on CPU), no host sync
        self._loss_window: list[Tensor] = []
        self._log_every = 1  # the trainer's log_every_n_steps, read when training starts

    @staticmethod
    def _network(backbone, config: PotentialConfig, n_classes: int, refinement: str) -> DPNClassifier:
        potential = DenoisingPotential(config)
        if refinement == "potential":
            return DPNClassifier(backbone, potential, n_classes)
        matched = sum(p.numel() for p in potential.parameters())
        residual = ResidualMLP(config.feature_dim, matched_width(matched, config.feature_dim))
        count = sum(p.numel() for p in residual.parameters())
        log.info(f"residual_mlp control: {count:,} parameters in place of the potential's {matched:,}")
        return DPNClassifier(backbone, DenoisingPotential(replace(config, n_steps=0)), n_classes, residual)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def train(self, mode: bool = True) -> DPNLitModule:
        super().train(mode)
        if self.options.freeze_extractor:  # BatchNorm keeps the statistics stage 1 left
            self.net.extractor.eval()
        return self

    def _loss_and_logits(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        states = self.net.states(images)
        refined = states[-1]
        if self.options.potential_objective != "classification":
            refined = refined.detach()  # the potential answers to its own objective, not to the classifier
        logits = self.net.classifier(refined)
        return F.cross_entropy(logits, labels), logits, states

    def _potential_gain(self, states: list[Tensor]) -> Tensor:
        return self.net.potential.statistics([states[0], states[-1]]).gain.mean()

    def on_train_start(self) -> None:
        # sanity-check validation must not count towards the best accuracy
        self.val_acc_best.reset()
        self._log_every = self.trainer.log_every_n_steps
        if self.device.type == "cpu":
            # Lightning sets this at import so that probing CUDA never poisons a fork; then torch's optimizers
            # probe NVML (a dlopen, ~0.1 ms) at every step. A CPU run uses no CUDA: the cached check serves.
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

    def _diverged(self, what: str) -> DivergenceError:
        hp = self.hparams
        # the rate in force now (a scheduler moves it), not the configured one
        optimizers = self.trainer.optimizers if self._attached() else []
        lr = ", ".join(f"{group['lr']:.4g}" for o in optimizers for group in o.param_groups) or "?"
        return DivergenceError(
            f"training diverged at epoch {self.current_epoch}, global step {self.global_step}: {what}. Likely "
            f"cause: the learning rate (now {lr}; model.optimizer.lr sets it) or the refinement step (model.init_step_size="
            f"{hp.init_step_size}, now eta={self.net.potential.step_sizes().max().item() if self.net.potential.n_steps else 0:.4g})"
            " is too large; lower it, or model.init_step_limit. Checkpoints on disk are the last finite ones."
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        options, n_clean = self.options, len(labels)
        if options.noise_pairs:
            generator = seeded_generator(
                "noise_pairs", torch.initial_seed(), self.current_epoch, batch_idx, self.global_rank
            )
            noisy = self._paired_copy(images, labels, generator)
            images, labels = torch.cat([images, noisy]), torch.cat([labels, labels])
        # one host sync per step, on the loss: a non-finite refinement makes it non-finite too, and is named then
        with self.net.potential.finite_check_deferred():
            loss, logits, states = self._loss_and_logits(images, labels)
        if options.noise_pairs and options.consistency_weight:
            refined, clean = states[-1][n_clean:], states[0][:n_clean].detach()
            loss = loss + options.consistency_weight * consistency(refined, clean)
        every = self._log_every
        # when Lightning writes the loggers (tests/test_library_internals.py pins this cadence)
        log_step = (self.global_step + 1) % every == 0
        if log_step or self.global_step < every:
            # the components' label votes from every log_every_n_steps-th batch (and the first window): a
            # majority vote needs no census, and the responsibilities pass costs ~5% of a small model's step
            self.component_counts += component_label_counts(
                self.net.potential, states[-1].detach(), labels, self.hparams.n_classes
            )
        if options.center_update == "ema":
            self._step_features.append(states[0][:n_clean].detach())
        if not torch.isfinite(loss):
            try:
                self.net.potential.check_finite(states)
            except NonFiniteRefinementError as error:
                raise self._diverged(str(error).removeprefix("DenoisingPotential: ")) from None
            raise self._diverged(f"the loss is {loss.item()}")
        # update() rather than forward(): the per-batch accuracy would be computed and never logged
        self.train_acc.update(logits.detach(), labels)
        self._loss_window.append(loss.detach())
        if log_step:
            self.log("train/loss", torch.stack(self._loss_window).mean(), prog_bar=True)
            self._loss_window.clear()
        return loss

    def _paired_copy(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """The batch's pair: a corruption drawn from `generator`, or an attack on the current network."""
        spec = self.options.noise_pairs
        if spec["kind"] in ATTACKS:
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            return adversarial_copy(self.net, spec, images, labels, seed)
        return corrupt(images, spec["kind"], spec["severity"], generator)

    def on_train_epoch_start(self) -> None:
        self.component_counts.zero_()
        self._loss_window.clear()

    def _attached(self) -> bool:
        try:
            return self.trainer is not None
        except RuntimeError:  # Lightning's word for "not attached to a Trainer"
            return False

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step (Lightning calls it once per trainer.accumulate_grad_batches micro-batches),
        then center_update=ema on the clean features of all of them."""
        super().optimizer_step(*args, **kwargs)
        features, self._step_features = self._step_features, []
        potential = self.net.potential
        if features and potential.n_steps and potential.active:
            self._track_centers(torch.cat(features))

    @torch.no_grad()
    def _track_centers(self, features: Tensor) -> None:
        """EM-style: mu_k <- m mu_k + (1 - m) sum_b r_bk x_b / sum_b r_bk, summed over every DDP rank."""
        r = self.net.potential.responsibilities(features)
        weighted, mass = r.T @ features, r.sum(0)
        if self.trainer.world_size > 1:
            weighted = self.trainer.strategy.reduce(weighted, reduce_op="sum")
            mass = self.trainer.strategy.reduce(mass, reduce_op="sum")
        claimed = mass > 1e-6
        m, mu = self.options.center_momentum, self.net.potential.mu
        target = weighted[claimed] / mass[claimed, None]
        mu[claimed] = m * mu[claimed] + (1 - m) * target

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_acc, prog_bar=True)
        if self.net.potential.n_steps:
            self.log("refine/step_size", self.net.potential.step_sizes().mean().detach(), sync_dist=True)

    def _evaluate(self, batch, stage: str) -> list[Tensor]:
        images, labels = batch
        loss, logits, states = self._loss_and_logits(images, labels)
        acc, mean_loss, gain = (getattr(self, f"{stage}_{name}") for name in ("acc", "loss", "gain"))
        acc.update(logits, labels)
        mean_loss.update(loss)
        gain.update(self._potential_gain(states))
        self.log(f"{stage}/loss", mean_loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val")
        self.log(f"{stage}/potential_gain", gain)
        return states

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        states = self._evaluate(batch, "val")
        self._val_states.append([s.detach() for s in states])
        self._val_labels.append(batch[1])

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)
        if self._val_states and not self.trainer.sanity_checking:
            self._log_diagnostics()
        self._val_states, self._val_labels = [], []

    def _log_diagnostics(self) -> None:
        states = [torch.cat(step) for step in zip(*self._val_states, strict=True)]
        counts = self.component_counts
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts.clone(), reduce_op="sum")
        found = potential_diagnostics(
            self.net.potential,
            self.net.classifier,
            states,
            torch.cat(self._val_labels),
            counts.argmax(1) if counts.sum() > 0 else None,
        )
        self.log_dict({f"potential/{k}": v for k, v in found.items()}, sync_dist=True)
        gain = float(self.val_gain.compute())
        potential = self.net.potential
        if gain < 0 and potential.n_steps and potential.active:
            eta = float(potential.step_sizes().max())
            lam = float(torch.linalg.eigvalsh(potential.precision_matrices().detach()).max())
            log.warning(
                f"epoch {self.current_epoch}: the mean potential falls over the ascent (val/potential_gain="
                f"{gain:.3g} < 0). Likely cause: the step overshoots the modes (eta={eta:.3g}, largest "
                f"precision eigenvalue {lam:.3g}, eta*lambda_max={eta * lam:.3g}; stable below 2); lower "
                "model.init_step_size or model.init_step_limit"
            )

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _parameter_groups(self) -> list[Tensor] | list[dict[str, Any]]:
        """The trainable parameters; with `refinement_weight_decay` set, the refinement's own (the potential's
        mu, c, precisions and step size, or the control's MLP) in a group with that weight decay: the optimizer's
        decay would pull the centers to the origin, the precisions to zero and eta's raw value to 0 (eta 0.69)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = self.options.refinement_weight_decay
        if decay is None:
            return params
        modules = (self.net.potential, self.net.residual)
        own = {id(p) for m in modules if m is not None for p in m.parameters()}
        groups = [
            {"params": [p for p in params if id(p) not in own]},
            {"params": [p for p in params if id(p) in own], "weight_decay": decay},
        ]
        return [group for group in groups if group["params"]]

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise RuntimeError("DPNLitModule was built without an optimizer: it can evaluate but not train")
        optimizer = self.optimizer_factory(params=self._parameter_groups())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
