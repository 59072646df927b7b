"""The learning-to-rank call of personalised search: ranking/ltr's LambdaMART, in one function.

:func:`fit_lambdarank` trains through :class:`~privrank.ranking.ltr.LambdaMART` (the one
LightGBM ``lambdarank`` fitting path of privrank) with search's settings, and gives search the
fitted booster it scores with and saves as LightGBM's text model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError

__all__ = ["SEARCH_LAMBDARANK", "fit_lambdarank", "load_lambdarank"]

#: Search's LightGBM settings that differ from LambdaMART's defaults (LightGBM's example
#: config): no bagging and LightGBM's own minimum hessian per leaf, NDCG@10 (what search's
#: ranker was trained with before it went through LambdaMART).
SEARCH_LAMBDARANK: dict[str, Any] = {
    "bagging_fraction": 1.0,
    "bagging_freq": 0,
    "min_sum_hessian_in_leaf": 1e-3,
    "eval_at": (10,),
}


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
    change of NDCG from swapping the two. The fit is
    :class:`~privrank.ranking.ltr.LambdaMART`'s (one thread, deterministic) with
    :data:`SEARCH_LAMBDARANK` under ``params``.

    Args:
        features: ``(n_rows, n_features)`` float32, rows grouped by query in order.
        labels: ``(n_rows,)`` relevance grades (0/1).
        group_sizes: Rows per query, in order (sum = ``n_rows``).
        params: :class:`~privrank.ranking.ltr.LambdaMARTConfig` fields (``num_leaves``,
            ``learning_rate``, ``min_data_in_leaf``, ...), over :data:`SEARCH_LAMBDARANK`.
        rounds: Boosting rounds.
        seed: Seed of LightGBM's sampling (:func:`~privrank.ranking.ltr.lightgbm_params`).

    Returns:
        The ``lightgbm.Booster``.
    """
    try:
        from privrank.ranking.ltr import LambdaMART, LTRFitOptions
    except ImportError as exc:  # pragma: no cover - the 'rank' extra is in 'dev'
        raise ConfigError("search's ranker needs the 'rank' extra (lightgbm)") from exc
    if int(np.sum(group_sizes)) != len(labels) or len(labels) != len(features):
        raise ConfigError(
            f"{len(features)} feature rows, {len(labels)} labels and groups of "
            f"{int(np.sum(group_sizes))} rows"
        )
    features = np.asarray(features)
    groups = QueryGroups(
        features=features if features.dtype == np.float64 else features.astype(np.float32),
        labels=np.asarray(labels, dtype=np.float32),
        group_sizes=np.asarray(group_sizes, dtype=np.int64),
        feature_names=tuple(f"f{column}" for column in range(features.shape[1])),
    )
    ranker = LambdaMART({**SEARCH_LAMBDARANK, **params, "num_iterations": rounds})
    ranker.fit(groups, None, LTRFitOptions(seed=seed, threads=1))
    return ranker.booster_


def load_lambdarank(text: str) -> Any:
    """A booster from the text :meth:`lightgbm.Booster.model_to_string` wrote."""
    import lightgbm

    return lightgbm.Booster(model_str=text)
