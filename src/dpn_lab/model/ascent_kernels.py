"""The kernels of the ascent: grad phi and the unrolled T-step ascent as custom autograd Functions with
hand-written backward passes. `dpn_lab.model.potential` has the mathematics and calls `closed_form_gradient`
and `fused_ascent`; the autograd path there is the reference every kernel here is tested against.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def in_parameter_dtype(method: Callable[..., Any]) -> Callable[..., Any]:
    """The dtype policy of the mixture under mixed precision (trainer.precision=bf16-mixed or 16-mixed):
    autocast off, x cast to the parameters' dtype (float32), results in that dtype. In bf16's 8-bit
    mantissa y_i = P_i x - P_i mu_i and the softmax of q lose everything that separates the components;
    the two custom autograd Functions then also see one dtype in forward and backward."""

    @functools.wraps(method)
    def wrapped(self: nn.Module, x: Tensor) -> Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return method(self, x)
        with torch.autocast(x.device.type, enabled=False):
            return method(self, x.to(self.mu.dtype))

    return wrapped


@dataclass
class FactorForm:
    """The mixture in factor form, P_i = diag(a_i)^2 + F_i^T F_i: what every step reads and nothing in it
    depends on x, so it is computed once per forward."""

    mu: Tensor  # K x D
    c: Tensor  # K
    diag: Tensor | None  # K x D or K x 1 (a_i)
    factor_all: Tensor | None  # K*R x D (F stacked)
    factor_offset: Tensor | None  # K*R (F_i mu_i stacked)
    rank: int  # R


@dataclass
class PrecisionForm:
    """The mixture in precision form: centers, log-weights and P_i = A_i^T A_i (K x D x D), formed once per
    forward."""

    mu: Tensor  # K x D
    c: Tensor  # K
    P: Tensor  # K x D x D


def closed_form_gradient(x: Tensor, form: FactorForm, recompute: bool) -> Tensor:
    """grad phi(x) (B x D) with the hand-written backward of _ClosedFormGradient."""
    return _ClosedFormGradient.apply(
        x, form.mu, form.c, form.diag, form.factor_all, form.factor_offset, form.rank, recompute
    )


def fused_ascent(x0: Tensor, etas: Tensor, form: FactorForm | PrecisionForm, recompute: bool) -> Tensor:
    """Every state x_0 .. x_T ((T+1) x B x D) of the unrolled ascent x_{t+1} = x_t + eta_t grad phi(x_t), as
    one autograd node: _FusedPrecisionAscent for a PrecisionForm, _FusedAscent for a FactorForm. `recompute`
    keeps one step's y instead of all T and redoes it in backward."""
    if isinstance(form, PrecisionForm):
        return _FusedPrecisionAscent.apply(x0, etas, form.mu, form.c, form.P, recompute)
    f = form
    return _FusedAscent.apply(x0, etas, f.mu, f.c, f.diag, f.factor_all, f.factor_offset, f.rank, recompute)


def quadratic_forms(
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
    q, y_diag, y_factor = quadratic_forms(x, mu, diag, factor_all, factor_offset, rank)
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
    only x and r with `recompute`, redoing GEMM 1 in backward). Used by grad_mode=detach and by
    compute_gradient; the plain unrolled ascent runs as one _FusedAscent.
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

    The forward writes every state, minus_grads_t = -g_t and responsibility into preallocated (T+1) x B x D, T x B x D
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
        states, minus_grads, resp = x0.new_empty(T + 1, B, D), x0.new_empty(T, B, D), x0.new_empty(T, B, K)
        states[0] = x0
        factor = factor_all is not None
        ys = x0.new_empty(1 if recompute else T, B, K * rank) if factor else None
        # r * y: in place over y when y is not kept, else one reused buffer
        weighted_y = (
            ys[0].view(B, K, rank) if factor and recompute else x0.new_empty(B, K, rank) if factor else None
        )
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
                torch.mm(
                    torch.mul(y3, r.unsqueeze(-1), out=weighted_y).view(B, -1), factor_all, out=minus_grads[t]
                )  # GEMM 2
            else:
                minus_grads[t].zero_()
            if diag is not None:
                minus_grads[t] += torch.einsum("bk,bkd->bd", r, diag * y_diag)
            torch.addcmul(x, etas[t], minus_grads[t], value=-1, out=states[t + 1])
        ctx.rank = rank
        kept = None if recompute else ys  # a recomputing backward writes its own buffer, never a saved tensor
        ctx.save_for_backward(states, minus_grads, resp, kept, etas, mu, diag, factor_all, factor_offset)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, d_states):
        states, minus_grads, resp, ys, etas, mu, diag, factor_all, factor_offset = ctx.saved_tensors
        T, B, R = len(etas), states.shape[1], ctx.rank
        d_etas = torch.zeros_like(etas)
        totals: list[Tensor | None] = [None] * 5  # mu, c, diag, F, F mu: summed over the steps
        a = d_states[T].clone()
        for t in reversed(range(T)):
            d_etas[t] = -torch.dot(a.flatten(), minus_grads[t].flatten())
            y = ys[t].view(B, -1, R) if ys is not None else None  # None: recomputed
            dx, *parts = _closed_form_backward(
                etas[t] * a, states[t], mu, diag, factor_all, factor_offset, resp[t], y, R
            )
            a.add_(dx).add_(d_states[t])
            totals = [p if s is None else s.add_(p) for s, p in zip(totals, parts, strict=True)]
        return a, d_etas, *totals, None, None


def _precision_form_backward_step(G, x, P_all, minus_P_mu, r, y, v, x_v_sum):
    """One step of the precision form backward with G = dL/d(grad phi(x)): returns dx and dl, and adds the
    step's batch GEMM for dP to `x_v_sum`. With d_i = x - mu_i, y_i = P_i d_i, grad = -sum_i r_i y_i and
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
    dx = torch.addmm(torch.mm(v, P_all), dl, minus_P_mu.view(K, D)).neg_()  # GEMM: sum_i P_i v'_i
    v.view(B, K, D).addcmul_(dl3, x3, value=-0.5)  # v' -> v
    x_v_sum.addmm_(x.T, v)  # GEMM: sum_b x v_i^T, laid out D x K*D
    return dx, dl


def _precision_form_parameter_grads(x_v_sum, Gs, xs, resp, dls, mu, P):
    """(dmu, dc, dP) from the steps' sum_b x v_i^T (`x_v_sum`, D x K*D) and their G, x, r and dl stacked over
    the T steps (T*B rows). With S_i = sum dl_i (= dc_i), RG_i = sum r_i G and DX_i = sum dl_i x, all over
    steps and batch:

    dmu_i = sum (r_i P_i G + dl_i y_i) = P_i (RG_i + DX_i - S_i mu_i)
    dP_i  = -sum v_i x^T + mu_i DX_i^T / 2 + (RG_i + DX_i / 2 - S_i mu_i / 2) mu_i^T    (sum v_i x^T: x_v_sum read
                                                                                  transposed, no copy)
    """
    K, D = mu.shape
    dc = dls.sum(0)
    rG, dlx = resp.T @ Gs, dls.T @ xs
    dmu = torch.bmm(P, (rG + dlx - dc.unsqueeze(-1) * mu).unsqueeze(-1)).squeeze(-1)
    left = torch.stack([0.5 * mu, rG + 0.5 * dlx - 0.5 * dc.unsqueeze(-1) * mu], dim=-1)  # K x D x 2
    right = torch.stack([dlx, mu], dim=1)  # K x 2 x D
    dP = torch.baddbmm(x_v_sum.view(D, K, D).permute(1, 2, 0), left, right, beta=-1)
    return dmu, dc, dP


class _FusedPrecisionAscent(torch.autograd.Function):
    """The unrolled ascent in precision form (module docstring) as one autograd node: _FusedAscent's layout
    (states, minus_grads_t = -g_t, responsibilities, y_t kept or recomputed) with P (K x D x D) in place of the factors.
    Backward returns dP summed over the steps; autograd carries it to A through P = A^T A."""

    @staticmethod
    def forward(ctx, x0, etas, mu, c, P, recompute: bool):
        T, (B, D), K = etas.shape[0], x0.shape, mu.shape[0]
        P_all = P.reshape(K * D, D)
        P_all_T = P.permute(2, 0, 1).reshape(D, K * D)  # a contiguous copy: ~15% faster GEMMs than P_all.T
        minus_P_mu = torch.bmm(P, mu.unsqueeze(-1)).reshape(K * D).neg_()  # -P_i mu_i, once per forward
        states, minus_grads, resp = x0.new_empty(T + 1, B, D), x0.new_empty(T, B, D), x0.new_empty(T, B, K)
        ys = x0.new_empty(1 if recompute else T, B, K * D)
        diff = x0.new_empty(B, K, D)
        states[0] = x0
        for t in range(T):
            x = states[t]
            y = torch.addmm(minus_P_mu, x, P_all_T, out=ys[0 if recompute else t]).view(B, K, D)  # GEMM
            r = resp[t]
            q = torch.sub(x.unsqueeze(1), mu, out=diff).mul_(y).sum(-1)  # in place: no fresh B x K x D
            torch.add(c, q, alpha=-0.5, out=r)
            r.copy_(r.softmax(dim=-1))
            torch.bmm(r.unsqueeze(1), y, out=minus_grads[t].unsqueeze(1))
            torch.addcmul(x, etas[t], minus_grads[t], value=-1, out=states[t + 1])
        ctx.save_for_backward(
            states, minus_grads, resp, None if recompute else ys, etas, mu, P_all, P_all_T, minus_P_mu
        )
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, d_states):
        states, minus_grads, resp, ys, etas, mu, P_all, P_all_T, minus_P_mu = ctx.saved_tensors
        T, B, K, D = len(etas), states.shape[1], mu.shape[0], mu.shape[1]
        v, x_v_sum = states.new_empty(B, K, D), states.new_zeros(D, K * D)
        # per step: a_{t+1} = dL/dx_{t+1}, G_t = eta_t a_{t+1} and dl_t, kept for the sums over all steps
        adjoints, Gs, dls = states.new_empty(T, B, D), states.new_empty(T, B, D), resp.new_empty(T, B, K)
        recomputed = states.new_empty(B, K * D) if ys is None else None
        a = d_states[T]
        for t in reversed(range(T)):
            adjoints[t] = a
            x = states[t]
            y = ys[t] if ys is not None else torch.addmm(minus_P_mu, x, P_all_T, out=recomputed)
            dx, dls[t] = _precision_form_backward_step(
                torch.mul(a, etas[t], out=Gs[t]), x, P_all, minus_P_mu, resp[t], y.view(B, K, D), v, x_v_sum
            )
            a = dx.add_(a).add_(d_states[t])
        d_etas = -torch.linalg.vecdot(adjoints.view(T, -1), minus_grads.view(T, -1))
        dmu, dc, dP = _precision_form_parameter_grads(
            x_v_sum,
            Gs.view(T * B, D),
            states[:T].reshape(T * B, D),
            resp.view(T * B, K),
            dls.view(T * B, K),
            mu,
            P_all.view(K, D, D),
        )
        return a, d_etas, dmu, dc, dP, None
