"""A text XC data directory (the Extreme Classification Repository layout) as token-id tensors.

Layout, each file optionally compressed (``.xz``/``.gz``):
``trn_X.txt``/``tst_X.txt`` (one text per line), ``trn_X_Y.txt``/``tst_X_Y.txt`` (sparse label
matrices), and optionally ``Y.txt`` (one label text per line, ``URI<TAB>name`` or just ``name``).

Tokenising half a million titles takes seconds, so token ids are cached as ``.npz`` files keyed
by the tokenizer, the maximum length and the source file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .formats import read_label_names, read_sparse, read_text
from .stopwords import stopword_list
from .tokenize import SimpleTokenizer, encode_texts, tokenizer_fingerprint

_CACHE_VERSION = 1  # bump when the cached arrays' meaning changes
SPLITS = ("trn", "tst")


def find_file(data_dir: Path, name: str, required: bool = True) -> Path | None:
    """``data_dir/name``, or its ``.xz``/``.gz`` compressed form."""
    for suffix in ("", ".xz", ".gz"):
        path = data_dir / (name + suffix)
        if path.exists():
            return path
    if required:
        raise FileNotFoundError(f"{data_dir}: no {name} (nor {name}.xz / {name}.gz)")
    return None


def default_cache_dir(data_dir: Path) -> Path:
    """``<data_dir>/.xcops_cache`` when the data directory is writable, else a per-user cache
    (``$XDG_CACHE_HOME/xcops`` or ``~/.cache/xcops``): shared data is often read-only."""
    if os.access(data_dir, os.W_OK):
        return data_dir / ".xcops_cache"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xcops"


def _file_key(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _key(**parts: Any) -> str:
    blob = json.dumps({"version": _CACHE_VERSION, **parts}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _save_atomic(path: Path, write) -> None:
    # Write-then-rename so a concurrent or interrupted run never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class XCTextDataset(torch.utils.data.Dataset):
    """One split (``"trn"`` or ``"tst"``) of a text XC data directory, tokenised.

    ``tokenizer``: a ``transformers`` tokenizer (anything with ``__call__(texts, padding=,
    truncation=, max_length=)``, ``pad_token_id`` and ``len()``), a :class:`SimpleTokenizer`, or
    ``None`` for a :class:`SimpleTokenizer` fitted on the *training* texts (``min_count``,
    ``max_vocab``, ``stopwords``: the name of a list in :mod:`xcops.data.stopwords`), so the train and test splits loaded separately share one vocabulary.

    Attributes: ``input_ids`` int64 ``[N, max_len]`` (padded with ``pad_token_id``), ``labels``
    float32 csr ``[N, L]``, ``label_names`` and ``label_input_ids`` int64 ``[L, label_max_len]``
    (``None`` without ``Y.txt``), ``tokenizer``, and ``cache_hit`` (True when every token array
    came from the cache). Items are ``(input_ids[i], label ids of row i)``; :meth:`collate`
    batches them into padded ids and CSR ``(indptr, indices)`` labels.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str = "trn",
        tokenizer: Any = None,
        max_len: int = 32,
        label_max_len: int | None = None,
        min_count: int = 1,
        max_vocab: int | None = None,
        stopwords: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.max_len = max_len
        self.label_max_len = label_max_len or max_len
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.data_dir)
        self._hits: list[bool] = []

        if tokenizer is None:
            tokenizer = self._simple_tokenizer(min_count, max_vocab, stopwords)
        self.tokenizer = tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)

        texts_path = find_file(self.data_dir, f"{split}_X.txt")
        self.labels = read_sparse(find_file(self.data_dir, f"{split}_X_Y.txt"))
        self.input_ids = self._tokens(texts_path, read_text, self.max_len)
        if len(self.input_ids) != self.labels.shape[0]:
            raise ValueError(
                f"{texts_path} has {len(self.input_ids)} texts but the label matrix has "
                f"{self.labels.shape[0]} rows"
            )

        names_path = find_file(self.data_dir, "Y.txt", required=False)
        self.label_names = None
        self.label_input_ids = None
        if names_path is not None:
            self.label_names = read_label_names(names_path)
            if len(self.label_names) != self.num_labels:
                raise ValueError(
                    f"{names_path} has {len(self.label_names)} labels but the label matrix has "
                    f"{self.num_labels} columns"
                )
            self.label_input_ids = self._tokens(names_path, read_label_names, self.label_max_len)
        self.cache_hit = all(self._hits)

    @property
    def num_labels(self) -> int:
        return self.labels.shape[1]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.input_ids != self.pad_token_id

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.labels.indptr[i], self.labels.indptr[i + 1]
        return self.input_ids[i], torch.from_numpy(self.labels.indices[lo:hi].astype(np.int64))

    @staticmethod
    def collate(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids [B, T], label indptr [B+1], label indices [nnz])``."""
        ids = torch.stack([item[0] for item in batch])
        counts = torch.tensor([len(item[1]) for item in batch], dtype=torch.int64)
        indptr = torch.zeros(len(batch) + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=indptr[1:])
        return ids, indptr, torch.cat([item[1] for item in batch])

    def _simple_tokenizer(self, min_count: int, max_vocab: int | None, stopwords: str | None) -> SimpleTokenizer:
        train_texts = find_file(self.data_dir, "trn_X.txt")
        key = _key(kind="vocab", source=_file_key(train_texts), min_count=min_count, max_vocab=max_vocab,
                   **({"stopwords": stopwords} if stopwords else {}))
        path = self.cache_dir / f"vocab-{key}.json"
        if path.exists():
            self._hits.append(True)
            return SimpleTokenizer.from_json(path.read_text(encoding="utf-8"))
        self._hits.append(False)
        tok = SimpleTokenizer.fit(read_text(train_texts), min_count=min_count, max_size=max_vocab,
                                  stopwords=stopword_list(stopwords))
        _save_atomic(path, lambda f: f.write(tok.to_json().encode("utf-8")))
        return tok

    def _tokens(self, source: Path, read, max_len: int) -> torch.Tensor:
        key = _key(
            kind="tokens",
            source=_file_key(source),
            tokenizer=tokenizer_fingerprint(self.tokenizer),
            max_len=max_len,
        )
        path = self.cache_dir / f"tokens-{key}.npz"
        if path.exists():
            self._hits.append(True)
            with np.load(path) as f:
                return torch.from_numpy(f["ids"].astype(np.int64))
        self._hits.append(False)
        ids = encode_texts(self.tokenizer, read(source), max_len)
        # int32 halves the cache; no vocabulary comes near 2^31 ids.
        _save_atomic(path, lambda f: np.savez(f, ids=ids.astype(np.int32)))
        return torch.from_numpy(ids)

