"""torch, MKL and oneDNN run their AVX2 kernels on every machine that has them, unless the user says otherwise."""

import os
import subprocess
import sys

import pytest
import torch

from dpn_lab.runs.cpu_kernels import PINNED, kernel_identity, processor

HAS_AVX2 = kernel_identity()["avx2_and_fma"]


@pytest.mark.skipif(not HAS_AVX2, reason="the pinned path needs AVX2 and FMA")
def test_the_test_process_runs_the_pinned_kernels():
    for variable, value in PINNED.items():
        assert os.environ[variable] == value
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    identity = kernel_identity()
    assert identity["mkl_cbwr"] == "AVX2" and identity["onednn_max_cpu_isa"] == "AVX2"
    assert identity["torch"] == torch.__version__ and identity["torch_threads"] == torch.get_num_threads()


def _openblas_architectures() -> set[str]:
    """The kernels numpy's and scipy's OpenBLAS run (threadpoolctl, scikit-learn's own dependency)."""
    import scipy.linalg  # noqa: F401  loads scipy's OpenBLAS beside numpy's
    from threadpoolctl import threadpool_info

    return {lib["architecture"] for lib in threadpool_info() if lib["internal_api"] == "openblas"}


@pytest.mark.skipif(not HAS_AVX2, reason="the pinned path needs AVX2 and FMA")
def test_numpy_and_scipy_run_openblas_avx2_kernels():
    assert _openblas_architectures() == {"Haswell"}


def _in_fresh_interpreter(code: str, env: dict) -> str:
    """What `code` prints in an interpreter that imports dpn_lab first, with none of the pins set but `env`."""
    environment = {k: v for k, v in os.environ.items() if k not in PINNED} | env
    done = subprocess.run(
        [sys.executable, "-c", f"import dpn_lab\n{code}"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


CAPABILITY = "import torch; print(torch.backends.cpu.get_cpu_capability())"
OPENBLAS = (
    "import numpy; from threadpoolctl import threadpool_info\n"
    "print(*{l['architecture'] for l in threadpool_info() if l['internal_api'] == 'openblas'})"
)


@pytest.mark.slow  # four interpreters, two of which import torch
@pytest.mark.skipif(not HAS_AVX2, reason="the pinned path needs AVX2 and FMA")
def test_importing_the_package_pins_the_kernels_before_torch_loads_and_the_users_choice_wins():
    assert _in_fresh_interpreter(CAPABILITY, {}) == "AVX2"
    assert _in_fresh_interpreter(CAPABILITY, {"ATEN_CPU_CAPABILITY": "default"}) == "DEFAULT"
    assert _in_fresh_interpreter(OPENBLAS, {}) == "Haswell"
    assert _in_fresh_interpreter(OPENBLAS, {"OPENBLAS_CORETYPE": "Prescott"}) != "Haswell"


def test_the_processor_record_names_the_model_and_its_vector_units():
    found = processor()
    assert found["cores"] == os.cpu_count() and found["model_name"]
    assert ("avx2" in found["flags"]) == HAS_AVX2 and set(found["flags"]) <= {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "amx_tile",
    }


def test_a_command_run_inside_the_test_process_sees_its_environment(tmp_path):
    """run_in_process once built the command's environment after clearing the test process's: MKL, which
    reads MKL_CBWR at its first call, then ran unpinned in whichever test called it first."""
    from conftest import run_in_process

    probe = "+probe=${oc.env:MKL_CBWR}_${oc.env:PATH}"
    done = run_in_process("dpn_lab.train", "--cfg", "job", "--resolve", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"probe: {os.environ['MKL_CBWR']}_{os.environ['PATH']}" in done.stdout


@pytest.mark.parametrize(
    "flags, pinned", [("fpu sse4_2 avx avx2 fma", True), ("fpu sse4_2 avx", False), ("", False)]
)
def test_the_kernels_are_pinned_only_on_a_processor_that_can_run_them(monkeypatch, flags, pinned):
    """OpenBLAS takes a forced core as given: on a processor without AVX2 nothing may be pinned."""
    from dpn_lab.runs import cpu_kernels

    monkeypatch.setattr(cpu_kernels, "_cpuinfo", lambda: {"flags": flags} if flags else {})
    for variable in PINNED:
        monkeypatch.delenv(variable, raising=False)
    cpu_kernels.pin_cpu_kernels()
    assert {v: os.environ.get(v) for v in PINNED} == (PINNED if pinned else dict.fromkeys(PINNED))
