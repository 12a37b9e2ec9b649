"""dpn_lab: train, sweep, inspect and compare Denoising Potential Networks.

Import from the subpackages (dpn_lab.model.potential, dpn_lab.data.digits, ...): this package imports nothing
heavy, so that the commands check their configuration before torch is loaded. It does pin the CPU kernels
torch will use (dpn_lab.runs.cpu_kernels), which must happen before torch loads."""

from dpn_lab.runs.cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()
