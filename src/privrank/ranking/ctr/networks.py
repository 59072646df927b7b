r"""PyTorch networks of the CTR rankers, over field embeddings.

Every network reads ``codes [B, F]`` (categorical codes in one shared index space, see
:class:`~privrank.data.features.FeatureVocabulary`) and ``numeric [B, N]`` and returns logits
``[B]``. Field embeddings :math:`e_f \in \mathbb{R}^k` are one table row per code; a numeric
field :math:`j` is a learned vector scaled by its value, :math:`e_{F+j} = x_j u_j`. The
linear part is :math:`w_0 + \sum_f w_{c_f} + \sum_j v_j x_j`.

- :class:`Linear` (logistic regression): the linear part.
- :class:`FM` (Rendle 2010): linear part :math:`+ \tfrac12 \sum_d ((\sum_f e_{f,d})^2 -
  \sum_f e_{f,d}^2)`, the sum of all pairwise inner products :math:`\sum_{f<g} \langle e_f,
  e_g\rangle`.
- :class:`DeepFM` (Guo et al. 2017): FM :math:`+` an MLP over the concatenated embeddings,
  sharing the embeddings.
- :class:`DCNv2` (Wang et al. 2021): cross layers :math:`x_{l+1} = x_0 \odot (W_l x_l + b_l) +
  x_l` on the concatenated embeddings :math:`x_0`, in parallel with an MLP; a linear layer on
  both outputs.
- :class:`FinalMLP` (Mao et al. 2023): two MLP streams over gated embeddings (each with its own
  feature-selection gate :math:`2\sigma(\mathrm{MLP}(b))` from a learned context vector) fused
  by multi-head bilinear aggregation :math:`w_1^\top o_1 + w_2^\top o_2 + o_1^\top W_3 o_2`
  per head.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FM", "CTRNetwork", "DCNv2", "DeepFM", "FinalMLP", "Linear", "mlp"]


def mlp(inputs: int, hidden: tuple[int, ...], dropout: float, batch_norm: bool) -> nn.Sequential:
    """Linear → (BatchNorm) → ReLU → Dropout per hidden layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(inputs, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        inputs = width
    return nn.Sequential(*layers)


class CTRNetwork(nn.Module):
    """Shared parts: the embedding table, numeric vectors and the linear part."""

    def __init__(self, n_codes: int, n_fields: int, n_numeric: int, dim: int) -> None:
        super().__init__()
        self.n_inputs = n_fields + n_numeric
        self.dim = dim
        self.embedding = nn.Embedding(n_codes, dim)
        self.numeric_vectors = nn.Parameter(torch.empty(n_numeric, dim))
        self.weights = nn.Embedding(n_codes, 1)
        self.numeric_weights = nn.Linear(n_numeric, 1) if n_numeric else None
        self.bias = nn.Parameter(torch.zeros(1))
        self.init_embeddings(1e-2)
        nn.init.zeros_(self.weights.weight)
        self._penalty = torch.zeros(())

    def init_embeddings(self, std: float) -> None:
        """Draw the embeddings and numeric vectors from :math:`N(0, \\mathrm{std}^2)`."""
        nn.init.normal_(self.embedding.weight, std=std)
        nn.init.normal_(self.numeric_vectors, std=std)

    def embed(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """``[B, F + N, k]`` field embeddings (records their squared norm for :meth:`penalty`)."""
        fields = self.embedding(codes)
        if numeric.shape[1]:
            fields = torch.cat([fields, numeric.unsqueeze(-1) * self.numeric_vectors], dim=1)
        self._penalty = fields.pow(2).sum(dim=(1, 2)).mean()
        return fields

    def linear(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """``[B]`` the linear part."""
        out = self.weights(codes).sum(dim=(1, 2)) + self.bias
        if self.numeric_weights is not None:
            out = out + self.numeric_weights(numeric).squeeze(-1)
        return out

    def penalty(self) -> torch.Tensor:
        """Mean squared norm of the last batch's embeddings (the L2 regulariser's term)."""
        return self._penalty

    def table_penalty(self) -> torch.Tensor:
        r""":math:`\tfrac12 \lVert E \rVert_F^2` over the whole embedding table and the numeric
        vectors (FuxiCTR's ``embedding_regularizer``: every row shrinks at every step)."""
        return 0.5 * (self.embedding.weight.pow(2).sum() + self.numeric_vectors.pow(2).sum())


class Linear(CTRNetwork):
    """Logistic regression over one-hot fields and numeric values."""

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        self._penalty = self.weights(codes).pow(2).sum(dim=(1, 2)).mean()
        return self.linear(codes, numeric)

    def table_penalty(self) -> torch.Tensor:
        r""":math:`\tfrac12 \lVert w \rVert^2` over the whole weight table."""
        return 0.5 * self.weights.weight.pow(2).sum()


def _fm(fields: torch.Tensor) -> torch.Tensor:
    square_of_sum = fields.sum(dim=1).pow(2)
    sum_of_square = fields.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class FM(CTRNetwork):
    """Factorisation machine."""

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return self.linear(codes, numeric) + _fm(self.embed(codes, numeric))


class DeepFM(CTRNetwork):
    """FM plus an MLP over the shared embeddings."""

    def __init__(self, n_codes: int, n_fields: int, n_numeric: int, dim: int,
                 hidden: tuple[int, ...], dropout: float, batch_norm: bool) -> None:  # fmt: skip
        super().__init__(n_codes, n_fields, n_numeric, dim)
        self.deep = mlp(self.n_inputs * dim, hidden, dropout, batch_norm)
        self.out = nn.Linear(hidden[-1] if hidden else self.n_inputs * dim, 1)

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        fields = self.embed(codes, numeric)
        deep = self.out(self.deep(fields.flatten(1))).squeeze(-1)
        return self.linear(codes, numeric) + _fm(fields) + deep


class DCNv2(CTRNetwork):
    """Deep & Cross Network v2 (full-rank cross layers, parallel with an MLP)."""

    def __init__(self, n_codes: int, n_fields: int, n_numeric: int, dim: int,
                 hidden: tuple[int, ...], dropout: float, batch_norm: bool,
                 cross_layers: int) -> None:  # fmt: skip
        super().__init__(n_codes, n_fields, n_numeric, dim)
        width = self.n_inputs * dim
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(cross_layers))
        self.deep = mlp(width, hidden, dropout, batch_norm)
        self.out = nn.Linear(width + (hidden[-1] if hidden else width), 1)

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        x0 = self.embed(codes, numeric).flatten(1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.out(torch.cat([x, self.deep(x0)], dim=1)).squeeze(-1)


class FinalMLP(CTRNetwork):
    """Two gated MLP streams fused by multi-head bilinear aggregation."""

    def __init__(self, n_codes: int, n_fields: int, n_numeric: int, dim: int,
                 hidden: tuple[int, ...], hidden2: tuple[int, ...], dropout: float,
                 batch_norm: bool, heads: int) -> None:  # fmt: skip
        super().__init__(n_codes, n_fields, n_numeric, dim)
        width = self.n_inputs * dim
        self.contexts = nn.Parameter(torch.zeros(2, dim))
        self.gates = nn.ModuleList(
            nn.Sequential(mlp(dim, (hidden[0],), 0.0, False), nn.Linear(hidden[0], width))
            for _ in range(2)
        )
        self.stream1 = mlp(width, hidden, dropout, batch_norm)
        self.stream2 = mlp(width, hidden2, dropout, batch_norm)
        d1, d2 = hidden[-1], hidden2[-1]
        if d1 % heads or d2 % heads:
            raise ValueError(f"heads={heads} must divide both stream widths ({d1}, {d2})")
        self.heads = heads
        self.w1 = nn.Linear(d1, 1)
        self.w2 = nn.Linear(d2, 1, bias=False)
        self.w3 = nn.Parameter(torch.empty(heads, d1 // heads, d2 // heads))
        nn.init.xavier_normal_(self.w3)

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        x = self.embed(codes, numeric).flatten(1)
        g1 = 2 * torch.sigmoid(self.gates[0](self.contexts[0]))
        g2 = 2 * torch.sigmoid(self.gates[1](self.contexts[1]))
        o1 = self.stream1(x * g1)
        o2 = self.stream2(x * g2)
        b = o1.shape[0]
        h1 = o1.view(b, self.heads, -1)
        h2 = o2.view(b, self.heads, -1)
        bilinear = torch.einsum("bhi,hij,bhj->b", h1, self.w3, h2)
        return (self.w1(o1) + self.w2(o2)).squeeze(-1) + bilinear
