"""bench/syncxml_fusion.py rebuilds the held-out split of a run as `xcops train` made it."""

import importlib.util
import pathlib

import pytest
import torch

from xcops.distributed.training import training_rows
from xcops.models.syncxml import SyncXMLOptions, held_out_rows
from xcops.train import TrainConfig

PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "syncxml_fusion.py"
ARGS = {"centroid_fusion": True, "fusion_rows": 50}


def load_script():
    spec = importlib.util.spec_from_file_location("syncxml_fusion", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_rebuilt_split_is_what_each_process_trained_and_held_out(world):
    script = load_script()
    cfg = TrainConfig(model="syncxml", out="run", seed=3, model_args=ARGS)
    num_rows = 301
    held = held_out_rows(num_rows, SyncXMLOptions.parse(ARGS), cfg.seed, world)
    per_process = len(held) // world
    held_out, trained = script.held_out_split(cfg, {"fusion_rows": per_process, "processes": world}, num_rows)
    shares = [training_rows(num_rows, rank, world) for rank in range(world)]
    # What SyncXML.fit does in each process: its share, less the rows of it that are held out.
    fitted = [share[~torch.isin(share, held)] for share in shares]
    assert torch.equal(held_out, held) and torch.equal(trained, torch.cat(fitted).sort().values)
    assert len(set(map(len, fitted))) == 1  # every process steps as often
    with pytest.raises(SystemExit, match="held out 1"):
        script.held_out_split(cfg, {"fusion_rows": 1, "processes": world}, num_rows)
    with pytest.raises(SystemExit, match="held no rows"):
        script.held_out_split(cfg, {"fusion_rows": 0, "processes": world}, num_rows)
