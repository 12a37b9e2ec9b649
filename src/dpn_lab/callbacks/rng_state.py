"""RNGStateCheckpoint: the random generators' states travel with the checkpoint, so a resumed run draws
the same numbers (data order, noise) as the run that was never interrupted."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch


class RNGStateCheckpoint(L.Callback):
    """Saves and restores the torch (CPU and CUDA), numpy and python generators, as plain tensors and lists
    (loadable with weights_only=True)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": position,
                "has_gauss": has_gauss,
                "gauss": gauss,
            },
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        n = state_dict["numpy"]
        np.random.set_state(
            (n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"])
        )
        p = state_dict["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
