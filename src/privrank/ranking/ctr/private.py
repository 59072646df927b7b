r"""User-level DP-SGD for the neural CTR rankers: one user's rows are one example.

**Guarantee.** A fit trained here is user-level :math:`(\varepsilon, \delta)`-DP with respect to
adding or removing **all training rows of one user** (the frame's user field: frappe's ``user``,
the ad log's ``user_id``): features, labels and participation alike. It protects the released
network weights; the feature vocabulary (which field values exist) and the validation rows are
*not* covered: the vocabulary must come from public knowledge of the catalogue (ads, contexts,
apps) and the validation part (progress, calibration) from rows the operator may use without
protection, e.g. users outside the training set who agreed to it. The trusted party is the
curator that runs the training (central DP); it holds the raw rows.

**Steps** (:mod:`privrank.privacy.dpsgd`, the one DP-SGD mechanism of privrank):

1. *Contribution bound.* Each user keeps the first :math:`R` of its rows (``max_rows_per_user``,
   the spec's ``max_interactions_per_user``); the others are left out and counted.
2. *Poisson sampling of users*: each of the :math:`n` users is in a step with probability
   :math:`q = b / n` (``expected_batch_users`` :math:`b`), drawn from the secret noise stream.
3. *Per-user gradient* of :math:`\ell_u(\theta) = \sum_{i \in u} \mathrm{BCE}(y_i, \sigma(
   z_\theta(x_i)))` (the sum over the user's kept rows), computed exactly by
   :class:`~privrank.privacy.dpsgd.VmapClipping`; the two embedding tables are *gathered*: a user
   gets only the rows its codes touch, which has the same norm and clipped sum as the full
   table's gradient. Clipped to L2 norm :math:`C` (the spec's ``clipping_norm``).
4. *Noise*: :math:`N(0, (mC)^2 I)` on the summed clipped gradients, divided by :math:`b`, then
   an Adam step (post-processing). :math:`m` is calibrated by
   :func:`~privrank.privacy.dpsgd.plan_dpsgd` so that the composition of the
   :math:`T = \text{epochs} \cdot \mathrm{round}(n / b)` subsampled Gaussian steps is
   :math:`(\varepsilon, \delta)`-DP by dp-accounting's PLD accountant (RDP as cross-check).

The user field is never a feature of a private fit (:func:`private_tables`; a vocabulary of user
ids would publish who trained). No early stopping under DP (choosing an epoch on validation data
is not covered): the last iterate is kept after the plan's epochs. Batch normalisation mixes
users inside a batch and is refused. The embedding regulariser is replaced by the dense weight
decay (data-independent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.data.features import CTRFrame, FeatureEncoder, FeatureTable
from privrank.errors import ConfigError
from privrank.metrics.ctr import auc, log_loss
from privrank.privacy._contribution import first_rows_per_user
from privrank.privacy.dpsgd import (
    DPSGDPlan,
    DPSGDTrainer,
    PoissonSampler,
    VmapClipping,
    dpsgd_guarantee,
    local_vocabulary,
    plan_dpsgd,
    torch_noise_generator,
)
from privrank.privacy.mechanism import PrivacyGuarantee, current_noise_scale
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "CTRPrivateConfig",
    "UserRows",
    "group_user_rows",
    "private_tables",
    "train_network_private",
]

#: The tables each user gets only its own rows of.
GATHERED = ("embedding.weight", "weights.weight")


class CTRPrivateConfig(FrozenConfig):
    """DP-SGD settings of a neural CTR ranker (read only by a private fit).

    Attributes:
        expected_batch_users: :math:`b`, users expected per step (:math:`q = b / n`).
        epochs: Passes over the users (fixed: no early stopping under DP).
        lr: Adam learning rate of the private fit.
    """

    expected_batch_users: int = Field(default=256, ge=1)
    epochs: int = Field(default=5, ge=1)
    lr: float = Field(default=3e-3, gt=0, le=1)


class UserRows:
    """Training rows grouped by user after the contribution bound.

    Attributes:
        index: ``[n_users, R]`` row numbers of each user's kept rows, ``-1`` padded.
        users: ``[n_users]`` the user codes, in the order of ``index``.
        kept: Rows kept.
        dropped: Rows left out by the bound.
    """

    def __init__(self, index: np.ndarray, users: np.ndarray, kept: int, dropped: int) -> None:
        self.index = index
        self.users = users
        self.kept = kept
        self.dropped = dropped

    @property
    def n_users(self) -> int:
        """Users with at least one kept row."""
        return int(self.index.shape[0])


def group_user_rows(user_codes: np.ndarray, cap: int) -> UserRows:
    """Each user's first ``cap`` rows (in row order), as a padded ``[n_users, R]`` index."""
    keep = first_rows_per_user(user_codes, cap)
    rows = np.flatnonzero(keep)
    users = user_codes[rows]
    order = np.argsort(users, kind="stable")
    rows, users = rows[order], users[order]
    distinct, starts, counts = np.unique(users, return_index=True, return_counts=True)
    width = int(counts.max()) if len(counts) else 1
    index = np.full((len(distinct), width), -1, dtype=np.int64)
    position = np.arange(len(rows)) - np.repeat(starts, counts)
    index[np.repeat(np.arange(len(distinct)), counts), position] = rows
    return UserRows(index, distinct, kept=int(keep.sum()), dropped=int((~keep).sum()))


def private_tables(
    train: CTRFrame, validation: CTRFrame, encoder: FeatureEncoder
) -> tuple[FeatureTable, FeatureTable]:
    """Encode CTR rows for a private fit: the user field groups the rows and is **not** a
    feature (its vocabulary would publish the ids of the training users).

    Raises:
        ConfigError: The rows have no user field.
    """
    user = train.user_field
    if user is None:
        raise ConfigError(
            "user-level DP-SGD needs the rows' user field (the unit of privacy); these CTR rows "
            "have none"
        )
    fields = tuple(f for f in train.categorical if f != user)

    def strip(frame: CTRFrame) -> CTRFrame:
        return CTRFrame(frame.table, fields, frame.numeric, None, frame.name, frame.source)

    vocabulary = encoder.fit(strip(train))
    ids = train.table.column(user).to_numpy(zero_copy_only=False)
    _, users = np.unique(ids.astype(str), return_inverse=True)
    table = dataclasses.replace(vocabulary.transform(strip(train)), user_codes=users)
    return table, vocabulary.transform(strip(validation))


def _batch(
    train: FeatureTable, groups: UserRows, users: np.ndarray
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """The per-user data of the sampled ``users`` and the rows of the gathered tables."""
    index = groups.index[users]
    mask = index >= 0
    safe = np.where(mask, index, 0)
    codes = torch.from_numpy(np.where(mask[..., None], train.codes[safe], -1))
    b, r, f = codes.shape
    items, local = local_vocabulary(codes.reshape(b, r * f), train.vocabulary.n_codes)
    local = local.reshape(b, r, f).clamp(min=0)
    rows = items.clamp(min=0)
    data = (
        local,
        torch.from_numpy(train.numeric[safe]),
        torch.from_numpy(train.labels[safe]),
        torch.from_numpy(mask.astype(np.float32)),
    )
    return data, dict.fromkeys(GATHERED, rows)


def user_loss_fn(network: torch.nn.Module) -> Any:
    """``loss(params, local, data)``: one user's summed BCE over its (masked) rows."""
    from torch.func import functional_call

    def loss(params: dict[str, torch.Tensor], local: tuple, data: tuple) -> torch.Tensor:
        codes, numeric, labels, mask = data
        logits = functional_call(network, params, (codes, numeric))
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return (bce * mask).sum()

    return loss


def plan_private_fit(
    spec: PrivacySpec, train: FeatureTable, settings: CTRPrivateConfig
) -> tuple[PrivacySpec, UserRows, DPSGDPlan]:
    """Bound contributions, resolve δ on the users kept and calibrate the steps' multiplier.

    Raises:
        ConfigError: No user field, or no contribution bound in the spec.
    """
    if train.user_codes is None:
        raise ConfigError(
            "user-level DP-SGD needs the rows' user field (the unit of privacy); these CTR rows "
            "have none"
        )
    vocabulary = train.vocabulary
    if vocabulary.user_field is not None and vocabulary.user_field in vocabulary.field_names:
        raise ConfigError(
            f"the user field {vocabulary.user_field!r} is a feature: its vocabulary would "
            "publish the training users' ids; encode the rows with private_tables"
        )
    cap = spec.require_contribution_bound("DP-SGD for CTR rankers")
    groups = group_user_rows(train.user_codes, cap)
    spec = spec.resolve(groups.n_users)
    plan = plan_dpsgd(
        spec, groups.n_users, settings.expected_batch_users, settings.epochs, with_popularity=False
    )
    return spec, groups, plan


def train_network_private(
    network: torch.nn.Module,
    train: FeatureTable,
    validation: FeatureTable,
    settings: CTRPrivateConfig,
    weight_decay: float,
    spec: PrivacySpec,
    report: Any,
    predict: Any,
) -> tuple[PrivacyGuarantee, dict[str, Any]]:
    """Train ``network`` by user-level DP-SGD (the module docstring); returns its guarantee and
    facts (rows kept and dropped, the plan)."""
    if any(isinstance(m, torch.nn.BatchNorm1d) for m in network.modules()):
        raise ConfigError("DP-SGD cannot train with batch normalisation (it mixes users)")
    spec, groups, plan = plan_private_fit(spec, train, settings)
    sampling_stream, noise_stream = spec.noise_generator().spawn(2)
    sampler = PoissonSampler(plan.n_users, plan.sampling_rate, sampling_stream)
    named = {n: p for n, p in network.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(named.values(), lr=settings.lr, weight_decay=weight_decay)
    engine = VmapClipping(named, user_loss_fn(network), spec.clipping_norm)
    trainer = DPSGDTrainer(
        engine,
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        expected_batch_size=plan.expected_batch_size,
        noise=torch_noise_generator(noise_stream),
    )
    for epoch in range(1, plan.epochs + 1):
        network.train()
        total, rows = 0.0, 0
        for users in sampler.epoch(plan.steps_per_epoch):
            if users.size == 0:  # an empty Poisson batch still releases noise (accounted)
                for p in engine.parameters:
                    p.grad = torch.zeros_like(p)
                    trainer.mechanism.add_noise(p.grad, trainer.noise)
                    p.grad.div_(trainer.expected_batch_size)
                optimizer.step()
                continue
            data, gathered = _batch(train, groups, users)
            losses = trainer.step((), data, gathered)
            total += float(losses.sum())
            rows += int(data[3].sum())
        p = predict(validation)
        y = validation.labels
        report(epoch, plan.epochs, total / max(rows, 1),
               val_log_loss=log_loss(y, p), val_auc=auc(y, p))  # fmt: skip
    network.eval()
    guarantee = dpsgd_guarantee(
        plan,
        spec,
        statistic="the summed per-user clipped gradients of the CTR network's weights",
        released="the CTR network's weights (not the feature vocabulary or the validation rows)",
        popularity=None,
        noise_scale=current_noise_scale(),
    )
    facts = {
        "unit_of_privacy": "all training rows of one user",
        "rows_kept": groups.kept,
        "rows_dropped_by_bound": groups.dropped,
        "users": groups.n_users,
        "noise_multiplier": plan.noise_multiplier,
        "sampling_rate": plan.sampling_rate,
        "steps": plan.steps,
    }
    return guarantee, facts
