"""Encrypted scoring under tampering: which changed ciphertext bytes the server accepts.

For ``--trials`` fresh clients (fresh keys and encryption randomness each), the byte at each
position of SEAL's 16-byte header, and the byte in the middle of the payload, is inverted
(``^ 0xFF``) and the request is sent to :meth:`EncryptedScorer.score` (100 items × 8 factors).
Prints, per position, how often the server accepted the changed ciphertext. Header bytes must
never be accepted; a payload byte may be (CKKS is malleable: see the protocol's docstring).

Usage::

    .venv/bin/python bench/bench_he_tamper.py --trials 20
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from privrank.errors import DataError
from privrank.privacy.crypto.he_scoring import EncryptedScorer, HEClient, ScoreRequest


def main() -> None:
    """Run the sweep and print the acceptance counts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    scorer = EncryptedScorer([f"i{k}" for k in range(100)], rng.normal(size=(100, 8)))
    accepted: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[tuple[str, str]] = collections.Counter()
    for _ in range(args.trials):
        client = HEClient(scorer.params)
        good = ScoreRequest.from_bytes(client.request(rng.normal(size=8)))
        data = good.ciphertext
        for position in [*range(16), len(data) // 2]:
            name = f"header byte {position}" if position < 16 else "payload middle"
            changed = bytearray(data)
            changed[position] ^= 0xFF
            try:
                scorer.score(ScoreRequest(good.galois_keys, bytes(changed)))
            except DataError as exc:
                reasons[(name, str(exc).split(": ")[-1][:60])] += 1
            else:
                accepted[name] += 1
    names = [f"header byte {p}" for p in range(16)] + ["payload middle"]
    for name in names:
        print(f"{name:>16}: accepted {accepted[name]:>3} of {args.trials}")
    for (name, why), count in sorted(reasons.items()):
        print(f"  refused {count:>3}x {name}: {why}")


if __name__ == "__main__":
    main()
