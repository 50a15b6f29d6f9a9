"""Turning texts into padded token-id arrays: a built-in word tokenizer, or any
Hugging Face ``transformers`` tokenizer passed in by the caller."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\w+")


class SimpleTokenizer:
    """Lower-cased ``\\w+`` words mapped through a vocabulary built from training texts.

    Id 0 is padding and id 1 stands for any word outside the vocabulary; the words follow in
    order of decreasing training count (ties alphabetical), so the same texts always give the
    same vocabulary. ``stopwords`` are dropped from every text before anything else.
    """

    PAD, UNK = 0, 1
    SPECIALS = ("<pad>", "<unk>")

    def __init__(self, words: Sequence[str], stopwords: Iterable[str] = ()):
        self.words = list(self.SPECIALS) + list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.stopwords = frozenset(stopwords)
        self.pad_token_id = self.PAD  # the attribute names transformers tokenizers use
        self.unk_token_id = self.UNK

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None,
            stopwords: Iterable[str] = ()):
        """Vocabulary of the words seen at least ``min_count`` times; ``max_size`` caps the
        total number of ids, padding and unknown included."""
        if max_size is not None and max_size < len(cls.SPECIALS):
            raise ValueError(f"max_size must be at least {len(cls.SPECIALS)}, got {max_size}")
        tokenizer = cls((), stopwords)
        counts = Counter()
        for text in texts:
            counts.update(tokenizer.split(text))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(cls.SPECIALS)]
        return cls(words, tokenizer.stopwords)

    def split(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return [w for w in words if w not in self.stopwords] if self.stopwords else words

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """``[len(texts), max_len]`` int64 ids, truncated and right-padded with 0."""
        out = np.zeros((len(texts), max_len), dtype=np.int64)
        get = self.ids.get
        for row, text in enumerate(texts):
            ids = [get(w, self.UNK) for w in self.split(text)[:max_len]]
            out[row, : len(ids)] = ids
        return out

    def fingerprint(self) -> str:
        """Changes whenever the vocabulary does; part of the token cache key."""
        text = "\n".join(self.words) + "\0" + "\n".join(sorted(self.stopwords))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"words": self.words[len(self.SPECIALS) :], "stopwords": sorted(self.stopwords)},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "SimpleTokenizer":
        data = json.loads(text)
        return cls(data["words"], data.get("stopwords", ()))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A string that changes when the tokenizer would give different ids."""
    if isinstance(tokenizer, SimpleTokenizer):
        return "simple:" + tokenizer.fingerprint()
    # A transformers tokenizer: its class, source and vocabulary identify it.
    parts = [
        type(tokenizer).__name__,
        str(getattr(tokenizer, "name_or_path", "")),
        str(len(tokenizer)),
        json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str),
    ]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts.append(hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest())
    return "hf:" + "|".join(parts)


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int, batch_size: int = 8192) -> np.ndarray:
    """``[len(texts), max_len]`` int64 token ids padded with the tokenizer's pad id."""
    if isinstance(tokenizer, SimpleTokenizer):
        return tokenizer.encode(texts, max_len)
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set one first")
    out = np.full((len(texts), max_len), tokenizer.pad_token_id, dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        enc = tokenizer(batch, padding="max_length", truncation=True, max_length=max_len)
        out[start : start + len(batch)] = np.asarray(enc["input_ids"], dtype=np.int64)
    return out

