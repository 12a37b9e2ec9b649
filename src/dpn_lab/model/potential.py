"""The denoising potential: a Gaussian-mixture log-density over feature space, climbed by gradient ascent.

For a feature vector x in R^D and K components with centers mu_i, log-weights c_i (w_i = exp(c_i)) and
precision factors A_i (P_i = A_i^T A_i):

    q_i(x)      = || A_i (x - mu_i) ||^2
    phi(x)      = logsumexp_i ( c_i - q_i(x) / 2 )
    r_i(x)      = softmax_i ( c_i - q_i(x) / 2 )                       (responsibilities)
    grad phi(x) = - sum_i r_i(x) A_i^T A_i (x - mu_i)
    x_{t+1}     = x_t + eta * grad phi(x_t)

With `step=noise_model` the one step is Tweedie's formula for features observed with noise of mean b and
covariance N (Miyasawa 1961; Efron 2011):

    x_1         = (x_0 - b) + N grad phi(x_0 - b)

which is the posterior mean E[clean | x_0] when phi is the noisy features' log-density: the clean mixture
(pi_i, mu_i, S_i) convolved with the noise, P_i = (S_i + N)^-1, c_i = log pi_i + 1/2 log det P_i
(`dpn_lab.model.mixture_init.convolve_with_noise` makes it from a fit).

Every covariance family is written as P_i = diag(a_i)^2 + F_i^T F_i, i.e. A_i = [diag(a_i); F_i]:

    full       F_i = A_i (D x D), no diagonal term
    diag       a_i in R^D, no F
    spherical  a_i = s_i * 1 (one scale per component)
    lowrank    a_i in R^D and F_i = U_i^T (r x D): P_i = diag(a_i^2) + U_i U_i^T

How the gradient and the unrolled ascent are computed (two GEMMs a step, a precision form for wide factors,
hand-written backward passes) is in `dpn_lab.model.ascent_kernels`; `gradient_impl=autograd` is the
reference the tests hold them to.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dpn_lab.errors import NonFiniteRefinementError
from dpn_lab.model.ascent_kernels import (
    FactorForm,
    PrecisionForm,
    closed_form_gradient,
    fused_ascent,
    in_parameter_dtype,
    quadratic_forms,
)
from dpn_lab.model.options import PotentialConfig


@dataclass(frozen=True)
class AscentStatistics:
    """phi and r at each state x_0 .. x_T of an ascent (`DenoisingPotential.statistics`), as torchdeq's solvers
    return theirs beside the fixed point: what the logs, the diagnostics and the evaluations read."""

    potential: Tensor  # (T+1) x B: phi(x_t)
    responsibilities: Tensor  # (T+1) x B x K: r(x_t)

    @property
    def gain(self) -> Tensor:
        """phi(x_T) - phi(x_0) (B): how far up the potential the ascent climbed."""
        return self.potential[-1] - self.potential[0]


class DenoisingPotential(nn.Module):
    """A learnable mixture potential phi over R^D that refines features by `n_steps` ascent steps.

    Built from a PotentialConfig (dpn_lab.model.options: every option, its rule and meaning). A non-finite state during the
    ascent raises NonFiniteRefinementError naming the step.
    """

    def __init__(self, config: PotentialConfig) -> None:
        super().__init__()
        self.config = config
        dim, n_components, n_steps = config.feature_dim, config.n_components, config.n_steps
        covariance, rank = config.covariance, config.rank
        self.dim, self.n_components, self.n_steps = dim, n_components, n_steps
        self.covariance, self.gradient_impl, self.grad_mode = (
            covariance,
            config.gradient_impl,
            config.grad_mode,
        )
        self.checkpoint_steps = config.checkpoint_steps
        self.active = True  # False skips the ascent (a warm-up of the extractor before the centers are set)
        self._checks_finite = (
            True  # False: the caller checks a downstream loss instead (finite_check_deferred)
        )

        self.mu = nn.Parameter(torch.randn(n_components, dim))
        self.c = nn.Parameter(torch.zeros(n_components))
        scale = math.sqrt(config.init_precision)
        diag_width = {"diag": dim, "lowrank": dim, "spherical": 1}.get(covariance)
        self.precision_diag = (
            nn.Parameter(torch.full((n_components, diag_width), scale)) if diag_width else None
        )
        if covariance == "full":
            self.precision_factor = nn.Parameter(scale * torch.eye(dim).repeat(n_components, 1, 1))
        elif covariance == "lowrank":
            # Small random U: exactly zero would give every component the same (zero) gradient direction.
            self.precision_factor = nn.Parameter(0.01 * scale * torch.randn(n_components, rank, dim))
        else:
            self.precision_factor = None
        self.step_size_raw = nn.Parameter(torch.full((1,), _inverse_softplus(config.init_step_size)))
        if config.step == "noise_model":  # b and N, measured from pairs when fitting starts
            self.register_buffer("noise_shift", torch.zeros(dim))
            self.register_buffer("noise_covariance", torch.zeros(dim, dim))

    # ----------------------------------------------------------------------------------------------
    # The mathematics

    @in_parameter_dtype
    def compute_potential(self, x: Tensor) -> Tensor:
        """phi(x) = logsumexp_i(c_i - ||A_i (x - mu_i)||^2 / 2) for a batch x (B x D) -> (B)."""
        return self._log_density(x, self._factor_form())

    def responsibilities(self, x: Tensor) -> Tensor:
        """r_i(x) = softmax_i(c_i - q_i(x) / 2) (B x K): which component claims each point."""
        return torch.softmax(self._component_logits(x), dim=-1)

    @torch.no_grad()
    def statistics(self, states: Sequence[Tensor]) -> AscentStatistics:
        """phi(x_t) and r(x_t) of every state (each B x D), from one c_i - q_i(x_t) / 2 each: its logsumexp is
        phi, its softmax r."""
        logits = torch.stack([self._component_logits(state) for state in states])
        return AscentStatistics(torch.logsumexp(logits, dim=-1), torch.softmax(logits, dim=-1))

    @in_parameter_dtype
    def compute_gradient(self, x: Tensor) -> Tensor:
        """grad phi(x) = -sum_i r_i(x) P_i (x - mu_i) (B x D), by `gradient_impl`."""
        return self._gradient(x, self._factor_form())

    @in_parameter_dtype
    def refine(self, x: Tensor) -> list[Tensor]:
        """States x_0 .. x_T of x_{t+1} = x_t + eta grad phi(x_t), each still in the autograd graph (as
        `grad_mode` allows). The one place a path is chosen:

            closed_form, unrolled   all T steps as one autograd node (ascent_kernels.fused_ascent), in
                                    precision form where the factor is wide (uses_precision_form)
            closed_form, detach     one closed-form gradient per step, the state detached between steps
            autograd                torch.autograd.grad per step: the reference the tests hold the rest to
            step=noise_model        Tweedie's one step, its gradient by `gradient_impl`
        """
        states = [x]
        if not self.active or self.n_steps == 0:
            return states
        etas = self.step_sizes()
        if self.config.step == "noise_model":
            y = x - self.noise_shift
            states.append(y + self._gradient(y, self._factor_form()) @ self.noise_covariance)  # N symmetric
        elif self.gradient_impl == "closed_form" and self.grad_mode == "unrolled":
            form = self._precision_form() if self.uses_precision_form else self._factor_form()
            recompute = self.checkpoint_steps or not torch.is_grad_enabled()  # no grad: nothing to keep y for
            states = list(fused_ascent(x, etas, form, recompute).unbind(0))
        else:
            f = self._factor_form()
            # the closed form checkpoints inside its own backward (it recomputes only y); autograd needs the
            # generic per-step checkpoint
            use_checkpoint = (
                self.checkpoint_steps
                and self.gradient_impl == "autograd"
                and self.grad_mode == "unrolled"
                and torch.is_grad_enabled()
            )
            for t in range(self.n_steps):
                if self.grad_mode == "detach" and t > 0:
                    x = x.detach()
                x = (
                    checkpoint(self._step, x, etas[t], f, use_reentrant=False)
                    if use_checkpoint
                    else self._step(x, etas[t], f)
                )
                states.append(x)
        if self._checks_finite:
            self.check_finite(states)
        return states

    def forward(self, x: Tensor) -> Tensor:
        """Refine x (B x D) by T ascent steps -> x_T (`refine` gives every state)."""
        return self.refine(x)[-1]

    @property
    def uses_precision_form(self) -> bool:
        """Whether the unrolled ascent runs in precision form: 3 GEMMs of B x D x K*D a step against the
        factor form's 6 of B x D x K*R, so where R > D/2 (`full`; `lowrank` with rank > D/2)."""
        return self.precision_factor is not None and 2 * self.precision_factor.shape[1] > self.dim

    def _factor_form(self) -> FactorForm:
        factor_all = factor_offset = None
        rank = 0
        if self.precision_factor is not None:
            K, rank, D = self.precision_factor.shape
            factor_all = self.precision_factor.reshape(K * rank, D)
            factor_offset = (self.precision_factor @ self.mu.unsqueeze(-1)).reshape(K * rank)
        return FactorForm(self.mu, self.c, self.precision_diag, factor_all, factor_offset, rank)

    def _precision_form(self) -> PrecisionForm:
        return PrecisionForm(self.mu, self.c, self.precision_matrices())

    @in_parameter_dtype
    def _component_logits(self, x: Tensor) -> Tensor:
        return self._logits(x, self._factor_form())

    def _logits(self, x: Tensor, f: FactorForm) -> Tensor:
        """c_i - q_i(x) / 2 (B x K): phi is their logsumexp, r their softmax."""
        q, _, _ = quadratic_forms(x, f.mu, f.diag, f.factor_all, f.factor_offset, f.rank)
        return f.c - 0.5 * q

    def _log_density(self, x: Tensor, f: FactorForm) -> Tensor:
        return torch.logsumexp(self._logits(x, f), dim=-1)

    def _gradient(self, x: Tensor, f: FactorForm) -> Tensor:
        if self.gradient_impl == "closed_form":
            return closed_form_gradient(x, f, self.checkpoint_steps)
        # the reference: keep the graph of the gradient only when the caller is building one (training)
        build_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._log_density(leaf, f).sum(), leaf, create_graph=build_graph)
        return grad

    def _step(self, x: Tensor, eta: Tensor, f: FactorForm) -> Tensor:
        return x + eta * self._gradient(x, f)

    # ----------------------------------------------------------------------------------------------
    # Parameters as a researcher reads them

    def weights(self) -> Tensor:
        """The paper's weights w_i = exp(c_i), normalised to sum to 1 (K).

        They weigh unnormalised Gaussian kernels: the mixture's proportions are pi_i ~ w_i / sqrt(det P_i).
        """
        return torch.softmax(self.c, dim=0)

    def precision_matrices(self) -> Tensor:
        """P_i = A_i^T A_i = diag(a_i)^2 + F_i^T F_i (K x D x D)."""
        P = torch.zeros(self.n_components, self.dim, self.dim, dtype=self.mu.dtype, device=self.mu.device)
        if self.precision_factor is not None:
            P = P + self.precision_factor.transpose(1, 2) @ self.precision_factor
        if self.precision_diag is not None:
            P = P + torch.diag_embed(self.precision_diag.expand(-1, self.dim) ** 2)
        return P

    def covariance_matrices(self) -> Tensor:
        """Sigma_i = P_i^{-1} (K x D x D)."""
        return torch.linalg.inv(self.precision_matrices())

    def precision_eigenvalue_bound(self) -> Tensor:
        """An upper bound on max_i lambda_max(P_i), cheap and differentiable.

        lambda_max(diag(a)^2 + F^T F) <= max_d a_d^2 + ||F||_2^2, and ||F||_2^2 <= min(||F||_F^2,
        ||F||_1 ||F||_inf) (the second is exact for diagonal F, e.g. the identity start).
        """
        bound = torch.zeros(self.n_components, dtype=self.mu.dtype, device=self.mu.device)
        if self.precision_diag is not None:
            bound = bound + (self.precision_diag**2).amax(dim=1)
        if self.precision_factor is not None:
            absF = self.precision_factor.abs()
            frobenius = (self.precision_factor**2).sum(dim=(1, 2))
            holder = absF.sum(dim=1).amax(dim=1) * absF.sum(dim=2).amax(dim=1)
            bound = bound + torch.minimum(frobenius, holder)
        return bound.amax()

    def step_sizes(self) -> Tensor:
        """eta_t for t = 0..T-1 (T): the one learnable eta, for every step."""
        eta = F.softplus(self.step_size_raw)
        return eta[torch.zeros(self.n_steps, dtype=torch.long, device=eta.device)]

    # ----------------------------------------------------------------------------------------------
    # Evaluation at other T, the finiteness check

    @contextmanager
    def finite_check_deferred(self) -> Iterator[None]:
        """Inside the block refine() skips its host-side finiteness check: the caller checks something that a
        non-finite state would spoil (the training loss) and calls check_finite(states) to name the step."""
        self._checks_finite = False
        try:
            yield
        finally:
            self._checks_finite = True

    @contextmanager
    def using_steps(self, n_steps: int) -> Iterator[None]:
        """Run the ascent with another number of steps inside the block (evaluation at other T)."""
        trained = self.n_steps
        self.n_steps = n_steps
        try:
            yield
        finally:
            self.n_steps = trained

    def set_step_size(self, value: float) -> None:
        """Set eta to `value`."""
        with torch.no_grad():
            self.step_size_raw.fill_(_inverse_softplus(value))

    @torch.compiler.disable  # a host-side check: compiled graphs end before it instead of breaking
    def check_finite(self, states: list[Tensor]) -> None:
        """NonFiniteRefinementError naming the first step whose state is not finite (one host sync)."""
        # One host sync for the whole ascent, not one per step.
        finite = torch.isfinite(torch.stack(states)).flatten(1).all(1)
        if bool(finite.all()):
            return
        step = int((~finite).nonzero()[0])
        if step == 0:
            raise NonFiniteRefinementError(
                "DenoisingPotential: the input features are not finite before refinement; the feature "
                "extractor diverged (lower the learning rate)"
            )
        eta = self.step_sizes()[step - 1].item()
        bound = self.precision_eigenvalue_bound().item()
        raise NonFiniteRefinementError(
            f"DenoisingPotential: the state became non-finite at refinement step {step} of {self.n_steps} "
            f"(eta={eta:.4g}, largest precision eigenvalue <= {bound:.4g}, eta*bound={eta * bound:.4g}; "
            "the ascent is only stable for eta*lambda_max < 2): lower the step size or learning rate, "
            "or model.init_step_limit"
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, n_components={self.n_components}, n_steps={self.n_steps}, "
            f"covariance={self.covariance}, gradient_impl={self.gradient_impl}, grad_mode={self.grad_mode}"
        )


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))
