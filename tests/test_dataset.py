"""XCTextDataset: tokenisation, the token cache, and the transformers-tokenizer path."""

import os

import numpy as np
import pytest
import torch

from xcops.data import SimpleTokenizer, XCTextDataset, generate
from xcops.data.tokenize import encode_texts


@pytest.fixture
def data_dir(tmp_path):
    generate(tmp_path / "synth", num_train=300, num_test=80, num_labels=40, seed=0)
    return tmp_path / "synth"


def forbid_tokenizing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("tokenised again although the cache should have been used")

    monkeypatch.setattr(SimpleTokenizer, "fit", classmethod(fail))
    monkeypatch.setattr(SimpleTokenizer, "encode", fail)


def test_simple_tokenizer():
    tok = SimpleTokenizer.fit(["The cat, the HAT.", "a cat"], min_count=1)
    assert tok.words[:4] == ["<pad>", "<unk>", "cat", "the"]  # by count, then alphabetical
    np.testing.assert_array_equal(tok.encode(["the dog cat", ""], 4), [[3, 1, 2, 0], [0, 0, 0, 0]])
    assert len(SimpleTokenizer.fit(["a a b c"], min_count=2)) == 3
    assert len(SimpleTokenizer.fit(["a a b c"], max_size=3)) == 3
    assert SimpleTokenizer.from_json(tok.to_json()).words == tok.words


def test_loads_split_and_hits_cache_on_second_load(data_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = XCTextDataset(data_dir, "trn", max_len=12, cache_dir=cache)
    assert not first.cache_hit
    assert first.input_ids.shape == (300, 12) and first.input_ids.dtype == torch.int64
    assert first.labels.shape == (300, 40)
    assert first.label_input_ids.shape == (40, 12)
    assert (first.input_ids[:, 0] > 1).all()  # every text starts with a known word
    assert (first.attention_mask.sum(1) >= 1).all()

    forbid_tokenizing(monkeypatch)
    second = XCTextDataset(data_dir, "trn", max_len=12, cache_dir=cache)
    assert second.cache_hit
    assert torch.equal(first.input_ids, second.input_ids)
    assert torch.equal(first.label_input_ids, second.label_input_ids)
    assert second.tokenizer.words == first.tokenizer.words


def test_test_split_uses_the_training_vocabulary(data_dir, tmp_path):
    train = XCTextDataset(data_dir, "trn", max_len=10, cache_dir=tmp_path / "c")
    test = XCTextDataset(data_dir, "tst", max_len=10, cache_dir=tmp_path / "c")
    assert not test.cache_hit  # the vocabulary came from the cache, the test tokens did not
    assert test.tokenizer.words == train.tokenizer.words
    assert test.input_ids.shape == (80, 10)


def test_changed_file_invalidates_cache(data_dir, tmp_path):
    XCTextDataset(data_dir, "tst", max_len=8, cache_dir=tmp_path / "c")
    path = data_dir / "tst_X.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["zzz unseen words"] + lines[1:]) + "\n")
    again = XCTextDataset(data_dir, "tst", max_len=8, cache_dir=tmp_path / "c")
    assert not again.cache_hit
    assert again.input_ids[0, 0] == SimpleTokenizer.UNK


def test_default_cache_lives_in_a_writable_data_dir(data_dir):
    XCTextDataset(data_dir, "tst", max_len=8)
    assert any(p.name.startswith("tokens-") for p in (data_dir / ".xcops_cache").iterdir())
    assert XCTextDataset(data_dir, "tst", max_len=8).cache_hit


def test_items_and_collate(data_dir, tmp_path):
    ds = XCTextDataset(data_dir, "trn", max_len=6, cache_dir=tmp_path / "c")
    ids, indptr, indices = XCTextDataset.collate([ds[0], ds[5]])
    assert ids.shape == (2, 6)
    row0 = ds.labels[0].indices
    assert indices[: indptr[1]].tolist() == sorted(row0.tolist())
    assert indptr[-1] == len(row0) + ds.labels[5].nnz


class FakeHFTokenizer:
    """The slice of the transformers tokenizer interface the dataset uses."""

    name_or_path = "fake-wordpiece"
    pad_token_id = 7
    special_tokens_map = {"pad_token": "[PAD]"}

    def __init__(self):
        self.calls = 0

    def __len__(self):
        return 1000

    def __call__(self, texts, padding, truncation, max_length):
        assert padding == "max_length" and truncation
        self.calls += 1
        ids = []
        for t in texts:
            row = [100 + len(w) for w in t.split()][:max_length]
            ids.append(row + [self.pad_token_id] * (max_length - len(row)))
        return {"input_ids": ids}


def test_transformers_style_tokenizer_and_cache(data_dir, tmp_path):
    tok = FakeHFTokenizer()
    ds = XCTextDataset(data_dir, "tst", tokenizer=tok, max_len=9, cache_dir=tmp_path / "c")
    assert ds.pad_token_id == 7 and not ds.cache_hit and tok.calls == 2  # texts and label names
    assert (ds.input_ids[:, 0] >= 100).all()
    again = XCTextDataset(data_dir, "tst", tokenizer=tok, max_len=9, cache_dir=tmp_path / "c")
    assert again.cache_hit and tok.calls == 2
    assert torch.equal(again.input_ids, ds.input_ids)
    other_length = XCTextDataset(data_dir, "tst", tokenizer=tok, max_len=5, cache_dir=tmp_path / "c")
    assert not other_length.cache_hit


def test_encode_requires_a_pad_token():
    tok = FakeHFTokenizer()
    tok.pad_token_id = None
    with pytest.raises(ValueError, match="no pad token"):
        encode_texts(tok, ["a"], 4)


def test_missing_files_and_mismatches(data_dir, tmp_path):
    with pytest.raises(ValueError, match="split"):
        XCTextDataset(data_dir, "val")
    os.remove(data_dir / "tst_X_Y.txt")
    with pytest.raises(FileNotFoundError, match="tst_X_Y.txt"):
        XCTextDataset(data_dir, "tst", cache_dir=tmp_path / "c")
    (data_dir / "trn_X.txt").write_text("only one line\n")
    with pytest.raises(ValueError, match="1 texts but the label matrix has 300 rows"):
        XCTextDataset(data_dir, "trn", cache_dir=tmp_path / "c")
