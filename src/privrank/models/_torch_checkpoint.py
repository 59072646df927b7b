"""Per-epoch checkpoints of a torch model's fit (SASRec, Mult-VAE): resume as if never stopped.

After every epoch the epoch loop (:func:`~privrank.models._epochs.run_epochs`) hands its
:class:`~privrank.models._epochs.LoopState` to :meth:`TorchCheckpoints.save`, which writes one
atomic, checksummed file (:mod:`privrank.models._checkpoint`) holding everything the next epoch
reads:

- the network's weights (``network.*``) and the optimizer's state (``optimizer.<i>.<key>``:
  Adam's moments and step count of parameter ``i``);
- the random streams: torch's global generator (dropout, Mult-VAE's latent samples; the fit's
  own stream, forked by :func:`~privrank.models._torch_training.seeded`), every generator the
  model names (``rng.<name>``: batch order, negatives) and, when the network is on a CUDA
  device, that device's generator (``rng.cuda``: dropout and latent noise drawn on the GPU;
  :mod:`privrank.models._device`);
- the loop's state: losses, evaluations, early stopping's best NDCG@10, best epoch, best weights
  (``best.*``) and evaluations without improvement, the time spent, and whether it finished.

:meth:`TorchCheckpoints.load` puts all of it back when the file is the checkpoint of *this* fit
(same model, config, seed, training histories, validation part, test shape and, for a worker of
a data-parallel fit, the same rank and number of workers); then the loop goes on from the next
epoch. Torch on a CPU is deterministic for a given number of threads, so a fit interrupted
after any epoch and resumed ends with **the same weights, bit for bit**, as the uninterrupted
fit with the same threads (tests/models/test_torch_checkpoint.py). On a CUDA device the device's
generator is restored too, so the random draws are the uninterrupted fit's; the weights are then
equal as far as the GPU kernels are deterministic (not checked here: no GPU run has been made).
A checkpoint written on one kind of device is not resumed on the other (it is another fit: the
random streams differ). A checkpoint of another fit is ignored and replaced; a corrupted one
stops the fit (:class:`~privrank.errors.ArtifactError`).

A second epoch loop of the same fit (SASRec's refit) is a *stage* with its own file,
``<name>.<stage>.checkpoint.safetensors``, whose identity is the fit's plus the stage's entries
(:meth:`~privrank.models._torch_training.EpochFitMixin._checkpointed_epochs`): the first loop's
finished checkpoint stays beside it, so a fit stopped in the refit resumes the refit, and a
finished fit run again trains nothing.

Private fits write no checkpoints (:meth:`~privrank.models.base.Recommender.check_checkpoints`
refuses them): resuming one would need the secret Poisson-sampling and noise streams on disk,
where anyone who reads them could subtract the noise from the released weights. A private fit
that dies starts over; with the same noise seed it draws the same batches and noise, so it
releases the same weights and the ledger is charged once (by the one spending path).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from privrank.models._checkpoint import (
    Checkpoint,
    checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from privrank.models._epochs import RECORDED, LoopState, StopReason

__all__ = [
    "TorchCheckpoints",
    "TorchFitState",
    "cuda_rng_state",
    "histories_digest",
    "network_device",
    "set_cuda_rng_state",
]

_REASONS: tuple[StopReason, ...] = get_args(StopReason)


@dataclass(frozen=True)
class TorchFitState:
    """The live objects a torch fit's next epoch reads, besides the loop's state.

    Attributes:
        network: The network being trained.
        optimizer: Its optimizer.
        generators: The model's own torch generators, by name (batch order, negatives).
    """

    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generators: Mapping[str, torch.Generator] = field(default_factory=dict)


def histories_digest(*arrays: np.ndarray | None) -> str:
    """SHA-256 of ragged arrays (histories in time order, a validation part): the data's
    identity for a sequence-aware fit (the order of a history matters)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none\n")
            continue
        flat = np.ascontiguousarray(array, dtype=np.int64)
        digest.update(f"{flat.shape}\n".encode())
        digest.update(flat.tobytes())
    return digest.hexdigest()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy().copy()


def network_device(network: torch.nn.Module) -> torch.device:
    """The device of the network's first parameter or buffer (the CPU for an empty one)."""
    for tensor in itertools.chain(network.parameters(), network.buffers()):
        return tensor.device
    return torch.device("cpu")


def cuda_rng_state(device: torch.device) -> torch.Tensor | None:
    """The generator state of ``device`` when it is a CUDA device, else ``None``."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_rng_state(device)


def set_cuda_rng_state(device: torch.device, state: torch.Tensor) -> None:
    """Put ``state`` back into the generator of the CUDA ``device``."""
    torch.cuda.set_rng_state(state, device)


class TorchCheckpoints:
    """Writes and reads the checkpoint of one torch fit (see the module docstring).

    Args:
        directory: The checkpoint directory (``FitOptions.checkpoint_dir``).
        name: The model's registry name (the file is ``<name>.checkpoint.safetensors``).
        identity: What is being fitted (JSON-serialisable); a checkpoint with another identity
            is not resumed from.
    """

    def __init__(self, directory: str | Path, name: str, identity: dict[str, Any]) -> None:
        self.path = checkpoint_path(directory, name)
        self.identity = json.loads(json.dumps(identity, sort_keys=True))

    def save(self, fit: TorchFitState, state: LoopState) -> None:
        """Checkpoint the fit after ``state.epoch`` epochs (atomically, replacing the last)."""
        arrays: dict[str, np.ndarray] = {
            f"network.{k}": _numpy(v) for k, v in fit.network.state_dict().items()
        }
        for index, entries in fit.optimizer.state_dict()["state"].items():
            for key, value in entries.items():
                arrays[f"optimizer.{index}.{key}"] = (
                    _numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
                )
        arrays["rng.torch"] = _numpy(torch.get_rng_state())
        device_state = cuda_rng_state(network_device(fit.network))
        if device_state is not None:
            arrays["rng.cuda"] = _numpy(device_state)
        for name, generator in fit.generators.items():
            arrays[f"rng.{name}"] = _numpy(generator.get_state())
        for key, value in (state.best_state or {}).items():
            arrays[f"best.{key}"] = (
                _numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
            )
        arrays["loop.losses"] = np.asarray(state.losses, dtype=np.float64)
        arrays["loop.evaluations"] = np.asarray(state.evaluations, dtype=np.float64).reshape(
            -1, 1 + len(RECORDED)
        )
        finished = -1 if state.finished is None else _REASONS.index(state.finished)
        arrays["loop.scalars"] = np.asarray(
            [
                state.best_value,
                state.best_epoch,
                state.stale,
                state.elapsed_s,
                finished,
                state.best_state is not None,
            ],
            dtype=np.float64,
        )
        write_checkpoint(self.path, Checkpoint(state.epoch, self.identity, arrays))

    def load(self, fit: TorchFitState) -> LoopState | None:
        """Put back the state of this fit's checkpoint into ``fit`` (weights, optimizer, random
        streams, the CUDA device's generator when the network is on one) and return the loop's
        state; ``None`` (nothing changed) when there is no checkpoint of this fit (also when it
        was written on the other kind of device).

        Raises:
            ArtifactError: The checkpoint file is corrupted.
        """
        found = read_checkpoint(self.path)
        if found is None or found.identity != self.identity:
            return None
        arrays = found.arrays
        device = network_device(fit.network)
        if ("rng.cuda" in arrays) != (device.type == "cuda"):
            return None  # written on a CUDA device and resumed on the CPU, or the reverse
        prefix = "network."
        network = {
            k[len(prefix) :]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)
        }
        fit.network.load_state_dict(network)
        saved = fit.optimizer.state_dict()
        restored: dict[int, dict[str, Any]] = {}
        for key, value in arrays.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                restored.setdefault(int(index), {})[name] = torch.from_numpy(value)
        saved["state"] = restored
        fit.optimizer.load_state_dict(saved)
        torch.set_rng_state(torch.from_numpy(arrays["rng.torch"]))
        if "rng.cuda" in arrays:
            set_cuda_rng_state(device, torch.from_numpy(arrays["rng.cuda"]))
        for name, generator in fit.generators.items():
            generator.set_state(torch.from_numpy(arrays[f"rng.{name}"]))
        scalars = arrays["loop.scalars"]
        best_state = None
        if scalars[5]:
            best_state = {
                k[5:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("best.")
            }
        finished = int(scalars[4])
        return LoopState(
            epoch=found.epoch,
            losses=tuple(float(v) for v in arrays["loop.losses"]),
            evaluations=tuple(tuple(float(x) for x in row) for row in arrays["loop.evaluations"]),
            best_value=float(scalars[0]),
            best_epoch=int(scalars[1]),
            best_state=best_state,
            stale=int(scalars[2]),
            elapsed_s=float(scalars[3]),
            finished=None if finished < 0 else _REASONS[finished],
        )
