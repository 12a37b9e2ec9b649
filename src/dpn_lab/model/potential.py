"""The denoising potential: a Gaussian-mixture log-density over feature space, climbed by gradient ascent.

For a feature vector x in R^D and K components with centers mu_i, log-weights c_i (w_i = exp(c_i)) and
precision factors A_i (P_i = A_i^T A_i):

    q_i(x)      = || A_i (x - mu_i) ||^2
    phi(x)      = logsumexp_i ( c_i - q_i(x) / 2 )
    r_i(x)      = softmax_i ( c_i - q_i(x) / 2 )                       (responsibilities)
    grad phi(x) = - sum_i r_i(x) A_i^T A_i (x - mu_i)
    x_{t+1}     = x_t + eta_t * grad phi(x_t)   [ + sqrt(2 eta_t tau) * noise, training only ]

Every precision family is written as P_i = diag(a_i)^2 + F_i^T F_i, i.e. A_i = [diag(a_i); F_i]:

    full       F_i = A_i (D x D), no diagonal term
    diag       a_i in R^D, no F
    spherical  a_i = s_i * 1 (one scale per component)
    lowrank    a_i in R^D and F_i = U_i^T (r x D): P_i = diag(a_i^2) + U_i U_i^T

q is always computed as a squared norm of A_i (x - mu_i), never as x^T P x - 2 mu^T P x + mu^T P mu, which
cancels badly in float32. The factor part runs as two GEMMs per step and never builds a B x K x D x D tensor:

    y    = x @ F_all^T - b            F_all = F.reshape(K*R, D), b = (F_i mu_i) stacked     (B x K*R)
    grad = -(r * y).reshape(B, K*R) @ F_all

Where the factor is wide (R > D/2: always for `full`), the unrolled ascent runs in precision form instead,
with P_i = A_i^T A_i formed once per forward (symmetric, K x D x D):

    y_i  = P_i (x - mu_i) = x @ P_all^T - P_i mu_i     one GEMM per step         (B x K*D)
    q_i  = < x - mu_i, y_i >                          no x^T P x - 2 mu^T P x + mu^T P mu either
    grad = -sum_i r_i y_i                             a weighted sum, no second GEMM

and its backward takes two GEMM-sized products per step, sum_i P_i (r_i G + dl_i (x - mu_i)) for dx and
sum_b x v_i^T for dP (the rest of dmu, dc and dP are K-sized sums finished once per backward), then
dA_i = A_i (dP_i + dP_i^T) once (autograd, through P = A^T A): 3 GEMMs a step instead of 6.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from dpn_lab.errors import ConfigError, NonFiniteRefinementError, choice_error
from dpn_lab.model.options import GRAD_MODES, GRADIENT_IMPLS, PRECISIONS, STEP_SIZES


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise choice_error(name, value, allowed)


def _in_parameter_dtype(method: Callable[..., Any]) -> Callable[..., Any]:
    """The dtype policy of the mixture under mixed precision (trainer.precision=bf16-mixed or 16-mixed):
    autocast off, x cast to the parameters' dtype (float32), results in that dtype. In bf16's 8-bit
    mantissa y_i = P_i x - P_i mu_i and the softmax of q lose everything that separates the components;
    the two custom autograd Functions then also see one dtype in forward and backward."""

    @functools.wraps(method)
    def wrapped(self: DenoisingPotential, x: Tensor) -> Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return method(self, x)
        with torch.autocast(x.device.type, enabled=False):
            return method(self, x.to(self.mu.dtype))

    return wrapped


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


@dataclass
class _Frozen:
    """Per-forward quantities that do not depend on x: computed once, not once per step."""

    mu: Tensor  # K x D
    c: Tensor  # K
    diag: Tensor | None  # K x D or K x 1 (a_i)
    factor_all: Tensor | None  # K*R x D (F stacked)
    factor_offset: Tensor | None  # K*R (F_i mu_i stacked)
    rank: int  # R


def _projections(
    x: Tensor,
    mu: Tensor,
    diag: Tensor | None,
    factor_all: Tensor | None,
    factor_offset: Tensor | None,
    rank: int,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """q (B x K) and the two parts of y_i = A_i (x - mu_i): a_i * (x - mu_i) (B x K x D) and F_i x - F_i mu_i
    (B x K x R)."""
    q = x.new_zeros(x.shape[0], mu.shape[0])
    y_diag = y_factor = None
    if diag is not None:
        y_diag = diag * (x.unsqueeze(1) - mu)
        q = q + torch.linalg.vecdot(y_diag, y_diag)
    if factor_all is not None:
        y_factor = torch.addmm(factor_offset, x, factor_all.T, beta=-1).view(x.shape[0], -1, rank)  # GEMM 1
        q = q + torch.linalg.vecdot(y_factor, y_factor)
    return q, y_diag, y_factor


def _closed_form_forward(x, mu, c, diag, factor_all, factor_offset, rank):
    """grad phi(x) = -sum_i r_i A_i^T y_i (B x D), the responsibilities r (B x K) and y_factor (B x K x R)."""
    q, y_diag, y_factor = _projections(x, mu, diag, factor_all, factor_offset, rank)
    r = torch.softmax(c - 0.5 * q, dim=-1)
    grad = torch.zeros_like(x)
    if y_diag is not None:
        grad = grad - torch.einsum("bk,bkd->bd", r, diag * y_diag)
    if y_factor is not None:
        grad = grad - (r.unsqueeze(-1) * y_factor).flatten(1) @ factor_all  # GEMM 2
    return grad, r, y_factor


def _closed_form_backward(G, x, mu, diag, factor_all, factor_offset, r, y_factor, rank):
    """With G = dL/d(grad phi(x)): (dx, dmu, dc, d diag, dF, d(F mu)); y_factor None recomputes it.

    dr_i = -<A_i G, y_i>,   dl_i = r_i (dr_i - sum_j r_j dr_j)       (softmax),   dc_i = sum_b dl_i
    dy_i = -r_i A_i G - dl_i y_i                                     (q_i = ||y_i||^2 enters as -q_i/2)
    dx = sum_i A_i^T dy_i;   factor: dF_i = sum_b (dy_i x^T - r_i y_i G^T),  d(F_i mu_i) = -sum_b dy_i
    diagonal: da_i = sum_b (dy_i (x - mu_i) - r_i y_i G),  dmu_i = -sum_b a_i dy_i
    """
    dr = torch.zeros_like(r)
    if diag is not None:
        diff = x.unsqueeze(1) - mu  # elementwise: always recomputed, never stored
        y_diag, aG = diag * diff, diag * G.unsqueeze(1)
        dr = dr - torch.linalg.vecdot(aG, y_diag)
    if factor_all is not None:
        if y_factor is None:
            y_factor = torch.addmm(factor_offset, x, factor_all.T, beta=-1).view(x.shape[0], -1, rank)
        FG = (G @ factor_all.T).view_as(y_factor)
        dr = dr - torch.linalg.vecdot(FG, y_factor)
    dl = r * (dr - (r * dr).sum(-1, keepdim=True))
    r3, dl3 = r.unsqueeze(-1), dl.unsqueeze(-1)
    dx = torch.zeros_like(x)
    dmu = ddiag = dF = db = None
    # aG and FG are fresh buffers: they become -dy in place (fewer B x K x R allocations and passes).
    if diag is not None:
        dy = aG.mul_(r3).addcmul_(dl3, y_diag).neg_()
        ddiff = diag * dy
        dx = dx + ddiff.sum(1)
        dmu = -ddiff.sum(0)
        ddiag = (dy * diff - r3 * y_diag * G.unsqueeze(1)).sum(0)
        ddiag = ddiag.sum(-1, keepdim=True) if diag.shape[-1] == 1 else ddiag
    if factor_all is not None:
        neg_dy = FG.mul_(r3).addcmul_(dl3, y_factor).flatten(1)
        dx = dx - neg_dy @ factor_all
        dF = torch.addmm(neg_dy.T @ x, (r3 * y_factor).flatten(1).T, G).neg_()
        db = neg_dy.sum(0)
    return dx, dmu, dl.sum(0), ddiag, dF, db


class _ClosedFormGradient(torch.autograd.Function):
    """One step's grad phi(x) and its backward written out (_closed_form_backward has the formulas).

    Autograd over the forward would save several B x K x R tensors per step; this saves x, r and y (or
    only x and r with `recompute`, redoing GEMM 1 in backward). Used by grad_mode=detach and under Langevin
    noise, and by compute_gradient; the plain unrolled ascent runs as one _FusedAscent.
    """

    @staticmethod
    def forward(ctx, x, mu, c, diag, factor_all, factor_offset, rank: int, recompute: bool):
        grad, r, y_factor = _closed_form_forward(x, mu, c, diag, factor_all, factor_offset, rank)
        ctx.rank = rank
        ctx.save_for_backward(x, mu, diag, factor_all, factor_offset, r, None if recompute else y_factor)
        return grad

    @staticmethod
    @once_differentiable  # first derivatives only: a second backward raises instead of being silently wrong
    def backward(ctx, G):
        x, mu, diag, factor_all, factor_offset, r, y_factor = ctx.saved_tensors
        grads = _closed_form_backward(G, x, mu, diag, factor_all, factor_offset, r, y_factor, ctx.rank)
        return *grads, None, None


class _FusedAscent(torch.autograd.Function):
    """The whole unrolled ascent x_{t+1} = x_t + eta_t g_t, g_t = grad phi(x_t), t < T, as one autograd node.

    The forward writes every state, h_t = -g_t and responsibility into preallocated (T+1) x B x D, T x B x D
    and T x B x K tensors; y_t is kept for backward (T x B x K*R), or, with `recompute` (checkpoint_steps,
    and always without grad), one B x K*R buffer serves every step and backward redoes GEMM 1. Backward
    runs the steps in reverse with a_t = dL/dx_t:
        a_t = (direct dL/dx_t) + a_{t+1} + J_t^T G_t,   G_t = eta_t a_{t+1},   dL/d eta_t = <a_{t+1}, g_t>,
    J_t^T G_t and the step's parameter gradients from _closed_form_backward, summed over the steps.
    Returns the stacked states ((T+1) x B x D).
    """

    @staticmethod
    def forward(ctx, x0, etas, mu, c, diag, factor_all, factor_offset, rank: int, recompute: bool):
        T, (B, D), K = etas.shape[0], x0.shape, mu.shape[0]
        states, h, resp = x0.new_empty(T + 1, B, D), x0.new_empty(T, B, D), x0.new_empty(T, B, K)
        states[0] = x0
        factor = factor_all is not None
        ys = x0.new_empty(1 if recompute else T, B, K * rank) if factor else None
        # r * y: in place over y when y is not kept, else one reused buffer
        ry = ys[0].view(B, K, rank) if factor and recompute else x0.new_empty(B, K, rank) if factor else None
        for t in range(T):
            x = states[t]
            q = x.new_zeros(B, K)
            if diag is not None:
                y_diag = diag * (x.unsqueeze(1) - mu)
                q += torch.linalg.vecdot(y_diag, y_diag)
            if factor:
                y = ys[0 if recompute else t]
                y3 = torch.addmm(factor_offset, x, factor_all.T, beta=-1, out=y).view(B, K, rank)  # GEMM 1
                q += torch.linalg.vecdot(y3, y3)
            r = resp[t]
            torch.add(c, q, alpha=-0.5, out=r)
            r.copy_(r.softmax(dim=-1))
            if factor:
                torch.mm(torch.mul(y3, r.unsqueeze(-1), out=ry).view(B, -1), factor_all, out=h[t])  # GEMM 2
            else:
                h[t].zero_()
            if diag is not None:
                h[t] += torch.einsum("bk,bkd->bd", r, diag * y_diag)
            torch.addcmul(x, etas[t], h[t], value=-1, out=states[t + 1])
        ctx.rank = rank
        kept = None if recompute else ys  # a recomputing backward writes its own buffer, never a saved tensor
        ctx.save_for_backward(states, h, resp, kept, etas, mu, diag, factor_all, factor_offset)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, d_states):
        states, h, resp, ys, etas, mu, diag, factor_all, factor_offset = ctx.saved_tensors
        T, B, R = len(etas), states.shape[1], ctx.rank
        d_etas = torch.zeros_like(etas)
        totals: list[Tensor | None] = [None] * 5  # mu, c, diag, F, F mu: summed over the steps
        a = d_states[T].clone()
        for t in reversed(range(T)):
            d_etas[t] = -torch.dot(a.flatten(), h[t].flatten())
            y = ys[t].view(B, -1, R) if ys is not None else None  # None: recomputed
            dx, *parts = _closed_form_backward(
                etas[t] * a, states[t], mu, diag, factor_all, factor_offset, resp[t], y, R
            )
            a.add_(dx).add_(d_states[t])
            totals = [p if s is None else s.add_(p) for s, p in zip(totals, parts, strict=True)]
        return a, d_etas, *totals, None, None


def _precision_form_backward_step(G, x, P_all, neg_offset, r, y, v, vT_x):
    """One step of the precision form backward with G = dL/d(grad phi(x)): returns dx and dl, and adds the
    step's batch GEMM for dP to `vT_x`. With d_i = x - mu_i, y_i = P_i d_i, grad = -sum_i r_i y_i and
    q_i = <d_i, y_i> entering r as -q_i/2 (P_i symmetric):

    dr_i = -<G, y_i>,   dl_i = r_i (dr_i - sum_j r_j dr_j)
    dx   = -sum_i P_i (r_i G + dl_i d_i) = -(v' @ P_all) + dl @ (P_i mu_i)    v'_i = r_i G + dl_i x: one GEMM
    dP_i = sum_b w_i d_i^T   with  w_i = -r_i G - dl_i d_i / 2 = -v_i + dl_i mu_i / 2,   v_i = r_i G + dl_i x / 2

    The batch enters dP only through sum_b x v_i^T (one (D x B) @ (B x K*D) GEMM); the rest of dmu, dc and
    dP is linear in dl and r and is finished once per backward by `_precision_form_parameter_grads`. `v`
    (B x K x D) is a buffer every step reuses: it holds v' for the dx GEMM, then v.
    """
    B, K, D = y.shape
    dr = torch.bmm(G.unsqueeze(1), y.transpose(1, 2)).view(B, K).neg_()
    dl = r * (dr - (r * dr).sum(-1, keepdim=True))
    dl3, x3 = dl.unsqueeze(-1), x.unsqueeze(1)
    v = torch.mul(r.unsqueeze(-1), G.unsqueeze(1), out=v).addcmul_(dl3, x3).view(B, K * D)  # v'
    dx = torch.addmm(torch.mm(v, P_all), dl, neg_offset.view(K, D)).neg_()  # GEMM: sum_i P_i v'_i
    v.view(B, K, D).addcmul_(dl3, x3, value=-0.5)  # v' -> v
    vT_x.addmm_(x.T, v)  # GEMM: sum_b x v_i^T, laid out D x K*D
    return dx, dl


def _precision_form_parameter_grads(vT_x, Gs, xs, resp, dls, mu, P):
    """(dmu, dc, dP) from the steps' sum_b x v_i^T (`vT_x`, D x K*D) and their G, x, r and dl stacked over
    the T steps (T*B rows). With S_i = sum dl_i (= dc_i), RG_i = sum r_i G and DX_i = sum dl_i x, all over
    steps and batch:

    dmu_i = sum (r_i P_i G + dl_i y_i) = P_i (RG_i + DX_i - S_i mu_i)
    dP_i  = -sum v_i x^T + mu_i DX_i^T / 2 + (RG_i + DX_i / 2 - S_i mu_i / 2) mu_i^T    (sum v_i x^T: vT_x read
                                                                                  transposed, no copy)
    """
    K, D = mu.shape
    dc = dls.sum(0)
    rG, dlx = resp.T @ Gs, dls.T @ xs
    dmu = torch.bmm(P, (rG + dlx - dc.unsqueeze(-1) * mu).unsqueeze(-1)).squeeze(-1)
    left = torch.stack([0.5 * mu, rG + 0.5 * dlx - 0.5 * dc.unsqueeze(-1) * mu], dim=-1)  # K x D x 2
    right = torch.stack([dlx, mu], dim=1)  # K x 2 x D
    dP = torch.baddbmm(vT_x.view(D, K, D).permute(1, 2, 0), left, right, beta=-1)
    return dmu, dc, dP


class _FusedPrecisionAscent(torch.autograd.Function):
    """The unrolled ascent in precision form (module docstring) as one autograd node: _FusedAscent's layout
    (states, h_t = -g_t, responsibilities, y_t kept or recomputed) with P (K x D x D) in place of the factors.
    Backward returns dP summed over the steps; autograd carries it to A through P = A^T A."""

    @staticmethod
    def forward(ctx, x0, etas, mu, c, P, recompute: bool):
        T, (B, D), K = etas.shape[0], x0.shape, mu.shape[0]
        P_all = P.reshape(K * D, D)
        P_all_T = P.permute(2, 0, 1).reshape(D, K * D)  # a contiguous copy: ~15% faster GEMMs than P_all.T
        neg_offset = torch.bmm(P, mu.unsqueeze(-1)).reshape(K * D).neg_()  # -P_i mu_i, once per forward
        states, h, resp = x0.new_empty(T + 1, B, D), x0.new_empty(T, B, D), x0.new_empty(T, B, K)
        ys = x0.new_empty(1 if recompute else T, B, K * D)
        diff = x0.new_empty(B, K, D)
        states[0] = x0
        for t in range(T):
            x = states[t]
            y = torch.addmm(neg_offset, x, P_all_T, out=ys[0 if recompute else t]).view(B, K, D)  # GEMM
            r = resp[t]
            q = torch.sub(x.unsqueeze(1), mu, out=diff).mul_(y).sum(-1)  # in place: no fresh B x K x D
            torch.add(c, q, alpha=-0.5, out=r)
            r.copy_(r.softmax(dim=-1))
            torch.bmm(r.unsqueeze(1), y, out=h[t].unsqueeze(1))
            torch.addcmul(x, etas[t], h[t], value=-1, out=states[t + 1])
        ctx.save_for_backward(
            states, h, resp, None if recompute else ys, etas, mu, P_all, P_all_T, neg_offset
        )
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, d_states):
        states, h, resp, ys, etas, mu, P_all, P_all_T, neg_offset = ctx.saved_tensors
        T, B, K, D = len(etas), states.shape[1], mu.shape[0], mu.shape[1]
        v, vT_x = states.new_empty(B, K, D), states.new_zeros(D, K * D)
        # per step: a_{t+1} = dL/dx_{t+1}, G_t = eta_t a_{t+1} and dl_t, kept for the sums over all steps
        adjoints, Gs, dls = states.new_empty(T, B, D), states.new_empty(T, B, D), resp.new_empty(T, B, K)
        recomputed = states.new_empty(B, K * D) if ys is None else None
        a = d_states[T]
        for t in reversed(range(T)):
            adjoints[t] = a
            x = states[t]
            y = ys[t] if ys is not None else torch.addmm(neg_offset, x, P_all_T, out=recomputed)
            dx, dls[t] = _precision_form_backward_step(
                torch.mul(a, etas[t], out=Gs[t]), x, P_all, neg_offset, resp[t], y.view(B, K, D), v, vT_x
            )
            a = dx.add_(a).add_(d_states[t])
        d_etas = -torch.linalg.vecdot(adjoints.view(T, -1), h.view(T, -1))
        dmu, dc, dP = _precision_form_parameter_grads(
            vT_x,
            Gs.view(T * B, D),
            states[:T].reshape(T * B, D),
            resp.view(T * B, K),
            dls.view(T * B, K),
            mu,
            P_all.view(K, D, D),
        )
        return a, d_etas, dmu, dc, dP, None


@dataclass(frozen=True)
class PotentialConfig:
    """The potential's arguments and their defaults: the one place they are written.

    `conf/model/dpn.yaml` repeats them as flat `model.*` keys and `dpn_lab.config` validates them; a test
    fails when either drifts from this class. Checkpoints store them as plain values.

    Args:
        feature_dim: feature dimension D (the extractor's output).
        n_components: number of mixture components K.
        n_steps: ascent steps T; 0 makes the module the identity (the ablation).
        precision: `full`, `diag`, `spherical` or `lowrank` (see the module docstring).
        rank: rank r of the low-rank term (`lowrank` only).
        step_size: `shared` (one eta) or `per_step` (eta_t for each step); eta = softplus(raw) > 0.
        init_step_size: eta at construction.
        init_precision: every P_i starts as init_precision * I (until KMeansInit fits them to features).
        gradient_impl: `closed_form` (two GEMMs) or `autograd` (torch.autograd.grad, the reference).
        grad_mode: how the loss back-propagates through the steps.
            `unrolled` keeps the whole graph: every step trains mu, A, c and eta, and dL/dx_0 reaches the
            feature extractor.
            `detach` is the seed paper's literal recipe (the state is detached before every step after the
            first): only the last step is trained, and for n_steps >= 2 the feature extractor receives
            NO gradient through the refinement at all (dL/dx_0 = 0). Kept for comparison.
        checkpoint_steps: with `unrolled`, store O(B*(D+K)) per step instead of O(B*K*R) and recompute
            the rest in the backward pass (closed_form: one GEMM per step; autograd: the whole step).
        langevin_temperature: tau > 0 adds sqrt(2 eta tau) Gaussian noise per step while training.
        bound_step_size: divide eta by an upper bound on max_i lambda_max(P_i), so that eta < 2 keeps the
            ascent stable however large A grows (eta then counts in units of 1 / lambda_max).
    """

    feature_dim: int = 32
    n_components: int = 16
    n_steps: int = 5
    precision: str = "diag"
    rank: int = 4
    step_size: str = "shared"
    init_step_size: float = 0.1
    init_precision: float = 1.0
    gradient_impl: str = "closed_form"
    grad_mode: str = "unrolled"
    checkpoint_steps: bool = False
    langevin_temperature: float = 0.0
    bound_step_size: bool = False

    def __post_init__(self) -> None:
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("step_size", self.step_size, STEP_SIZES)
        _check_choice("gradient_impl", self.gradient_impl, GRADIENT_IMPLS)
        _check_choice("grad_mode", self.grad_mode, GRAD_MODES)
        for name, low in (("feature_dim", 1), ("n_components", 1), ("n_steps", 0)):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
        if self.precision == "lowrank" and not 1 <= self.rank <= self.feature_dim:
            raise ConfigError(
                f"rank={self.rank!r} must be between 1 and feature_dim={self.feature_dim} for precision='lowrank'"
            )
        if self.init_step_size <= 0 or self.init_precision <= 0:
            raise ConfigError("init_step_size and init_precision must be > 0")
        if self.langevin_temperature < 0:
            raise ConfigError(f"langevin_temperature={self.langevin_temperature!r} must be >= 0")


class DenoisingPotential(nn.Module):
    """A learnable mixture potential phi over R^D that refines features by `n_steps` ascent steps.

    Built from a PotentialConfig (its docstring explains every argument). A non-finite state during the
    ascent raises NonFiniteRefinementError naming the step.
    """

    def __init__(self, config: PotentialConfig) -> None:
        super().__init__()
        self.config = config
        dim, n_components, n_steps = config.feature_dim, config.n_components, config.n_steps
        precision, rank = config.precision, config.rank
        self.dim, self.n_components, self.n_steps = dim, n_components, n_steps
        self.precision, self.gradient_impl, self.grad_mode = precision, config.gradient_impl, config.grad_mode
        self.checkpoint_steps, self.bound_step_size = config.checkpoint_steps, config.bound_step_size
        self.langevin_temperature = config.langevin_temperature
        self.active = True  # False skips the ascent (a warm-up of the extractor before the centers are set)
        self._checks_finite = (
            True  # False: the caller checks a downstream loss instead (finite_check_deferred)
        )

        self.mu = nn.Parameter(torch.randn(n_components, dim))
        self.c = nn.Parameter(torch.zeros(n_components))
        scale = math.sqrt(config.init_precision)
        diag_width = {"diag": dim, "lowrank": dim, "spherical": 1}.get(precision)
        self.precision_diag = (
            nn.Parameter(torch.full((n_components, diag_width), scale)) if diag_width else None
        )
        if precision == "full":
            self.precision_factor = nn.Parameter(scale * torch.eye(dim).repeat(n_components, 1, 1))
        elif precision == "lowrank":
            # Small random U: exactly zero would give every component the same (zero) gradient direction.
            self.precision_factor = nn.Parameter(0.01 * scale * torch.randn(n_components, rank, dim))
        else:
            self.precision_factor = None
        n_etas = n_steps if config.step_size == "per_step" else 1
        self.step_size_raw = nn.Parameter(torch.full((n_etas,), _inverse_softplus(config.init_step_size)))

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
        """eta_t for t = 0..T-1 (T), as used by the ascent (after bounding, if enabled). Steps beyond the
        trained per-step sizes (a larger T at test time) reuse the last one."""
        eta = F.softplus(self.step_size_raw)
        eta = eta[torch.arange(self.n_steps, device=eta.device).clamp_max(len(eta) - 1)] if len(eta) else eta
        if self.bound_step_size:
            eta = eta / self.precision_eigenvalue_bound()
        return eta

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
        """Set every eta_t to `value` (before any bounding)."""
        with torch.no_grad():
            self.step_size_raw.fill_(_inverse_softplus(value))

    # ----------------------------------------------------------------------------------------------
    # The math

    def _frozen(self) -> _Frozen:
        factor_all = factor_offset = None
        rank = 0
        if self.precision_factor is not None:
            K, rank, D = self.precision_factor.shape
            factor_all = self.precision_factor.reshape(K * rank, D)
            factor_offset = (self.precision_factor @ self.mu.unsqueeze(-1)).reshape(K * rank)
        return _Frozen(self.mu, self.c, self.precision_diag, factor_all, factor_offset, rank)

    def _potential(self, x: Tensor, f: _Frozen) -> Tensor:
        q, _, _ = _projections(x, f.mu, f.diag, f.factor_all, f.factor_offset, f.rank)
        return torch.logsumexp(f.c - 0.5 * q, dim=-1)

    def _autograd_gradient(self, x: Tensor, f: _Frozen) -> Tensor:
        # Keep the graph of the gradient only when the caller is building one (training, gradcheck).
        build_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._potential(leaf, f).sum(), leaf, create_graph=build_graph)
        return grad

    def _gradient(self, x: Tensor, f: _Frozen) -> Tensor:
        if self.gradient_impl == "closed_form":
            return _ClosedFormGradient.apply(
                x, f.mu, f.c, f.diag, f.factor_all, f.factor_offset, f.rank, self.checkpoint_steps
            )
        return self._autograd_gradient(x, f)

    @_in_parameter_dtype
    def compute_potential(self, x: Tensor) -> Tensor:
        """phi(x) = logsumexp_i(c_i - ||A_i (x - mu_i)||^2 / 2) for a batch x (B x D) -> (B)."""
        return self._potential(x, self._frozen())

    @_in_parameter_dtype
    def compute_gradient(self, x: Tensor) -> Tensor:
        """grad phi(x) (B x D), by `gradient_impl`."""
        return self._gradient(x, self._frozen())

    @_in_parameter_dtype
    def responsibilities(self, x: Tensor) -> Tensor:
        """r_i(x) = softmax_i(c_i - q_i(x) / 2) (B x K): which component claims each point."""
        f = self._frozen()
        q, _, _ = _projections(x, f.mu, f.diag, f.factor_all, f.factor_offset, f.rank)
        return torch.softmax(f.c - 0.5 * q, dim=-1)

    # ----------------------------------------------------------------------------------------------
    # The ascent

    @property
    def uses_precision_form(self) -> bool:
        """Whether the unrolled ascent runs in precision form: 3 GEMMs of B x D x K*D a step against the
        factor form's 6 of B x D x K*R, so where R > D/2 (`full`; `lowrank` with rank > D/2)."""
        return self.precision_factor is not None and 2 * self.precision_factor.shape[1] > self.dim

    def _step(self, x: Tensor, eta: Tensor, f: _Frozen) -> Tensor:
        x_next = x + eta * self._gradient(x, f)
        if self.training and self.langevin_temperature > 0:
            x_next = x_next + torch.sqrt(2 * eta * self.langevin_temperature) * torch.randn_like(x)
        return x_next

    @_in_parameter_dtype
    def refine(self, x: Tensor) -> list[Tensor]:
        """States x_0 .. x_T of the ascent, each still in the autograd graph (as `grad_mode` allows)."""
        states = [x]
        if not self.active or self.n_steps == 0:
            return states
        etas = self.step_sizes()
        fused = (
            self.gradient_impl == "closed_form"
            and self.grad_mode == "unrolled"
            and not (self.training and self.langevin_temperature > 0)
        )
        # the precision form needs P only; everything else reads the factor form's per-forward quantities
        f = None if fused and self.uses_precision_form else self._frozen()
        if fused:  # one autograd node for all T steps
            # without grad there is nothing to keep y for
            recompute = self.checkpoint_steps or not torch.is_grad_enabled()
            if f is None:
                stacked = _FusedPrecisionAscent.apply(
                    x, etas, self.mu, self.c, self.precision_matrices(), recompute
                )
            else:
                stacked = _FusedAscent.apply(
                    x, etas, f.mu, f.c, f.diag, f.factor_all, f.factor_offset, f.rank, recompute
                )
            states = list(stacked.unbind(0))
            if self._checks_finite:
                self.check_finite(states)
            return states
        # The closed form checkpoints inside its own backward (it recomputes only y); autograd needs the
        # generic per-step checkpoint.
        use_checkpoint = (
            self.checkpoint_steps
            and self.gradient_impl == "autograd"
            and self.grad_mode == "unrolled"
            and torch.is_grad_enabled()
        )
        for t in range(self.n_steps):
            if self.grad_mode == "detach" and t > 0:
                x = x.detach()
            if use_checkpoint:
                x = checkpoint(self._step, x, etas[t], f, use_reentrant=False)
            else:
                x = self._step(x, etas[t], f)
            states.append(x)
        if self._checks_finite:
            self.check_finite(states)
        return states

    def forward(self, x: Tensor) -> Tensor:
        """Refine x (B x D) by T ascent steps -> x_T (`refine` gives every state)."""
        return self.refine(x)[-1]

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
            "or set bound_step_size=true"
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, n_components={self.n_components}, n_steps={self.n_steps}, "
            f"precision={self.precision}, gradient_impl={self.gradient_impl}, grad_mode={self.grad_mode}"
        )
