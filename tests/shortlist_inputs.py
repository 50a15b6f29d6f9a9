"""Random shortlist problems shared by the shortlist tests."""

import torch


def make_problem(batch, width, labels, dim, dtype, device, gen, pad_fraction=0.2, bias=False,
                 index_dtype=torch.int64):
    """Padded shortlist with duplicates and -1 padding, inputs drawn on CPU then moved."""
    query = torch.randn(batch, dim, generator=gen).to(dtype)
    weight = torch.randn(labels, dim, generator=gen).to(dtype)
    shortlist = torch.randint(0, labels, (batch, width), generator=gen)
    if batch * width:
        shortlist[torch.rand(batch, width, generator=gen) < pad_fraction] = -1
    b = torch.randn(labels, generator=gen).to(dtype) if bias else None
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return move(query), move(weight), move(shortlist.to(index_dtype)), move(b)


def make_csr(batch, labels, max_len, device, gen, index_dtype=torch.int64):
    """CSR shortlist with variable (possibly zero) row lengths."""
    lengths = torch.randint(0, max_len + 1, (batch,), generator=gen)
    indptr = torch.zeros(batch + 1, dtype=torch.int64)
    indptr[1:] = lengths.cumsum(0)
    indices = torch.randint(0, labels, (int(indptr[-1]),), generator=gen)
    return indptr.to(index_dtype).to(device), indices.to(index_dtype).to(device)
