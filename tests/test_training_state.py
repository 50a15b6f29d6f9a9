"""Per-epoch training state and ``xcops train --resume`` on tiny synthetic runs."""

import dataclasses
import json

import pytest
import torch

from xcops import cli
from xcops.checkpoint import load_checkpoint
from xcops.train import ConfigError, TrainConfig, train
from xcops.training_state import STATE_DIR, EpochCheckpoints, saved_summary, state_directory

SYNTHETIC = dict(num_train=300, num_test=60, num_labels=40)
BOW = dict(synthetic=SYNTHETIC, epochs=3, dim=32, batch_size=64, random_negatives=16, seed=3)
SYNCXML = dict(model="syncxml", synthetic=SYNTHETIC, epochs=3, max_len=16, batch_size=64, seed=1,
               model_args=dict(embed_dim=64, num_filters=8, cluster_size=8, top_clusters=4, detach_fraction=0.1))

pytestmark = pytest.mark.usefixtures("single_thread")


class SimulatedCrash(RuntimeError):
    pass


def crash_after_saving(patch, epochs_done: int) -> None:
    """Makes the training loop die right after it saved the state of ``epochs_done`` epochs."""
    save = EpochCheckpoints.save

    def save_then_crash(self, done):
        save(self, done)
        if done == epochs_done:
            raise SimulatedCrash(f"killed after epoch {done}")

    patch.setattr(EpochCheckpoints, "save", save_then_crash)


def crashed_run(tmp_path, monkeypatch, values, epochs_done=2, name="broken") -> TrainConfig:
    cfg = TrainConfig.from_dict({**values, "out": str(tmp_path / name)})
    with monkeypatch.context() as patch:
        crash_after_saving(patch, epochs_done)
        with pytest.raises(SimulatedCrash):
            train(cfg, progress=False)
    return cfg


def weights(run) -> dict:
    return load_checkpoint(run)[0]


@pytest.mark.parametrize("values", [BOW, SYNCXML], ids=["bow", "syncxml"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, values):
    whole = train(TrainConfig.from_dict({**values, "out": str(tmp_path / "whole")}), progress=False)
    cfg = crashed_run(tmp_path, monkeypatch, values)
    assert saved_summary(state_directory(cfg.out))["epochs_done"] == 2
    assert sorted(p.name for p in state_directory(cfg.out).iterdir()) == ["state-rank0-epoch2.pt", "state.json"]
    resumed = train(dataclasses.replace(cfg, resume=True), progress=False)
    assert whole["resumed_at_epoch"] == 0 and resumed["resumed_at_epoch"] == 2
    expected, got = weights(tmp_path / "whole"), weights(cfg.out)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    for key in ("P@1", "P@5", "PSP@3"):
        assert resumed[key] == whole[key]
    if "train_loss" in whole:  # the smoothed loss carries over too
        assert resumed["train_loss"] == whole["train_loss"]
    assert not (tmp_path / "broken" / STATE_DIR).exists()  # deleted once the run is saved
    assert not (tmp_path / "whole" / STATE_DIR).exists()


def test_a_run_without_resume_starts_afresh_over_old_state(tmp_path, monkeypatch):
    whole = train(TrainConfig.from_dict({**BOW, "out": str(tmp_path / "whole")}), progress=False)
    cfg = crashed_run(tmp_path, monkeypatch, BOW, epochs_done=1)
    again = train(cfg, progress=False)
    assert again["resumed_at_epoch"] == 0 and again["P@1"] == whole["P@1"]


def test_resume_without_saved_state_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"resume: .*resume holds no saved training state"):
        TrainConfig.from_dict({**BOW, "out": str(tmp_path / "nothing"), "resume": True})


def test_resume_under_another_config_names_what_changed(tmp_path, monkeypatch):
    cfg = crashed_run(tmp_path, monkeypatch, BOW)
    changed = dataclasses.replace(cfg, resume=True, lr=1e-3)
    with pytest.raises(ValueError, match=r"another config \(lr: saved 0.005, now 0.001\)"):
        train(changed, progress=False)


def test_a_damaged_state_file_is_named(tmp_path, monkeypatch):
    cfg = crashed_run(tmp_path, monkeypatch, BOW)
    path = state_directory(cfg.out) / "state-rank0-epoch2.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"state-rank0-epoch2.pt: truncated or damaged"):
        train(dataclasses.replace(cfg, resume=True), progress=False)


def test_a_state_file_of_another_epoch_is_refused(tmp_path, monkeypatch):
    cfg = crashed_run(tmp_path, monkeypatch, BOW)
    directory = state_directory(cfg.out)
    summary = json.loads((directory / "state.json").read_text())
    (directory / "state.json").write_text(json.dumps(dict(summary, epochs_done=1)))
    with pytest.raises(ValueError, match=r"state-rank0-epoch1.pt is missing"):
        train(dataclasses.replace(cfg, resume=True), progress=False)
    (directory / "state-rank0-epoch2.pt").rename(directory / "state-rank0-epoch1.pt")
    with pytest.raises(ValueError, match=r"state-rank0-epoch1.pt holds epoch 2, .*state.json epoch 1"):
        train(dataclasses.replace(cfg, resume=True), progress=False)


def test_models_without_saved_state_refuse_resume(tmp_path):
    with pytest.raises(ConfigError, match="resume: ngame runs save no per-epoch training state"):
        TrainConfig.from_dict(dict(model="ngame", out=str(tmp_path / "r"), resume=True))


def test_cli_resume_without_state_exits_with_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--out", str(tmp_path / "r"), "--resume", "--quiet"])
    assert exit_info.value.code == 2
    assert "holds no saved training state" in capsys.readouterr().err


def test_fit_outside_train_saves_nothing(tmp_path, monkeypatch):
    """A model's fit called by a user's own code (no state directory) writes no files."""
    from xcops.data import XCTextDataset, generate
    from xcops.models.bow import BowXC

    generate(tmp_path / "data", seed=0, **SYNTHETIC)
    cfg = TrainConfig.from_dict({**BOW, "out": str(tmp_path / "out"), "epochs": 1})
    train_set = XCTextDataset(tmp_path / "data", "trn", max_len=cfg.max_len)
    monkeypatch.chdir(tmp_path)
    BowXC.create(cfg, train_set).fit(cfg, train_set, torch.device("cpu"), progress=False)
    assert not (tmp_path / "out").exists()
