"""Hydra configs of dpn_lab (a package so Hydra and wheels find them)."""
