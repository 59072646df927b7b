"""Encrypted scoring: latency and bytes per request for a catalogue of 10k items × 64 factors.

In one run, with a median over ``--requests`` requests each:

- ``protocol``: the client encrypts a user vector (:class:`HEClient.request`), the server scores
  the whole catalogue (:meth:`EncryptedScorer.score`: loading and checking keys and ciphertext,
  rotations, plaintext products, serialising the answer), the client decrypts and ranks.
- ``http``: the same through ``POST /v1/he/score`` of the FastAPI app in process
  (``fastapi.testclient``: routing, authentication, the binary body, JSON + base64 answer),
  with the Python client helper (:class:`privrank.serving.he_client.EncryptedScoringClient`),
  serving an iALS model (64 factors) fitted on synthetic data with 10,000 items.
- Peers in the same run: the plaintext product ``H u`` (what the server computes without
  encryption), and TenSEAL's own vector × plain-matrix product (``CKKSVector.matmul``, the
  library's ready-made way, one run: it takes seconds).

Usage::

    .venv/bin/python bench/bench_he.py --items 10000 --factors 64 --requests 10 \\
        --json bench/results/he_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-tenseal-matmul", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from privrank.privacy.crypto.he_scoring import (
        EncryptedScorer,
        HEClient,
        ScoreRequest,
        ScoreResponse,
    )

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.items, args.factors)) / np.sqrt(args.factors)
    ids = [f"item{i}" for i in range(args.items)]
    scorer = EncryptedScorer(ids, vectors)
    t0 = time.perf_counter()
    scorer.warm_up()
    warm = time.perf_counter() - t0
    client = HEClient(scorer.params)
    rows: list[dict[str, Any]] = []
    for _ in range(args.requests):
        u = rng.normal(size=args.factors)
        t0 = time.perf_counter()
        body = client.request(u)
        t1, c1 = time.perf_counter(), time.process_time()
        response = scorer.score(ScoreRequest.from_bytes(body))
        t2, c2 = time.perf_counter(), time.process_time()
        answer = json.dumps(response.to_json()).encode()
        t3 = time.perf_counter()
        got_ids, scores = client.decrypt(ScoreResponse.from_json(json.loads(answer)))
        client.top_k(got_ids, scores, 10)
        t4 = time.perf_counter()
        plain_t0 = time.perf_counter()
        plain = vectors @ u
        plain_s = time.perf_counter() - plain_t0
        rows.append(
            {
                "encrypt_s": t1 - t0,
                "server_s": t2 - t1,
                "server_cpu_s": c2 - c1,
                "serialise_json_s": t3 - t2,
                "decrypt_rank_s": t4 - t3,
                "total_s": t4 - t0,
                "request_bytes": len(body),
                "galois_key_bytes": len(ScoreRequest.from_bytes(body).galois_keys),
                "ciphertext_bytes": len(ScoreRequest.from_bytes(body).ciphertext),
                "response_bytes": len(answer),
                "response_ciphertext_bytes": sum(len(c) for c in response.ciphertexts),
                "max_abs_error": float(np.abs(scores - plain).max()),
                "plaintext_s": plain_s,
            }
        )
        print({k: round(v, 6) if isinstance(v, float) else v for k, v in rows[-1].items()})
    result: dict[str, Any] = {
        "params": scorer.params.model_dump(mode="json"),
        "encode_catalogue_s": warm,
        "protocol": rows,
        "median": {k: statistics.median(r[k] for r in rows) for k in rows[0]},
    }
    if not args.no_http:
        result["http"] = _http(args, rng)
    if not args.no_tenseal_matmul:
        result["tenseal_matmul_s"] = _tenseal_matmul(vectors, rng.normal(size=args.factors))
    result["setup"] = {
        **vars(args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


def _http(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from privrank.data.synthetic import SyntheticConfig, generate
    from privrank.models import IALS, FitOptions
    from privrank.serving import KeyStore, ServeSettings, make_engine
    from privrank.serving.app import create_app
    from privrank.serving.he_client import EncryptedScoringClient

    data = generate(
        SyntheticConfig(
            n_users=20_000,
            n_items=args.items,
            n_interactions=400_000,
            seed=0,
            timestamps=False,
            rating_levels=None,
        )
    )
    model = IALS(factors=args.factors, epochs=2).fit(data, FitOptions(seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
        url = f"sqlite:///{tmp}/serving.sqlite"
        key = KeyStore(make_engine(url)).create("read", name="bench").secret
        app = create_app(ServeSettings(model_dir=Path(tmp) / "model", database_url=url))
        with TestClient(app) as http:
            http.headers.update({"Authorization": f"Bearer {key}"})
            client = EncryptedScoringClient(http)
            client.scores(model.user_factors_[0])  # encodes the catalogue's diagonals once
            rows = []
            for user in rng.choice(model.n_users_, args.requests, replace=False):
                t0, c0 = time.perf_counter(), time.process_time()
                top = client.recommend(model.user_factors_[user], k=10)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                plain = model.user_factors_[user] @ model.item_vectors().T
                order = np.lexsort((np.arange(len(plain)), -plain))[:10]
                same = [i for i, _ in top] == [str(model.item_ids_[int(i)]) for i in order]
                rows.append(
                    {
                        "request_s": seconds,
                        "request_cpu_s": cpu,
                        "request_bytes": client.last_request_bytes,
                        "response_bytes": client.last_response_bytes,
                        "top10_identical": same,
                    }
                )
                print("http", rows[-1])
    return {
        "rows": rows,
        "median_request_s": statistics.median(r["request_s"] for r in rows),
        "median_request_cpu_s": statistics.median(r["request_cpu_s"] for r in rows),
        "median_request_bytes": statistics.median(r["request_bytes"] for r in rows),
        "median_response_bytes": statistics.median(r["response_bytes"] for r in rows),
        "top10_identical": sum(r["top10_identical"] for r in rows) / len(rows),
    }


def _tenseal_matmul(vectors: np.ndarray, u: np.ndarray) -> float:
    import tenseal as ts

    context = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 60]
    )
    context.global_scale = 2**40
    context.generate_galois_keys()
    encrypted = ts.ckks_vector(context, u.tolist())
    slots = 4096
    t0 = time.perf_counter()
    for start in range(0, len(vectors), slots):
        encrypted.matmul(vectors[start : start + slots].T.tolist())
    seconds = time.perf_counter() - t0
    print("tenseal matmul", seconds)
    return seconds


if __name__ == "__main__":
    main()
