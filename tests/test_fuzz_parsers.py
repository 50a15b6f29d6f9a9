"""Fuzz targets of the C++ XC-format parsers (hypothesis over bytes).

Inputs are random byte strings and mutations of the seed corpus in tests/fuzz_corpus. On
every input the C++ parser and the plain-Python reference must agree: both reject it with a
ValueError whose message names the input and is valid text, or both accept it and return
identical arrays. ``bash tasks.sh fuzz`` runs the same targets for much longer.
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypothesis_settings import FUZZ
from xcops import _C
from xcops.data.formats import _parse_bow_python, _parse_sparse_python

CORPUS = Path(__file__).parent / "fuzz_corpus"
PARSERS = {
    "sparse": (_C.parse_sparse, _parse_sparse_python),
    "bow": (_C.parse_bow, _parse_bow_python),
}
# Bytes that matter to the grammar, plus some that must never be accepted.
ALPHABET = b"0123456789:,. \t\r\n+-eE" + b"\x00\xff\xc3x"


def _seeds(kind):
    return [p.read_bytes() for p in sorted(CORPUS.glob(f"{kind}_*.txt"))]


@st.composite
def mutated(draw, kind):
    data = bytearray(draw(st.sampled_from(_seeds(kind))))
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(ALPHABET))
        if action == "insert":
            data.insert(where, byte)
        elif where < len(data):
            if action == "delete":
                del data[where]
            else:
                data[where] = byte
    return bytes(data)


def _inputs(kind):
    grammar = st.lists(st.sampled_from(ALPHABET), max_size=60).map(bytes)
    return st.one_of(mutated(kind), grammar, st.binary(max_size=40))


def _run(parse, content):
    try:
        return parse(content, "fuzz-input")
    except ValueError as err:
        message = str(err)
        assert message.startswith("fuzz-input")
        message.encode("utf-8")  # escaped bytes: the message is valid text
        return None


def _agree(kind, content):
    cpp_parse, python_parse = PARSERS[kind]
    cpp, ref = _run(cpp_parse, content), _run(python_parse, content)
    assert (cpp is None) == (ref is None), f"C++ {'rejects' if cpp is None else 'accepts'} but Python does not"
    if cpp is not None:
        for a, b in zip(cpp, ref):
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_seed_corpus_is_accepted_by_both(kind):
    for content in _seeds(kind):
        cpp_parse, python_parse = PARSERS[kind]
        assert _run(cpp_parse, content) is not None
        _agree(kind, content)


@FUZZ
@given(content=_inputs("sparse"))
def test_fuzz_parse_sparse(content):
    _agree("sparse", content)


@FUZZ
@given(content=_inputs("bow"))
def test_fuzz_parse_bow(content):
    _agree("bow", content)
