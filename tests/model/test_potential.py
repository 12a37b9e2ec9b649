"""DenoisingPotential against independent computations (scipy densities, numpy algebra, autograd)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from dpn_lab.model.mixture_init import cap_step_size
from dpn_lab.model.options import COVARIANCES
from dpn_lab.model.potential import DenoisingPotential, NonFiniteRefinementError, PotentialConfig

D, K = 4, 3
# every covariance, and lowrank with rank 3 > D/2, which runs in covariance form like full
FORMS = [(p, 2) for p in COVARIANCES] + [("lowrank", 3)]


def random_potential(
    covariance: str, n_steps: int = 3, seed: int = 0, rank: int = 2, **kwargs
) -> DenoisingPotential:
    """A float64 potential with every parameter randomised away from its initial value."""
    torch.manual_seed(seed)
    module = DenoisingPotential(
        PotentialConfig(D, K, n_steps=n_steps, covariance=covariance, rank=rank, **kwargs)
    ).double()
    with torch.no_grad():
        module.c.normal_(0, 0.5)
        if module.precision_diag is not None:
            module.precision_diag.uniform_(0.5, 1.5)
        if module.precision_factor is not None:
            module.precision_factor.add_(0.3 * torch.randn_like(module.precision_factor))
    return module


def numpy_precisions(module: DenoisingPotential) -> np.ndarray:
    """P_i = diag(a_i)^2 + F_i^T F_i built in numpy from the raw parameters."""
    P = np.zeros((K, D, D))
    for i in range(K):
        if module.precision_diag is not None:
            a = module.precision_diag[i].detach().numpy()
            P[i] += np.diag(np.broadcast_to(a, (D,)) ** 2)
        if module.precision_factor is not None:
            Fi = module.precision_factor[i].detach().numpy()
            P[i] += Fi.T @ Fi
    return P


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_potential_is_the_mixture_log_density(covariance):
    module = random_potential(covariance)
    P = numpy_precisions(module)
    log_pi = np.log([0.2, 0.5, 0.3])
    # With c_i = log pi_i + 1/2 log det P_i - D/2 log 2pi, phi is exactly log sum_i pi_i N(x; mu_i, P_i^-1).
    c = log_pi + 0.5 * np.linalg.slogdet(P)[1] - 0.5 * D * math.log(2 * math.pi)
    with torch.no_grad():
        module.c.copy_(torch.from_numpy(c))
    x = np.random.default_rng(1).normal(size=(7, D))
    mu = module.mu.detach().numpy()
    expected = logsumexp(
        [log_pi[i] + multivariate_normal(mu[i], np.linalg.inv(P[i])).logpdf(x) for i in range(K)], axis=0
    )
    phi = module.compute_potential(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(phi, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_precision_and_covariance_accessors(covariance):
    module = random_potential(covariance)
    P = numpy_precisions(module)
    np.testing.assert_allclose(module.precision_matrices().detach().numpy(), P, rtol=1e-12)
    np.testing.assert_allclose(module.covariance_matrices().detach().numpy(), np.linalg.inv(P), rtol=1e-8)
    c = module.c.detach().numpy()
    np.testing.assert_allclose(module.weights().detach().numpy(), np.exp(c) / np.exp(c).sum(), rtol=1e-12)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_responsibilities_match_explicit_quadratic_forms(covariance):
    module = random_potential(covariance)
    P = numpy_precisions(module)
    x = np.random.default_rng(2).normal(size=(5, D))
    diff = x[:, None, :] - module.mu.detach().numpy()[None]
    q = np.einsum("bkd,kde,bke->bk", diff, P, diff)
    logits = module.c.detach().numpy() - q / 2
    expected = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    got = module.responsibilities(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_closed_form_gradient_equals_autograd_and_explicit_formula(covariance):
    module = random_potential(covariance)
    x = torch.randn(6, D, dtype=torch.float64)
    closed = module.compute_gradient(x)
    module.gradient_impl = "autograd"
    reference = module.compute_gradient(x)
    torch.testing.assert_close(closed, reference, rtol=1e-10, atol=1e-12)
    # and against -sum_i r_i P_i (x - mu_i) written out in numpy
    P = numpy_precisions(module)
    r = module.responsibilities(x).detach().numpy()
    diff = x.numpy()[:, None, :] - module.mu.detach().numpy()[None]
    explicit = -np.einsum("bk,kde,bke->bd", r, P, diff)
    np.testing.assert_allclose(closed.detach().numpy(), explicit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "gradient_impl, checkpoint_steps", [("closed_form", False), ("closed_form", True), ("autograd", False)]
)
@pytest.mark.parametrize("covariance, rank", FORMS)
def test_gradcheck_through_the_unrolled_ascent(covariance, rank, gradient_impl, checkpoint_steps):
    module = random_potential(
        covariance,
        n_steps=3,
        rank=rank,
        gradient_impl=gradient_impl,
        checkpoint_steps=checkpoint_steps,
    )
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in module.named_parameters()]
    x = torch.randn(3, D, dtype=torch.float64, requires_grad=True)

    def refined(x, *values):
        return torch.func.functional_call(module, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(refined, (x, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("gradient_impl", ["closed_form", "autograd"])
def test_checkpointed_steps_give_the_same_gradients(gradient_impl):
    grads = []
    for checkpoint_steps in (False, True):
        module = random_potential(
            "lowrank", n_steps=4, checkpoint_steps=checkpoint_steps, gradient_impl=gradient_impl
        )
        x = torch.randn(5, D, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(3)
        (module(x) * torch.randn(5, D, dtype=torch.float64)).sum().backward()
        grads.append([x.grad, *(p.grad for p in module.parameters())])
    for plain, ckpt in zip(*grads, strict=True):
        torch.testing.assert_close(plain, ckpt, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_potential_never_decreases_with_a_small_step(covariance):
    module = random_potential(covariance, n_steps=40)
    module.set_step_size(0.02)
    x = 2 * torch.randn(16, D, dtype=torch.float64)
    with torch.no_grad():
        trajectory = torch.stack(module.refine(x), dim=1)
        phi = torch.stack([module.compute_potential(trajectory[:, t]) for t in range(41)], dim=1)
    steps = phi.diff(dim=1)
    assert (steps >= -1e-12).all()
    assert (phi[:, -1] - phi[:, 0]).min() > 0


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_the_ascents_statistics_are_phi_and_r_of_every_state(covariance):
    """statistics(states): phi(x_t) and r(x_t) of each state against numpy's mixture algebra, and the gain."""
    module = random_potential(covariance, n_steps=4)
    module.set_step_size(0.05)
    states = module.refine(torch.from_numpy(np.random.default_rng(3).normal(size=(6, D))))
    found = module.statistics(states)
    P, mu, c = numpy_precisions(module), module.mu.detach().numpy(), module.c.detach().numpy()
    for t, state in enumerate(states):
        diff = state.detach().numpy()[:, None, :] - mu[None]
        logits = c - np.einsum("bkd,kde,bke->bk", diff, P, diff) / 2
        np.testing.assert_allclose(found.potential[t].numpy(), logsumexp(logits, axis=1), rtol=1e-10)
        expected_r = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
        np.testing.assert_allclose(found.responsibilities[t].numpy(), expected_r, rtol=1e-10, atol=1e-300)
    assert found.potential.shape == (5, 6) and found.responsibilities.shape == (5, 6, K)
    torch.testing.assert_close(found.gain, found.potential[-1] - found.potential[0], rtol=0, atol=0)
    assert (found.gain > 0).all()  # a small step climbs


def test_zero_steps_is_the_identity():
    module = random_potential("full", n_steps=0)
    x = torch.randn(5, D, dtype=torch.float64)
    assert torch.equal(module(x), x)
    assert len(module.refine(x)) == 1


def input_gradient(module: DenoisingPotential) -> torch.Tensor:
    x = torch.randn(5, D, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(module(x).pow(2).sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


@pytest.mark.parametrize("n_steps", [2, 5])
def test_detach_cuts_the_gradient_to_the_input_and_unrolled_does_not(n_steps):
    detached = random_potential("full", n_steps=n_steps, grad_mode="detach")
    unrolled = random_potential("full", n_steps=n_steps, grad_mode="unrolled")
    assert input_gradient(detached).abs().max() == 0
    assert input_gradient(unrolled).abs().max() > 1e-3
    # with one step there is nothing to detach: both modes agree
    one = [random_potential("full", n_steps=1, grad_mode=m) for m in ("detach", "unrolled")]
    torch.manual_seed(0)
    a = input_gradient(one[0])
    torch.manual_seed(0)
    torch.testing.assert_close(a, input_gradient(one[1]))


def test_detach_trains_only_through_the_last_step():
    module = random_potential("full", n_steps=4, grad_mode="detach")
    x = torch.randn(5, D, dtype=torch.float64)
    module(x).sum().backward()
    # independent: run three steps without a graph, then one differentiable step
    reference = random_potential("full", n_steps=1)
    with torch.no_grad():
        three = random_potential("full", n_steps=3)(x)
    reference(three).sum().backward()
    torch.testing.assert_close(module.mu.grad, reference.mu.grad)
    torch.testing.assert_close(module.precision_factor.grad, reference.precision_factor.grad)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_one_step_is_the_modern_hopfield_update(covariance):
    beta, n_patterns, dim = 2.5, 6, D
    torch.manual_seed(4)
    module = DenoisingPotential(PotentialConfig(dim, n_patterns, n_steps=1, covariance=covariance)).double()
    M = torch.randn(n_patterns, dim, dtype=torch.float64)
    with torch.no_grad():
        module.mu.copy_(M)
        module.c.copy_(beta / 2 * (M * M).sum(1))
        if covariance == "full":
            module.precision_factor.copy_(
                math.sqrt(beta) * torch.eye(dim, dtype=torch.float64).expand(n_patterns, dim, dim)
            )
        else:
            module.precision_diag.fill_(math.sqrt(beta))
    module.set_step_size(1 / beta)
    x = torch.randn(8, dim, dtype=torch.float64)
    hopfield = torch.softmax(beta * x @ M.T, dim=1) @ M  # x_new = M^T softmax(beta M x), batched
    torch.testing.assert_close(module(x), hopfield, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_eigenvalue_bound_bounds_the_largest_eigenvalue(covariance):
    module = random_potential(covariance, seed=7)
    true_max = np.linalg.eigvalsh(numpy_precisions(module)).max()
    bound = module.precision_eigenvalue_bound().item()
    assert true_max <= bound + 1e-12
    assert bound < 5 * true_max  # a useful bound, not a vacuous one


def test_divergence_names_the_step_and_capping_the_step_prevents_it():
    module = DenoisingPotential(
        PotentialConfig(D, K, n_steps=60, init_precision=400.0, init_step_size=0.5, covariance="full")
    )
    x = torch.randn(4, D)
    with pytest.raises(
        NonFiniteRefinementError, match=r"non-finite at refinement step \d+ of 60.*eta\*bound"
    ):
        module(x)
    cap_step_size(module, 0.25)  # what KMeansInit does with model.init_step_limit
    assert torch.isfinite(module(x)).all()


def test_non_finite_input_blames_the_extractor():
    module = DenoisingPotential(PotentialConfig(D, K, n_steps=2, covariance="full"))
    with pytest.raises(NonFiniteRefinementError, match="input features are not finite"):
        module(torch.full((2, D), float("nan")))


def test_same_seed_same_module_and_output():
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        module = DenoisingPotential(PotentialConfig(D, K, n_steps=3, covariance="lowrank", rank=2))
        outputs.append(module(torch.randn(3, D)))
    assert torch.equal(*outputs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"covariance": "dense"},
            "covariance='dense' is not allowed; choose one of: full, diag, spherical, lowrank",
        ),
        ({"grad_mode": "truncated"}, "grad_mode='truncated' is not allowed; choose one of: unrolled, detach"),
        ({"gradient_impl": "fd"}, "gradient_impl='fd' is not allowed; choose one of: closed_form, autograd"),
        ({"n_steps": -1}, "n_steps=-1 is out of range: must be an integer >= 0"),
        ({"n_components": 2.5}, "n_components=2.5 has the wrong type: must be an integer >= 1"),
        ({"init_step_size": 0.0}, "init_step_size=0.0 is out of range: must be a number > 0"),
        (
            {"covariance": "lowrank", "rank": 9},
            "rank=9 is out of range: must be <= feature_dim=4 for covariance=lowrank",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PotentialConfig(**{"feature_dim": D, "n_components": K, "covariance": "full", **kwargs})


def test_wide_factors_run_in_precision_form():
    forms = {(p, r): random_potential(p, rank=r).uses_precision_form for p, r in FORMS}
    assert forms == {
        ("full", 2): True,
        ("diag", 2): False,
        ("spherical", 2): False,
        ("lowrank", 2): False,
        ("lowrank", 3): True,
    }


@pytest.mark.parametrize("checkpoint_steps", [False, True])
@pytest.mark.parametrize("covariance, rank", FORMS)
def test_the_fused_ascent_equals_autograd_step_by_step(covariance, rank, checkpoint_steps):
    """closed_form + unrolled runs all steps as one node; autograd builds every step's graph. The loss reads
    every state, so each state's own gradient enters too."""
    x0 = torch.randn(40, D, dtype=torch.float64)
    weights = torch.randn(5, 40, D, dtype=torch.float64)
    results = []
    for gradient_impl in ("closed_form", "autograd"):
        module = random_potential(
            covariance,
            n_steps=4,
            rank=rank,
            gradient_impl=gradient_impl,
            checkpoint_steps=checkpoint_steps,
        )
        x = x0.clone().requires_grad_(True)
        states = module.refine(x)
        sum((s * w).sum() for s, w in zip(states, weights, strict=True)).backward()
        results.append([torch.stack(states).detach(), x.grad, *(p.grad for p in module.parameters())])
    for fused, reference in zip(*results, strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("covariance, rank", [("full", 2), ("diag", 2), ("lowrank", 2)])
def test_under_bf16_autocast_the_mixture_runs_in_float32(covariance, rank):
    """bf16-mixed (CPU autocast here, CUDA on a GPU): the refinement takes the extractor's bf16 features,
    computes in float32 and returns float32 states equal to the float32 computation on the same features;
    the Functions' gradients come back in the parameters' dtype."""
    torch.manual_seed(0)
    module = DenoisingPotential(PotentialConfig(8, 5, n_steps=3, covariance=covariance, rank=rank))
    with torch.no_grad():
        module.c.normal_(0, 0.5)
    features = torch.randn(16, 8).bfloat16()
    reference = module.refine(features.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        x = features.clone().requires_grad_(True)
        states = module.refine(x)
        phi = module.compute_potential(features)
        r = module.responsibilities(features)
    assert {s.dtype for s in states} == {phi.dtype, r.dtype} == {torch.float32}
    for state, expected in zip(states, reference, strict=True):
        torch.testing.assert_close(state, expected, rtol=0, atol=0)
    states[-1].sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in module.parameters())
    assert module.mu.grad is not None and module.mu.grad.abs().sum() > 0
