"""The history-rebuilding attack against every served model kind, and the defences that stop it.

The attack (found against a running server): ``exclude_seen`` leaves a user's history out of the
answer, so asking for every item (``k`` large, ``allow`` covering the catalogue) and taking the
complement rebuilds the history exactly. It must fail for every kind of served model:

- non-private: only a credential allowed to ask about that user (a ``service`` key, or a user
  token minted for that user) may ask; a ``read`` key or another user's token is refused, and
  ``read`` credentials cannot enumerate the catalogue anyway (bounded ``k``/``allow``);
- private training directory: never served (it holds raw histories the guarantee does not
  cover);
- release artifact: answers never depend on training histories, so even a ``service`` key learns
  nothing: the complement is empty, whatever the user.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from privrank.errors import ArtifactError
from privrank.models import FitOptions, Recommender, create_model
from privrank.privacy.spec import PrivacySpec
from privrank.serving import ModelStore

from ._util import CLUSTER_A, CLUSTER_B, auth

CATALOGUE = CLUSTER_A + CLUSTER_B
SPEC = PrivacySpec(epsilon=8.0, max_interactions_per_user=8)


def true_history(model: Recommender, user: str) -> set:
    code = int(model.user_codes([user])[0])
    items = model.history_items_[model.history_indptr_[code] : model.history_indptr_[code + 1]]
    return {model.item_ids_[int(c)].as_py() for c in items}


def rebuild(client, headers: dict, user: str) -> tuple[list[int], set | None]:
    """The attack: two allow-lists covering the catalogue, ``k`` as large as the schema allows;
    returns the status codes and the rebuilt history (``None`` when a request was refused)."""
    returned, codes = set(), []
    for half in (CATALOGUE[: len(CATALOGUE) // 2], CATALOGUE[len(CATALOGUE) // 2 :]):
        response = client.post(
            "/v1/recommend",
            json={"user_id": user, "k": 1000, "allow": half, "exclude_seen": True},
            headers=headers,
        )
        codes.append(response.status_code)
        if response.status_code == 200:
            returned |= {i["item_id"] for i in response.json()["items"]}
    if any(code != 200 for code in codes):
        return codes, None
    return codes, set(CATALOGUE) - returned


@pytest.fixture(scope="module")
def private_dirs(tmp_path_factory, train) -> dict[str, Path]:
    """A DP-EASE fit saved as a training directory and as its release artifact."""
    root = tmp_path_factory.mktemp("private")
    model = create_model("ease", {"regularization": 10.0}).fit(train, FitOptions(privacy=SPEC))
    model.save(root / "trained")
    model.save(root / "release", release=True)
    return {"trained": root / "trained", "release": root / "release"}


def mint(client, keys, user: str) -> dict:
    response = client.post(
        "/v1/tokens", json={"user_id": user, "ttl_s": 60}, headers=auth(keys["write"])
    )
    assert response.status_code == 200, response.text
    return auth(response.json()["token"])


def test_the_attack_works_only_for_a_credential_allowed_to_ask(client, keys, model_dir) -> None:
    """Non-private model: the attack is what `exclude_seen` means for whoever may ask about the
    user (documented in the README's security model), and refused to everyone else."""
    model = Recommender.load(model_dir)
    for user in ("u1", "u13"):
        codes, rebuilt = rebuild(client, auth(keys["read"]), user)
        assert codes == [403, 403] and rebuilt is None  # a read key may not ask about users
        codes, rebuilt = rebuild(client, mint(client, keys, "u2"), user)
        assert codes == [403, 403] and rebuilt is None  # another user's token
        # The user's own token may ask, but its bounds (k <= 100) refuse the enumeration.
        codes, rebuilt = rebuild(client, mint(client, keys, user), user)
        assert codes == [403, 403] and rebuilt is None
        # A service key is trusted with any user: the oracle we document.
        codes, rebuilt = rebuild(client, auth(keys["service"]), user)
        assert rebuilt == true_history(model, user)


def test_a_private_training_directory_is_never_served(make_client, private_dirs) -> None:
    with pytest.raises(ArtifactError, match="privrank privacy release"):
        make_client(model_dir=private_dirs["trained"])
    store = ModelStore(private_dirs["trained"].parent / "store")
    with pytest.raises(ArtifactError, match="release artifact"):
        store.add(private_dirs["trained"])


def test_a_release_artifact_reveals_no_training_history(
    make_client, keys, private_dirs, model_dir
) -> None:
    client = make_client(model_dir=private_dirs["release"])
    trained = Recommender.load(model_dir)
    for user in ("u1", "u13"):
        codes, rebuilt = rebuild(client, auth(keys["service"]), user)
        assert codes == [200, 200]
        assert rebuilt == set(), true_history(trained, user)  # nothing is left out
        codes, rebuilt = rebuild(client, auth(keys["read"]), user)
        assert rebuilt is None
    listing = client.get("/v1/models", headers=auth(keys["read"])).json()
    assert listing["active"]["privacy"]["epsilon"] == pytest.approx(8.0)
    assert listing["active"]["n_users"] == 0


def test_a_release_artifact_personalises_from_the_event_store(
    make_client, keys, private_dirs
) -> None:
    """Events ingested for a user are their history: folded in, and left out by exclude_seen."""
    client = make_client(model_dir=private_dirs["release"])
    seen = CLUSTER_B[:4]
    events = [
        {
            "event_id": f"e{i}",
            "user_id": "alice",
            "item_id": item,
            "timestamp": "2026-01-01T00:00:00Z",
        }
        for i, item in enumerate(seen)
    ]
    ingested = client.post("/v1/events", json={"events": events}, headers=auth(keys["write"]))
    assert ingested.status_code == 200, ingested.text
    token = mint(client, keys, "alice")
    body = client.post("/v1/recommend", json={"user_id": "alice", "k": 5}, headers=token).json()
    items = [i["item_id"] for i in body["items"]]
    expected = Recommender.load(private_dirs["release"]).recommend_for_histories([seen], 5)
    assert items == expected.item_ids[0]
    assert not set(items) & set(seen)
    everything = client.post(
        "/v1/recommend", json={"user_id": "alice", "k": 30, "exclude_seen": False}, headers=token
    ).json()
    assert set(seen) <= {i["item_id"] for i in everything["items"]}


def test_membership_is_not_disclosed(client, keys) -> None:
    """A training user with no personal signal and an unknown id get answers of the same shape;
    cold answers carry rank scores, never training counts."""
    headers = auth(keys["service"])
    unknown = client.post("/v1/recommend", json={"user_id": "nobody", "k": 5}, headers=headers)
    known = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}, headers=headers)
    assert set(unknown.json()) == set(known.json()) == {"model_version", "items"}
    assert [i["score"] for i in unknown.json()["items"]] == [1 / (1 + r) for r in range(5)]
    ranked = client.post(
        "/v1/rank", json={"user_id": "nobody", "candidates": CLUSTER_A[:3]}, headers=headers
    ).json()
    assert "cold_start" not in ranked
    assert [i["score"] for i in ranked["items"]] == [1.0, 1 / 2, 1 / 3]
