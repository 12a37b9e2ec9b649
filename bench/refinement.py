"""Refinement benchmark: the T-step ascent's forward+backward time, activation memory and gradient agreement,
one step against its GEMM floor, and how the cost grows with B, K, D and T. One table each.

    python bench/refinement.py                                  # CPU, float32, reference shape B=256 D=64 K=32 T=10
    python bench/refinement.py --device cuda --dtype bfloat16   # a GPU; adds the bf16 matmul-rate column
    python bench/refinement.py --plot bench/refinement_cost.png # also draw the growth table

Rows (full precision, the benchmark's hardest case):
  paper layer, literal    the DPN paper's layer as written: (x - mu) as B x K x D, A_i applied by einsum, and
                          torch.autograd.grad(create_graph=True) for every step
  autograd (lean)         gradient_impl=autograd: the GEMM form of q, autograd for grad phi and for backward
  closed_form fused       the default: all T steps as one autograd node, for full precision in precision form
                          (P_i = A_i^T A_i formed once: 3 GEMMs a step against the factor form's 6)
Ratios are against the paper layer and the lean autograd rows measured in the same run. Activation memory is
what autograd holds for backward when the forward returns (parameters excluded; saved-tensor hooks).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dpn_lab.model.potential import DenoisingPotential, PotentialConfig


@dataclass(frozen=True)
class Shape:
    batch: int
    dim: int
    components: int
    steps: int

    def __str__(self) -> str:
        return f"B={self.batch} D={self.dim} K={self.components} T={self.steps}"


class PaperLayer(nn.Module):
    """The DPN paper's refinement layer, literally: autograd through phi with a graph kept at every step."""

    def __init__(self, potential: DenoisingPotential) -> None:
        super().__init__()
        self.mu, self.A, self.c = potential.mu, potential.precision_factor, potential.c
        self.raw_eta, self.steps = potential.step_size_raw, potential.n_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eta = nn.functional.softplus(self.raw_eta)[0]
        for _ in range(self.steps):
            if not x.requires_grad:
                x = x.requires_grad_(True)
            diff = x.unsqueeze(1) - self.mu  # B x K x D
            projected = torch.einsum("kij,bkj->bki", self.A, diff)
            phi = torch.logsumexp(self.c - 0.5 * (projected**2).sum(-1), dim=1)
            (grad,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
            x = x + eta * grad
        return x


@dataclass(frozen=True)
class Row:
    name: str
    gradient_impl: str = "closed_form"
    grad_mode: str = "unrolled"
    checkpoint_steps: bool = False
    compiled: bool = False
    paper: bool = False


ROWS = [
    Row("paper layer, literal", "autograd", paper=True),
    Row("autograd (lean)", "autograd"),
    Row("autograd + ckpt", "autograd", checkpoint_steps=True),
    Row("closed_form detach", grad_mode="detach"),
    Row("closed_form fused"),
    Row("closed_form fused, compile", compiled=True),
    Row("autograd (lean), compile", "autograd", compiled=True),
]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            platform.processor() or platform.machine(),
        )
    return f"{name}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (one run of each per round) so that the machine's
    slow spells (a shared VM's neighbours) hit every row alike; fewer rounds when a round is long (~10 s)."""
    for fn in fns.values():
        fn()
        fn()
    synchronize(device)
    start = time.perf_counter()
    for fn in fns.values():
        fn()
    synchronize(device)
    rounds = max(3, min(repeats, int(10.0 / max(time.perf_counter() - start, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def saved_activation_bytes(
    fn: Callable[[], torch.Tensor], parameters: list[torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Run fn; bytes of the distinct storages autograd still holds for backward when fn returns."""
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
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for r in saved if (t := r()) is not None
    }
    return out, sum(alive.values())


def build(row: Row, shape: Shape, device: torch.device, dtype: torch.dtype) -> DenoisingPotential:
    torch.manual_seed(0)
    module = DenoisingPotential(
        PotentialConfig(
            shape.dim,
            shape.components,
            n_steps=shape.steps,
            covariance="full",
            init_step_size=0.05,
            gradient_impl=row.gradient_impl,
            grad_mode=row.grad_mode,
            checkpoint_steps=row.checkpoint_steps,
        )
    )
    with torch.no_grad():  # away from the identity start, so every parameter gets a generic gradient
        module.mu.mul_(0.5)
        module.precision_factor.add_(0.05 * torch.randn_like(module.precision_factor))
        module.c.normal_(0, 0.3)
    return module.to(device, dtype)


def prepare(row: Row, shape: Shape, device, dtype, compute_dtype: torch.dtype | None = None) -> dict:
    """{step: one forward+backward, finish(memory) -> saved bytes and gradients} or {error}. With
    compute_dtype, the parameters and input are rounded to dtype and computed in compute_dtype (the float32
    reference of a bf16 row: the same numbers, without the rounding of the arithmetic)."""
    module = build(row, shape, device, dtype).to(compute_dtype or dtype)
    layer = PaperLayer(module) if row.paper else module
    forward = torch.compile(layer) if row.compiled else layer
    torch.manual_seed(1)
    x = torch.randn(shape.batch, shape.dim, device=device).to(dtype)
    x = x.to(compute_dtype or dtype).requires_grad_(True)
    weight = torch.randn(shape.batch, shape.dim, device=device)

    def step() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = forward(x)
        (out.float() * weight).sum().backward()
        return out

    def finish(memory: bool) -> dict:
        module.zero_grad(set_to_none=True)
        x.grad = None
        saved = 0
        if memory:
            out, saved = saved_activation_bytes(lambda: forward(x), list(module.parameters()))
        else:
            out = forward(x)
        (out.float() * weight).sum().backward()
        tensors = [*module.parameters(), x]
        grads = [(t.grad if t.grad is not None else torch.zeros_like(t)).flatten().float() for t in tensors]
        return {"saved": saved, "grads": torch.cat(grads)}

    try:
        step()  # compile (if any) before timing
    except Exception as error:  # noqa: BLE001 - a benchmark reports what does not run
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:60]}"}
    return {"step": step, "finish": finish}


def measure(
    rows: list[Row], shape: Shape, device, dtype, repeats: int, memory: bool = True
) -> dict[str, dict]:
    prepared = {row.name: prepare(row, shape, device, dtype) for row in rows}
    runnable = {name: p["step"] for name, p in prepared.items() if "step" in p}
    seconds = interleaved_medians(runnable, device, repeats)
    return {
        name: p if "error" in p else {"seconds": seconds[name], **p["finish"](memory)}
        for name, p in prepared.items()
    }


def print_table(title: str, columns: list[tuple[str, int]], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    print(
        " ".join(f"{name:>{width}}" if i else f"{name:<{width}}" for i, (name, width) in enumerate(columns))
    )
    print("-" * (sum(w for _, w in columns) + len(columns) - 1))
    for row in rows:
        print(
            " ".join(
                f"{cell:>{width}}" if i else f"{cell:<{width}}"
                for i, (cell, (_, width)) in enumerate(zip(row, columns, strict=True))
            )
        )


def training_table(shape: Shape, device, dtype, repeats: int, compile_rows: bool) -> None:
    rows = [r for r in ROWS if compile_rows or not r.compiled]
    results = measure(rows, shape, device, dtype, repeats)
    paper, lean = results["paper layer, literal"], results["autograd (lean)"]
    # the gradient's reference: autograd in float32 (or float64) on the same numbers; a bf16 reference would
    # measure its own rounding as much as the row's
    exact = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    reference = prepare(Row("autograd (lean)", "autograd"), shape, device, dtype, exact)["finish"](False)[
        "grads"
    ]
    table = []
    for row in rows:
        res = results[row.name]
        if "error" in res:
            table.append([row.name, "-", "-", "-", "-", res["error"][:24]])
            continue
        err = (res["grads"] - reference).norm() / reference.norm()
        table.append(
            [
                row.name,
                f"{1e3 * res['seconds']:.2f}",
                f"{paper['seconds'] / res['seconds']:.2f}x",
                f"{lean['seconds'] / res['seconds']:.2f}x",
                f"{res['saved'] / 2**20:.2f}",
                f"{err:.1e}",
            ]
        )
    print_table(
        f"1. forward+backward of the ascent, {shape}, full precision, {dtype}",
        [
            ("configuration", 28),
            ("ms", 9),
            ("vs paper", 8),
            ("vs lean", 8),
            ("saved MiB", 9),
            ("grad err", 9),
        ],
        table,
    )
    print(
        f"   (grad err: all parameter gradients and dL/dx_0 against autograd (lean) in {exact} on the same inputs;"
        " detach changes them by design)"
    )


def step_table(shape: Shape, device, dtype, repeats: int, compile_rows: bool) -> None:
    module = build(Row("fused"), shape, device, dtype)
    x = torch.randn(shape.batch, shape.dim, device=device, dtype=dtype)
    # a forward step's GEMMs: x @ P_all^T in precision form; x @ F_all^T and (r * y) @ F_all in factor form
    if module.uses_precision_form:
        matrix, n_gemms = module.precision_matrices().detach().reshape(-1, shape.dim), 1
    else:
        matrix, n_gemms = module._factor_form().factor_all.detach(), 2
    y = torch.empty(shape.batch, matrix.shape[0], device=device, dtype=dtype)
    floor_name = f"its {n_gemms} GEMM{'s' * (n_gemms > 1)} alone"

    def gemms() -> torch.Tensor:
        out = torch.mm(x, matrix.T, out=y)
        return torch.mm(out, matrix) if n_gemms == 2 else out

    rows = [(floor_name, gemms), ("fused ascent, per step", lambda: module(x))]
    if compile_rows:
        compiled = torch.compile(module)
        rows.append(("fused ascent compiled, per step", lambda: compiled(x)))
    with torch.no_grad():
        seconds = interleaved_medians(dict(rows), device, repeats * 5)
    floor = seconds[floor_name]
    table = []
    for name, _ in rows:
        per_step = seconds[name] / (1 if name == floor_name else shape.steps)
        table.append(
            [name, f"{1e3 * per_step:.3f}", f"{per_step / floor:.2f}x", f"{100 * floor / per_step:.0f}%"]
        )
    flops = n_gemms * 2 * shape.batch * shape.dim * matrix.shape[0]
    print_table(
        f"2. one forward step (no grad) against its GEMM floor, {shape}, {matrix.shape[0]} rows; "
        f"floor {flops / floor / 1e9:.1f} GFLOP/s",
        [("what", 32), ("ms", 9), ("x floor", 8), ("of GEMM rate", 12)],
        table,
    )


def growth_shapes(base: Shape) -> list[Shape]:
    """The reference shape, then B x4, K x4, D x4 and T x2 one at a time (B=1024, K=128, D=256, T=20 by default)."""
    b, d, k, t = base.batch, base.dim, base.components, base.steps
    return [base, Shape(4 * b, d, k, t), Shape(b, d, 4 * k, t), Shape(b, 4 * d, k, t), Shape(b, d, k, 2 * t)]


def growth_table(base: Shape, device, dtype, repeats: int, plot: str | None) -> None:
    table, measured = [], []
    for shape in growth_shapes(base):
        both = measure([Row("fused"), Row("lean", "autograd")], shape, device, dtype, repeats, memory=False)
        fused, lean = both["fused"], both["lean"]
        measured.append((shape, fused["seconds"], lean["seconds"]))
        # the GEMMs of a step, forward and backward: 3 in precision form (the fused row here)
        flops = 3 * 2 * shape.batch * shape.dim * shape.components * shape.dim * shape.steps
        table.append(
            [
                str(shape),
                f"{1e3 * fused['seconds']:.1f}",
                f"{1e3 * lean['seconds']:.1f}",
                f"{lean['seconds'] / fused['seconds']:.2f}x",
                f"{flops / fused['seconds'] / 1e9:.1f}",
            ]
        )
    print_table(
        f"3. how the cost grows (forward+backward, full precision, {dtype})",
        [("shape", 30), ("fused ms", 9), ("lean ms", 9), ("speed-up", 8), ("GEMM GFLOP/s", 12)],
        table,
    )
    if plot:
        draw_growth(measured, plot)
        print(f"   plot: {plot}")


def draw_growth(measured: list[tuple[Shape, float, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = measured[0]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    labels = ["reference"] + [
        next(
            f"{k}x{getattr(s, k) // getattr(base[0], k)}"
            for k in ("batch", "components", "dim", "steps")
            if getattr(s, k) != getattr(base[0], k)
        )
        for s, _, _ in measured[1:]
    ]
    positions = range(len(measured))
    ax.bar([p - 0.2 for p in positions], [1e3 * m[1] for m in measured], width=0.4, label="closed_form fused")
    ax.bar([p + 0.2 for p in positions], [1e3 * m[2] for m in measured], width=0.4, label="autograd (lean)")
    ax.set_xticks(
        list(positions),
        [
            label.replace("components", "K").replace("batch", "B").replace("dim", "D").replace("steps", "T")
            for label in labels
        ],
    )
    ax.set_yscale("log")
    ax.set_ylabel("forward+backward (ms, log)")
    ax.set_title(f"cost growth from {base[0]}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "bf16", "float64"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-growth", action="store_true", help="skip the growth table")
    parser.add_argument("--plot", default=None, help="draw the growth table into this PNG")
    args = parser.parse_args()
    device, dtype = (
        torch.device(args.device),
        getattr(torch, {"bf16": "bfloat16"}.get(args.dtype, args.dtype)),
    )
    shape = Shape(args.batch, args.dim, args.components, args.steps)
    print(f"refinement benchmark on {device}: {machine(device)}")
    training_table(shape, device, dtype, args.repeats, not args.no_compile)
    step_table(shape, device, dtype, args.repeats, not args.no_compile)
    if not args.no_growth:
        growth_table(shape, device, dtype, args.repeats, args.plot)


if __name__ == "__main__":
    main()
