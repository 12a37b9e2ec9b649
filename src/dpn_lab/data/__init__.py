"""Data sources, one LightningDataModule each, all on `TensorDataModule` (base.py); `registry.py` maps their
names to classes. Nothing is imported here, so that `corruption.py` can be read without torch."""
