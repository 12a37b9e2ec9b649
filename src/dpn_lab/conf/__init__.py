"""Hydra configs of dpn_lab (a package so Hydra and wheels find them).

The potential's options are not written in a YAML file: PotentialConfig defines them, and its defaults are
registered here as the config node model/_potential, which conf/model/dpn.yaml includes. Importing this
package (dpn_lab.config does, and so every command before Hydra composes) registers it."""

from dataclasses import asdict

from hydra.core.config_store import ConfigStore

from dpn_lab.model.options import PotentialConfig

ConfigStore.instance().store(group="model", name="_potential", node=asdict(PotentialConfig()))
