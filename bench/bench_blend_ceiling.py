"""How far past the best single model any fixed linear blend of retrievers' scores can go.

A diagnostic for the two-stage's target on a protocol (issue 14: ≥ +3 % NDCG@10 over EASE on
``ml100k-holdout``). On validation carves (the protocol's own split applied again to its
training part, as ``bench_two_stage.py select``; the test part is never read) it fits a base
model and every signal model on the carve's training part, turns each model's scores into the
two-stage's ``relative_score`` feature (per user, :math:`s_i / |\\max_{j \\notin H_u} s_j|`, the
best unseen item's score), and scores blends

.. math:: b_u(i) = r^{\\text{base}}_u(i) + \\sum_j w_j\\, r^{(j)}_u(i)

by NDCG@10 (binary relevance = the carve's held-out items; full ranking; training items
excluded). The weights come from coordinate ascent over a grid (two sweeps over the signals; a
weight changes only when the mean relative gain over the base rises). Three figures:

1. **each carve's own weights, in sample**: fitted on the carve they are scored on, an upper
   bound for what any fixed blend of these signals reaches on that carve;
2. **one set of weights for every carve, in sample**: the best single blend in hindsight;
3. **leave one carve out**: weights fitted on the other carves, scored on the held-out one, the
   honest estimate of a blend chosen this way.

With ``--weights`` (JSON, ``{signal: weight}``) it fits nothing: it scores that blend on each
carve (e.g. a blend chosen on other carve seeds, checked on fresh ones).

A signal with ``"seeds": [..]`` is a seed ensemble: the model is fitted once per seed and its
raw scores summed before the relative score is taken.

``--extra`` adds signals that are not privrank models, computed here from the carve's training
part (:data:`EXTRA_SIGNALS`; a diagnostic of whether another family of signal adds anything):
RP3beta (Paudel et al. 2017: two-step random-walk item-item probabilities, the target item's
popularity to the power ``-beta``), DLAE (Steck 2020: the closed-form denoising linear
autoencoder, dropout ``p`` as an item-wise L2 penalty ``p / (1 - p) · G_ii``, no zero
diagonal), EDLAE (the same penalty with EASE's zero diagonal), EASE on the rating values
instead of 0/1, and popularity within the user's demographic group (ML-100K's ``u.user``:
gender × decade of age).

The base model's NDCG@10 is also computed by ``privrank``'s own evaluation
(:func:`~privrank.workflow.runner.fit_and_evaluate` on the carve protocol), and the run stops if
the two disagree: the blend's NDCG has an independent oracle.

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_blend_ceiling.py \\
        --protocol ml100k-holdout --carve-seeds 0,1,2,3,4,5,6,7 --carve-fraction 0.0625 \\
        --out bench/results/blend_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_two_stage import carve_protocol
from privrank.models._registry import create_model
from privrank.models.base import FitOptions
from privrank.workflow.protocols import prepare
from privrank.workflow.run_config import ModelSpec, RunConfig
from privrank.workflow.runner import fit_and_evaluate

#: The signals of the session-15 run: every retriever the two-stage rounds tried on ML-100K.
DEFAULT_SIGNALS: dict[str, dict[str, Any]] = {
    "ials": {"name": "ials"},
    "itemknn": {"name": "itemknn"},
    "itemknn-window5": {"name": "itemknn", "params": {"window": 5}},
    "genre-profile": {"name": "genre-profile"},
    "mult-vae-x3": {"name": "mult-vae", "seeds": [0, 1, 2]},
}


def _gram(train: Any) -> tuple[sp.csr_matrix, np.ndarray]:
    matrix = train.to_csr().astype(np.float64)
    return matrix, (matrix.T @ matrix).toarray()


def _ease_with_penalty(matrix: sp.csr_matrix, gram: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """EASE's closed form with an item-wise L2 penalty: ``B = I - P / diag(P)``, diagonal 0."""
    inverse = np.linalg.inv(gram + np.diag(penalty))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return np.asarray(matrix @ weights)


def rp3beta(train: Any, alpha: float = 1.0, beta: float = 0.5) -> np.ndarray:
    """RP3beta scores: ``P_ui · (P_iu · P_ui) / popularity_j^beta`` (transition matrices
    row-normalised, each entry to the power ``alpha``), self-loops removed."""
    matrix, _ = _gram(train)
    user_degree = np.maximum(np.asarray(matrix.sum(1)).ravel(), 1)
    item_degree = np.maximum(np.asarray(matrix.sum(0)).ravel(), 1)
    user_to_item = (sp.diags(1 / user_degree) @ matrix).power(alpha)
    item_to_user = (sp.diags(1 / item_degree) @ matrix.T.tocsr()).power(alpha)
    weights = (item_to_user @ user_to_item).toarray() / item_degree[None, :] ** beta
    np.fill_diagonal(weights, 0.0)
    return np.asarray(matrix @ weights)


def dlae(train: Any, dropout: float = 0.33, l2: float = 20.0) -> np.ndarray:
    """DLAE: ``B = (G + Λ)^{-1} G``, ``Λ = p / (1 - p) · diag(G) + l2 · I``."""
    matrix, gram = _gram(train)
    penalty = dropout / (1 - dropout) * np.diag(gram) + l2
    return np.asarray(matrix @ np.linalg.solve(gram + np.diag(penalty), gram))


def edlae(train: Any, dropout: float = 0.33, l2: float = 20.0) -> np.ndarray:
    """EDLAE: DLAE's penalty with EASE's zero-diagonal constraint."""
    matrix, gram = _gram(train)
    return _ease_with_penalty(matrix, gram, dropout / (1 - dropout) * np.diag(gram) + l2)


def ease_rated(train: Any, l2: float = 2700.0) -> np.ndarray:
    """EASE fitted on the rating values (1-5) instead of 0/1, applied to the 0/1 history
    (``l2`` = EASE's 300 times 9, the squared scale of a rating)."""
    matrix, _ = _gram(train)
    rated = train.to_csr(use_values=True).astype(np.float64)
    gram = (rated.T @ rated).toarray()
    return _ease_with_penalty(matrix, gram, np.full(gram.shape[0], l2))


def demographic_popularity(train: Any) -> np.ndarray:
    """``log(1 + count)`` of each item among the users of the user's group (ML-100K's
    ``u.user``: gender × decade of age, 60 and above one decade)."""
    groups = {}
    path = Path(os.environ["PRIVRANK_DATA_DIR"]) / "ml-100k" / "u.user"
    for line in path.read_text().splitlines():
        user, age, gender, _, _ = line.split("|")
        groups[int(user)] = f"{gender}-{min(int(age) // 10, 6)}"
    matrix, _ = _gram(train)
    labels = np.array([groups[int(u)] for u in train.user_ids.to_pylist()])
    _, group = np.unique(labels, return_inverse=True)
    members = sp.csr_matrix((np.ones(len(group)), (group, np.arange(len(group)))))
    return np.log1p((members @ matrix).toarray()[group])


#: Signals computed here rather than fitted as privrank models (``--extra``).
EXTRA_SIGNALS = {
    "rp3beta": rp3beta,
    "dlae": dlae,
    "edlae": edlae,
    "ease-rated": ease_rated,
    "demographic-popularity": demographic_popularity,
}
GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
CUTOFF = 10


class Carve:
    """One carve's training matrix, held-out items and relative scores of every model."""

    def __init__(self, train: Any, test: Any) -> None:
        self.train = train
        seen = train.to_csr()
        self.seen = seen.toarray() > 0
        held = sp.csr_matrix(
            (np.ones(len(test)), (test.users(), test.items())), shape=seen.shape
        ).toarray()
        self.held = held > 0
        discount = 1.0 / np.log2(np.arange(2, CUTOFF + 2))
        counts = np.minimum(self.held.sum(1), CUTOFF)
        self.users = np.flatnonzero(counts > 0)
        self.ideal = np.cumsum(discount)[counts[self.users] - 1]
        self.discount = discount
        self.signals: dict[str, np.ndarray] = {}

    def add(self, name: str, scores: np.ndarray) -> None:
        """Store ``scores`` as relative scores (over the best unseen item's, per user)."""
        scores = np.asarray(scores, dtype=np.float64)
        best = np.abs(np.where(self.seen, -np.inf, scores).max(axis=1, keepdims=True))
        self.signals[name] = np.divide(
            scores, best, out=np.zeros_like(scores), where=np.isfinite(best) & (best > 0)
        )

    def ndcg(self, weights: dict[str, float], base: str) -> float:
        """Mean NDCG@10 over users with a held-out item of the blend ``base + Σ w · signal``."""
        blend = self.signals[base].copy()
        for name, weight in weights.items():
            if weight:
                blend += weight * self.signals[name]
        blend = np.where(self.seen, -np.inf, blend)[self.users]
        top = np.argpartition(-blend, CUTOFF, axis=1)[:, :CUTOFF]
        order = np.argsort(-np.take_along_axis(blend, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        hits = np.take_along_axis(self.held[self.users], top, axis=1)
        return float(((hits @ self.discount) / self.ideal).mean())


def fit_scores(spec: dict[str, Any], train: Any, threads: int) -> np.ndarray:
    """Summed raw scores of ``spec``'s model, one fit per seed (``seeds``, default ``[0]``)."""
    total = None
    for seed in spec.get("seeds", [0]):
        model = create_model(spec["name"], spec.get("params") or {})
        model.fit(train, FitOptions(seed=seed, threads=threads))
        scores = model.score(np.arange(train.n_users)).astype(np.float64)
        total = scores if total is None else total + scores
    assert total is not None
    return total


def mean_gain(carves: list[Carve], weights: dict[str, float], base: str) -> float:
    """Mean over ``carves`` of the blend's relative NDCG@10 gain over the base alone."""
    return statistics.fmean(c.ndcg(weights, base) / c.ndcg({}, base) - 1 for c in carves)


def ascend(carves: list[Carve], names: list[str], base: str) -> tuple[dict[str, float], float]:
    """Coordinate ascent over :data:`GRID`: two sweeps; a weight moves only on a gain."""
    weights = dict.fromkeys(names, 0.0)
    best = mean_gain(carves, weights, base)
    for _ in range(2):
        for name in names:
            for value in GRID:
                trial = {**weights, name: value}
                gain = mean_gain(carves, trial, base)
                if gain > best + 1e-12:
                    best, weights = gain, trial
    return weights, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="ml100k-holdout")
    parser.add_argument("--base", default="ease", help="the best single model (registry name)")
    parser.add_argument("--signals", default=None, help="JSON {name: {name, params, seeds}}")
    parser.add_argument("--carve-seeds", default="0,1,2,3")
    parser.add_argument("--carve-fraction", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--extra", default="", help=f"comma-separated, of {', '.join(EXTRA_SIGNALS)}"
    )
    parser.add_argument("--weights", default=None, help="JSON {signal: weight}: score only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    signals = DEFAULT_SIGNALS if args.signals is None else json.loads(args.signals)
    seeds = [int(s) for s in args.carve_seeds.split(",")]
    extra = [name for name in args.extra.split(",") if name]
    unknown = sorted(set(extra) - set(EXTRA_SIGNALS))
    if unknown:
        raise SystemExit(f"unknown --extra signal(s) {unknown}; known: {list(EXTRA_SIGNALS)}")
    names = list(signals) + extra
    base_prepared = prepare(args.protocol)
    carves: dict[int, Carve] = {}
    report: dict[str, Any] = {
        "protocol": args.protocol,
        "base": args.base,
        "signals": signals,
        "extra": extra,
        "carve_fraction": args.carve_fraction,
        "carves": {},
    }
    for seed in seeds:
        started = time.perf_counter()
        spec = carve_protocol(args.protocol, seed, args.carve_fraction)
        part = prepare(spec, data=base_prepared.train)
        carve = Carve(part.train, part.test)
        carve.add(args.base, fit_scores({"name": args.base}, part.train, args.threads))
        for name, signal in signals.items():
            carve.add(name, fit_scores(signal, part.train, args.threads))
        for name in extra:
            carve.add(name, EXTRA_SIGNALS[name](part.train))
        config = RunConfig(
            protocols=(spec,), models=(args.base,), threads=args.threads, beyond_accuracy=False
        )
        oracle = fit_and_evaluate(part, ModelSpec(name=args.base), config).result.means["ndcg@10"]
        own = carve.ndcg({}, args.base)
        if abs(own - float(oracle)) > 1e-4:
            raise SystemExit(f"carve {seed}: blend NDCG {own:.6f} != privrank's {oracle:.6f}")
        alone = {name: carve.ndcg({}, name) for name in names}
        report["carves"][seed] = {"base": own, "alone": alone}
        carves[seed] = carve
        print(
            f"carve {seed} ({time.perf_counter() - started:.0f} s): {args.base} {own:.4f}, "
            + ", ".join(f"{n} {v:.4f}" for n, v in alone.items()),
            flush=True,
        )

    if args.weights is not None:
        fixed = json.loads(args.weights)
        gains = {seed: mean_gain([carve], fixed, args.base) for seed, carve in carves.items()}
        for seed, gain in gains.items():
            print(f"carve {seed}, the given blend: {100 * gain:+.2f} % {fixed}")
        values = list(gains.values())
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"the given blend: mean {100 * statistics.fmean(values):+.2f} % (sd {100 * sd:.2f})")
        report.update(weights=fixed, gains=gains)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        return

    def shown(weights: dict[str, float]) -> dict[str, float]:
        return {name: value for name, value in weights.items() if value}

    own_weights = {}
    for seed, carve in carves.items():
        weights, gain = ascend([carve], names, args.base)
        own_weights[seed] = {"weights": shown(weights), "gain": gain}
        print(f"in sample, carve {seed}'s own weights: {100 * gain:+.2f} % {shown(weights)}")
    pairs = {}
    for name in names:
        weights, gain = ascend(list(carves.values()), [name], args.base)
        pairs[name] = {"weight": weights[name], "gain": gain}
        print(
            f"in sample, {args.base} + {name} alone: {100 * gain:+.2f} % (weight {weights[name]})"
        )
    weights, gain = ascend(list(carves.values()), names, args.base)
    print(f"in sample, one blend for every carve: {100 * gain:+.2f} % {shown(weights)}")
    held_out = {}
    for seed in seeds:
        others = [carves[s] for s in seeds if s != seed]
        fitted, _ = ascend(others, names, args.base)
        held_out[seed] = {
            "weights": shown(fitted),
            "gain": mean_gain([carves[seed]], fitted, args.base),
        }
        print(
            f"carve {seed} held out: {100 * held_out[seed]['gain']:+.2f} % {shown(fitted)}",
            flush=True,
        )
    gains = [h["gain"] for h in held_out.values()]
    sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print(f"leave one carve out: mean {100 * statistics.fmean(gains):+.2f} % (sd {100 * sd:.2f})")
    report.update(
        own_weights=own_weights,
        pairs=pairs,
        one_blend={"weights": shown(weights), "gain": gain},
        held_out=held_out,
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
