"""The committed configs (configs/*.yaml, named in the README) load and validate as `xcops train`
would take them."""

import pathlib

import pytest

from xcops.cli import _load_config_file
from xcops.models.syncxml import SyncXMLOptions
from xcops.train import TrainConfig

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_committed_config_is_a_valid_training_config(path):
    cfg = TrainConfig.from_dict(_load_config_file(str(path)))
    cfg.validate()
    if cfg.model == "syncxml":
        SyncXMLOptions.parse(cfg.model_args)


def test_there_are_configs_to_check():
    assert CONFIGS
