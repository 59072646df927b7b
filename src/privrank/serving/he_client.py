"""A Python client for ``/v1/he``: encrypt a user vector, get encrypted scores, decrypt, rank.

Example::

    import httpx
    from privrank.serving.he_client import EncryptedScoringClient

    with httpx.Client(base_url="http://127.0.0.1:8000",
                      headers={"Authorization": f"Bearer {key}"}) as http:
        client = EncryptedScoringClient(http)
        top10 = client.recommend(user_vector, k=10)

The user vector and the CKKS secret key never leave this process; the decrypted scores are not
sent anywhere (sending them to the server would leak the secret key). See
:mod:`privrank.privacy.crypto.he_scoring.protocol` for what each party learns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from privrank.errors import DataError
from privrank.privacy.crypto.he_scoring import HEClient, HEParams, ScoreResponse

__all__ = ["EncryptedScoringClient"]


class EncryptedScoringClient:
    """Encrypted scoring over HTTP.

    Args:
        http: An ``httpx.Client`` (or anything with the same ``get``/``post``) whose base URL
            is the server and whose headers carry the credential.

    Attributes:
        params: The server's CKKS parameters (fetched once).
        model_version: The model version the parameters belong to.
        last_request_bytes: Size of the last request body.
        last_response_bytes: Size of the last response body.
    """

    def __init__(self, http: Any) -> None:
        self.http = http
        answer = self._json(http.get("/v1/he/params"))
        self.params = HEParams.model_validate(answer["params"])
        self.model_version = str(answer["model_version"])
        self._keys = HEClient(self.params)
        self.last_request_bytes = 0
        self.last_response_bytes = 0

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        if response.status_code != 200:
            raise DataError(
                f"encrypted scoring: the server answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        data: dict[str, Any] = response.json()
        return data

    def scores(
        self, user_vector: np.ndarray, candidates: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """Decrypted scores of the catalogue (or the candidates) for ``user_vector``."""
        body = self._keys.request(user_vector, candidates)
        self.last_request_bytes = len(body)
        response = self.http.post(
            "/v1/he/score", content=body, headers={"content-type": "application/octet-stream"}
        )
        self.last_response_bytes = len(response.content)
        return self._keys.decrypt(ScoreResponse.from_json(self._json(response)))

    def recommend(
        self,
        user_vector: np.ndarray,
        k: int = 10,
        *,
        exclude: Collection[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` best items, ranked on the client (``exclude``: e.g. the user's history)."""
        ids, values = self.scores(user_vector, candidates)
        if exclude:
            skip = set(exclude)
            keep = [i for i, item in enumerate(ids) if item not in skip]
            ids, values = [ids[i] for i in keep], values[keep]
        return HEClient.top_k(ids, values, k)
