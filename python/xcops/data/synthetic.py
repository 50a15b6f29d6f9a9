"""A synthetic, learnable text XC data set, deterministic by seed.

Each label owns a few topical pseudo-words; a point's text mixes topical words of its labels
with frequent background words (Zipf-distributed) and a little noise (topical words of random
labels). Labels follow a power law over popularity, so there is a head and a long tail, and
some labels never occur in training, as in real XC data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .formats import write_sparse, write_text

_CONSONANTS = list("bcdfghjklmnprstvz")
_VOWELS = list("aeiou")


@dataclass
class SyntheticXC:
    train_texts: list[str]
    test_texts: list[str]
    train_Y: sp.csr_matrix  # [num_train, num_labels] binary float32
    test_Y: sp.csr_matrix
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return self.train_Y.shape[1]


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    words: dict[str, None] = {}  # insertion-ordered, so the list is deterministic
    while len(words) < count:
        syllables = rng.integers(2, 5)
        c = rng.choice(_CONSONANTS, syllables)
        v = rng.choice(_VOWELS, syllables)
        words["".join(a + b for a, b in zip(c, v))] = None
    return list(words)


def _sample_labels(rng, cdf: np.ndarray, count: int) -> list[int]:
    """``count`` distinct labels drawn without replacement from the popularity prior."""
    chosen: dict[int, None] = {}
    while len(chosen) < count:
        for label in np.searchsorted(cdf, rng.random(2 * count), side="right").tolist():
            chosen.setdefault(min(label, len(cdf) - 1), None)
            if len(chosen) == count:
                break
    return list(chosen)


def _label_sets(rng, num_rows, cdf, labels_per_point) -> list[list[int]]:
    lo, hi = labels_per_point
    hi = min(hi, len(cdf))
    return [_sample_labels(rng, cdf, int(k)) for k in rng.integers(min(lo, hi), hi + 1, num_rows)]


def _texts(rng, label_sets, topical, common, common_cdf, text_len, topic_ratio, noise_ratio):
    num_labels, per_label = topical.shape
    texts = []
    for labels in label_sets:
        length = int(rng.integers(text_len[0], text_len[1] + 1))
        n_topic = max(1, int(rng.binomial(length, topic_ratio)))
        n_noise = int(rng.binomial(length - n_topic, noise_ratio))
        n_common = length - n_topic - n_noise
        own = np.asarray(labels)[rng.integers(0, len(labels), n_topic)]
        words = topical[own, rng.integers(0, per_label, n_topic)].tolist()
        words += topical[rng.integers(0, num_labels, n_noise), rng.integers(0, per_label, n_noise)].tolist()
        words += common[np.searchsorted(common_cdf, rng.random(n_common), side="right").clip(max=len(common) - 1)].tolist()
        texts.append(" ".join(words[i] for i in rng.permutation(len(words))))
    return texts


def _csr(label_sets, num_labels) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(s) for s in label_sets])
    indices = np.fromiter((l for s in label_sets for l in s), dtype=np.int64, count=indptr[-1])
    m = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(label_sets), num_labels))
    m.sort_indices()
    return m


def make_synthetic(
    num_train: int = 2000,
    num_test: int = 500,
    num_labels: int = 200,
    *,
    words_per_label: int = 4,
    num_common_words: int = 300,
    labels_per_point: tuple[int, int] = (2, 5),
    text_len: tuple[int, int] = (8, 20),
    topic_ratio: float = 0.5,
    noise_ratio: float = 0.1,
    power: float = 1.0,
    seed: int = 0,
) -> SyntheticXC:
    """Generate a synthetic text XC data set.

    ``labels_per_point``: inclusive range of the number of labels per point (uniform);
    ``text_len``: inclusive range of words per text; ``topic_ratio``: expected share of a text's
    words that are topical words of its own labels (at least one always is); ``noise_ratio``:
    share of the remaining words that are topical words of random labels; ``power``: label
    popularity decays as ``rank ** -power`` (ranks shuffled over label ids).
    """
    if num_labels < 1 or num_train < 0 or num_test < 0:
        raise ValueError("num_labels must be >= 1 and num_train, num_test >= 0")
    if not 1 <= labels_per_point[0] <= labels_per_point[1]:
        raise ValueError(f"labels_per_point must be a range (lo, hi) with 1 <= lo <= hi, got {labels_per_point}")
    if not 1 <= text_len[0] <= text_len[1]:
        raise ValueError(f"text_len must be a range (lo, hi) with 1 <= lo <= hi, got {text_len}")
    rng = np.random.default_rng(seed)
    vocab = np.array(_pseudo_words(rng, num_labels * words_per_label + num_common_words))
    topical = vocab[: num_labels * words_per_label].reshape(num_labels, words_per_label)
    common = vocab[num_labels * words_per_label :]
    common_cdf = np.cumsum(1.0 / np.arange(1, len(common) + 1))
    common_cdf /= common_cdf[-1]

    popularity = np.arange(1, num_labels + 1, dtype=np.float64) ** -power
    prior = np.empty(num_labels)
    prior[rng.permutation(num_labels)] = popularity / popularity.sum()
    cdf = np.cumsum(prior)

    sets = {}
    texts = {}
    for split, n in (("train", num_train), ("test", num_test)):
        sets[split] = _label_sets(rng, n, cdf, labels_per_point)
        texts[split] = _texts(rng, sets[split], topical, common, common_cdf, text_len, topic_ratio, noise_ratio)
    return SyntheticXC(
        train_texts=texts["train"],
        test_texts=texts["test"],
        train_Y=_csr(sets["train"], num_labels),
        test_Y=_csr(sets["test"], num_labels),
        label_names=[" ".join(words[:2]) for words in topical.tolist()],
    )


def write_dataset(out_dir: str | os.PathLike, data: SyntheticXC) -> Path:
    """Write ``data`` in the Extreme Classification Repository text layout (as the
    yso-finna-en set): ``trn_X.txt``, ``tst_X.txt``, ``trn_X_Y.txt``, ``tst_X_Y.txt``, ``Y.txt``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "trn_X.txt", data.train_texts)
    write_text(out / "tst_X.txt", data.test_texts)
    write_sparse(out / "trn_X_Y.txt", data.train_Y)
    write_sparse(out / "tst_X_Y.txt", data.test_Y)
    write_text(out / "Y.txt", data.label_names)
    return out


def generate(out_dir: str | os.PathLike, **kwargs) -> SyntheticXC:
    """:func:`make_synthetic` with ``kwargs``, written to ``out_dir`` by :func:`write_dataset`."""
    data = make_synthetic(**kwargs)
    write_dataset(out_dir, data)
    return data
