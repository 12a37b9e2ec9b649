"""Figures of a DPN, written to files and W&B."""

import matplotlib

matplotlib.use("Agg")  # figures are written to files and W&B, never shown in a window
