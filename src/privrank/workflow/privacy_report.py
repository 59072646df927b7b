"""A saved model's privacy guarantee in plain words, and what its directory holds that the
guarantee does not cover.

:func:`privacy_report` reads the guarantee from the model's verified artifact header (the
:class:`~privrank.privacy.mechanisms.PrivacyGuarantee` the mechanism recorded when it was fitted)
and the ledger spend from the ``privrank train`` record; it computes nothing about privacy
itself. ``privrank privacy report`` prints it and the serving console's ledger page shows it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["NOT_COVERED", "RELEASE_COVERAGE", "privacy_report"]


def _num(value: float) -> str:
    return f"{value:.6g}"


#: What the saved model directory holds that no DP guarantee covers.
NOT_COVERED = (
    "The model directory also holds the training users' own histories (the arrays "
    "base.history_indptr and base.history_items, keyed by the user ids in user_ids.parquet), "
    "kept so that each user's already-seen items can be excluded from their recommendations. "
    "They are the users' raw data, not a release: no differential-privacy guarantee covers "
    "them, and the directory must not be published or shared. The item id list "
    "(item_ids.parquet) is the training data's item vocabulary and is not covered either unless "
    "it comes from a public catalogue. Only the learned parameters and the cold-start "
    "popularity are covered. To publish a private model, write its release artifact with "
    "`privrank privacy release DIR --out RELEASE` (no user ids, histories or per-user state)."
)
#: The same facts for a release artifact (``privrank privacy release``).
RELEASE_COVERAGE = (
    "This is a release artifact: it holds no training user ids, no histories and no per-user "
    "state, only the learned item-side parameters and the private cold-start popularity, which "
    "the guarantee covers. The item id list (item_ids.parquet) is the training data's item "
    "vocabulary and is not covered unless it comes from a public catalogue."
)


def privacy_report(directory: str | Path) -> dict[str, Any]:
    """The privacy facts of a saved model, from its verified artifact header.

    Args:
        directory: A ``privrank train`` output directory (``training.json`` + ``model/``) or a
            model directory written by :meth:`~privrank.models.Recommender.save`.

    Returns:
        A JSON-able dict: ``status`` (``private``, ``not-private`` or
        ``not-private-testing``), ``statement`` (plain words), the guarantee's fields under
        ``guarantee`` (``None`` for a non-private model), the ledger spend under ``ledger``
        (``None`` when the directory records none) and the ``warning`` on what is not covered.

    Raises:
        ArtifactError: Not a model directory, or a file changed since it was saved.
    """
    from privrank.models._artifact import MODEL_FILE, verify_checksums
    from privrank.privacy.mechanisms import PrivacyGuarantee
    from privrank.workflow.model_dir import locate

    directory = Path(directory)
    model_dir, record = locate(directory)  # the training record cross-checked
    verify_checksums(model_dir)
    header = json.loads((model_dir / MODEL_FILE).read_text(encoding="utf-8"))
    ledger = None if record is None else record.get("privacy")
    raw = header.get("privacy")
    try:
        guarantee = None if raw is None else PrivacyGuarantee.from_dict(raw)
    except ValueError as exc:
        from privrank.errors import ArtifactError

        raise ArtifactError(f"{model_dir / MODEL_FILE}: {exc}") from exc
    name = header.get("model", "?")
    if guarantee is None:
        status = "not-private"
        statement = (
            f"NOT differentially private: this {name} model was trained without a privacy "
            "guarantee. Everything it learned may reveal individual users' interactions."
        )
    elif guarantee.noise_scale_for_testing == 1.0 and guarantee.noise_seed is not None:
        status = "not-private-fixed-seed"
        statement = (
            f"NOT PRIVATE (fixed noise seed): the {name} model's noise was drawn from the fixed "
            f"seed {guarantee.noise_seed} (--noise-seed, for tests), so anyone with the seed can "
            "subtract it and the claim below does NOT hold. "
            + guarantee.describe().rstrip(".")
            + "."
        )
    elif not guarantee.is_private:
        status = "not-private-testing"
        statement = (
            f"NOT PRIVATE (noise scaled for testing): the {name} model's noise was multiplied by "
            f"{guarantee.noise_scale_for_testing:g}, so the claim below does NOT hold. "
            + guarantee.describe().rstrip(".")
            + "."
        )
    else:
        status = "private"
        unit = (
            "The unit of privacy is one user's entire history (all of a user's interactions, "
            "added or removed together)."
        )
        statement = f"This {name} model guarantees {guarantee.describe().rstrip('.')}. {unit}"
    if ledger:
        spent_epsilon = _num(ledger.get("epsilon", math.nan))
        spent_delta = _num(ledger.get("delta", math.nan))
        statement += (
            f" Privacy budget: (ε={spent_epsilon}, δ={spent_delta}) spent from ledger key "
            f"{ledger.get('ledger_key')!r} (spend {ledger.get('spend_id')})."
        )
    elif guarantee is not None:
        statement += " No privacy-budget ledger spend is recorded with this model."
    return {
        "model": name,
        "directory": str(directory),
        "status": status,
        "statement": statement,
        "guarantee": None if guarantee is None else guarantee.to_dict(),
        "ledger": ledger or None,
        "release": bool(header.get("release", False)),
        "warning": RELEASE_COVERAGE if header.get("release") else NOT_COVERED,
    }
