"""Which CPU kernels compute a run: one code path on every x86-64 Linux machine with AVX2, named in provenance.

Training numerics depend on the kernels torch (ATen), MKL and oneDNN pick for the processor: the MNIST-5k
sentinel, recorded on one 2-core EPYC, got 7 more of 1,000 test images right on another, deterministically.
Each library is pinned to its AVX2 path (the widest every machine of this project's kind has), so that a run
takes the same kernels whatever wider vector units the processor has; OpenBLAS too (numpy's and scipy's: the
k-means and mixture fits that place the centers), whose AVX2 kernels it calls Haswell. Each variable is read
when its library first initialises, so `pin_cpu_kernels` runs when the package is imported
(dpn_lab/__init__.py), before torch and numpy are. A variable already in the environment wins:
`ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AUTO` gives a machine its fastest kernels, and results that only
reproduce on processors like it.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
# the processor features that decide which of those paths can run (AVX-512 only says what pinning avoided)
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def pin_cpu_kernels() -> None:
    """Pin each library's AVX2 path, on a processor that can run it: elsewhere (no AVX2, not x86-64, not
    Linux) each library keeps its own choice (OpenBLAS takes a forced core as given, whether or not the
    processor has its instructions)."""
    if not has_avx2_and_fma():
        return
    for variable, value in PINNED.items():
        os.environ.setdefault(variable, value)


def has_avx2_and_fma() -> bool:
    return {"avx2", "fma"} <= set(_cpuinfo().get("flags", "").split())


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    fields: dict[str, str] = {}
    for line in path.read_text(errors="ignore").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _library_version(pattern: str, build: str) -> str:
    found = re.search(pattern, build)
    return found.group(1) if found else "none"


def kernel_identity() -> dict[str, Any]:
    """What decides a run's CPU numerics, beyond the code and the seed: the library versions, the kernel
    paths in force, the threads, and whether the processor can run the pinned path. Two machines with the
    same identity compute the same numbers; the processor's model is not part of it (`processor` says it)."""
    import torch

    build = torch.__config__.show()
    return {
        "torch": torch.__version__,
        "mkl": _library_version(r"Math Kernel Library Version ([\w.-]+)", build),
        "onednn": _library_version(r"MKL-DNN v([\w.]+)", build),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{
            variable.lower(): os.environ.get(variable, "")
            for variable in PINNED
            if variable != "ATEN_CPU_CAPABILITY"
        },
        "torch_threads": torch.get_num_threads(),
        "avx2_and_fma": has_avx2_and_fma(),
    }


def processor() -> dict[str, Any]:
    """The processor a run was measured on: model name, family/model/stepping, cores, the FLAGS it has."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "model_name": info.get("model name") or platform.processor() or platform.machine(),
        "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "cores": os.cpu_count(),
        "flags": [flag for flag in FLAGS if flag in flags],
        "system": platform.system(),
    }
