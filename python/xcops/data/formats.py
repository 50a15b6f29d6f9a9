"""Readers and writers of the Extreme Classification Repository file formats.

- sparse matrix (``*_X_Y.txt``): header ``num_rows num_cols``, then one row per line of
  ``col:value`` pairs (0-based columns; an empty line is a row with no entries);
- bag of words (``train.txt``/``test.txt``): header ``num_points num_features num_labels``, then
  ``l1,l2,... f:v f:v`` per line (a line starts with a space when it has no labels);
- text (``*_X.txt``, ``Y.txt``): one text per line.

Paths ending in ``.xz`` or ``.gz`` are decompressed (and compressed on write) transparently.
Parsing runs in C++ (``xcops._C``); malformed files (a bad number, a truncated or corrupt
archive, text that is not UTF-8) raise ``ValueError`` naming the file, and the line where
there is one. ``_parse_sparse_python``/``_parse_bow_python`` are the plain-Python references
of the C++ parsers: both accept exactly the same inputs and return the same arrays.

Number syntax (both parsers): an index (column, feature, label, header count) is ASCII
decimal digits, nothing else; a value is ``[+-]?(D+[.D*]|.D+)([eE][+-]?D+)?`` (D an ASCII
digit), read as the nearest double and rounded to float32. ``inf``, ``nan``, hex floats, digit
separators and non-ASCII digits are rejected, as are values beyond float32's range; values
below it round to 0. Entries whose value is 0 (``0:0``, ``3:-0.0``, ``1e-50``, or duplicates
summing to 0) are dropped by the readers, so a stored entry is always a nonzero one.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import zlib
from typing import IO, Iterable

import numpy as np
import scipy.sparse as sp

PathLike = str | os.PathLike


def _open(path: PathLike, mode: str) -> IO:
    name = os.fspath(path)
    if name.endswith(".xz"):
        return lzma.open(name, mode)
    if name.endswith(".gz"):
        return gzip.open(name, mode)
    return open(name, mode)


def read_bytes(path: PathLike) -> bytes:
    """The whole (decompressed) content of ``path``; a truncated or corrupt ``.xz``/``.gz``
    raises ``ValueError: <path>: ...``."""
    try:
        with _open(path, "rb") as f:
            return f.read()
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error) as err:
        kind = "xz" if os.fspath(path).endswith(".xz") else "gzip"
        raise ValueError(f"{os.fspath(path)}: truncated or corrupt {kind} file ({err})") from None
    except IsADirectoryError:
        raise ValueError(f"{os.fspath(path)}: is a directory, not a file") from None


def _write_lines(path: PathLike, header: str | None, lines: Iterable[str]) -> None:
    with _open(path, "wb") as f:
        if header is not None:
            f.write((header + "\n").encode())
        f.write("".join(line + "\n" for line in lines).encode("utf-8"))


def _csr(indptr, indices, data, shape) -> sp.csr_matrix:
    m = sp.csr_matrix((data, indices, indptr), shape=shape)
    # Files may list a row's columns in any order or repeat one; downstream code (metrics,
    # samplers) relies on sorted unique columns, as scipy's canonical format guarantees.
    m.sum_duplicates()
    # The one place explicit zeros go: kept, a "0:0" label would train as a positive while
    # the metrics ignore it.
    m.eliminate_zeros()
    return m


def read_sparse(path: PathLike) -> sp.csr_matrix:
    """Read an XC sparse matrix file into a float32 ``scipy.sparse.csr_matrix``."""
    from xcops import _C

    indptr, indices, data, rows, cols = _C.parse_sparse(read_bytes(path), os.fspath(path))
    return _csr(indptr, indices, data, (rows, cols))


def read_bow(path: PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Read an XC bag-of-words file into ``(X [N, F] float32 csr, Y [N, L] binary float32 csr)``."""
    from xcops import _C

    x_ptr, x_idx, x_val, y_ptr, y_idx, n, f, l = _C.parse_bow(read_bytes(path), os.fspath(path))
    y_val = np.ones(len(y_idx), dtype=np.float32)
    y = _csr(y_ptr, y_idx, y_val, (n, l))
    y.data[:] = 1.0  # a label repeated on a line is still one label
    return _csr(x_ptr, x_idx, x_val, (n, f)), y


def read_text(path: PathLike) -> list[str]:
    """One string per line (UTF-8), without the line ending.

    Splits on ``\\n`` only: ``str.splitlines`` would also split titles that contain
    characters such as U+2028 and silently misalign texts with their label rows.
    """
    content = read_bytes(path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = content.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{os.fspath(path)}: line {line}: not UTF-8 text (byte "
                         f"{content[err.start:err.start + 1]!r} at offset {err.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_label_names(path: PathLike) -> list[str]:
    """Label names from a ``Y.txt``: the part after the last tab (``URI<TAB>name`` lines), or
    the whole line when it has no tab."""
    return [line.rsplit("\t", 1)[-1] for line in read_text(path)]


def write_text(path: PathLike, texts: Iterable[str]) -> None:
    """Write one text per line; a text containing a line break would shift every later row."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if "\n" in t or "\r" in t:
            raise ValueError(f"{os.fspath(path)}: text {i} contains a line break: {t!r}")
    _write_lines(path, None, texts)


def _format_rows(m: sp.csr_matrix) -> list[str]:
    cols = m.indices.astype(str)
    if m.nnz and np.all(m.data == 1):
        pairs = np.char.add(cols, ":1")
    else:
        # numpy prints the shortest string that reads back to the same float32
        vals = m.data.astype(np.float32).astype(str)
        pairs = np.char.add(np.char.add(cols, ":"), vals)
    pairs = pairs.tolist()
    ptr = m.indptr
    return [" ".join(pairs[ptr[i] : ptr[i + 1]]) for i in range(m.shape[0])]


def write_sparse(path: PathLike, m: sp.spmatrix | sp.sparray) -> None:
    """Write a sparse matrix in the XC sparse format (values as float32, explicit zeros dropped)."""
    m = sp.csr_matrix(m, copy=True)
    m.eliminate_zeros()
    m.sort_indices()
    _write_lines(path, f"{m.shape[0]} {m.shape[1]}", _format_rows(m))


def write_bow(path: PathLike, X: sp.spmatrix | sp.sparray, Y: sp.spmatrix | sp.sparray) -> None:
    """Write features ``X [N, F]`` and labels ``Y [N, L]`` (its nonzeros) as an XC BoW file."""
    X = sp.csr_matrix(X, copy=True)
    Y = sp.csr_matrix(Y, copy=True)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    X.eliminate_zeros()
    X.sort_indices()
    Y.eliminate_zeros()
    Y.sort_indices()
    features = _format_rows(X)
    labels = Y.indices.astype(str).tolist()
    ptr = Y.indptr
    lines = []
    for i, feats in enumerate(features):
        labs = ",".join(labels[ptr[i] : ptr[i + 1]])
        # A row without labels starts with a space so its first feature is not read as labels.
        lines.append(f"{labs} {feats}" if feats or not labs else labs)
    _write_lines(path, f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}", lines)


_SPACE = re.compile(rb"[ \t\r]+")
_INDEX = re.compile(rb"[0-9]+")
_PAIR = re.compile(rb"([0-9]+):([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_LABELS = re.compile(rb"[0-9]+(?:,[0-9]+)*")
_MAX_INDEX = 2**63 - 1


def _reference_lines(content: bytes | str) -> list[bytes]:
    if isinstance(content, str):
        content = content.encode("utf-8")
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _tokens(line: bytes) -> list[bytes]:
    return [t for t in _SPACE.split(line) if t]


def _reference_header(lines: list[bytes], count: int, path: str) -> list[int]:
    tokens = _tokens(lines[0]) if lines else []
    if len(tokens) != count or not all(_INDEX.fullmatch(t) and int(t) <= _MAX_INDEX for t in tokens):
        raise ValueError(f"{path}: line 1: missing or invalid header")
    return [int(t) for t in tokens]


def _reference_pairs(tokens, limit: int, path: str, lineno: int, indices: list, data: list) -> None:
    for token in tokens:
        match = _PAIR.fullmatch(token)
        if match is None or int(match[1]) >= limit:
            raise ValueError(f"{path}: line {lineno}: bad pair {token!r}")
        indices.append(int(match[1]))
        data.append(float(match[2]))


def _reference_values(data: list, indptr: list, path: str) -> np.ndarray:
    """float32 values, rounded from the nearest doubles; out of float32 range is an error."""
    with np.errstate(over="ignore"):
        values = np.array(data, dtype=np.float64).astype(np.float32)
    bad = np.flatnonzero(np.isinf(values))
    if bad.size:
        row = int(np.searchsorted(np.asarray(indptr), bad[0], side="right")) - 1
        raise ValueError(f"{path}: line {row + 2}: value {data[bad[0]]!r} is out of float32 range")
    return values


def _reference_rows(lines: list[bytes], num_rows: int, path: str) -> None:
    if len(lines) - 1 != num_rows:
        raise ValueError(f"{path}: header says {num_rows} rows, file has {len(lines) - 1}")


def _parse_sparse_python(content: bytes | str, path: str = "<memory>"):
    """Plain-Python reference of ``_C.parse_sparse`` (same return value), for tests and timing."""
    lines = _reference_lines(content)
    num_rows, num_cols = _reference_header(lines, 2, path)
    _reference_rows(lines, num_rows, path)
    indptr, indices, data = [0], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        _reference_pairs(_tokens(line), num_cols, path, lineno, indices, data)
        indptr.append(len(indices))
    return (
        np.array(indptr, dtype=np.int64),
        np.array(indices, dtype=np.int64),
        _reference_values(data, indptr, path),
        num_rows,
        num_cols,
    )


def _parse_bow_python(content: bytes | str, path: str = "<memory>"):
    """Plain-Python reference of ``_C.parse_bow`` (same return value), for tests."""
    lines = _reference_lines(content)
    num_rows, num_features, num_labels = _reference_header(lines, 3, path)
    _reference_rows(lines, num_rows, path)
    x_ptr, x_idx, x_val, y_ptr, y_idx = [0], [], [], [0], []
    for lineno, line in enumerate(lines[1:], start=2):
        tokens = _tokens(line)
        # The first token is the label list unless the line starts with a space or it is a pair.
        first = _SPACE.split(line, maxsplit=1)[0]
        if first and b":" not in first:
            if not _LABELS.fullmatch(first) or any(int(l) >= num_labels for l in first.split(b",")):
                raise ValueError(f"{path}: line {lineno}: bad label list {first!r}")
            y_idx.extend(int(l) for l in first.split(b","))
            tokens = tokens[1:]
        y_ptr.append(len(y_idx))
        _reference_pairs(tokens, num_features, path, lineno, x_idx, x_val)
        x_ptr.append(len(x_idx))
    ints = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    return (ints(x_ptr), ints(x_idx), _reference_values(x_val, x_ptr, path), ints(y_ptr), ints(y_idx),
            num_rows, num_features, num_labels)
