"""Options that ``federated train`` (the simulator) and ``federated serve`` (Flower) share.

Both commands run the same algorithm (:mod:`privrank.federated`) on different runtimes, so an
option means the same thing in both and is declared once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "FEDERATED_MODELS",
    "Accountant",
    "AdaptiveClipping",
    "BudgetKey",
    "ClientsPerRound",
    "ClippingNorm",
    "Data",
    "Delta",
    "Epsilon",
    "FederatedModel",
    "LedgerUrl",
    "LrSchedule",
    "MaxPerUser",
    "Out",
    "Resume",
    "Rounds",
    "Seed",
    "ServerLr",
]

FEDERATED_MODELS = ("fedmf", "mult-vae")

Data = Annotated[
    str, typer.Option(help="A protocol name (ml100k-holdout, beauty-loo) or a saved split.")
]
Out = Annotated[Path, typer.Option(help="Output directory (model/ and training.json).")]
FederatedModel = Annotated[
    str,
    typer.Option(help="The federated model: fedmf, or mult-vae (FedAvg of the network)."),
]
Rounds = Annotated[int, typer.Option(help="Rounds T.")]
ClientsPerRound = Annotated[
    int, typer.Option(help="Devices per round m (expected, with Poisson sampling).")
]
ServerLr = Annotated[float, typer.Option(help="Server learning rate.")]
LrSchedule = Annotated[
    str, typer.Option(help="Server learning rate schedule: linear (decay to 0) or constant.")
]
Seed = Annotated[int, typer.Option(help="Seed of the initial model and the sampling.")]
Epsilon = Annotated[
    float | None,
    typer.Option(help="DP-FedAvg at this user-level ε (rounds charged to the ledger)."),
]
Delta = Annotated[float | None, typer.Option(help="δ (default 1/(10·users)).")]
MaxPerUser = Annotated[
    int | None, typer.Option(help="Items a device counts in the released item counts.")
]
ClippingNorm = Annotated[
    float | None, typer.Option(help="Initial clipping norm C of the device updates.")
]
AdaptiveClipping = Annotated[
    bool, typer.Option(help="Adapt C to the median update norm (Andrew et al. 2021).")
]
Accountant = Annotated[str | None, typer.Option(help="pld (default) or rdp.")]
BudgetKey = Annotated[
    str | None, typer.Option(help="Ledger key (default: the source dataset's name).")
]
LedgerUrl = Annotated[str | None, typer.Option(help="Ledger database URL.")]
Resume = Annotated[bool, typer.Option(help="Continue the run saved in --run-dir.")]
