"""Per-user clipping engines of DP-SGD: each computes ``Σ_u ḡ_u``, the sum over a batch of
every user's gradient clipped to L2 norm C (``ḡ_u = g_u · min(1, C / ‖g_u‖)``).

- :class:`GhostClipping`: Opacus ghost clipping (per-user norms from layer activations and
  output gradients, then a second backward pass of the clip-weighted loss); no per-user
  gradient is materialised.
- :class:`VmapClipping`: exact per-user gradients with ``torch.func.vmap``, in memory-bounded
  chunks, optionally on each user's own rows of a large table (:func:`local_vocabulary`).

See :mod:`privrank.privacy.dpsgd` for the mechanism and its guarantee.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import cast

import torch

from privrank.errors import ConfigError

__all__ = ["DEFAULT_CHUNK_BYTES", "GhostClipping", "VmapClipping", "local_vocabulary"]

#: Memory budget of one chunk of materialised per-user gradients (:class:`VmapClipping`).
DEFAULT_CHUNK_BYTES = 256 * 2**20


# -------------------------------------------------------------------- per-user clipping engines
def _clip_factors(norms: torch.Tensor, clipping_norm: float) -> torch.Tensor:
    """``min(1, C / ‖g_u‖)`` (with Opacus's 1e-6 guard, so a clipped norm is just below C)."""
    return (clipping_norm / (norms + 1e-6)).clamp(max=1.0)


class GhostClipping:
    """Σ of per-user clipped gradients by Opacus ghost clipping (two backward passes).

    Args:
        module: The network; every trainable parameter is released and clipped. It is wrapped
            in Opacus's ``GradSampleModuleFastGradientClipping`` (hooks on its layers).
        loss: ``loss(model, *inputs) -> (B,)`` per-user losses, computed by calling ``model``
            (the wrapped module) on the batch.
        clipping_norm: C.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        loss: Callable[..., torch.Tensor],
        clipping_norm: float,
    ) -> None:
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        self.module = module
        self.loss = loss
        self.clipping_norm = float(clipping_norm)
        self.parameters = [p for p in module.parameters() if p.requires_grad]
        self.wrapped = GradSampleModuleFastGradientClipping(
            module,
            batch_first=True,
            loss_reduction="sum",
            max_grad_norm=self.clipping_norm,
            use_ghost_clipping=True,
        )
        self.last_norms: torch.Tensor | None = None

    def clipped_sum(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Set ``p.grad = Σ_u ḡ_u`` for every parameter; return the per-user losses (and no
        local gradients)."""
        if not self.module.training:
            raise ConfigError(
                "ghost clipping needs the module in training mode (its hooks skip eval mode)"
            )
        for p in self.parameters:
            p.grad = None
            if hasattr(p, "_norm_sample"):
                del p._norm_sample  # a stale norm must never clip this step
        losses = self.loss(self.wrapped, *inputs)
        if losses.numel() == 0:
            self._zero_grads()
            self.last_norms = losses.detach()
            return losses.detach(), ()
        with warnings.catch_warnings():
            # The input needs no gradient, so torch warns that the layers' full backward hooks
            # fire on their outputs' gradients: exactly what ghost clipping reads.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self.wrapped.enable_hooks()
            torch.autograd.backward(losses.sum(), retain_graph=True)
            missing = [p.shape for p in self.parameters if not hasattr(p, "_norm_sample")]
            if missing:
                raise ConfigError(
                    f"ghost clipping got no per-user norm for parameters of shapes {missing}: "
                    "every parameter must be used through a module call (use VmapClipping)"
                )
            norms = self.wrapped.get_norm_sample().detach()
            factors = _clip_factors(norms, self.clipping_norm)
            for p in self.parameters:
                p.grad = None
            self.wrapped.disable_hooks()
            try:
                torch.autograd.backward((factors * losses).sum())
            finally:
                self.wrapped.enable_hooks()
        self._zero_grads()
        self.last_norms = norms
        return losses.detach(), ()

    def _zero_grads(self) -> None:
        for p in self.parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def close(self) -> None:
        """Remove Opacus's hooks and per-parameter bookkeeping (the module is plain again)."""
        self.wrapped.remove_hooks()
        for p in self.parameters:
            for attribute in ("_norm_sample", "_forward_counter", "grad_sample"):
                if hasattr(p, attribute):
                    delattr(p, attribute)
        for m in self.module.modules():
            for attribute in ("activations", "max_batch_len"):
                if hasattr(m, attribute):
                    delattr(m, attribute)


class VmapClipping:
    """Σ of per-user clipped gradients from exact per-user gradients (``torch.func.vmap``).

    **Gathered rows.** A large table (an item embedding) that one user's loss touches only in a
    few rows can be *gathered*: ``clipped_sum(..., gathered={name: rows})`` with ``rows`` a
    ``(B, R)`` index tensor passes each user the small table ``param[rows[b]]`` (``R × d``)
    instead of the whole one; the loss must then index that table with the user's *local*
    positions. The user's gradient on the full table is the scatter of its ``R × d`` gradient
    to ``rows[b]``, so its norm is the norm of the small gradient **provided the rows of one
    user are distinct, except rows its loss does not use** (their gradient is zero). Memory and
    time then scale with ``R``, not the table's size.

    Args:
        parameters: The released parameters by name (clipped and noised).
        loss: ``loss(params, local, data) -> scalar``: one user's loss given the parameters (a
            dict of tensors; gathered ones are that user's rows), that user's local inputs (a
            tuple of tensors whose gradient is returned, never released) and data (a tuple of
            tensors). Called under ``vmap``, so it sees one user's slices and must not branch on
            their values.
        clipping_norm: C.
        chunk_bytes: Memory budget of one chunk of per-user gradients.
        randomness: ``vmap``'s randomness mode (``different``: independent dropout per user).
    """

    def __init__(
        self,
        parameters: dict[str, torch.nn.Parameter],
        loss: Callable[..., torch.Tensor],
        clipping_norm: float,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        randomness: str = "different",
    ) -> None:
        self.named = dict(parameters)
        self.parameters = list(self.named.values())
        self.loss = loss
        self.clipping_norm = float(clipping_norm)
        self.chunk_bytes = int(chunk_bytes)
        self.randomness = randomness
        self.last_norms: torch.Tensor | None = None

    def chunk_size(self, gathered: dict[str, torch.Tensor] | None = None) -> int:
        """Users per chunk: as many as ``chunk_bytes`` of per-user gradients allow (≥ 1)."""
        gathered = gathered or {}
        per_user = 0
        for name, p in self.named.items():
            if name in gathered:
                rows = gathered[name].shape[1]
                per_user += rows * (p.numel() // max(p.shape[0], 1)) * p.element_size()
            else:
                per_user += p.numel() * p.element_size()
        return max(1, int(self.chunk_bytes // max(per_user, 1)))

    def per_user_gradients(
        self,
        local: Sequence[torch.Tensor],
        data: Sequence[torch.Tensor],
        gathered: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...], torch.Tensor]:
        """Unclipped per-user gradients of one chunk: ``(grads by name, local grads, losses)``;
        a gathered parameter's gradient is per user and row, ``(B, R, ...)``."""
        from torch.func import grad_and_value, vmap

        gathered = gathered or {}
        shared = {n: p.detach() for n, p in self.named.items() if n not in gathered}
        tables = {n: self.named[n].detach()[rows] for n, rows in gathered.items()}

        def one_user(
            shared_params: dict[str, torch.Tensor],
            user_tables: dict[str, torch.Tensor],
            user_local: tuple[torch.Tensor, ...],
            user_data: tuple[torch.Tensor, ...],
        ) -> torch.Tensor:
            return self.loss({**shared_params, **user_tables}, user_local, user_data)

        compute = vmap(
            grad_and_value(one_user, argnums=(0, 1, 2)),
            in_dims=(None, 0, 0, 0),
            randomness=self.randomness,
        )
        (grads, table_grads, local_grads), losses = compute(
            shared, tables, tuple(local), tuple(data)
        )
        return {**grads, **table_grads}, tuple(local_grads), losses

    def clipped_sum(
        self,
        local: Sequence[torch.Tensor],
        data: Sequence[torch.Tensor],
        gathered: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Set ``p.grad = Σ_u ḡ_u``; return per-user losses and unclipped local gradients."""
        gathered = gathered or {}
        size = int(data[0].shape[0])
        chunk = self.chunk_size(gathered)
        sums = {name: torch.zeros_like(p) for name, p in self.named.items()}
        losses, local_parts, norm_parts = [], [], []
        for start in range(0, size, chunk):
            part = slice(start, min(start + chunk, size))
            rows = {name: index[part] for name, index in gathered.items()}
            grads, local_grads, chunk_losses = self.per_user_gradients(
                [t[part] for t in local], [t[part] for t in data], rows
            )
            squared = cast(
                torch.Tensor, sum(g.reshape(g.shape[0], -1).square().sum(1) for g in grads.values())
            )
            norms = torch.sqrt(squared)
            factors = _clip_factors(norms, self.clipping_norm)
            for name, g in grads.items():
                if name in rows:
                    weighted = g * factors.reshape(-1, *([1] * (g.dim() - 1)))
                    sums[name].index_add_(
                        0, rows[name].reshape(-1), weighted.reshape(-1, *g.shape[2:])
                    )
                else:
                    sums[name] += torch.tensordot(factors, g, dims=1)
            losses.append(chunk_losses.detach())
            local_parts.append(local_grads)
            norm_parts.append(norms)
        for name, p in self.named.items():
            p.grad = sums[name]
        self.last_norms = torch.cat(norm_parts) if norm_parts else torch.zeros(0)
        local_out = tuple(
            torch.cat([part[k] for part in local_parts]) if local_parts else t[:0].clone()
            for k, t in enumerate(local)
        )
        return (torch.cat(losses) if losses else torch.zeros(0)), local_out


def local_vocabulary(codes: torch.Tensor, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the distinct item codes of ``codes`` and each entry's position among them.

    Args:
        codes: ``(B, M)`` int64 item codes in ``[0, n_items)``, ``-1`` for none.
        n_items: The catalogue size.

    Returns:
        ``(items, local)``: ``items`` is ``(B, K)``, row ``b`` holding the distinct codes of
        ``codes[b]`` in ascending order, padded with ``-1`` (``K``: the most distinct codes of a
        row, at least 1); ``local`` is ``(B, M)`` with ``items[b, local[b, j]] == codes[b, j]``
        (``-1`` where ``codes`` is ``-1``).
    """
    keys = torch.where(codes >= 0, codes, n_items)
    ordered, _ = keys.sort(dim=1)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    new &= ordered < n_items
    width = max(int(new.sum(dim=1).max()) if len(codes) else 0, 1)
    distinct = torch.full((len(codes), width), n_items, dtype=codes.dtype)
    rows = torch.arange(len(codes)).unsqueeze(1).expand_as(ordered)
    distinct[rows[new], (new.cumsum(dim=1) - 1)[new]] = ordered[new]
    local = torch.searchsorted(distinct, keys.contiguous())
    local = torch.where(codes >= 0, local, -1)
    return torch.where(distinct < n_items, distinct, -1), local
