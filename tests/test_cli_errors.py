"""Every bad invocation of issue 11 gives a one-line message naming the file or flag and exit
code 2 (usage) or 1 (data), never a traceback (unless --debug); a failing ``train`` writes
nothing to ``--out``; a run directory describes exactly one run."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from xcops import cli
from xcops.train import TrainConfig, load_run, save_run

TINY = dict(synthetic=dict(num_train=200, num_test=40, num_labels=30), epochs=1, dim=16,
            batch_size=64, random_negatives=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    cli.main(["train", "--config", str(config), "--out", str(root / "run"), "--quiet"])
    return root


def _json(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _short_names(run):
    meta = json.loads((run / "model.json").read_text())
    data = run.parent / "data_copy"
    shutil.copytree(meta["data"], data)
    names = (data / "Y.txt").read_text().splitlines()
    (data / "Y.txt").write_text("\n".join(names[:-3]) + "\n")
    _json(run / "model.json", lambda m: m.update(data=str(data)))


def _nan_weights(run):
    state = load_file(str(run / "model.safetensors"))
    state["classifier.weight"][0, 0] = float("nan")
    save_file(state, str(run / "model.safetensors"))


# (id, damage the copied run directory, command and flags after the run, exit code, message)
RUN_CASES = [
    ("truncated weights", lambda r: (r / "model.safetensors").write_bytes((r / "model.safetensors").read_bytes()[:100]),
     ["predict"], 1, "model.safetensors: truncated or damaged"),
    ("garbage weights", lambda r: (r / "model.safetensors").write_bytes(b"\x00" * 64), ["evaluate"], 1,
     "model.safetensors: truncated or damaged"),
    ("model.json missing a key", lambda r: _json(r / "model.json", lambda m: m.pop("model_config")), ["predict"], 1,
     "model.json: missing key 'model_config'"),
    ("model.json wrong type", lambda r: _json(r / "model.json", lambda m: m.update(max_len="32")), ["predict"], 1,
     "model.json: 'max_len' must be an integer, got '32'"),
    ("model.json not JSON", lambda r: (r / "model.json").write_text("{"), ["predict"], 1, "model.json: not valid JSON"),
    ("model.json bad model_config", lambda r: _json(r / "model.json", lambda m: m["model_config"].update(dim="x")),
     ["predict"], 1, "model.json: model_config does not fit the bow model"),
    ("edited num_labels", lambda r: _json(r / "model.json", lambda m: m["model_config"].update(num_labels=7)),
     ["predict"], 1, "model.safetensors does not match"),
    ("vocab.json a list", lambda r: (r / "vocab.json").write_text("[1, 2]"), ["predict"], 1,
     "vocab.json: not a vocabulary written by xcops"),
    ("vocab.json missing", lambda r: (r / "vocab.json").unlink(), ["predict"], 1, "has no tokenizer: vocab.json is missing"),
    ("NaN weights predict", _nan_weights, ["predict"], 1, "'classifier.weight' holds NaN or Inf"),
    ("NaN weights evaluate", _nan_weights, ["evaluate"], 1, "'classifier.weight' holds NaN or Inf"),
    ("short Y.txt predict", _short_names, ["predict"], 1, "Y.txt has 27 label names but the model has 30 labels"),
    ("short Y.txt evaluate", _short_names, ["evaluate"], 1, "Y.txt has 27 labels but the label matrix has 30"),
    ("--k 0", None, ["predict", "--k", "0"], 2, "argument --k: must be an integer >= 1, got '0'"),
    ("evaluate --k 0", None, ["evaluate", "--k", "0"], 2, "argument --k: must be an integer >= 1"),
    ("--batch-size -5", None, ["predict", "--batch-size", "-5"], 2, "argument --batch-size: must be an integer >= 1"),
    ("--device banana", None, ["predict", "--device", "banana"], 2, "--device: 'banana' is not a device"),
    ("--input a directory", None, ["predict", "--input", "."], 1, "--input .: is a directory"),
    ("--input missing", None, ["predict", "--input", "no/such/file"], 1, "--input no/such/file: no such file"),
]
if not torch.cuda.is_available():
    RUN_CASES.append(("--device cuda without a GPU", None, ["predict", "--device", "cuda"], 2,
                      "--device: 'cuda' asked for, but no CUDA GPU is available"))


def _fails(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    return exit_info.value.code, err


@pytest.mark.parametrize("case,damage,command,code,message", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_run_or_flags(trained, tmp_path, capsys, monkeypatch, case, damage, command, code, message):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    if damage is not None:
        damage(run)
    monkeypatch.setattr("sys.stdin", open(__file__))  # predict reads texts from stdin by default
    got_code, err = _fails([command[0], str(run), "--quiet", *command[1:]], capsys)
    assert got_code == code, err
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1 if code == 1 else "Traceback" not in err


# (id, config file content or None, file suffix, extra flags, message); all exit 2.
TRAIN_CASES = [
    ("malformed YAML", "epochs: [1\n", ".yaml", [], "not valid YAML"),
    ("malformed JSON", "{", ".json", [], "not valid JSON"),
    ("YAML not a mapping", "- 1\n", ".yaml", [], "must hold a mapping of config keys, got list"),
    ("--model-args a list", None, "", ["--model-args", "[1]"], "--model-args must be a JSON object, got '[1]'"),
    ("--model-args not JSON", None, "", ["--model-args", "{x"], "--model-args must be a JSON object"),
    ("epochs: 1.5", "epochs: 1.5\n", ".yaml", [], "epochs must be an integer, got 1.5"),
    ("epochs: -1", "epochs: -1\n", ".yaml", [], "epochs must be >= 1, got -1"),
    ("dim: 0", "dim: 0\n", ".yaml", [], "dim must be >= 1, got 0"),
    ("lr: fast", "lr: fast\n", ".yaml", [], "lr must be a finite number, got 'fast'"),
    ("lr: 0", "lr: 0\n", ".yaml", [], "lr must be > 0"),
    ('fused: "no"', 'fused: "no"\n', ".yaml", [], "fused must be true or false, got 'no'"),
    ("negative random_negatives", "random_negatives: -3\n", ".yaml", [], "random_negatives must be >= 0, got -3"),
    ("propensity_a: x", 'propensity_a: "x"\n', ".yaml", [], "propensity_a must be a finite number"),
    ("--top-k 0", None, "", ["--top-k", "0"], "top_k must be >= 1, got 0"),
    ("unknown key", "epoch: 3\n", ".yaml", [], "unknown config keys ['epoch']"),
    ("model_args a string", 'model_args: "x"\n', ".yaml", [], "model_args must be a mapping"),
    ("unknown bow model_args", None, "", ["--model-args", '{"cluster_size": 3}'],
     "the bow model takes no model_args, got ['cluster_size']"),
    ("unknown syncxml model_args", None, "", ["--model", "syncxml", "--model-args", '{"bogus": 1}'],
     "unknown syncxml model_args ['bogus']"),
    ("unknown model", None, "", ["--model", "nope"], "unknown model 'nope'"),
    ("--device banana", None, "", ["--device", "banana"], "'banana' is not a device"),
    ("bad synthetic key", "synthetic: {num_rows: 3}\n", ".yaml", [], "synthetic: unknown key 'num_rows'"),
]


@pytest.mark.parametrize("case,content,suffix,flags,message", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_config(tmp_path, capsys, case, content, suffix, flags, message):
    out = tmp_path / "runs" / "out"
    argv = ["train", "--out", str(out), "--quiet", *flags]
    if content is not None:
        config = tmp_path / f"config{suffix}"
        config.write_text(content)
        argv += ["--config", str(config)]
    code, err = _fails(argv, capsys)
    assert code == 2, err
    assert message in err and len(err.splitlines()) == 1
    if content is not None and case.startswith(("malformed", "YAML")):
        assert str(tmp_path / "config") in err
    # Validation comes first: neither the run nor the synthetic data set was written.
    assert not (tmp_path / "runs").exists()


def test_config_a_directory_and_out_a_file(tmp_path, capsys):
    code, err = _fails(["train", "--config", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and f"--config {tmp_path}: is a directory" in err
    target = tmp_path / "a_file"
    target.write_text("")
    code, err = _fails(["train", "--out", str(target), "--quiet"], capsys)
    assert code == 2 and f"out: {target} exists and is not a directory" in err


def test_missing_data_and_run_are_data_errors(tmp_path, capsys):
    code, err = _fails(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 1 and "nothing" in err
    code, err = _fails(["evaluate", str(tmp_path / "no_run"), "--quiet"], capsys)
    assert code == 1 and "no_run is not an xcops run directory" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        cli.main(["--debug", "train", "--epochs", "0", "--out", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError):
        cli.main(["evaluate", str(tmp_path / "no_run"), "--debug"])


class _StubTokenizer:
    """Stands in for a transformers tokenizer: saving writes one file into its folder."""

    def save_pretrained(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "tokenizer.json").write_text("{}")


def test_a_reused_run_directory_describes_only_the_new_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    model, tokenizer, meta = load_run(run)
    assert meta["tokenizer"] == "vocab.json"
    cfg = TrainConfig.from_dict(dict(TINY, out=str(run)))
    save_run(cfg, model, _StubTokenizer(), {}, Path(meta["data"]))
    assert not (run / "vocab.json").exists() and (run / "tokenizer" / "tokenizer.json").exists()
    assert json.loads((run / "model.json").read_text())["tokenizer"] == "tokenizer"
    save_run(cfg, model, tokenizer, {}, Path(meta["data"]))
    assert (run / "vocab.json").exists() and not (run / "tokenizer").exists()
    assert load_run(run)[2]["tokenizer"] == "vocab.json"


def test_cluster_flags(tmp_path, capsys):
    import numpy as np

    points = tmp_path / "x.npy"
    np.save(points, np.random.default_rng(0).standard_normal((16, 3)))
    code, err = _fails(["cluster", str(points), "--num-clusters", "2", "--device", "banana"], capsys)
    assert code == 2 and "--device: 'banana' is not a device" in err
    code, err = _fails(["cluster", str(points), "--num-clusters", "0"], capsys)
    assert code == 2 and "argument --num-clusters: must be an integer >= 1" in err
    code, err = _fails(["cluster", str(points), "--num-clusters", "32", "--output", str(tmp_path / "c.npz")], capsys)
    assert code == 1 and err == "xcops cluster: xcops.balanced_kmeans: num_clusters must be <= the number of points N = 16, got 32"
    assert not (tmp_path / "c.npz").exists()
