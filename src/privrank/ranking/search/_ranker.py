"""The learning-to-rank call of personalised search: LightGBM's LambdaMART, in one function.

:func:`fit_lambdarank` is the only place search trains a ranker, so that another LambdaMART
wrapper (the learning-to-rank contract of ``privrank.ranking.ltr``) can replace it in one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privrank.errors import ConfigError

__all__ = ["fit_lambdarank", "load_lambdarank"]


def fit_lambdarank(
    features: np.ndarray,
    labels: np.ndarray,
    group_sizes: np.ndarray,
    *,
    params: dict[str, Any],
    rounds: int,
    seed: int,
) -> Any:
    r"""Train a LambdaMART ranker (LightGBM ``objective="lambdarank"``) on query groups.

    LambdaMART fits gradient-boosted trees to the lambda gradients of NDCG: for each pair
    :math:`(i, j)` of one query with :math:`y_i > y_j`, the gradient of the pairwise logistic
    loss :math:`\log(1 + e^{-(s_i - s_j)})` weighted by :math:`|\Delta \mathrm{NDCG}_{ij}|`, the
    change of NDCG from swapping the two.

    Args:
        features: ``(n_rows, n_features)`` float32, rows grouped by query in order.
        labels: ``(n_rows,)`` relevance grades (0/1).
        group_sizes: Rows per query, in order (sum = ``n_rows``).
        params: LightGBM parameters (``num_leaves``, ``learning_rate``, ...), merged over the
            objective, the seed and one thread-deterministic setting.
        rounds: Boosting rounds.
        seed: Seed of LightGBM's sampling.

    Returns:
        The ``lightgbm.Booster``.
    """
    try:
        import lightgbm
    except ImportError as exc:  # pragma: no cover - the 'rank' extra is in 'dev'
        raise ConfigError("search's ranker needs the 'rank' extra (lightgbm)") from exc
    if int(np.sum(group_sizes)) != len(labels) or len(labels) != len(features):
        raise ConfigError(
            f"{len(features)} feature rows, {len(labels)} labels and groups of "
            f"{int(np.sum(group_sizes))} rows"
        )
    settings = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [10],
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    } | params
    data = lightgbm.Dataset(features, label=labels, group=group_sizes, free_raw_data=True)
    return lightgbm.train(settings, data, num_boost_round=rounds)


def load_lambdarank(text: str) -> Any:
    """A booster from the text :meth:`lightgbm.Booster.model_to_string` wrote."""
    import lightgbm

    return lightgbm.Booster(model_str=text)
