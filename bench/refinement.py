"""Refinement benchmark: forward+backward time, activation memory and gradient agreement per configuration.

    python bench/refinement.py                       # reference shape B=256 D=64 K=32 T=10, CPU, float32
    python bench/refinement.py --device cuda --dtype bfloat16

Activation memory is the bytes of the tensors autograd holds for the backward pass when the forward
returns (parameters excluded), counted with saved-tensor hooks, which also see what a torch.compile'd
graph saves. On CUDA the peak
allocator growth during forward is printed beside it. Every ratio is against the autograd/unrolled/eager
reference measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dpn_lab.model.potential import DenoisingPotential, PotentialConfig


@dataclass
class Config:
    gradient_impl: str
    grad_mode: str
    checkpoint_steps: bool = False
    compiled: bool = False

    @property
    def name(self) -> str:
        mode = self.grad_mode + ("+ckpt" if self.checkpoint_steps else "")
        return f"{self.gradient_impl:<11} {mode:<13} {'compile' if self.compiled else 'eager'}"


CONFIGS = [
    Config("autograd", "unrolled"),
    Config("autograd", "detach"),
    Config("autograd", "unrolled", checkpoint_steps=True),
    Config("closed_form", "unrolled"),
    Config("closed_form", "detach"),
    Config("closed_form", "unrolled", checkpoint_steps=True),
    Config("closed_form", "unrolled", compiled=True),
    Config("closed_form", "unrolled", checkpoint_steps=True, compiled=True),
    Config("autograd", "unrolled", compiled=True),
]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_activation_bytes(
    fn: Callable[[], torch.Tensor], parameters: list[torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Run fn; bytes of the distinct storages autograd still holds for backward when fn returns.

    Parameters are excluded; tensors saved by graph pieces that were already freed (detach mode's earlier
    steps) do not count, since they are not held during backward.
    """
    param_storages = {p.untyped_storage().data_ptr() for p in parameters}
    saved: list[weakref.ref] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in param_storages:
            saved.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    gc.collect()
    alive = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for ref in saved
        if (t := ref()) is not None
    }
    return out, sum(alive.values())


def build(
    config: Config, args: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> DenoisingPotential:
    torch.manual_seed(0)
    module = DenoisingPotential(
        PotentialConfig(
            args.dim,
            args.components,
            n_steps=args.steps,
            precision="full",
            init_step_size=0.05,
            gradient_impl=config.gradient_impl,
            grad_mode=config.grad_mode,
            checkpoint_steps=config.checkpoint_steps,
        )
    )
    with torch.no_grad():  # away from the identity start, so every parameter gets a generic gradient
        module.mu.mul_(0.5)
        module.precision_factor.add_(0.05 * torch.randn_like(module.precision_factor))
        module.c.normal_(0, 0.3)
    return module.to(device, dtype)


def flat_gradients(module: DenoisingPotential, x: torch.Tensor) -> torch.Tensor:
    grads = [p.grad for p in module.parameters()] + [x.grad if x.grad is not None else torch.zeros_like(x)]
    return torch.cat([g.flatten().float() for g in grads])


def run_config(config: Config, args, device, dtype, x0: torch.Tensor, weight: torch.Tensor) -> dict:
    module = build(config, args, device, dtype)
    forward = torch.compile(module) if config.compiled else module
    x = x0.clone().requires_grad_(True)

    def train_step() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = forward(x)
        (out.float() * weight).sum().backward()
        return out

    try:
        train_step()  # compile (if any) before timing
    except Exception as error:  # noqa: BLE001 - a benchmark reports what does not run
        return {"config": config, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:60]}"}
    seconds = median_seconds(train_step, device, args.repeats)
    module.zero_grad(set_to_none=True)
    x.grad = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    out, saved = saved_activation_bytes(lambda: forward(x), list(module.parameters()))
    peak = torch.cuda.max_memory_allocated() - base if device.type == "cuda" else None
    (out.float() * weight).sum().backward()
    return {
        "config": config,
        "seconds": seconds,
        "saved": saved,
        "peak": peak,
        "grads": flat_gradients(module, x),
    }


def step_floor(args, device, dtype) -> list[tuple[str, float]]:
    """One forward step (no grad) against the two GEMMs it cannot avoid, at the same shapes."""
    module = build(Config("closed_form", "unrolled"), args, device, dtype)
    x = torch.randn(args.batch, args.dim, device=device, dtype=dtype)
    frozen = module._frozen()
    eta = module.step_sizes()[0]
    K, R = args.components, args.dim
    y = torch.randn(args.batch, K * R, device=device, dtype=dtype)

    def gemms() -> torch.Tensor:
        return torch.mm(torch.mm(x, frozen.factor_all.T, out=y), frozen.factor_all)

    def eager_step() -> torch.Tensor:
        return module._step(x, eta, frozen)

    compiled_step = torch.compile(module._step)
    with torch.no_grad():
        floor = median_seconds(gemms, device, args.repeats * 5)
        eager = median_seconds(eager_step, device, args.repeats * 5)
        compiled = median_seconds(lambda: compiled_step(x, eta, frozen), device, args.repeats * 5)
    return [("two GEMMs alone", floor), ("step, eager", eager), ("step, compiled", compiled)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    print(
        f"refinement benchmark: B={args.batch} D={args.dim} K={args.components} T={args.steps}, full precision, "
        f"{args.dtype} on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    torch.manual_seed(1)
    x0 = torch.randn(args.batch, args.dim, device=device, dtype=dtype)
    weight = torch.randn(args.batch, args.dim, device=device)
    configs = [c for c in CONFIGS if not (c.compiled and args.no_compile)]
    results = [run_config(c, args, device, dtype, x0, weight) for c in configs]
    reference = results[0]

    header = f"{'configuration':<35} {'fwd+bwd ms':>10} {'speed-up':>8} {'saved MiB':>9} {'mem ratio':>9}"
    header += f" {'grad rel.err':>12} {'grad cosine':>11}" + (" peak MiB" if device.type == "cuda" else "")
    print(header)
    print("-" * len(header))
    for row in results:
        if "error" in row:
            print(f"{row['config'].name:<35} does not run: {row['error']}")
            continue
        rel = (row["grads"] - reference["grads"]).norm() / reference["grads"].norm()
        cos = torch.nn.functional.cosine_similarity(row["grads"], reference["grads"], dim=0)
        line = (
            f"{row['config'].name:<35} {1e3 * row['seconds']:>10.2f} {reference['seconds'] / row['seconds']:>7.2f}x "
            f"{row['saved'] / 2**20:>9.2f} {row['saved'] / reference['saved']:>8.2f}x {rel:>12.2e} {cos:>11.4f}"
        )
        if row["peak"] is not None:
            line += f" {row['peak'] / 2**20:>8.1f}"
        print(line)
    print("(grad: all parameter gradients and dL/dx_0, against the first row; detach changes them by design)")

    if not args.no_compile:
        rows = step_floor(args, device, dtype)
        floor = rows[0][1]
        print(
            f"\none forward step (no grad) against its two-GEMM floor, B={args.batch}, K*R={args.components * args.dim}"
        )
        for name, seconds in rows:
            print(f"{name:<20} {1e3 * seconds:>8.3f} ms  {seconds / floor:>5.2f}x floor")


if __name__ == "__main__":
    main()
