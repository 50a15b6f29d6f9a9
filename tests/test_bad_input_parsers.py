"""Regressions of issue 11's parser findings: messages stay readable and name the file and
line, broken archives are ValueErrors, both parsers read numbers by one rule, and explicit
zeros never become stored entries."""

import gzip
import lzma

import numpy as np
import pytest

from xcops import _C
from xcops.data import read_bow, read_sparse, read_text
from xcops.data.formats import _parse_bow_python, _parse_sparse_python


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\x00", b"\xc3", b"a\x00b"])
@pytest.mark.parametrize("where", ["value", "column", "header"])
def test_messages_escape_unprintable_bytes(tmp_path, bad, where):
    content = {"value": b"1 5\n1:" + bad + b"\n", "column": b"1 5\n" + bad + b":1\n",
               "header": b"1 " + bad + b"\n\n"}[where]
    path = tmp_path / "Y.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_sparse(path)
    message = str(err.value)
    assert str(path) in message and ("line 2:" in message or "line 1:" in message)
    assert "\\x" in message  # the byte is shown escaped, the message itself is valid text
    message.encode("utf-8")


def test_long_tokens_are_cut_in_messages():
    with pytest.raises(ValueError) as err:
        _C.parse_sparse(b"1 5\n1:" + b"z" * 10_000 + b"\n", "mem")
    assert len(str(err.value)) < 200 and "..." in str(err.value)


@pytest.mark.parametrize("suffix,opener", [(".xz", lzma.open), (".gz", gzip.open)])
@pytest.mark.parametrize("damage", ["truncate", "corrupt", "garbage"])
def test_broken_archives_are_value_errors_naming_the_path(tmp_path, suffix, opener, damage):
    path = tmp_path / f"trn_X_Y.txt{suffix}"
    with opener(path, "wb") as f:
        f.write(b"3 10\n" + b"1:1 2:1\n" * 3)
    data = path.read_bytes()
    data = {"truncate": data[: len(data) // 2], "corrupt": data[:12] + bytes(40) + data[52:],
            "garbage": b"not an archive at all"}[damage]
    path.write_bytes(data)
    for read in (read_sparse, read_text):
        with pytest.raises(ValueError, match=f"^{path}: "):
            read(path)


def test_non_utf8_text_names_file_and_line(tmp_path):
    path = tmp_path / "trn_X.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(ValueError, match=f"{path}: line 3: not UTF-8"):
        read_text(path)


# (field, accepted value or None when both parsers must reject it)
NUMBERS = [
    ("+-1", None), ("-+1", None), ("++1", None), ("1e-50", 0.0), ("-1e-50", 0.0), ("1e-400", 0.0),
    ("1e39", None), ("-3.5e38", None), ("1e400", None), ("inf", None), ("nan", None),
    ("-inf", None), ("0x1p3", None), ("1_000", None), ("\u0661".encode().decode(), None),
    ("1.", 1.0), (".5", 0.5), ("+.5e1", 5.0), ("-0", 0.0), ("3.4028235e38", 3.4028235e38),
    ("1e", None), (".", None), ("1.2.3", None), ("1e+", None), ("00012", 12.0),
]


@pytest.mark.parametrize("text,want", NUMBERS, ids=[n[0] for n in NUMBERS])
def test_one_number_syntax_for_both_parsers(text, want):
    content = f"1 5\n2:{text}\n".encode()
    results = []
    for parse in (_C.parse_sparse, _parse_sparse_python):
        try:
            results.append(parse(content, "mem"))
        except ValueError:
            results.append(None)
    cpp, ref = results
    if want is None:
        assert cpp is None and ref is None
        return
    assert cpp is not None and ref is not None
    assert cpp[2].tolist() == ref[2].tolist() == [np.float32(want)]


@pytest.mark.parametrize("text", ["+1", "1.0", "1e2", "-0", " 1"])
def test_indices_are_plain_digits(text):
    for content in (f"1 5\n{text}:1\n".encode(), f"1 5 5\n{text} 1:1\n".encode()):
        with pytest.raises(ValueError):
            (_C.parse_sparse if content.count(b" ") == 1 else _C.parse_bow)(content, "mem")


def test_explicit_zeros_are_dropped(tmp_path):
    path = tmp_path / "tst_X_Y.txt"
    path.write_text("3 4\n0:0 1:1\n2:-0.0 3:1e-50\n1:2 1:-2 2:1\n")
    m = read_sparse(path)
    assert m.nnz == 2 and (m.data != 0).all()
    assert m[0].indices.tolist() == [1] and m[2].indices.tolist() == [2]
    bow = tmp_path / "train.txt"
    bow.write_text("2 3 2\n0 0:0 1:1\n1 2:0\n")
    X, Y = read_bow(bow)
    assert X.nnz == 1 and Y.nnz == 2


def test_python_reference_bow_matches_cpp():
    content = b"3 5 4\n0,3 1:1 4:-2.5\n 2:1\n1\n"
    for a, b in zip(_C.parse_bow(content, "m"), _parse_bow_python(content, "m")):
        np.testing.assert_array_equal(a, b)
