"""Where a torch model computes: the ``device`` option of SASRec and Mult-VAE.

``cpu`` (the default) keeps every tensor on the CPU, exactly the path the models had before the
option existed. ``cuda`` trains, validates and scores on the first CUDA device and fails clearly
when there is none. ``auto`` takes CUDA when one is visible, else the CPU.

What does not move: the random generators that shuffle users and draw negatives stay on the
CPU (their draws are moved to the device), so a fit's batches and negatives do not depend on the
device; scores and saved weights come back as CPU numpy arrays. Dropout and the VAE's latent
noise come from torch's generator of the device the network is on, so a CUDA fit equals a CPU fit
of the same seed only up to that noise (and to floating-point summation order).
"""

from __future__ import annotations

from typing import Literal

import torch

from privrank.errors import ConfigError

__all__ = ["DeviceName", "torch_device"]

DeviceName = Literal["cpu", "cuda", "auto"]


def torch_device(name: DeviceName, *, model: str, cpu_only: str | None = None) -> torch.device:
    """The torch device a model's ``device`` setting asks for.

    Args:
        name: ``cpu``, ``cuda`` or ``auto`` (CUDA when available, else the CPU).
        model: The model's name, for the error message.
        cpu_only: Why this fit must run on the CPU (``None``: it need not). Then ``auto`` gives
            the CPU and ``cuda`` is refused.

    Raises:
        ConfigError: ``cuda`` was asked for and no CUDA device is visible, or the fit is
            CPU-only.
    """
    if name == "cpu":
        return torch.device("cpu")
    if cpu_only is not None:
        if name == "auto":
            return torch.device("cpu")
        raise ConfigError(
            f"{model}.device: got 'cuda'; expected 'cpu' or 'auto' for this fit ({cpu_only})"
        )
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        raise ConfigError(
            f"{model}.device: got 'cuda', but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "expected 'cpu' or 'auto' on this machine"
        )
    return torch.device("cuda")
