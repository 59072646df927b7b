r"""A synthetic ad log whose true click probability is known for every impression.

:func:`write_ad_log` draws an ad-serving log from a small generative model and writes it as a
directory of Parquet parts, one chunk of impressions at a time, so memory stays bounded by one
chunk (:attr:`AdLogConfig.chunk_rows`) plus the entity tables, whatever the number of
impressions. Every chunk has its own random stream spawned from ``seed``
(``SeedSequence(seed).spawn``), so the log is a function of the configuration only.

**Entities.** Advertisers own campaigns (uniformly at random); campaigns own ads. Every ad has
one of ``n_ad_categories`` categories; every user one of ``n_user_segments`` segments. Latent
vectors of dimension ``dim``: a user's is its segment's centroid plus individual noise, an ad's
its category's centroid plus noise, a context's (site or app) is drawn on its own. Ads are served
with Zipf popularity (exponent ``ad_popularity_exponent``), users with log-normal activity, and
contexts uniformly.

**Clicks.** The true click probability of an impression of ad :math:`a` to user :math:`u` in
context :math:`c` at slot position :math:`k`, on device :math:`d` and hour :math:`h` is logistic:

.. math::

    p = \sigma\big(\beta_0 + b_a + b_{\mathrm{camp}(a)} + b_c + b_u + b_d + b_h + \pi_k
        + s\,(\mathbf{u}_u + \mathbf{c}_c)^\top \mathbf{v}_a\big)

with :math:`\pi_k = -\lambda k` the position bias (``position_decay`` :math:`=\lambda`, so the
top slot is examined most) and :math:`s` = ``interaction_scale`` the weight of the user×ad and
context×ad interaction. ``click ~ Bernoulli(p)`` and ``p`` is written in the column ``p_click``.

**Conversions.** Conversions are attributed to clicks (last click): a click converts with the
probability of its campaign, :math:`\kappa_{\mathrm{camp}} \sim \mathrm{Beta}` with mean
``conversion_rate``; its type is drawn from the campaign's own Dirichlet mix over
``n_conversion_types`` types; its value is log-normal with a mean per type (``value_mu``).
A row without a conversion has ``conversion_type = -1`` and ``conversion_value = 0``.

**Columns** (:data:`AD_LOG_SCHEMA`): ``impression_id``, ``timestamp`` (seconds, increasing),
``user_id``, ``user_segment``, ``ad_id``, ``ad_category``, ``campaign_id``, ``advertiser_id``,
``context_id``, ``device``, ``hour``, ``position``, ``p_click``, ``click``, ``conversion``,
``conversion_type``, ``conversion_value``. ``entities.parquet`` holds the ad → campaign →
advertiser map and ``config.json`` the configuration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from privrank.atomic import atomic_directory
from privrank.errors import DataError

__all__ = [
    "AD_LOG_SCHEMA",
    "FEATURE_COLUMNS",
    "AdLogConfig",
    "AdWorld",
    "ad_log_config",
    "generate_chunk",
    "iter_ad_log",
    "log_parts",
    "make_world",
    "read_ad_log",
    "write_ad_log",
]

AD_LOG_SCHEMA = pa.schema(
    [
        ("impression_id", pa.int64()),
        ("timestamp", pa.int64()),
        ("user_id", pa.int64()),
        ("user_segment", pa.int32()),
        ("ad_id", pa.int32()),
        ("ad_category", pa.int32()),
        ("campaign_id", pa.int32()),
        ("advertiser_id", pa.int32()),
        ("context_id", pa.int32()),
        ("device", pa.int8()),
        ("hour", pa.int8()),
        ("position", pa.int8()),
        ("p_click", pa.float64()),
        ("click", pa.int8()),
        ("conversion", pa.int8()),
        ("conversion_type", pa.int8()),
        ("conversion_value", pa.float64()),
    ]
)
#: The columns a click model may use as features (no label, no truth, no user id).
FEATURE_COLUMNS = (
    "user_segment",
    "ad_id",
    "ad_category",
    "campaign_id",
    "advertiser_id",
    "context_id",
    "device",
    "hour",
    "position",
)
_CONFIG_FILE = "config.json"
_ENTITIES_FILE = "entities.parquet"
_PART = "part-{:05d}.parquet"
_N_DEVICES = 3
_START = 1_767_225_600  # 2026-01-01T00:00:00Z
_SECONDS_PER_IMPRESSION = 0.05

Progress = Callable[[int, int], None]


class AdLogConfig(BaseModel):
    """Parameters of the synthetic ad log (see the module docstring for the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_impressions: int = Field(default=1_000_000, ge=1)
    n_users: int = Field(default=200_000, ge=1)
    n_user_segments: int = Field(default=40, ge=1)
    n_ads: int = Field(default=2_000, ge=1)
    n_ad_categories: int = Field(default=25, ge=1)
    n_campaigns: int = Field(default=200, ge=1)
    n_advertisers: int = Field(default=50, ge=1)
    n_contexts: int = Field(default=500, ge=1)
    n_positions: int = Field(default=5, ge=1, le=100)
    n_conversion_types: int = Field(default=4, ge=1, le=100)
    dim: int = Field(default=8, ge=1, le=256)
    base_logit: float = Field(default=-3.6, ge=-20, le=20)
    interaction_scale: float = Field(default=0.6, ge=0, le=10)
    position_decay: float = Field(default=0.35, ge=0, le=10)
    bias_sigma: float = Field(default=0.5, ge=0, le=5)
    ad_popularity_exponent: float = Field(default=1.0, ge=0, le=5)
    activity_sigma: float = Field(default=1.0, ge=0, le=5)
    conversion_rate: float = Field(default=0.12, gt=0, lt=1)
    value_mu: tuple[float, ...] = (3.5, 1.5, 0.5, 2.5)
    value_sigma: float = Field(default=0.8, ge=0, le=5)
    chunk_rows: int = Field(default=1_000_000, ge=1_000)
    seed: int = Field(default=0, ge=0)


def ad_log_config(**fields: object) -> AdLogConfig:
    """An :class:`AdLogConfig`, validation errors as one :class:`~privrank.errors.ConfigError`."""
    from pydantic import ValidationError

    from privrank.config_errors import config_error

    try:
        return AdLogConfig.model_validate(fields)
    except ValidationError as exc:
        raise config_error(exc, "AdLogConfig", model=AdLogConfig) from exc


@dataclass(frozen=True)
class AdWorld:
    """The entity tables of one configuration (drawn from ``seed``'s first stream).

    Attributes:
        config: The configuration.
        user_segment: Segment of every user.
        user_vec: Latent vector of every user, ``(n_users, dim)``.
        user_bias: Click bias of every user.
        user_weight: Probability that an impression is shown to each user.
        ad_campaign: Campaign of every ad.
        ad_category: Category of every ad.
        campaign_advertiser: Advertiser of every campaign.
        ad_vec: Latent vector of every ad.
        ad_bias: Click bias of every ad plus its campaign's.
        ad_weight: Probability that an impression is of each ad (Zipf).
        context_vec: Latent vector of every context.
        context_bias: Click bias of every context.
        device_bias: Click bias of each device.
        hour_bias: Click bias of each hour of the day.
        campaign_cvr: Conversion probability of a click, per campaign.
        campaign_type_mix: Distribution of conversion types, per campaign.
    """

    config: AdLogConfig
    user_segment: np.ndarray
    user_vec: np.ndarray
    user_bias: np.ndarray
    user_weight: np.ndarray
    ad_campaign: np.ndarray
    ad_category: np.ndarray
    campaign_advertiser: np.ndarray
    ad_vec: np.ndarray
    ad_bias: np.ndarray
    ad_weight: np.ndarray
    context_vec: np.ndarray
    context_bias: np.ndarray
    device_bias: np.ndarray
    hour_bias: np.ndarray
    campaign_cvr: np.ndarray
    campaign_type_mix: np.ndarray

    def logit(
        self,
        user: np.ndarray,
        ad: np.ndarray,
        context: np.ndarray,
        device: np.ndarray,
        hour: np.ndarray,
        position: np.ndarray,
    ) -> np.ndarray:
        """The true click logit of impressions (the formula of the module docstring)."""
        c = self.config
        mixed = self.user_vec[user] + self.context_vec[context]
        interaction = np.einsum("ij,ij->i", mixed, self.ad_vec[ad])
        return (
            c.base_logit
            + self.ad_bias[ad]
            + self.user_bias[user]
            + self.context_bias[context]
            + self.device_bias[device]
            + self.hour_bias[hour]
            - c.position_decay * position
            + c.interaction_scale * interaction
        )


def make_world(config: AdLogConfig) -> AdWorld:
    """Draw the entity tables of ``config`` (deterministic in ``config.seed``)."""
    c = config
    rng = np.random.default_rng(np.random.SeedSequence(c.seed, spawn_key=(0,)))
    scale = 1.0 / np.sqrt(c.dim)
    segment_centres = rng.normal(0.0, scale, (c.n_user_segments, c.dim))
    category_centres = rng.normal(0.0, scale, (c.n_ad_categories, c.dim))
    user_segment = rng.integers(0, c.n_user_segments, c.n_users).astype(np.int32)
    user_vec = segment_centres[user_segment] + rng.normal(0.0, 0.5 * scale, (c.n_users, c.dim))
    ad_category = rng.integers(0, c.n_ad_categories, c.n_ads).astype(np.int32)
    ad_vec = category_centres[ad_category] + rng.normal(0.0, 0.5 * scale, (c.n_ads, c.dim))
    # Every campaign gets at least one ad when there are enough ads.
    ad_campaign = rng.permutation(np.arange(c.n_ads) % c.n_campaigns).astype(np.int32)
    campaign_advertiser = rng.permutation(np.arange(c.n_campaigns) % c.n_advertisers).astype(
        np.int32
    )
    campaign_bias = rng.normal(0.0, c.bias_sigma, c.n_campaigns)
    ad_bias = rng.normal(0.0, c.bias_sigma, c.n_ads) + campaign_bias[ad_campaign]
    ranks = rng.permutation(c.n_ads) + 1.0
    ad_weight = ranks ** (-c.ad_popularity_exponent)
    activity = rng.lognormal(0.0, c.activity_sigma, c.n_users)
    strength = 20.0
    cvr = rng.beta(c.conversion_rate * strength, (1 - c.conversion_rate) * strength, c.n_campaigns)
    mix = rng.dirichlet(np.ones(c.n_conversion_types), c.n_campaigns)
    return AdWorld(
        config=c,
        user_segment=user_segment,
        user_vec=(user_vec * np.sqrt(c.dim)).astype(np.float32),
        user_bias=rng.normal(0.0, c.bias_sigma, c.n_users),
        user_weight=activity / activity.sum(),
        ad_campaign=ad_campaign,
        ad_category=ad_category,
        campaign_advertiser=campaign_advertiser,
        ad_vec=ad_vec.astype(np.float32),
        ad_bias=ad_bias,
        ad_weight=ad_weight / ad_weight.sum(),
        context_vec=(rng.normal(0.0, 0.5 * scale, (c.n_contexts, c.dim)) * np.sqrt(c.dim)).astype(
            np.float32
        ),
        context_bias=rng.normal(0.0, c.bias_sigma, c.n_contexts),
        device_bias=rng.normal(0.0, c.bias_sigma, _N_DEVICES),
        hour_bias=0.3 * np.sin(np.arange(24) * 2 * np.pi / 24),
        campaign_cvr=cvr,
        campaign_type_mix=mix,
    )


def _value_mu(config: AdLogConfig) -> np.ndarray:
    mu = np.asarray(config.value_mu, dtype=np.float64)
    if mu.size < config.n_conversion_types:  # repeat the pattern for more types
        mu = np.resize(mu, config.n_conversion_types)
    return mu[: config.n_conversion_types]


def generate_chunk(world: AdWorld, index: int) -> pa.Table:
    """Chunk ``index`` of the log (rows ``index · chunk_rows`` onwards), from its own stream."""
    c = world.config
    start = index * c.chunk_rows
    n = min(c.chunk_rows, c.n_impressions - start)
    if n <= 0:
        raise IndexError(f"chunk {index} is past the end of {c.n_impressions} impressions")
    rng = np.random.default_rng(np.random.SeedSequence(c.seed, spawn_key=(1, index)))
    user = rng.choice(c.n_users, size=n, p=world.user_weight)
    ad = rng.choice(c.n_ads, size=n, p=world.ad_weight)
    context = rng.integers(0, c.n_contexts, n)
    device = rng.integers(0, _N_DEVICES, n)
    ids = np.arange(start, start + n, dtype=np.int64)
    timestamp = _START + (ids * _SECONDS_PER_IMPRESSION).astype(np.int64)
    hour = ((timestamp // 3600) % 24).astype(np.int64)
    position = rng.integers(0, c.n_positions, n)
    p = 1.0 / (1.0 + np.exp(-world.logit(user, ad, context, device, hour, position)))
    click = rng.random(n) < p
    campaign = world.ad_campaign[ad]
    conversion = click & (rng.random(n) < world.campaign_cvr[campaign])
    # Conversion type: inverse CDF of the campaign's mix.
    cdf = np.cumsum(world.campaign_type_mix[campaign], axis=1)
    kind = (rng.random(n)[:, None] > cdf).sum(axis=1).clip(max=c.n_conversion_types - 1)
    value = np.exp(_value_mu(c)[kind] + c.value_sigma * rng.standard_normal(n))
    columns = {
        "impression_id": ids,
        "timestamp": timestamp,
        "user_id": user.astype(np.int64),
        "user_segment": world.user_segment[user],
        "ad_id": ad.astype(np.int32),
        "ad_category": world.ad_category[ad],
        "campaign_id": campaign,
        "advertiser_id": world.campaign_advertiser[campaign],
        "context_id": context.astype(np.int32),
        "device": device.astype(np.int8),
        "hour": hour.astype(np.int8),
        "position": position.astype(np.int8),
        "p_click": p,
        "click": click.astype(np.int8),
        "conversion": conversion.astype(np.int8),
        "conversion_type": np.where(conversion, kind, -1).astype(np.int8),
        "conversion_value": np.where(conversion, np.round(value, 2), 0.0),
    }
    return pa.table(columns, schema=AD_LOG_SCHEMA)


def write_ad_log(config: AdLogConfig, out: str | Path, *, progress: Progress | None = None) -> Path:
    """Write the log of ``config`` to the directory ``out`` (atomically: all or nothing).

    One Parquet part per chunk, ``entities.parquet`` (ad → category, campaign, advertiser;
    campaign conversion rates) and ``config.json``. Memory: one chunk plus the entity tables.

    Returns:
        ``out``.
    """
    out = Path(out)
    world = make_world(config)
    n_chunks = -(-config.n_impressions // config.chunk_rows)
    with atomic_directory(out) as tmp:
        for index in range(n_chunks):
            pq.write_table(generate_chunk(world, index), tmp / _PART.format(index))
            if progress is not None:
                progress(min((index + 1) * config.chunk_rows, config.n_impressions), n_chunks)
        entities = pa.table(
            {
                "ad_id": np.arange(config.n_ads, dtype=np.int32),
                "ad_category": world.ad_category,
                "campaign_id": world.ad_campaign,
                "advertiser_id": world.campaign_advertiser[world.ad_campaign],
                "campaign_conversion_rate": world.campaign_cvr[world.ad_campaign],
            }
        )
        pq.write_table(entities, tmp / _ENTITIES_FILE)
        (tmp / _CONFIG_FILE).write_text(
            json.dumps({"kind": "privrank-ad-log", "config": config.model_dump(mode="json")})
        )
    return out


def _parts(path: Path) -> list[Path]:
    config_file = path / _CONFIG_FILE
    if not config_file.is_file():
        raise DataError(
            "not a synthetic ad log",
            path=path,
            expected=f"a directory written by `privrank data synth-ads` (with {_CONFIG_FILE})",
        )
    parts = sorted(path.glob("part-*.parquet"))
    if not parts:
        raise DataError("the ad log has no parts", path=path, expected="part-00000.parquet ...")
    return parts


def log_parts(path: str | Path) -> list[Path]:
    """The Parquet parts of a log, in impression order.

    Raises:
        DataError: Not a log written by ``privrank data synth-ads``, or no parts.
    """
    return _parts(Path(path))


def iter_ad_log(
    path: str | Path, columns: Sequence[str] | None = None, batch_rows: int = 1_000_000
) -> Iterator[pa.RecordBatch]:
    """Stream the log in record batches (bounded memory), in impression order."""
    for part in _parts(Path(path)):
        yield from pq.ParquetFile(part).iter_batches(
            batch_size=batch_rows, columns=list(columns) if columns else None
        )


def read_ad_log(
    path: str | Path, columns: Sequence[str] | None = None, max_rows: int | None = None
) -> pa.Table:
    """Read the first ``max_rows`` rows (all by default) of a log into one table."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in iter_ad_log(path, columns):
        if max_rows is not None and rows + batch.num_rows > max_rows:
            batch = batch.slice(0, max_rows - rows)
        batches.append(batch)
        rows += batch.num_rows
        if max_rows is not None and rows >= max_rows:
            break
    schema = (
        AD_LOG_SCHEMA if columns is None else pa.schema([AD_LOG_SCHEMA.field(c) for c in columns])
    )
    return pa.Table.from_batches(batches, schema=schema)


def load_config(path: str | Path) -> AdLogConfig:
    """The configuration a log was written with."""
    path = Path(path)
    _parts(path)
    return AdLogConfig.model_validate(json.loads((path / _CONFIG_FILE).read_text())["config"])
