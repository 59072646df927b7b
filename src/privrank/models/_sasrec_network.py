"""The SASRec network (Kang and McAuley 2018) in PyTorch, and its training losses.

Sequences are tensors of ``item code + 1`` (``0`` pads), **left**-padded to a fixed length
``L``, so the most recent item always sits in slot ``L - 1`` and a position's embedding does not
depend on the other sequences of a batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

__all__ = ["SASRecNetwork", "gbce_beta", "left_padded", "sequence_loss", "trimmed"]


class _SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with a boolean ``blocked`` mask."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.output = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, blocked: torch.Tensor):
        b, length, d = queries.shape
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, length, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(queries)), split(self.key(keys)), split(self.value(keys))
        logits = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        logits = logits.masked_fill(blocked.unsqueeze(1), float("-inf"))
        weights = self.dropout(torch.softmax(logits, dim=-1))
        mixed = (weights @ v).transpose(1, 2).reshape(b, length, d)
        return self.output(mixed)


class _Block(nn.Module):
    """One SASRec block: attention then a point-wise feed-forward net, as in the paper's code
    (the attention's residual starts from the normalised input)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(d, eps=1e-8)
        self.attention = _SelfAttention(d, heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(d, eps=1e-8)
        self.feed_forward = nn.Sequential(
            nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(), nn.Linear(d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        normed = self.attention_norm(x)
        x = normed + self.attention(normed, x, blocked)
        x = self.feed_forward_norm(x)
        x = x + self.feed_forward(x)
        return x * keep


class SASRecNetwork(nn.Module):
    """Item and position embeddings, ``blocks`` causal self-attention blocks, a final norm.

    Args:
        n_items: Catalogue size (embedding row 0 is the padding).
        d: Hidden size (divisible by ``heads``).
        blocks: Number of blocks.
        heads: Attention heads.
        max_length: ``L``, the sequence length.
        dropout: Dropout rate on embeddings, attention weights and feed-forward outputs.
    """

    def __init__(
        self, n_items: int, d: int, blocks: int, heads: int, max_length: int, dropout: float
    ):
        super().__init__()
        self.d = d
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(max_length, d)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([_Block(d, heads, dropout) for _ in range(blocks)])
        self.final_norm = nn.LayerNorm(d, eps=1e-8)
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(B, W, d)`` of left-padded ``(B, W)`` sequences, ``W <= L``; state
        ``t`` sees only slots ``<= t`` (causal), and padded slots are zero.

        The last slot takes position ``L - 1``: a batch trimmed of its all-padding leading
        columns gives the same states as the full ``(B, L)`` batch.
        """
        length = sequences.shape[1]
        positions = self.position_embedding.weight[
            self.position_embedding.num_embeddings - length :
        ]
        pad = sequences == 0
        keep = (~pad).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        x = self.item_embedding(sequences) * math.sqrt(self.d)
        x = self.dropout(x + positions) * keep
        device = sequences.device
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), 1)
        blocked = future.unsqueeze(0) | pad.unsqueeze(1)
        # a slot always sees itself
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=device)
        for block in self.blocks:
            x = block(x, blocked, keep)
        return self.final_norm(x)

    def item_vectors(self) -> torch.Tensor:
        """Output embeddings of the items, ``(n_items, d)`` (shared with the input ones)."""
        return self.item_embedding.weight[1:]


def trimmed(padded: np.ndarray, kept: np.ndarray) -> torch.Tensor:
    """Left-padded sequences without their leading all-padding columns (at least one kept).

    Args:
        padded: ``(B, L)`` :func:`left_padded` sequences.
        kept: ``(B,)`` the number of items in each (at most ``L``).
    """
    width = max(int(kept.max()), 1) if len(kept) else 1
    return torch.from_numpy(padded[:, padded.shape[1] - width :])


def left_padded(indptr: np.ndarray, items: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` items of each ragged sequence as ``code + 1``, left-padded with 0.

    Returns:
        ``(n_sequences, length)`` int64.
    """
    n = len(indptr) - 1
    out = np.zeros((n, length), dtype=np.int64)
    if n == 1:  # a served request: the same values without the ragged bookkeeping
        count = min(int(indptr[1] - indptr[0]), length)
        out[0, length - count :] = items[int(indptr[1]) - count : int(indptr[1])] + 1
        return out
    lengths = np.diff(indptr)
    kept = np.minimum(lengths, length)
    rows = np.repeat(np.arange(n), kept)
    offset = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
    source = np.repeat(indptr[1:] - kept, kept) + offset
    out[rows, length - np.repeat(kept, kept) + offset] = items[source] + 1
    return out


def gbce_beta(negatives: int, n_items: int, t: float) -> float:
    r"""gSASRec's power on the positive probability (Petrov and Macdonald, RecSys 2023, eq. 12).

    With :math:`k` negatives drawn uniformly from the :math:`|I| - 1` other items, the sampling
    rate is :math:`\alpha = k / (|I| - 1)` and

    .. math:: \beta = \alpha \left(t \left(1 - \frac1\alpha\right) + \frac1\alpha\right)
        = 1 - t\,(1 - \alpha),

    so :math:`t = 0` gives plain BCE (:math:`\beta = 1`) and :math:`t = 1` gives
    :math:`\beta = \alpha`, the power that calibrates the scores to the full-catalogue
    probabilities. :math:`\alpha` is capped at 1 (more negatives than items).
    """
    alpha = min(negatives / max(n_items - 1, 1), 1.0)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def sequence_loss(
    network: SASRecNetwork,
    sequences: torch.Tensor,
    loss: str,
    negatives: int,
    generator: torch.Generator,
    gbce_t: float = 0.75,
    sharing: str = "batch",
) -> torch.Tensor:
    r"""Mean next-item loss of left-padded ``(B, L + 1)`` sequences.

    Slot ``t`` of ``sequences[:, :-1]`` predicts ``sequences[:, t + 1]`` wherever both are
    items. ``loss`` is ``softmax`` (cross-entropy over all items), ``sampled-softmax``
    (cross-entropy over the target and ``negatives`` items drawn uniformly per batch, a drawn
    negative equal to the target masked out), ``gbce`` (gSASRec's generalised binary
    cross-entropy :math:`-\beta \log\sigma(s^+) - \sum_j \log\sigma(-s_j)` over the same
    per-batch negatives, :math:`\beta` from :func:`gbce_beta` with calibration ``gbce_t``) or
    ``bce`` (the paper's binary cross-entropy with one uniform negative per position).

    ``sharing`` says where the ``negatives`` of ``sampled-softmax`` and ``gbce`` are drawn:
    ``batch`` (one set of :math:`N` items shared by every position of the batch) or
    ``position`` (an independent set of :math:`N` items per position, as RecTools and the
    eSASRec study draw them: every item receives negative gradients far more often).

    Negatives are drawn on the CPU ``generator`` and moved to the network's device, so the
    draws do not depend on the device.
    """
    width = max(int((sequences > 0).sum(dim=1).max()), 2)
    sequences = sequences[:, -width:]  # drop leading all-padding columns (same result)
    inputs, targets = sequences[:, :-1], sequences[:, 1:]
    valid = (inputs > 0) & (targets > 0)
    hidden = network(inputs)[valid]
    target = targets[valid] - 1
    items = network.item_vectors()
    n_items = items.shape[0]
    if loss == "softmax":
        return functional.cross_entropy(hidden @ items.T, target)
    if loss in ("sampled-softmax", "gbce"):
        positive = (hidden * items[target]).sum(-1, keepdim=True)
        if sharing == "position":
            drawn = torch.randint(n_items, (len(target), negatives), generator=generator)
            drawn = drawn.to(items.device)
            negative = torch.bmm(items[drawn], hidden.unsqueeze(-1)).squeeze(-1)
            clash = drawn == target.unsqueeze(1)
        else:
            drawn = torch.randint(n_items, (negatives,), generator=generator).to(items.device)
            negative = hidden @ items[drawn].T
            clash = drawn.unsqueeze(0) == target.unsqueeze(1)
        if loss == "gbce":
            beta = gbce_beta(negatives, n_items, gbce_t)
            pushed = functional.softplus(negative).masked_fill(clash, 0.0).sum(-1)
            return (beta * functional.softplus(-positive.squeeze(-1)) + pushed).mean()
        negative = negative.masked_fill(clash, float("-inf"))
        logits = torch.cat([positive, negative], dim=1)
        zeros = torch.zeros(len(target), dtype=torch.long, device=logits.device)
        return functional.cross_entropy(logits, zeros)
    drawn = torch.randint(n_items, (len(target),), generator=generator).to(items.device)
    positive = (hidden * items[target]).sum(-1)
    negative = (hidden * items[drawn]).sum(-1)
    return (functional.softplus(-positive) + functional.softplus(negative)).mean()
