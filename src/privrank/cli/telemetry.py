"""``privrank telemetry``: local-DP item telemetry (Count Mean Sketch / Hadamard CMS).

- ``privrank telemetry randomise --events events.csv --out reports.jsonl --epsilon 4
  --device-state devices.json``: the device side (the state file remembers the user-days
  already reported, so a second run over the same user-days is refused). Every user-day of
  the events file (``user,item,day``) sends one report of one of its
  events, randomised at ε per user per day (``--sketch cms|hcms``, ``--m``, ``--k``); the
  reports file holds no user id. ``--data ml100k-holdout --day 2026-12-04`` simulates the
  devices of a data set's training users instead (all their events on that day).
- ``privrank telemetry ingest reports.jsonl ... --items-from ml100k-holdout --out pop.json
  --budget-key ml-100k``: the server side. Validates every line (exit 2 with file, line, field,
  value), charges ε per user-day for each day not charged before to the ledger, decodes the
  sketch and writes the popularity table atomically. ``privrank federated train
  --popularity-prior pop.json`` uses it as the cold-start ranking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privrank.cli._console import make_console
from privrank.cli.app import app
from privrank.errors import ConfigError

__all__ = ["telemetry_app"]

telemetry_app = typer.Typer(help="Local-DP telemetry: reports randomised on the devices.")
app.add_typer(telemetry_app, name="telemetry", no_args_is_help=True)


@telemetry_app.command("randomise")
def randomise_command(
    out: Annotated[Path, typer.Option(help="The reports file to write (JSON Lines).")],
    epsilon: Annotated[float, typer.Option(help="ε per user per day (one report a day).")],
    device_state: Annotated[
        Path,
        typer.Option(
            help="The devices' record of user-days already reported (created if missing, "
            "kept across runs): a user-day in it is refused, never reported twice."
        ),
    ],
    events: Annotated[
        Path | None, typer.Option(help="Events CSV with the header user,item,day.")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Instead of --events: the training users of a protocol or dataset."),
    ] = None,
    day: Annotated[
        str, typer.Option(help="With --data: the day all the users' events are on.")
    ] = "2026-01-01",
    sketch: Annotated[
        str,
        typer.Option(
            help="ocms (CMS with the optimised unary encoding, never noisier than cms at the "
            "same epsilon), cms (Apple's randomiser) or hcms."
        ),
    ] = "ocms",
    m: Annotated[int, typer.Option(help="Sketch width m (a power of two for hcms).")] = 1024,
    k: Annotated[int, typer.Option(help="Sketch depth k (hash functions).")] = 1024,
    hash_seed: Annotated[int, typer.Option(help="Key of the public hash family.")] = 0,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the devices' randomness (default: OS entropy).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing reports file.")] = False,
) -> None:
    """Randomise each user-day's events on the device: one ε-LDP report per user per day."""
    import numpy as np

    from privrank.atomic import atomic_file
    from privrank.data.readers.events import read_day_events
    from privrank.privacy.local_dp import SketchConfig
    from privrank.privacy.local_dp.telemetry import DeviceDayRecord, randomise_days
    from privrank.privacy.local_dp.wire import write_reports

    if (events is None) == (data is None):
        raise ConfigError("give exactly one of --events FILE and --data PROTOCOL")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    config = SketchConfig.from_mapping(
        {"kind": sketch, "epsilon": epsilon, "m": m, "k": k, "hash_seed": hash_seed}
    )
    if events is not None:
        table = read_day_events(events)
        users, items, days = table.users, table.items, table.days
    else:
        users, items, days = _dataset_events(str(data), day)
    DeviceDayRecord(device_state).claim(users, days)
    rng = np.random.default_rng(seed)
    with atomic_file(out, "w", encoding="utf-8") as handle:
        written = write_reports(handle, config, randomise_days(config, users, items, days, rng))
    console = make_console()
    console.print(
        f"{written:,} reports (one per user-day, {len(users):,} events, {len(set(days))} "
        f"day(s)) randomised at ε = {epsilon:g} per user per day ({sketch}, m = {m}, k = {k}) "
        f"-> {out}",
        highlight=False,
        soft_wrap=True,
    )


def _dataset_events(argument: str, day: str) -> tuple[list[str], list[str], list[str]]:
    import datetime as dt

    from privrank.cli.train import resolve_training_data

    try:
        day = dt.date.fromisoformat(day).isoformat()
    except ValueError:
        raise ConfigError(f"--day: got {day!r}; expected an ISO date YYYY-MM-DD") from None
    resolved = resolve_training_data(argument)
    train = resolved.prepared.train if resolved.prepared is not None else resolved.dataset
    if train is None:  # pragma: no cover - resolve_training_data sets one of them
        raise ConfigError(f"--data {argument}: neither a protocol nor a dataset")
    indptr, codes = train.sequences()
    user_ids = train.user_ids.to_pylist()
    item_ids = train.item_ids.to_pylist()
    users = [
        str(user_ids[u]) for u in range(train.n_users) for _ in range(indptr[u + 1] - indptr[u])
    ]
    items = [str(item_ids[i]) for i in codes.tolist()]
    return users, items, [day] * len(items)


@telemetry_app.command("ingest")
def ingest_command(
    reports: Annotated[list[Path], typer.Argument(help="Reports files of one collection.")],
    out: Annotated[Path, typer.Option(help="The popularity table to write (JSON).")],
    budget_key: Annotated[str, typer.Option(help="Ledger key the collection spends from.")],
    items: Annotated[
        Path | None, typer.Option(help="The item dictionary: a file with one item id per line.")
    ] = None,
    items_from: Annotated[
        str | None, typer.Option(help="Instead of --items: the items of a protocol or dataset.")
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Collection name (default: the budget key).")
    ] = None,
    ledger: Annotated[str | None, typer.Option(help="Ledger database URL.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing table.")] = False,
) -> None:
    """Validate and decode reports, charge ε per user-day for new days, write the table."""
    from privrank.workflow.telemetry import ingest_reports

    if (items is None) == (items_from is None):
        raise ConfigError("give exactly one of --items FILE and --items-from PROTOCOL")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    item_ids = _read_items(items) if items is not None else _protocol_items(str(items_from))
    result = ingest_reports(
        reports,
        item_ids,
        out,
        budget_key=budget_key,
        collection=collection or budget_key,
        ledger_url=ledger,
    )
    decoded = result.decoded
    console = make_console()
    console.print(result.decoded.guarantee().describe(), highlight=False, soft_wrap=True)
    charged = ", ".join(f"{s.spend_id} (ε = {s.epsilon:g})" for s in result.new_spends)
    console.print(
        f"decoded {decoded.n_reports:,} reports of {len(decoded.days)} day(s) into "
        f"{len(decoded.item_ids):,} items -> {out}; charged to {budget_key!r}: "
        f"{charged or 'nothing new'}"
        + (f"; already charged: {', '.join(result.earlier_days)}" if result.earlier_days else ""),
        highlight=False,
        soft_wrap=True,
    )


def _read_items(path: Path) -> list[str]:
    from privrank.errors import DataError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the item list ({exc.strerror})", path=path) from None
    except UnicodeDecodeError as exc:
        raise DataError("not UTF-8", path=path, value=str(exc)[:60], expected="UTF-8") from None
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        item = line.strip()
        if not item:
            raise DataError(
                "empty line", path=path, line=number, field="item", value=line,
                expected="one item id per line",
            )  # fmt: skip
        if item in seen:
            raise DataError(
                f"duplicate item id (first on line {seen[item]})", path=path, line=number,
                field="item", value=item, expected="distinct item ids",
            )  # fmt: skip
        seen[item] = number
    if not seen:
        raise DataError("no items", path=path, expected="one item id per line")
    return list(seen)


def _protocol_items(argument: str) -> list[str]:
    from privrank.cli.train import resolve_training_data

    resolved = resolve_training_data(argument)
    train = resolved.prepared.train if resolved.prepared is not None else resolved.dataset
    if train is None:  # pragma: no cover - resolve_training_data sets one of them
        raise ConfigError(f"--items-from {argument}: neither a protocol nor a dataset")
    return [str(x) for x in train.item_ids.to_pylist()]
