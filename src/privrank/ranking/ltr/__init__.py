"""Learning to rank: one contract (:class:`LTRRanker`), LambdaMART through LightGBM and a neural
listwise ranker in PyTorch, NDCG over query groups.

==============  =====================================================================
``lambdamart``  :class:`LambdaMART`: LightGBM ``lambdarank`` (no user-level DP: refused)
``listwise``    :class:`ListwiseRanker`: MLP, softmax cross-entropy or ApproxNDCG; DP-SGD
==============  =====================================================================

Names are imported on first use (importing this package imports neither torch nor LightGBM).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privrank._lazy import lazy_exports

if TYPE_CHECKING:
    from privrank.ranking.ltr._base import LTRFitOptions, LTRRanker, RankerConfig, register_ranker
    from privrank.ranking.ltr._ndcg import group_ndcg, per_group_ndcg
    from privrank.ranking.ltr.lambdamart import LambdaMART, LambdaMARTConfig, lightgbm_params
    from privrank.ranking.ltr.listwise import (
        ListwiseConfig,
        ListwisePrivateConfig,
        ListwiseRanker,
    )
    from privrank.ranking.ltr.registry import (
        create_ranker,
        load_ranker,
        ranker_class,
        ranker_from_state,
        ranker_names,
    )

__all__ = [
    "LTRFitOptions",
    "LTRRanker",
    "LambdaMART",
    "LambdaMARTConfig",
    "ListwiseConfig",
    "ListwisePrivateConfig",
    "ListwiseRanker",
    "RankerConfig",
    "create_ranker",
    "group_ndcg",
    "lightgbm_params",
    "load_ranker",
    "per_group_ndcg",
    "ranker_class",
    "ranker_from_state",
    "ranker_names",
    "register_ranker",
]

_WHERE = {
    "_base": ["LTRFitOptions", "LTRRanker", "RankerConfig", "register_ranker"],
    "registry": [
        "create_ranker",
        "load_ranker",
        "ranker_class",
        "ranker_from_state",
        "ranker_names",
    ],
    "_ndcg": ["group_ndcg", "per_group_ndcg"],
    "lambdamart": ["LambdaMART", "LambdaMARTConfig", "lightgbm_params"],
    "listwise": ["ListwiseConfig", "ListwisePrivateConfig", "ListwiseRanker"],
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, exported=__all__)
