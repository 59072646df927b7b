"""The canary audit of one federated run: an honest DP-FedAvg run and one with its noise scaled
down (a deliberately broken mechanism), on the test suite's small synthetic data.

Prints, for each, Andrew et al.'s ε estimate and the one-run lower bound with its verdict
(:func:`privrank.federated.audit.audit_federated`). Fresh secure noise every run, so the
figures vary from run to run (the estimate's μ has a standard error of about 0.1 with 400
canaries).

Usage::

    .venv/bin/python bench/bench_federated_audit.py --canaries 400
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from privrank.federated import FederatedSettings
from privrank.federated.audit import audit_federated
from privrank.models import FedMFConfig
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=400)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--broken-scale", type=float, default=0.02)
    args = parser.parse_args()
    config = FedMFConfig(factors=8, regularization=0.05, unobserved_weight=0.1)
    data = synthetic_interactions(n_users=40, n_items=150, per_user=6, seed=8)
    settings = FederatedSettings(
        rounds=4, clients_per_round=40, server_learning_rate=0.5, adaptive_clipping=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.sqlite'}"
        with Ledger(url) as book:
            book.set_budget("synth", 100.0, 0.1)
        spec = PrivacySpec(epsilon=args.epsilon, delta=1e-3, max_interactions_per_user=10)
        for scale in (1.0, args.broken_scale):
            with _noise_scale_for_testing(scale), RoundLedger("synth", "audit", url) as ledger:
                result = audit_federated(
                    config,
                    data,
                    settings,
                    spec,
                    ledger,
                    run_dir=Path(tmp) / f"run-{scale}",
                    canaries=args.canaries,
                )
            print(json.dumps(result.to_dict()), flush=True)


if __name__ == "__main__":
    main()
