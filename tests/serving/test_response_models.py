"""The read endpoints write their JSON themselves (orjson) and declare a response model for the
schema: each answer must be exactly what that model would have written, on both paths (answered
on the event loop from the FAISS index, and in a worker thread by the model)."""

from __future__ import annotations

import json

import pytest

from privrank.serving.schemas import RankResponse, RecommendResponse

from ._util import auth


def _as_the_model_writes_it(model: type, text: str) -> dict:
    return json.loads(model.model_validate_json(text).model_dump_json())


@pytest.mark.parametrize("index", ["auto", "off"])
def test_every_read_answer_is_what_its_response_model_writes(
    make_client, ials, keys, index
) -> None:
    client = make_client(model_dir=ials[1], index=index)
    assert (client.app.state.serving.store.current.index is None) == (index == "off")
    headers = auth(keys["service"])
    answers = [
        (RecommendResponse, client.post("/v1/recommend", json={"user_id": "u0"}, headers=headers)),
        (RecommendResponse, client.post("/v1/recommend", json={"user_id": 7}, headers=headers)),
        (
            RecommendResponse,
            client.post("/v1/recommend/history", json={"history": [100, 101]}, headers=headers),
        ),
        (RecommendResponse, client.get("/v1/items/100/similar?k=3", headers=headers)),
        (
            RankResponse,
            client.post(
                "/v1/rank",
                json={"user_id": "u0", "candidates": [100, "x", 101]},
                headers=headers,
            ),
        ),
    ]
    for model, response in answers:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == _as_the_model_writes_it(model, response.text)
        assert response.json()["items"], response.text


def test_the_schema_still_documents_the_response_models(make_client, ials) -> None:
    schema = make_client(model_dir=ials[1]).get("/openapi.json").json()
    for path, model in [
        ("/v1/recommend", "RecommendResponse"),
        ("/v1/recommend/history", "RecommendResponse"),
        ("/v1/rank", "RankResponse"),
    ]:
        content = schema["paths"][path]["post"]["responses"]["200"]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith(model)
