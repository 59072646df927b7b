"""Encrypted scoring under CKKS: decrypted scores against the plaintext model (the oracle).

Stated tolerance: every decrypted score is within 1e-4 · max(1, max |s|) of the plaintext score
(CKKS with scale 2^40 after one rescale; the measured error is about 1e-6). On iALS trained on
the real ML-100K, the top-10 from decrypted scores equals the plaintext top-10 for ≥ 99 % of
users.
"""

from __future__ import annotations

import numpy as np
import pytest

from privrank.errors import ConfigError, DataError
from privrank.models import IALS, FitOptions
from privrank.privacy.crypto.he_scoring import (
    EncryptedScorer,
    HEClient,
    HEParams,
    ScoreRequest,
    ScoreResponse,
    _seal,
)
from privrank.privacy.crypto.he_scoring._seal import HEADER_BYTES
from privrank.privacy.crypto.he_scoring.protocol import MAGIC, giant_step

pytest.importorskip("tenseal")

TOLERANCE = 1e-4


def _top10(scores: np.ndarray) -> list[int]:
    return np.lexsort((np.arange(len(scores)), -scores))[:10].tolist()


@pytest.fixture(scope="module")
def ials_ml100k():
    from tests.models.test_realdata_ml100k import ml100k

    data = ml100k()
    model = IALS(factors=64, epochs=4, regularization=0.05).fit(data, FitOptions(seed=0, threads=1))
    return model


def _agreement(model, users: np.ndarray) -> tuple[float, float]:
    scorer = EncryptedScorer(model.item_ids_.to_pylist(), model.item_vectors())
    client = HEClient(scorer.params)
    vectors = model.user_factors_
    plain = vectors @ model.item_vectors().T
    same, worst = 0, 0.0
    for user in users:
        response = scorer.score(ScoreRequest.from_bytes(client.request(vectors[user])))
        ids, scores = client.decrypt(ScoreResponse.from_json(response.to_json()))
        assert ids == [str(i) for i in model.item_ids_.to_pylist()]
        worst = max(
            worst, float(np.abs(scores - plain[user]).max() / max(1.0, np.abs(plain[user]).max()))
        )
        same += _top10(scores) == _top10(plain[user])
    return same / len(users), worst


@pytest.mark.realdata
def test_ials_ml100k_scores_and_top10_match_plaintext_for_sampled_users(ials_ml100k):
    users = np.random.default_rng(0).choice(ials_ml100k.n_users_, 40, replace=False)
    share, worst = _agreement(ials_ml100k, users)
    assert worst < TOLERANCE
    assert share == 1.0  # with 40 users, ≥ 99 % means all of them


@pytest.mark.realdata
@pytest.mark.slow
def test_ials_ml100k_top10_identical_for_99_percent_of_all_users(ials_ml100k):
    share, worst = _agreement(ials_ml100k, np.arange(ials_ml100k.n_users_))
    assert worst < TOLERANCE
    assert share >= 0.99


@pytest.mark.parametrize("factors", [8, 50])
def test_candidates_biases_and_padding(factors):
    rng = np.random.default_rng(factors)
    n = 5000  # two blocks of 4096 slots
    vectors, biases = rng.normal(size=(n, factors)), rng.normal(size=n)
    ids = [f"item{i}" for i in range(n)]
    scorer = EncryptedScorer(ids, vectors, biases)
    assert scorer.params.dim == (8 if factors == 8 else 64)
    client = HEClient(scorer.params)
    u = rng.normal(size=factors)
    _, scores = client.decrypt(scorer.score(ScoreRequest.from_bytes(client.request(u))))
    expected = vectors @ u + biases
    assert np.abs(scores - expected).max() < TOLERANCE * max(1, np.abs(expected).max())
    chosen = [ids[i] for i in (4999, 3, 4100, 7)]
    got_ids, got = client.decrypt(scorer.score(ScoreRequest.from_bytes(client.request(u, chosen))))
    assert got_ids == chosen
    np.testing.assert_allclose(got, expected[[4999, 3, 4100, 7]], atol=1e-4)


def test_giant_step_minimises_rotations():
    assert giant_step(64, 3) == 16  # 15 + 3·3 = 24 rotations, fewer than any other g
    assert giant_step(64, 1) == 8
    assert HEParams.for_model(50, 10_000).dim == 64
    with pytest.raises(ConfigError):
        HEParams(dim=48, factors=40, giant_step=8)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    scorer = EncryptedScorer([f"i{k}" for k in range(100)], rng.normal(size=(100, 8)))
    return scorer, HEClient(scorer.params), rng.normal(size=8)


def test_malformed_bodies_are_refused(small):
    scorer, client, u = small
    body = client.request(u)
    for bad, match in [
        (b"hello", "magic"),
        (body[:-10], "declares"),
        (body + b"x", "trailing"),
        (MAGIC + b"\x05\x00\x00\x00[1,2]" + b"\x00" * 8, "header must be"),
    ]:
        with pytest.raises(DataError, match=match):
            ScoreRequest.from_bytes(bad)
    with pytest.raises(DataError, match="not in the served catalogue"):
        scorer.score(ScoreRequest.from_bytes(client.request(u, ["nope"])))


def test_bad_ciphertexts_and_keys_are_refused(small):
    scorer, client, u = small
    good = ScoreRequest.from_bytes(client.request(u))
    cases = {
        "zeros": ScoreRequest(good.galois_keys, b"\x00" * 100),
        "truncated": ScoreRequest(good.galois_keys, good.ciphertext[: len(good.ciphertext) // 2]),
        "garbage keys": ScoreRequest(b"garbage", good.ciphertext),
    }
    for name, request in cases.items():
        with pytest.raises(DataError, match="not a valid SEAL object"):
            scorer.score(request)
            pytest.fail(f"{name}: accepted")
    # Keys for other rotations (a client with another giant step) are refused by name.
    other = HEClient(scorer.params.model_copy(update={"giant_step": 1}))
    with pytest.raises(DataError, match="Galois keys lack"):
        scorer.score(ScoreRequest(_keys_only(other), good.ciphertext))
    # A ciphertext under other parameters (N = 16384) does not load under these.
    big = HEClient(HEParams(poly_modulus_degree=16384, dim=8, factors=8, giant_step=4))
    foreign = ScoreRequest.from_bytes(big.request(u))
    with pytest.raises(DataError, match="not a valid SEAL object"):
        scorer.score(ScoreRequest(good.galois_keys, foreign.ciphertext))


def _keys_only(client: HEClient) -> bytes:
    return ScoreRequest.from_bytes(client.request(np.zeros(client.params.factors))).galois_keys


def test_client_refuses_a_wrong_vector(small):
    _, client, _ = small
    with pytest.raises(ConfigError, match="8 finite floats"):
        client.request(np.ones(7))
    with pytest.raises(ConfigError):
        client.request(np.array([np.nan] * 8))


def _flips(data: bytes, position: int) -> list[bytes]:
    """``data`` with the byte at ``position`` changed in each of its 8 bits, and inverted."""
    out = []
    for mask in [1 << bit for bit in range(8)] + [0xFF]:
        changed = bytearray(data)
        changed[position] ^= mask
        out.append(bytes(changed))
    return out


def test_any_change_of_a_header_byte_is_refused(small):
    """Every single-bit flip and the inversion of every byte of SEAL's 16-byte header, of the
    ciphertext and of the Galois keys, is refused (deterministic: each header field is compared
    with one expected value; SEAL alone ignored the reserved bytes 6 and 7)."""
    scorer, client, u = small
    good = ScoreRequest.from_bytes(client.request(u))
    for position in range(HEADER_BYTES):
        for changed in _flips(good.ciphertext, position):
            with pytest.raises(DataError, match="not a valid SEAL object"):
                scorer.score(ScoreRequest(good.galois_keys, changed))
                pytest.fail(f"ciphertext header byte {position}: accepted")
        for changed in _flips(good.galois_keys, position):
            with pytest.raises(DataError, match="not a valid SEAL object"):
                scorer.score(ScoreRequest(changed, good.ciphertext))
                pytest.fail(f"Galois keys header byte {position}: accepted")
    # The reserved bytes are named in the message.
    reserved = bytearray(good.ciphertext)
    reserved[6] ^= 0xFF
    with pytest.raises(DataError, match="reserved bytes is 0xff; expected 0x0"):
        scorer.score(ScoreRequest(good.galois_keys, bytes(reserved)))


def test_a_changed_payload_byte_is_refused_or_scored_never_a_crash(small):
    """CKKS is malleable: a changed payload byte either breaks SEAL's data (refused) or is the
    encryption of another vector, which the server cannot tell and scores. Either way, never an
    error other than DataError (HTTP 422)."""
    scorer, client, u = small
    good = ScoreRequest.from_bytes(client.request(u))
    outcomes = {"refused": 0, "scored": 0}
    for position in range(HEADER_BYTES, len(good.ciphertext), len(good.ciphertext) // 64):
        changed = bytearray(good.ciphertext)
        changed[position] ^= 0xFF
        try:
            response = scorer.score(ScoreRequest(good.galois_keys, bytes(changed)))
        except DataError:
            outcomes["refused"] += 1
        else:
            assert len(response.ciphertexts) == 1
            outcomes["scored"] += 1
    assert sum(outcomes.values()) >= 64


def test_ciphertexts_seal_loads_but_cannot_evaluate_are_refused(small):
    """SEAL's ``load`` accepts a CKKS ciphertext out of NTT form (made here through SEAL's API,
    once from a real ciphertext, once all zeros); evaluating it raised SEAL's own ValueError
    (HTTP 500 before the fix). It is refused by name."""
    scorer, client, u = small
    good = ScoreRequest.from_bytes(client.request(u))
    api = _seal.sealapi()
    ctx = _seal.context(scorer.params)
    plain_form = _seal.load_ciphertext(scorer.params, good.ciphertext)
    api.Evaluator(ctx).transform_from_ntt_inplace(plain_form)
    with pytest.raises(DataError, match="not in NTT form"):
        scorer.score(ScoreRequest(good.galois_keys, _seal.dump(plain_form)))
    zero = api.Ciphertext(ctx)
    zero.resize(ctx, ctx.first_parms_id(), 2)
    zero.scale = 2.0**scorer.params.scale_bits
    assert zero.is_transparent()
    with pytest.raises(DataError, match="not in NTT form"):
        scorer.score(ScoreRequest(good.galois_keys, _seal.dump(zero)))
