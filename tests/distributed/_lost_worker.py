"""What the Ray Train fault tests share: the fit they break, and the check that a private fit
which lost a worker released the uninterrupted fit and was charged once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from privrank.models import FitOptions, create_model
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import fit_and_spend

DATA = synthetic_interactions(n_users=240, n_items=50, seed=3)
# 4 epochs of 8 SASRec steps (Mult-VAE 6); a loss at the 3rd step of epoch 3 lands after
# epoch 2's checkpoint.
SASREC = {"factors": 16, "max_length": 10, "epochs": 4, "batch_size": 32, "negatives": 16}
EXACT_SASREC = SASREC | {"dropout": 0.0, "loss": "softmax", "epochs": 3}
SPEC = PrivacySpec(epsilon=4.0, max_interactions_per_user=20, clipping_norm=1.0, noise_seed=11)


def ray_engine(max_failures: int):
    """Two Ray Train workers, restarted up to ``max_failures`` times."""
    from privrank.distributed import RayEngine

    return RayEngine(workers=2, max_failures=max_failures)


def assert_private_fit_charged_once(
    tmp_path: Path, lose_a_worker: Callable[[], Path], description: str
) -> None:
    """Fit private SASRec on two Ray Train workers through the ledger while
    ``lose_a_worker()`` (which returns its marker file) has one of them lost mid-fit.

    Oracles: the single-process private fit with the same noise seed (the released weights and
    guarantee), and the ledger (one committed spend of the spec's ε).
    """
    local = create_model("sasrec", EXACT_SASREC).fit(
        DATA, FitOptions(seed=5, threads=1, privacy=SPEC)
    )
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("toy", 10.0, 1e-2)
    marker = lose_a_worker()
    options = FitOptions(seed=5, threads=1, privacy=SPEC, engine=ray_engine(1))
    with fit_and_spend(
        create_model("sasrec", EXACT_SASREC),
        DATA,
        options,
        budget_key="toy",
        description=description,
        ledger_url=url,
    ) as fitted:
        recovered = fitted.model
    assert marker.exists(), "no worker was lost: the test tested nothing"
    # A private fit writes no state: it starts over with the same noise seed.
    assert recovered.recoveries_ == 1 and recovered.resumed_from_epoch_ is None
    with Ledger(url) as book:
        spends = book.spends("toy")
    assert [s.status.value for s in spends] == ["committed"] and spends[0].epsilon == 4.0
    assert recovered.privacy_guarantee_.to_dict() == local.privacy_guarantee_.to_dict()
    mine = {k: v for k, v in recovered._state().items() if k.startswith("network.")}
    theirs = {k: v for k, v in local._state().items() if k.startswith("network.")}
    for key in mine:
        if key.endswith("key.bias"):  # softmax cancels it; see test_ray_train._effective
            continue
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-3, atol=1e-4, err_msg=key)
