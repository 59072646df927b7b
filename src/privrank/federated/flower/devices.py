"""The devices behind a SuperNode: their local files and the computation each device runs.

A SuperNode of the Flower deployment holds one or a few devices; each device is one user whose
history never leaves it. Its data is a **node file** (``node-K.npz``, no pickle):

- ``device_ids``: ``(k,)`` int64, the devices' public enrolment numbers in ``0..N-1`` (the
  server samples its cohorts over them, exactly as the simulator samples over user codes);
- ``indptr`` (``(k+1,)`` int64) and ``items`` (int32 item codes of the public catalogue):
  the devices' histories, a CSR;
- ``n_items``: the catalogue size the codes refer to.

:func:`partition` writes the node files of a training part (one per SuperNode, devices dealt
round-robin) and a ``manifest.json`` of what is public (devices, items, nodes). Only a
device's own file is read by its SuperNode (:func:`load_node`).

What a device computes is the simulator's client code run on a batch of its own devices
(:class:`~privrank.models._fedmf_rounds.FedMFClient`): :func:`device_updates` (its update,
clipped on the device in a private round, with the clipping bit of adaptive clipping) and
:func:`device_counts` (its 0/1 item vector, at most ``c`` items under DP). These functions import
no Flower code, so the deployment's logic is tested in-process too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from privrank.atomic import atomic_file
from privrank.data.interactions import Interactions
from privrank.errors import ConfigError, DataError
from privrank.federated.clients import clip_on_device
from privrank.federated.cohorts import bounded_histories, device_histories
from privrank.models._fedmf_rounds import FedMFClient, FedMFConfig, MFBroadcast

__all__ = [
    "MANIFEST_FILE",
    "NodeAnswer",
    "NodeData",
    "device_counts",
    "device_updates",
    "load_node",
    "partition",
]

#: The public description of a partition (devices, items, nodes).
MANIFEST_FILE = "manifest.json"
_FORMAT = "privrank.federated.node"


@dataclass(frozen=True)
class NodeData:
    """The devices of one SuperNode.

    Attributes:
        device_ids: ``(k,)`` int64 enrolment numbers, increasing.
        histories: ``k × n_items`` binary CSR, row ``b`` the history of ``device_ids[b]``.
        path: The file it was read from (named in errors).
    """

    device_ids: np.ndarray
    histories: sp.csr_matrix
    path: Path

    @property
    def n_items(self) -> int:
        """The catalogue size."""
        return int(self.histories.shape[1])

    def rows_of(self, devices: np.ndarray) -> np.ndarray:
        """The rows of ``devices`` (enrolment numbers this node holds).

        Raises:
            ConfigError: A device this node does not hold.
        """
        rows = np.searchsorted(self.device_ids, devices)
        rows = np.minimum(rows, len(self.device_ids) - 1)
        if len(devices) and not np.array_equal(self.device_ids[rows], devices):
            unknown = sorted(set(np.asarray(devices).tolist()) - set(self.device_ids.tolist()))
            raise ConfigError(
                f"{self.path}: the server asked for devices {unknown[:5]} it does not hold"
            )
        return rows


@dataclass(frozen=True)
class NodeAnswer:
    """What one SuperNode sent back for its devices.

    Attributes:
        devices: ``(k,)`` the enrolment numbers the vectors are for.
        vectors: ``(k, dim)`` one row per device.
        unclipped: ``(k,)`` bool, the devices' clipping bits.
    """

    devices: np.ndarray
    vectors: np.ndarray
    unclipped: np.ndarray


def partition(train: Interactions, nodes: int, out: Path) -> dict[str, object]:
    """Write one node file per SuperNode and the manifest.

    Device ``u`` (the user with code ``u`` in ``train``) goes to node ``u mod nodes``, so every
    node holds ``⌈N/nodes⌉`` or ``⌊N/nodes⌋`` devices.

    Args:
        train: The training part (one device per user).
        nodes: The number of SuperNodes.
        out: The folder (created).

    Returns:
        The manifest.

    Raises:
        ConfigError: ``nodes`` is not in ``1..N``.
    """
    population = train.n_users
    if not 1 <= nodes <= population:
        raise ConfigError(f"--nodes {nodes}: expected 1..{population} (the devices of the data)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    histories = device_histories(train)
    files = []
    for node in range(nodes):
        ids = np.arange(node, population, nodes, dtype=np.int64)
        rows = histories[ids]
        name = f"node-{node}.npz"
        with atomic_file(out / name, "wb") as handle:
            np.savez(
                handle,
                format=np.array(_FORMAT),
                device_ids=ids,
                indptr=rows.indptr.astype(np.int64),
                items=rows.indices.astype(np.int32),
                n_items=np.array(train.n_items, dtype=np.int64),
            )
        files.append(name)
    manifest: dict[str, object] = {
        "format": "privrank.federated.partition",
        "version": 1,
        "devices": population,
        "items": train.n_items,
        "nodes": nodes,
        "files": files,
    }
    with atomic_file(out / MANIFEST_FILE, encoding="utf-8") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_node(path: Path) -> NodeData:
    """Read and check a node file.

    Raises:
        DataError: Missing file, wrong format, or inconsistent arrays (named, with what was
            expected).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the node file: {exc}") from exc
    missing = {"format", "device_ids", "indptr", "items", "n_items"} - set(arrays)
    if missing:
        raise DataError(f"{path}: field(s) {sorted(missing)} missing; expected a node file")
    if str(arrays["format"]) != _FORMAT:
        raise DataError(f"{path}: field 'format' is {arrays['format']!s}; expected {_FORMAT}")
    ids = arrays["device_ids"].astype(np.int64)
    indptr = arrays["indptr"].astype(np.int64)
    items = arrays["items"].astype(np.int64)
    n_items = int(arrays["n_items"])
    problems = []
    if ids.ndim != 1 or len(ids) == 0 or np.any(np.diff(ids) <= 0) or ids[0] < 0:
        problems.append("'device_ids' must be a non-empty increasing vector of ids >= 0")
    if indptr.shape != (len(ids) + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        problems.append(f"'indptr' must be {len(ids) + 1} non-decreasing offsets from 0")
    elif indptr[-1] != len(items):
        problems.append(f"'indptr' ends at {indptr[-1]} but 'items' has {len(items)} entries")
    if n_items < 1 or (len(items) and (items.min() < 0 or items.max() >= n_items)):
        problems.append(f"'items' must be codes in 0..{n_items - 1} ('n_items' = {n_items})")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    histories = sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), items, indptr), shape=(len(ids), n_items)
    )
    histories.sum_duplicates()
    histories.data[:] = 1.0
    return NodeData(ids, histories, path)


def device_updates(
    node: NodeData,
    devices: np.ndarray,
    config: FedMFConfig,
    item_factors: np.ndarray,
    bound: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The round's update of each of ``devices`` (this node's), as it leaves the device.

    Each device reconstructs its user factor and computes its item-side update
    (:meth:`FedMFClient.local_update`); in a private round it scales the update to L2 norm at
    most ``bound`` (:func:`~privrank.federated.simulator.clip_on_device`). The user factors
    stay here.

    Returns:
        ``(updates, unclipped)``: ``(k, |I|d + d²)`` float64 vectors and ``(k,)`` bool bits
        (all ``True`` without a bound).
    """
    rows = node.rows_of(np.asarray(devices, dtype=np.int64))
    broadcast = MFBroadcast.of(item_factors)
    client = FedMFClient(config, node.n_items)
    computed, _ = client.local_update(node.histories[rows], broadcast)
    if bound is None:
        return computed.dense(0, len(rows)), np.ones(len(rows), dtype=bool)
    clipped, unclipped = clip_on_device(computed, bound)
    return clipped.dense(0, len(rows)), np.asarray(unclipped, dtype=bool)


def device_counts(node: NodeData, bound: int | None) -> np.ndarray:
    """Every device's 0/1 item vector (its first ``bound`` items in item order under DP, as in
    the simulator), ``(k, n_items)`` float64."""
    histories = node.histories if bound is None else bounded_histories(node.histories, bound)
    return np.asarray(histories.toarray(), dtype=np.float64)
