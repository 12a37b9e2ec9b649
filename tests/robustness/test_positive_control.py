"""The positive control: the comparison's statistics find the gain Tweedie's step must give by construction."""

import numpy as np
import pytest

from dpn_lab.results import main
from dpn_lab.robustness.positive_control import positive_control


def test_the_paired_interval_of_the_positive_control_lies_above_zero(capsys):
    per_seed, summary = positive_control(seeds=5)
    differences = (per_seed["treatment"] - per_seed["reference"]).to_numpy()
    assert summary["diff"] == pytest.approx(differences.mean())
    assert summary["ci_low"] > 0, summary  # the gain is found, with the comparison's own statistics
    assert (per_seed["denoising_ratio"] < 0.6).all()  # and it is denoising that buys it
    assert main(["positive-control", "--seeds", "2"]) == 0
    assert "95% interval" in capsys.readouterr().out


def test_without_noise_to_remove_there_is_no_gain():
    per_seed, summary = positive_control(seeds=2, noise_scale=1e-3, n_train=400, n_test=400)
    assert np.abs(per_seed["treatment"] - per_seed["reference"]).max() <= 0.01
