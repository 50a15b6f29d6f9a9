"""Label features for clustering labels: PIFA, the normalised sum of the TF-IDF vectors of each
label's training texts, built with scipy from the token ids of the training set.

PIFA lives in the vocabulary space (hundreds of thousands of sparse columns) while
``balanced_kmeans`` takes a dense table, so the features are brought down to a few hundred
dimensions, either by a sparse random projection (keeps inner products in expectation; cheap)
or by a truncated SVD (:func:`pifa_svd`; keeps the most of them that any ``dim`` columns can,
and its other factor gives every word a vector in the same label space).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def token_counts(input_ids: torch.Tensor, vocab_size: int, pad_id: int) -> sp.csr_matrix:
    """``[N, vocab_size]`` float32 counts of each token id per row, padding left out."""
    ids = input_ids.cpu().numpy()
    keep = ids != pad_id
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)[keep]
    counts = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, ids[keep])), shape=(ids.shape[0], vocab_size))
    return counts.tocsr()  # sums the duplicates


def row_normalize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1)).ravel())
    return sp.diags((1.0 / np.maximum(norms, 1e-12)).astype(np.float32)) @ matrix


def inverse_document_frequency(counts: sp.csr_matrix) -> np.ndarray:
    """``[V]`` float32 ``log((1 + N) / (1 + df))``: 0 for a token in every row, so the special
    tokens of a transformers tokenizer ([CLS], [SEP]) carry no weight."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return np.log((1.0 + counts.shape[0]) / (1.0 + df)).astype(np.float32)


def tfidf(counts: sp.csr_matrix, idf: np.ndarray | None = None) -> sp.csr_matrix:
    """Row-normalised TF-IDF, with ``counts``' own idf unless given."""
    idf = inverse_document_frequency(counts) if idf is None else idf
    return row_normalize(counts @ sp.diags(idf))


def label_sums(labels: sp.csr_matrix, features: sp.csr_matrix) -> sp.csr_matrix:
    """``[L, V]``, sorted indices: row l is the sum of the feature rows of label l's points."""
    sums = (sp.csr_matrix(labels, dtype=np.float32).T @ features).tocsr()
    sums.sort_indices()
    return sums


def pifa(labels: sp.csr_matrix, features: sp.csr_matrix) -> sp.csr_matrix:
    """``[L, V]``: row l is the normalised sum of the feature rows of label l's points (zero for a
    label without training points)."""
    return row_normalize(label_sums(labels, features))


def sparse_projection(num_features: int, dim: int, nonzeros: int = 4, seed: int = 0) -> sp.csr_matrix:
    """``[num_features, dim]`` with ``nonzeros`` entries of ``±1/sqrt(nonzeros)`` per row (a sparse
    Johnson-Lindenstrauss sketch): applying it costs one pass over the sparse input, and the
    projection matrix stays O(V) instead of a dense ``V x dim`` table."""
    rng = np.random.default_rng(seed)
    nonzeros = min(nonzeros, dim)
    cols = _distinct_columns(rng, num_features, dim, nonzeros)
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=cols.shape) / np.sqrt(nonzeros)
    indptr = np.arange(num_features + 1) * nonzeros
    return sp.csr_matrix((signs.ravel(), cols.ravel(), indptr), shape=(num_features, dim))


def _distinct_columns(rng, rows: int, dim: int, nonzeros: int) -> np.ndarray:
    """``nonzeros`` distinct columns per row: rows that drew a repeat draw again (few do when
    ``dim`` is much larger than ``nonzeros``)."""
    cols = rng.integers(0, dim, (rows, nonzeros))
    while True:
        ordered = np.sort(cols, axis=1)
        clash = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        if not clash.any():
            return cols
        cols[clash] = rng.integers(0, dim, (int(clash.sum()), nonzeros))


def label_features(input_ids: torch.Tensor, labels, vocab_size: int, pad_id: int, dim: int = 256,
                   seed: int = 0) -> torch.Tensor:
    """Dense ``[L, dim]`` float32 sketches of the PIFA label features of a training set
    (``labels``: ``[N, L]`` scipy sparse, ``input_ids``: ``[N, T]`` token ids)."""
    features = pifa(labels, tfidf(token_counts(input_ids, vocab_size, pad_id)))
    sketch = features @ sparse_projection(vocab_size, dim, seed=seed)
    return torch.from_numpy(np.asarray(sketch.todense(), dtype=np.float32))


def randomized_svd(matrix: sp.csr_matrix, rank: int, oversample: int = 16, power_iters: int = 3,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U [m, rank], S [rank], V [n, rank])`` with ``matrix ~ U diag(S) V^T`` (Halko et al.'s
    randomized range finder with power iterations): a few sparse products and one small dense
    SVD, where an exact sparse SVD of a 25k x 190k matrix takes minutes."""
    rank = min(rank, *matrix.shape)
    width = min(rank + oversample, *matrix.shape)
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], width)).astype(np.float32))
    for _ in range(power_iters):  # QR between the products keeps the small singular directions
        other, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ other)
    u, s, vt = np.linalg.svd(np.asarray((matrix.T @ basis).T), full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank], vt[:rank].T


def pifa_svd(input_ids: torch.Tensor, labels, vocab_size: int, pad_id: int, dim: int = 256,
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(label vectors [L, dim], word vectors [vocab_size, dim])`` from the rank-``dim`` SVD
    ``PIFA ~ U S V^T``: labels ``U S`` (for clustering), words ``V S`` (a word's TF-IDF
    association with every label, in the same coordinates), both float32."""
    features = pifa(labels, tfidf(token_counts(input_ids, vocab_size, pad_id)))
    u, s, v = randomized_svd(features, dim, seed=seed)
    return torch.from_numpy(np.ascontiguousarray(u * s)), torch.from_numpy(np.ascontiguousarray(v * s))
