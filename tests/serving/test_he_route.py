"""/v1/he: encrypted scoring over HTTP, through the Python client helper, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.models import Query
from privrank.privacy.crypto.he_scoring import HEClient, HEParams, ScoreRequest
from privrank.serving.he_client import EncryptedScoringClient

from ._util import auth

pytest.importorskip("tenseal")


@pytest.fixture
def he(make_client, ials, keys):
    model, directory = ials
    client = make_client(model_dir=directory)
    client.headers.update(auth(keys["read"]))
    return client, model


def test_encrypted_scores_match_the_served_model(he):
    http, model = he
    client = EncryptedScoringClient(http)
    assert client.params.factors == model.item_vectors().shape[1]
    vector = model.user_factors_[3]
    ids, scores = client.scores(vector)
    plain = model.score(Query.users(np.array([3])))[0]
    assert ids == [str(i) for i in model.item_ids_.to_pylist()]
    np.testing.assert_allclose(scores, plain, atol=1e-4)
    assert client.last_request_bytes < 1 << 20  # under the server's default body limit
    top = client.recommend(vector, k=5)
    order = np.lexsort((np.arange(len(plain)), -plain))[:5]
    assert [item for item, _ in top] == [ids[i] for i in order]
    seen = [ids[i] for i in order[:2]]
    assert all(item not in seen for item, _ in client.recommend(vector, k=5, exclude=seen))
    candidates = [ids[i] for i in (5, 1, 9)]
    got_ids, got = client.scores(vector, candidates)
    assert got_ids == candidates
    np.testing.assert_allclose(got, plain[[5, 1, 9]], atol=1e-4)


def test_refusals(he, make_client, model_dir, keys):
    http, model = he
    params = HEParams.model_validate(http.get("/v1/he/params").json()["params"])
    body = HEClient(params).request(model.user_factors_[0])
    octet = {"content-type": "application/octet-stream"}
    anonymous = http.post("/v1/he/score", content=body, headers={**octet, "Authorization": ""})
    assert anonymous.status_code == 401
    assert http.post("/v1/he/score", content=body).status_code == 415
    for bad in (b"not a request", body[:-5]):
        answer = http.post("/v1/he/score", content=bad, headers=octet)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_data"
    request = ScoreRequest.from_bytes(body)
    # Not a SEAL object; a changed header byte (here the reserved bytes SEAL itself ignores).
    reserved = bytearray(request.ciphertext)
    reserved[6] ^= 0x01
    for broken, why in [(b"\x00" * 100, "magic"), (bytes(reserved), "reserved bytes")]:
        answer = http.post(
            "/v1/he/score",
            content=ScoreRequest(request.galois_keys, broken).to_bytes(),
            headers=octet,
        )
        assert answer.status_code == 422
        assert "not a valid SEAL object" in answer.json()["message"]
        assert why in answer.json()["message"]
    # A read credential may send at most read_max_candidates candidates (like /v1/rank).
    many = make_client(model_dir=he[0].app.state.serving.settings.model_dir, read_max_candidates=2)
    ids = [str(i) for i in model.item_ids_.to_pylist()[:3]]
    answer = many.post(
        "/v1/he/score",
        content=HEClient(params).request(model.user_factors_[0], ids),
        headers={**octet, **auth(keys["read"])},
    )
    assert answer.status_code == 403
    # Not a factor model: nothing to score under encryption.
    ease = make_client(model_dir=model_dir)
    answer = ease.get("/v1/he/params", headers=auth(keys["read"]))
    assert answer.status_code == 409
