r"""A neural listwise ranker in PyTorch: an MLP scorer trained on whole query groups.

**Model.** Each row's features :math:`x` are standardised (:math:`(x - \mu) / \sigma`, learned on
the training rows) and scored by an MLP :math:`s = f_\theta(x)` (ReLU layers of ``hidden`` units,
one linear output).

**Losses** over a group :math:`G` with gains :math:`g_i = 2^{l_i} - 1`:

- ``softmax`` (listwise softmax cross-entropy, ListNet's top-one form):
  :math:`\ell_G = -\sum_{i \in G} \frac{g_i}{\sum_j g_j} \log \frac{e^{s_i}}{\sum_{j \in G}
  e^{s_j}}`;
- ``approx-ndcg`` (Qin et al. 2010): the rank of :math:`i` is smoothed to
  :math:`\hat\pi_i = 1 + \sum_{j \ne i} \sigma((s_j - s_i)/T)` and
  :math:`\ell_G = -\frac{1}{\mathrm{IDCG}} \sum_i \frac{g_i}{\log_2(1 + \hat\pi_i)}`.

A group without a relevant row has no loss. Training is Adam over batches of groups; after each
epoch the validation part's NDCG@``eval_at`` is computed and training stops after ``patience``
epochs without improvement, keeping the best weights (early stopping on validation NDCG).

**User-level differential privacy** (``LTRFitOptions(privacy=spec)``): one query group is one
user's data (a two-stage recommender builds one group per user), so DP-SGD with the group as the
example is user-level DP: groups are Poisson-sampled with rate :math:`q = b/n`, each group's
gradient is clipped to L2 norm :math:`C` (Opacus ghost clipping,
:class:`~privrank.privacy.dpsgd.GhostClipping`), Gaussian noise :math:`N(0, (mC)^2 I)` is added
to the sum, and the :math:`T` steps are accounted by dp-accounting (PLD, cross-checked by RDP)
through :func:`~privrank.privacy.dpsgd.plan_dpsgd`; the fit is user-level :math:`(\varepsilon,
\delta)`-DP for the weights it releases, recorded in :attr:`ListwiseRanker.privacy_guarantee_`.
A private fit learns nothing else from the data: the standardisation is the identity (features
are used as given; a data-derived mean and scale would be an unaccounted release) and every
epoch runs (no early stopping on private validation data). The guarantee requires each user to
own at most one group, which the caller ensures (the two-stage pipeline does). With
``LTRFitOptions.population`` :math:`n` is that many users, some of them without a group (sampled
like the others, contributing nothing): :math:`q` and :math:`T` are then fixed before the groups
exist, and :meth:`ListwiseRanker.planned_releases` states the releases in advance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field

from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError
from privrank.models.base import ModelFitError
from privrank.ranking.ltr._base import LTRFitOptions, LTRRanker, RankerConfig, register_ranker
from privrank.ranking.ltr._ndcg import group_ndcg

if TYPE_CHECKING:
    from privrank.privacy.calibration import Release
    from privrank.privacy.spec import PrivacySpec

__all__ = ["ListwiseConfig", "ListwiseRanker"]


class ListwisePrivateConfig(RankerConfig):
    """Settings of a DP-SGD fit of the listwise ranker.

    Attributes:
        batch_size: Expected groups (users) per DP-SGD step (Poisson sampling at ``q = b/n``).
    """

    batch_size: int = Field(default=64, ge=1)


class ListwiseConfig(RankerConfig):
    """Hyper-parameters of :class:`ListwiseRanker`.

    Attributes:
        hidden: Units of each hidden ReLU layer.
        loss: ``softmax`` (listwise cross-entropy) or ``approx-ndcg``.
        temperature: ``T`` of ApproxNDCG's smoothed ranks.
        epochs: Most passes over the groups.
        batch_groups: Groups per Adam step.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 penalty.
        dropout: Dropout after each hidden layer.
        eval_at: Cutoff of the validation NDCG used for early stopping.
        patience: Epochs without validation improvement before stopping.
        private: Settings of a private fit (``None``: defaults).
    """

    hidden: tuple[int, ...] = (64, 32)
    loss: Literal["softmax", "approx-ndcg"] = "softmax"
    temperature: float = Field(0.1, gt=0)
    epochs: int = Field(60, ge=1)
    batch_groups: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    eval_at: int = Field(10, ge=1)
    patience: int = Field(8, ge=1)
    private: ListwisePrivateConfig | None = None


def _network(n_features: int, config: ListwiseConfig) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = n_features
    for units in config.hidden:
        layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
        if config.dropout:
            layers.append(torch.nn.Dropout(config.dropout))
        width = units
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


def _padded(groups: QueryGroups, queries: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """``(x, gains, mask)`` tensors of shape ``(B, L, d)``, ``(B, L)``, ``(B, L)``."""
    offsets = groups.offsets
    sizes = groups.group_sizes[queries]
    width = int(sizes.max()) if sizes.size else 0
    x = np.zeros((len(queries), width, groups.n_features), dtype=np.float32)
    gains = np.zeros((len(queries), width), dtype=np.float32)
    mask = np.zeros((len(queries), width), dtype=bool)
    for row, q in enumerate(queries):
        start, stop = offsets[q], offsets[q + 1]
        n = stop - start
        x[row, :n] = (groups.features[start:stop] - mean) / std
        gains[row, :n] = np.exp2(groups.labels[start:stop]) - 1.0
        mask[row, :n] = True
    return torch.from_numpy(x), torch.from_numpy(gains), torch.from_numpy(mask)


def group_losses(
    scores: torch.Tensor, gains: torch.Tensor, mask: torch.Tensor, config: ListwiseConfig
) -> torch.Tensor:
    """``(B,)`` listwise losses of padded groups (0 for a group without a relevant row)."""
    total = gains.sum(dim=1)
    has = total > 0
    if config.loss == "softmax":
        logp = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        target = gains / total.clamp_min(1e-12).unsqueeze(1)
        loss = -(target * logp.masked_fill(~mask, 0.0)).sum(dim=1)
    else:
        diff = (scores.unsqueeze(1) - scores.unsqueeze(2)) / config.temperature  # s_j - s_i
        pair = torch.sigmoid(diff) * mask.unsqueeze(1) * mask.unsqueeze(2)
        ranks = 1.0 + pair.sum(dim=2) - 0.5  # the j = i term is sigmoid(0) = 0.5
        dcg = (gains / torch.log2(1.0 + ranks) * mask).sum(dim=1)
        ideal = torch.sort(gains, dim=1, descending=True).values
        discounts = 1.0 / torch.log2(torch.arange(2, gains.shape[1] + 2, dtype=gains.dtype))
        idcg = (ideal * discounts).sum(dim=1)
        loss = -dcg / idcg.clamp_min(1e-12)
    return torch.where(has, loss, torch.zeros_like(loss))


@register_ranker("listwise")
class ListwiseRanker(LTRRanker):
    """Neural listwise ranker (see the module docstring for the maths and the guarantee).

    Attributes:
        network_: The fitted MLP (eval mode).
        mean_: Feature means used for standardisation (zeros after a private fit).
        std_: Feature scales (ones after a private fit).
        privacy_guarantee_: The guarantee of a private fit, else ``None``.
    """

    Config = ListwiseConfig
    config: ListwiseConfig
    supports_privacy = True

    def _fit(
        self, train: QueryGroups, validation: QueryGroups | None, options: LTRFitOptions
    ) -> None:
        config = self.config
        if options.privacy is None and config.private is not None:
            raise ConfigError(
                "ListwiseRanker's config has a 'private' block but the fit has no privacy spec; "
                "refusing to ignore it"
            )
        threads = options.threads or torch.get_num_threads()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(options.seed)
            self.privacy_guarantee_: Any = None
            if options.privacy is None:
                self._fit_plain(train, validation, options)
            else:
                self._fit_private(train, options)
        finally:
            torch.set_num_threads(previous)
        for name, value in self.network_.state_dict().items():
            if not torch.isfinite(value).all():
                raise ModelFitError(f"ListwiseRanker produced non-finite weights in {name!r}")

    def _fit_plain(
        self, train: QueryGroups, validation: QueryGroups | None, options: LTRFitOptions
    ) -> None:
        config = self.config
        self.mean_ = train.features.mean(axis=0).astype(np.float32)
        std = train.features.std(axis=0).astype(np.float32)
        self.std_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        network = _network(train.n_features, config)
        optimizer = torch.optim.Adam(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        rng = np.random.default_rng(options.seed)
        useful = np.flatnonzero(
            np.add.reduceat(train.labels > 0, train.offsets[:-1]) > 0
        )  # groups with a relevant row carry gradient
        best, best_state, waited = -np.inf, None, 0
        history: list[float] = []
        for epoch in range(1, config.epochs + 1):
            network.train()
            order = rng.permutation(useful)
            for start in range(0, len(order), config.batch_groups):
                x, gains, mask = _padded(
                    train, order[start : start + config.batch_groups], self.mean_, self.std_
                )
                optimizer.zero_grad()
                loss = group_losses(network(x).squeeze(-1), gains, mask, config).mean()
                loss.backward()
                optimizer.step()
            if validation is None:
                continue
            self.network_ = network.eval()
            ndcg = group_ndcg(
                self._score(validation.features),
                validation.labels,
                validation.group_sizes,
                config.eval_at,
            )
            history.append(ndcg)
            if options.progress is not None:
                options.progress(epoch, {f"ndcg@{config.eval_at}": ndcg})
            if ndcg > best:
                best, waited = ndcg, 0
                best_state = {k: v.clone() for k, v in network.state_dict().items()}
                self.info_["best_epoch"] = epoch
            else:
                waited += 1
                if waited >= config.patience:
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
            self.info_["validation"] = {f"ndcg@{config.eval_at}": float(best)}
            self.info_["validation_curve"] = history
        self.network_ = network.eval()

    def planned_releases(self, spec: PrivacySpec, population: int) -> tuple[Release, ...]:
        """The DP-SGD steps a private fit at the resolved ``spec`` makes when its Poisson
        batches are drawn from ``population`` users (``LTRFitOptions.population``, or the
        number of groups): computed before any group exists, and equal to the fitted ranker's
        ``privacy_guarantee_.composition`` (tested)."""
        return self._plan(spec, population).releases()

    def _plan(self, spec: PrivacySpec, population: int) -> Any:
        from privrank.privacy.dpsgd import plan_dpsgd

        settings = self.config.private or ListwisePrivateConfig()
        return plan_dpsgd(
            spec, population, settings.batch_size, self.config.epochs, with_popularity=False
        )

    def _fit_private(self, train: QueryGroups, options: LTRFitOptions) -> None:
        from privrank.privacy.dpsgd import (
            GhostClipping,
            PoissonSampler,
            dpsgd_guarantee,
            torch_noise_generator,
        )
        from privrank.privacy.mechanism import current_noise_scale

        config = self.config
        spec = options.privacy
        assert spec is not None
        population = train.n_queries if options.population is None else options.population
        if population < train.n_queries:
            raise ConfigError(
                f"ListwiseRanker: a private fit's population ({population}) is smaller than its "
                f"{train.n_queries} query groups"
            )
        spec = spec.resolve(population)
        plan = self._plan(spec, population)
        sampling_stream, noise_stream = spec.noise_generator().spawn(2)
        sampler = PoissonSampler(plan.n_users, plan.sampling_rate, sampling_stream)
        self.mean_ = np.zeros(train.n_features, dtype=np.float32)
        self.std_ = np.ones(train.n_features, dtype=np.float32)
        network = _network(train.n_features, config)
        optimizer = torch.optim.Adam(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )

        def losses(
            model: torch.nn.Module, x: torch.Tensor, gains: torch.Tensor, mask: torch.Tensor
        ):
            return group_losses(model(x).squeeze(-1), gains, mask, config)

        engine = GhostClipping(network, losses, float(spec.clipping_norm))
        from privrank.privacy.dpsgd import DPSGDTrainer

        trainer = DPSGDTrainer(
            engine,
            optimizer,
            noise_multiplier=plan.noise_multiplier,
            expected_batch_size=plan.expected_batch_size,
            noise=torch_noise_generator(noise_stream),
        )
        network.train()
        try:
            for _ in range(plan.epochs):
                for drawn in sampler.epoch(plan.steps_per_epoch):
                    groups = drawn[drawn < train.n_queries]  # the others have no group
                    if groups.size == 0:
                        # An empty Poisson batch still releases noise: the step is accounted.
                        for p in engine.parameters:
                            p.grad = torch.zeros_like(p)
                            trainer.mechanism.add_noise(p.grad, trainer.noise)
                            p.grad.div_(trainer.expected_batch_size)
                        optimizer.step()
                        continue
                    trainer.step(*_padded(train, groups, self.mean_, self.std_))
        finally:
            engine.close()
        self.network_ = network.eval()
        self.privacy_guarantee_ = dpsgd_guarantee(
            plan,
            spec,
            statistic="the summed per-group (per-user) clipped gradients of the ranker's weights",
            released="the listwise ranker's network weights",
            popularity=None,
            noise_scale=current_noise_scale(),
        )
        self.info_["privacy"] = self.privacy_guarantee_.to_dict()

    def _score(self, features: np.ndarray, threads: int | None = None) -> np.ndarray:
        x = torch.from_numpy(((features - self.mean_) / self.std_).astype(np.float32))
        with torch.no_grad():
            return self.network_(x).squeeze(-1).numpy()

    def state(self) -> dict[str, np.ndarray]:
        """The MLP's weights (``net.*``) and the standardisation (``mean``, ``std``)."""
        out = {f"net.{k}": v.detach().numpy() for k, v in self.network_.state_dict().items()}
        return {**out, "mean": self.mean_, "std": self.std_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean_ = np.asarray(state.pop("mean"), dtype=np.float32)
        self.std_ = np.asarray(state.pop("std"), dtype=np.float32)
        if self.mean_.shape != (self.n_features_,) or self.std_.shape != (self.n_features_,):
            raise ValueError("the standardisation does not match the number of features")
        network = _network(self.n_features_, self.config)
        weights = {k.removeprefix("net."): torch.from_numpy(np.array(v)) for k, v in state.items()}
        try:
            network.load_state_dict(weights)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from exc
        self.network_ = network.eval()
        self.privacy_guarantee_ = None
        if self.info_.get("privacy"):
            from privrank.privacy.mechanisms import PrivacyGuarantee

            self.privacy_guarantee_ = PrivacyGuarantee.from_dict(self.info_["privacy"])
