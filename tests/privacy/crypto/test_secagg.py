"""SecAgg+: exact sums, uniform-looking uploads, dropout recovery, aborts and refusals."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from scipy import stats

from privrank.errors import ConfigError
from privrank.privacy.crypto.secagg import (
    FixedPointRing,
    ProtocolViolation,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    UnmaskRequest,
    UpdateOutOfRange,
    encode_batch,
    harary_graph,
    run_round,
)
from privrank.privacy.crypto.secagg._shamir import PRIME, combine, split

RING = FixedPointRing(modulus_bits=32, clip=1.0, scale=2.0**16)


def _updates(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, d))


def _plaintext_sum(updates: np.ndarray, rows: list[int]) -> np.ndarray:
    """The oracle: Σ round(x · scale) over ``rows`` in Python integers, reduced mod 2^32."""
    exact = [
        sum(round(float(updates[r, j]) * RING.scale) for r in rows) for j in range(updates.shape[1])
    ]
    return np.array([v % RING.modulus for v in exact], dtype=np.uint64)


# -- the sum ------------------------------------------------------------------------------------
def test_unmasked_sum_equals_plaintext_sum_of_quantised_updates_exactly() -> None:
    updates = _updates(60, 40)
    encoded, refused = encode_batch(RING, updates)
    assert refused.size == 0
    round_ = run_round(encoded, SecAggConfig(round_id=7), graph_seed=1)
    assert round_.result.survivors == tuple(range(60))
    np.testing.assert_array_equal(round_.result.total, _plaintext_sum(updates, list(range(60))))
    decoded = RING.decode(round_.result.total)
    np.testing.assert_allclose(decoded, updates.sum(axis=0), atol=60 * 0.5 / RING.scale)


def test_sum_wraps_like_the_ring_and_negative_sums_decode() -> None:
    updates = -np.ones((5, 3))
    encoded, _ = encode_batch(RING, updates)
    total = run_round(encoded, SecAggConfig()).result.total
    np.testing.assert_array_equal(RING.decode(total), [-5.0, -5.0, -5.0])


@pytest.mark.parametrize(
    "stage", ["drop_after_sharing", "drop_before_sharing", "drop_before_unmasking"]
)
def test_dropouts_are_recovered_while_threshold_remains(stage: str) -> None:
    n = 80
    updates = _updates(n, 16, seed=3)
    encoded, _ = encode_batch(RING, updates)
    dropped = random.Random(5).sample(range(n), 16)  # 20 %
    round_ = run_round(encoded, SecAggConfig(), graph_seed=2, **{stage: dropped})
    survivors = [c for c in range(n) if stage == "drop_before_unmasking" or c not in dropped]
    assert list(round_.result.survivors) == survivors
    np.testing.assert_array_equal(round_.result.total, _plaintext_sum(updates, survivors))
    if stage == "drop_after_sharing":
        assert set(round_.result.recovered) == set(dropped)


def test_thirty_percent_dropout_after_sharing_is_recovered() -> None:
    n = 100
    updates = _updates(n, 8, seed=4)
    encoded, _ = encode_batch(RING, updates)
    dropped = set(random.Random(6).sample(range(n), 30))
    round_ = run_round(encoded, SecAggConfig(), graph_seed=3, drop_after_sharing=dropped)
    survivors = sorted(set(range(n)) - dropped)
    np.testing.assert_array_equal(round_.result.total, _plaintext_sum(updates, survivors))


def test_below_threshold_the_server_aborts_with_a_clear_error() -> None:
    n = 10
    config = SecAggConfig()
    encoded, _ = encode_batch(RING, _updates(n, 4))
    server = SecAggServer(config, range(n), 4, graph_seed=0)
    assert server.degree == 9 and server.threshold == 4  # the complete graph
    # Every client sends its input, then only 3 answer the unmask requests: each survivor's
    # self-mask seed has at most 3 < t = 4 shares.
    with pytest.raises(SecAggAbort, match=r"fewer than the threshold t=4; nothing is released"):
        run_round(encoded, config, graph_seed=0, drop_before_unmasking=range(3, 10))
    # With t answering, the same round goes through.
    run_round(encoded, config, graph_seed=0, drop_before_unmasking=range(4, 10))


def test_below_threshold_surviving_clients_refuse_to_unmask() -> None:
    encoded, _ = encode_batch(RING, _updates(10, 4))
    with pytest.raises(SecAggAbort, match=r"surviving holders .* fewer than the threshold t=4"):
        run_round(encoded, SecAggConfig(), graph_seed=0, drop_after_sharing=range(7))


def test_fewer_survivors_than_the_minimum_abort() -> None:
    encoded, _ = encode_batch(RING, _updates(20, 4))
    with pytest.raises(SecAggAbort, match="fewer than min_survivors=15"):
        run_round(encoded, SecAggConfig(min_survivors=15), drop_after_sharing=range(6))


# -- what a masked upload reveals ---------------------------------------------------------------
def test_a_single_masked_upload_is_indistinguishable_from_uniform() -> None:
    """Chi-square goodness of fit of one client's masked upload to the uniform distribution on
    Z_2^16, for an input that is as far from uniform as possible (all zeros); the same test
    rejects the unmasked input, so it can fail."""
    ring = FixedPointRing(modulus_bits=16, clip=1.0, scale=100.0)
    n, d = 12, 50_000
    updates = np.zeros((n, d))
    encoded, _ = encode_batch(ring, updates)
    config = SecAggConfig(modulus_bits=16)
    server = SecAggServer(config, range(n), d, graph_seed=0)
    clients = {c: SecAggClient(c, config) for c in range(n)}
    setups = server.setup_messages()
    keys = server.receive_public_keys([clients[c].setup(setups[c]) for c in range(n)])
    deliveries = server.route_shares([clients[c].share_keys(keys[c]) for c in range(n)])
    for c in range(n):
        clients[c].receive_shares(deliveries[c])
    uploads = [clients[c].masked_input(encoded[c]).vector for c in range(n)]
    bins = 256

    def p_value(values: np.ndarray) -> float:
        counts = np.bincount((values >> np.uint64(8)).astype(np.int64), minlength=bins)
        return float(stats.chisquare(counts).pvalue)

    for upload in uploads[:3]:
        assert p_value(upload) > 1e-4
        # Also the low bits, where a sum of few masks would show structure first.
        low = np.bincount((upload & np.uint64(255)).astype(np.int64), minlength=bins)
        assert float(stats.chisquare(low).pvalue) > 1e-4
        # Two uploads are not correlated either (Pearson on the centred values).
    r = np.corrcoef(uploads[0].astype(np.float64), uploads[1].astype(np.float64))[0, 1]
    assert abs(r) < 5 / np.sqrt(d)
    assert p_value(encoded[0]) < 1e-100  # the unmasked input is rejected


def test_a_server_asking_for_both_shares_of_a_peer_is_refused() -> None:
    n = 8
    config = SecAggConfig()
    encoded, _ = encode_batch(RING, _updates(n, 4))
    server = SecAggServer(config, range(n), 4, graph_seed=0)
    clients = {c: SecAggClient(c, config) for c in range(n)}
    setups = server.setup_messages()
    keys = server.receive_public_keys([clients[c].setup(setups[c]) for c in range(n)])
    deliveries = server.route_shares([clients[c].share_keys(keys[c]) for c in range(n)])
    for c in range(n):
        clients[c].receive_shares(deliveries[c])
    server.receive_masked_inputs([clients[c].masked_input(encoded[c]) for c in range(n)])
    victim, holder = 3, min(server.neighbours[3])
    peers = tuple(sorted(server.neighbours[holder] | {holder}))
    both = UnmaskRequest(holder, n, peers, (victim,))
    with pytest.raises(
        ProtocolViolation,
        match=rf"both the self-mask share and the pairwise-mask-key share of "
        rf"client\(s\) \[{victim}\]",
    ):
        clients[holder].unmask(both)
    # Asked in two requests instead: the second is refused.
    clients[holder].unmask(UnmaskRequest(holder, n, peers, ()))
    with pytest.raises(ProtocolViolation, match=f"already disclosed client {victim}'s seed share"):
        clients[holder].unmask(UnmaskRequest(holder, n, (), (victim,)))
    # And no client reveals the share of its own mask key while it answers.
    other = (holder + 1) % n
    with pytest.raises(ProtocolViolation, match="its own mask key"):
        clients[other].unmask(UnmaskRequest(other, n, (), (other,)))


def test_a_tampered_or_rerouted_share_is_refused() -> None:
    config = SecAggConfig()
    server = SecAggServer(config, range(6), 2, graph_seed=0)
    clients = {c: SecAggClient(c, config) for c in range(6)}
    setups = server.setup_messages()
    keys = server.receive_public_keys([clients[c].setup(setups[c]) for c in range(6)])
    deliveries = server.route_shares([clients[c].share_keys(keys[c]) for c in range(6)])
    delivery = deliveries[0]
    sender = next(iter(delivery.ciphertexts))
    ciphertext = bytearray(delivery.ciphertexts[sender])
    ciphertext[-1] ^= 1
    tampered = type(delivery)(0, {**delivery.ciphertexts, sender: bytes(ciphertext)})
    with pytest.raises(ProtocolViolation, match="fails authentication"):
        clients[0].receive_shares(tampered)
    rerouted = type(delivery)(1, dict(deliveries[0].ciphertexts))  # client 0's mail to client 1
    with pytest.raises(ProtocolViolation):
        clients[1].receive_shares(rerouted)


# -- the parts ----------------------------------------------------------------------------------
def test_out_of_range_updates_are_refused_not_clipped() -> None:
    update = np.array([0.5, 1.5, -2.0, 0.1])
    with pytest.raises(
        UpdateOutOfRange,
        match=r"client 9's update has 2 coordinate\(s\) outside the clipping range "
        r"\[-1, 1\]: coordinate 1 is 1\.5",
    ) as info:
        RING.encode(update, client_id=9)
    assert (info.value.client_id, info.value.count, info.value.index) == (9, 2, 1)
    with pytest.raises(UpdateOutOfRange):
        RING.encode(np.array([np.nan]))
    batch = np.array([[0.1, 0.2], [3.0, 0.0], [0.0, 0.0]])
    encoded, refused = encode_batch(RING, batch)
    assert refused.tolist() == [1] and encoded.shape == (2, 2)


def test_ring_capacity_refuses_rounds_that_could_wrap() -> None:
    ring = FixedPointRing(modulus_bits=16, clip=1.0, scale=100.0)
    assert ring.max_clients() == 327  # 327 · 100 < 2^15 ≤ 328 · 100
    ring.check_capacity(327)
    with pytest.raises(ConfigError, match="can wrap around"):
        ring.check_capacity(328)


def test_stochastic_rounding_is_unbiased() -> None:
    ring = FixedPointRing(modulus_bits=32, clip=1.0, scale=1.0)
    x = np.full(200_000, 0.3)
    q = ring.quantise(x, rng=np.random.default_rng(0))
    assert set(np.unique(q).tolist()) == {0, 1}
    assert abs(q.mean() - 0.3) < 4 * np.sqrt(0.21 / x.size)


def test_shamir_any_t_shares_recover_and_fewer_do_not() -> None:
    secret = bytes(range(32))
    xs = list(range(1, 8))
    shares = split(secret, 4, xs)
    for subset in itertools.combinations(shares, 4):
        assert combine(list(subset), 4) == secret
    with pytest.raises(ValueError, match="cannot recover"):
        combine(shares[:3], 4)
    # t − 1 shares with a guessed 4th point interpolate to something else.
    fake = type(shares[0])(99, 12345)
    with pytest.raises(ValueError):
        assert combine([*shares[:3], fake], 4) != secret
    assert all(0 <= s.y < PRIME for s in shares)


def test_harary_graph_is_regular_and_symmetric() -> None:
    graph = harary_graph(list(range(50)), 8, random.Random(0))
    assert all(len(nbrs) == 8 for nbrs in graph.values())
    assert all(u in graph[v] for u, nbrs in graph.items() for v in nbrs)
    assert SecAggConfig().degree_for(10_000) == 56
    assert SecAggConfig().threshold_for(56) == 20
    assert SecAggConfig(degree=8, threshold_fraction=0.5).threshold_for(8) == 5


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"SecAggConfig\.modulus_bits: got 80"):
        SecAggConfig(modulus_bits=80)
    with pytest.raises(ConfigError, match="has no parameter 'bits'"):
        SecAggConfig(bits=3)


def test_a_client_refuses_to_unmask_below_min_survivors_whatever_the_server_says() -> None:
    n = 6
    config = SecAggConfig(min_survivors=5)
    encoded, _ = encode_batch(RING, _updates(n, 2))
    server = SecAggServer(config, range(n), 2, graph_seed=0)
    clients = {c: SecAggClient(c, config) for c in range(n)}
    setups = server.setup_messages()
    keys = server.receive_public_keys([clients[c].setup(setups[c]) for c in range(n)])
    deliveries = server.route_shares([clients[c].share_keys(keys[c]) for c in range(n)])
    for c in range(n):
        clients[c].receive_shares(deliveries[c])
        clients[c].masked_input(encoded[c])
    with pytest.raises(SecAggAbort, match="round with 4 survivors, fewer than min_survivors=5"):
        clients[0].unmask(UnmaskRequest(0, 4, (0, 1, 2, 3), ()))


def test_every_message_survives_its_wire_encoding_and_wire_bytes_is_its_length() -> None:
    """A round whose every message goes through to_bytes/from_bytes, with a dropout after
    sharing: the sum is still exact, and wire_bytes (what the benchmark counts) is the length."""
    n, d = 12, 5
    config = SecAggConfig(modulus_bits=24)
    ring = FixedPointRing(modulus_bits=24, clip=1.0, scale=2.0**10)
    updates = _updates(n, d, 9)
    encoded, _ = encode_batch(ring, updates)
    sent: list[object] = []

    def wire(message, *extra):  # type: ignore[no-untyped-def]
        data = message.to_bytes()
        assert len(data) == message.wire_bytes()
        back = type(message).from_bytes(data, *extra)
        sent.append(back)
        return back

    server = SecAggServer(config, range(n), d, graph_seed=0)
    clients = {c: SecAggClient(c, config) for c in range(n)}
    setups = {c: wire(m) for c, m in server.setup_messages().items()}
    keys = server.receive_public_keys([wire(clients[c].setup(setups[c])) for c in range(n)])
    shares = [wire(clients[c].share_keys(wire(keys[c]))) for c in range(n)]
    deliveries = server.route_shares(shares)
    alive = [c for c in range(n) if c != 4]
    inputs = []
    for c in alive:
        clients[c].receive_shares(wire(deliveries[c]))
        inputs.append(wire(clients[c].masked_input(encoded[c]), 24))
    requests = server.receive_masked_inputs(inputs)
    responses = [wire(clients[c].unmask(wire(requests[c]))) for c in alive]
    total = server.unmask(responses).total
    expected = ring.to_ring(ring.quantise(updates[alive].ravel()).reshape(len(alive), d).sum(0))
    np.testing.assert_array_equal(total, expected)
    assert len({type(m).__name__ for m in sent}) == 8
    with pytest.raises(ValueError, match="truncated"):
        type(shares[0]).from_bytes(shares[0].to_bytes()[:-1])  # cut inside a ciphertext
