"""The ClientApp module imports light (``make test-flower``; needs ``.venv-flower``).

Flower 1.42's SuperNode starts one ``flwr-clientapp`` process per message, and each imports
this module: the accountant (dp_accounting, scipy.stats), the ledger (SQLAlchemy), torch and the
server's round logic must stay out of it.
"""

from __future__ import annotations

import subprocess

import pytest
from tests.federated.flower._supernodes import FLOWER

pytestmark = pytest.mark.flower

HEAVY = (
    "torch",
    "sqlalchemy",
    "dp_accounting",
    "scipy.stats",
    "ray",
    "privrank.federated.flower.rounds",
    "privrank.workflow",
)


def test_the_client_app_imports_no_accountant_ledger_or_server_code() -> None:
    code = (
        "import sys, privrank.federated.flower.client_app; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    python = str(FLOWER / "python")
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "", f"the ClientApp imported {done.stdout.strip()}"
