"""The capacity-matched control (`model.refinement=residual_mlp`): x_T = x_0 + MLP(x_0) in place of the T-step
ascent, with as many parameters as the potential it replaces, trained the same way. It answers the question a
DPN win raises first: is it the refinement, or the extra parameters?

    MLP(x) = W_2 relu(W_1 x + b_1) + b_2,   W_1: H x D,  W_2: D x H,   parameters H (2D + 1) + D

The width H is the one whose count is nearest the potential's P: H = round((P - D) / (2D + 1)), at least 1,
so the counts differ by at most half a hidden unit, D + 1/2 parameters: within 5% of P whenever
P >= 10 (2D + 1), which every configuration of the comparison meets (D=32, K=16, diag: 1,072 for 1,041).
A smaller potential (a few spherical components) cannot be matched that closely by any MLP of this form;
`DPNLitModule` logs both counts. W_2 and b_2 start at zero, so the control starts as the identity, as the
ascent does with a small step.
"""

from __future__ import annotations

from torch import Tensor, nn


def matched_width(parameters: int, dim: int) -> int:
    """The hidden width H whose MLP parameter count H (2 dim + 1) + dim is nearest `parameters`."""
    return max(1, round((parameters - dim) / (2 * dim + 1)))


class ResidualMLP(nn.Module):
    """x -> x + W_2 relu(W_1 x + b_1) + b_2, identity at initialisation."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.outer(self.inner(x).relu())
