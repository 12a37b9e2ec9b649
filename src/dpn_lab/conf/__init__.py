"""Hydra configs of dpn_lab (a package so Hydra and wheels find them).

The model's options are not written in a YAML file: PotentialConfig and TrainingConfig (dpn_lab.model.options)
define them, and their defaults are registered here as the config nodes model/_potential and model/_training,
which conf/model/dpn.yaml includes. Importing this package (dpn_lab.config does, and so every command before
Hydra composes) registers them."""

from dataclasses import asdict

from hydra.core.config_store import ConfigStore

from dpn_lab.model.options import PotentialConfig, TrainingConfig

ConfigStore.instance().store(group="model", name="_potential", node=asdict(PotentialConfig()))
ConfigStore.instance().store(group="model", name="_training", node=asdict(TrainingConfig()))
