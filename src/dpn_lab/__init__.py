"""dpn_lab: train, sweep, inspect and compare Denoising Potential Networks.

Import from the subpackages (dpn_lab.model.potential, dpn_lab.data.digits, ...): this package imports nothing,
so that the commands check their configuration before torch is loaded."""
