"""A dense, loop-by-loop TF-IDF of titles (tokens, and bigrams held by two or more training
titles), the reference that the TF-IDF centroids and neighbours are tested against."""

import numpy as np
import torch


def title_features(title, unknown_id):
    tokens = [int(t) for t in title if t != 0]
    pairs = [(a, b) for a, b in zip(title[:-1].tolist(), title[1:].tolist())
             if 0 not in (a, b) and unknown_id not in (a, b)]
    return tokens, pairs


def dense_tfidf(train_ids: torch.Tensor, queries: torch.Tensor, vocab: int, bigrams: bool, unknown_id=None):
    """``(train [N, F], queries [B, F])`` row-normalised TF-IDF over the training titles' idf."""
    titled = {}
    for title in train_ids:
        for pair in set(title_features(title, unknown_id)[1]):
            titled[pair] = titled.get(pair, 0) + 1
    kept = sorted(pair for pair, count in titled.items() if bigrams and count >= 2)
    column = {pair: vocab + i for i, pair in enumerate(kept)}

    def counts(titles):
        out = np.zeros((len(titles), vocab + len(kept)), np.float32)
        for row, title in enumerate(titles):
            tokens, pairs = title_features(title, unknown_id)
            for token in tokens:
                out[row, token] += 1
            for pair in pairs:
                if pair in column:
                    out[row, column[pair]] += 1
        return out

    train = counts(train_ids)
    idf = np.log((1.0 + len(train)) / (1.0 + (train > 0).sum(0))).astype(np.float32)
    if unknown_id is not None:
        idf[unknown_id] = 0.0

    def normalise(matrix):
        matrix = matrix * idf
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)

    return normalise(train), normalise(counts(queries))
