"""XC file formats: round trips, malformed files, and the C++ parser against plain Python."""

import lzma
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xcops import _C
from xcops.data import (
    read_bow,
    read_label_names,
    read_sparse,
    read_text,
    write_bow,
    write_sparse,
    write_text,
)
from xcops.data.formats import _parse_sparse_python, read_bytes

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SUFFIXES = ["", ".gz", ".xz"]


def shared_file(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def random_csr(rows, cols, density, seed, binary=False):
    rng = np.random.default_rng(seed)
    m = sp.random(rows, cols, density=density, format="csr", dtype=np.float32, random_state=rng)
    if binary:
        m.data[:] = 1
    else:
        m.data = (m.data * 10 - 5).astype(np.float32)  # negatives and fractions
    return drop_rows(m, [0, rows // 2, rows - 1])  # empty rows, first and last included


def drop_rows(m, rows):
    keep = np.ones(m.shape[0], dtype=np.float32)
    keep[rows] = 0
    m = sp.csr_matrix(sp.diags(keep) @ m)
    m.eliminate_zeros()
    m.sort_indices()
    return m


def assert_same_csr(a, b):
    assert a.shape == b.shape
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data.astype(np.float32))


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("binary", [False, True])
def test_sparse_round_trip(tmp_path, suffix, binary):
    m = random_csr(60, 37, 0.1, seed=1, binary=binary)
    m.data[:3] = [1e-7, 123456.78, 0.1] if not binary else 1
    path = tmp_path / f"m_X_Y.txt{suffix}"
    write_sparse(path, m)
    assert_same_csr(read_sparse(path), m)


def test_sparse_empty_rows_and_matrix(tmp_path):
    m = sp.csr_matrix((3, 4), dtype=np.float32)
    write_sparse(tmp_path / "e.txt", m)
    assert (tmp_path / "e.txt").read_text() == "3 4\n\n\n\n"
    assert_same_csr(read_sparse(tmp_path / "e.txt"), m)
    write_sparse(tmp_path / "z.txt", sp.csr_matrix((0, 5), dtype=np.float32))
    assert read_sparse(tmp_path / "z.txt").shape == (0, 5)


def test_sparse_reader_tolerates_crlf_spacing_and_unsorted_columns(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_bytes(b"2 6\r\n 5:2  1:+1.5\t3:1e-2 \r\n\r\n")
    m = read_sparse(path)
    assert m.has_sorted_indices
    expected = np.array([[0, 1.5, 0, 0.01, 0, 2], [0] * 6], dtype=np.float32)
    np.testing.assert_array_equal(m.toarray(), expected)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_bow_round_trip(tmp_path, suffix):
    X = random_csr(50, 40, 0.2, seed=2)
    Y = random_csr(50, 9, 0.3, seed=3, binary=True)
    # beside the rows with neither (0, 25, 49): labels without features, features without labels
    X = drop_rows(X, [7])
    Y = drop_rows(Y, [9])
    assert Y[7].nnz and X[9].nnz
    path = tmp_path / f"train.txt{suffix}"
    write_bow(path, X, Y)
    X2, Y2 = read_bow(path)
    assert_same_csr(X2, X)
    assert_same_csr(Y2, Y)


def test_bow_line_forms(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("4 5 3\n0,2 1:1 4:0.5\n 3:2\n1\n \n")
    X, Y = read_bow(path)
    np.testing.assert_array_equal(X.toarray(), [[0, 1, 0, 0, 0.5], [0, 0, 0, 2, 0], [0] * 5, [0] * 5])
    np.testing.assert_array_equal(Y.toarray(), [[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_text_round_trip(tmp_path, suffix):
    texts = ["Ääkköset ja ß", "", "tab\tinside", "  spaced  ", "line\u2028separator"]
    path = tmp_path / f"trn_X.txt{suffix}"
    write_text(path, texts)
    assert read_text(path) == texts


def test_text_reader_strips_crlf_and_label_names(tmp_path):
    path = tmp_path / "Y.txt"
    path.write_bytes(b"http://x/p1\tservice level\r\nplain name\nhttp://x/p2\ta\tb\n")
    assert read_text(path) == ["http://x/p1\tservice level", "plain name", "http://x/p2\ta\tb"]
    assert read_label_names(path) == ["service level", "plain name", "b"]


def test_write_text_rejects_line_breaks(tmp_path):
    with pytest.raises(ValueError, match="text 1 contains a line break"):
        write_text(tmp_path / "t.txt", ["ok", "two\nlines"])


SPARSE_BAD = [
    ("column >= header", "2 5\n1:1\n5:1\n", 3, "column 5 >= number of columns"),
    ("too few rows", "3 5\n1:1\n2:1\n", 4, "header says 3"),
    ("too many rows", "1 5\n1:1\n2:1\n", 3, "more rows than the header"),
    ("non-numeric value", "2 5\n1:1\n2:abc\n", 3, "non-numeric value 'abc'"),
    ("non-numeric column", "1 5\nx:1\n", 2, "invalid column 'x'"),
    ("missing header", "1:1 2:1\n", 1, "invalid header"),
    ("empty file", "", 1, "missing header"),
    ("header with one count", "7\n", 1, "invalid header"),
    ("negative index", "1 5\n-1:1\n", 2, "negative column"),
    ("missing value", "1 5\n1: 2:1\n", 2, "non-numeric value"),
    ("missing colon", "2 5\n\n3\n", 3, "expected ':'"),
]


@pytest.mark.parametrize("suffix", ["", ".xz"])
@pytest.mark.parametrize("case,content,line,problem", SPARSE_BAD, ids=[c[0] for c in SPARSE_BAD])
def test_sparse_bad_files(tmp_path, suffix, case, content, line, problem):
    path = tmp_path / f"broken_X_Y.txt{suffix}"
    with (lzma.open(path, "wb") if suffix else open(path, "wb")) as f:
        f.write(content.encode())
    with pytest.raises(ValueError) as err:
        read_sparse(path)
    message = str(err.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert problem in message


BOW_BAD = [
    ("label >= header", "1 5 3\n3 1:1\n", 2, "label 3 >= number of labels"),
    ("feature >= header", "1 5 3\n0,1 5:1\n", 2, "feature 5 >= number of features"),
    ("too few rows", "2 5 3\n0 1:1\n", 3, "header says 2"),
    ("too many rows", "1 5 3\n0 1:1\n1 1:1\n", 3, "more rows than the header"),
    ("non-numeric value", "1 5 3\n0 1:one\n", 2, "non-numeric value 'one'"),
    ("bad label list", "1 5 3\n0;1 1:1\n", 2, "expected ','"),
    ("negative label", "1 5 3\n-1 1:1\n", 2, "negative label"),
    ("sparse header", "1 5\n0 1:1\n", 1, "invalid header"),
]


@pytest.mark.parametrize("case,content,line,problem", BOW_BAD, ids=[c[0] for c in BOW_BAD])
def test_bow_bad_files(tmp_path, case, content, line, problem):
    path = tmp_path / "broken_train.txt"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        read_bow(path)
    message = str(err.value)
    assert str(path) in message and f"line {line}:" in message and problem in message


def test_parser_takes_str_and_rejects_other_types():
    indptr, indices, data, rows, cols = _C.parse_sparse("2 3\n2:0.5\n\n", "mem")
    assert (rows, cols) == (2, 3)
    np.testing.assert_array_equal(indptr, [0, 1, 1])
    with pytest.raises(TypeError, match="bytes or str"):
        _C.parse_sparse(memoryview(b"1 1\n\n"), "mem")


def test_cpp_parser_matches_python_and_is_faster():
    path = shared_file("yso-finna-en", "trn_X_Y.txt.xz")
    content = read_bytes(path)  # decompression stays out of the timing
    cpp_times = []
    for _ in range(3):
        start = time.perf_counter()
        cpp = _C.parse_sparse(content, str(path))
        cpp_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    ref = _parse_sparse_python(content, str(path))
    py_time = time.perf_counter() - start
    for a, b in zip(cpp[:3], ref[:3]):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert cpp[3:] == ref[3:] == (519595, 25062)
    ratio = py_time / min(cpp_times)
    print(f"parse_sparse: C++ {min(cpp_times) * 1e3:.1f} ms, Python {py_time * 1e3:.0f} ms, {ratio:.1f}x")
    assert ratio >= 5


@pytest.mark.parametrize(
    "name,shape_x,num_labels,rows_without_labels",
    [("bibtex", (4880, 1836), 159, None), ("delicious", (12920, 500), 983, 12)],
)
def test_real_bow_files(tmp_path, name, shape_x, num_labels, rows_without_labels):
    X, Y = read_bow(shared_file(name, "train.txt.xz"))
    assert X.shape == shape_x and Y.shape == (shape_x[0], num_labels)
    assert set(np.unique(Y.data)) == {1.0}
    if rows_without_labels is not None:
        assert int((np.diff(Y.indptr) == 0).sum()) == rows_without_labels
    write_bow(tmp_path / "copy.txt.gz", X, Y)
    X2, Y2 = read_bow(tmp_path / "copy.txt.gz")
    assert_same_csr(X2, X)
    assert_same_csr(Y2, Y)


def test_real_text_files_align_with_labels():
    labels = read_sparse(shared_file("yso-finna-en", "tst_X_Y.txt.xz"))
    texts = read_text(shared_file("yso-finna-en", "tst_X.txt.xz"))
    names = read_label_names(shared_file("yso-finna-en", "Y.txt.xz"))
    assert len(texts) == labels.shape[0] and len(names) == labels.shape[1]
    assert all("\t" not in n for n in names)
