"""The ``device`` option of SASRec and Mult-VAE: ``cpu`` is the old path, ``auto`` falls back to
the CPU, ``cuda`` is refused clearly without a GPU, and (on a machine with one) a CUDA fit and
CUDA scoring agree with the CPU's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.data.splits import LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models._device import torch_device
from privrank.models.base import FitOptions
from privrank.models.sasrec import SASRec
from privrank.models.vae import MultVAE
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)
GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA device on this machine")


def sasrec(**overrides) -> SASRec:
    params = dict(factors=16, max_length=10, epochs=4, batch_size=32, learning_rate=0.01)
    return SASRec(**(params | overrides))


def vae(**overrides) -> MultVAE:
    params = dict(hidden=32, latent=8, epochs=4, batch_size=16)
    return MultVAE(**(params | overrides))


def weights(model) -> dict[str, np.ndarray]:
    return {k: v for k, v in model._state().items() if k.startswith("network.")}


def test_the_default_is_the_cpu():
    assert SASRec().config.device == "cpu"
    assert MultVAE().config.device == "cpu"
    assert torch_device("cpu", model="SASRec") == torch.device("cpu")


@pytest.mark.parametrize("make", [sasrec, vae], ids=["sasrec", "mult-vae"])
def test_auto_without_a_gpu_is_the_cpu_path_exactly(make):
    if GPU:
        pytest.skip("a CUDA device is visible: auto means cuda here")
    cpu = make(device="cpu").fit(DATA, FitOptions(seed=3))
    auto = make(device="auto").fit(DATA, FitOptions(seed=3))
    for name, value in weights(cpu).items():
        np.testing.assert_array_equal(weights(auto)[name], value)
    users = np.arange(10)
    np.testing.assert_array_equal(auto.score(users), cpu.score(users))


@pytest.mark.parametrize("make", [sasrec, vae], ids=["sasrec", "mult-vae"])
def test_cuda_without_a_gpu_is_refused_naming_the_option(make):
    if GPU:
        pytest.skip("a CUDA device is visible")
    with pytest.raises(ConfigError, match=r"device: got 'cuda'.*no CUDA device"):
        make(device="cuda").fit(DATA, FitOptions(seed=0))


@pytest.mark.parametrize("make", [sasrec, vae], ids=["sasrec", "mult-vae"])
def test_private_fits_refuse_cuda_and_run_auto_on_the_cpu(make):
    spec = PrivacySpec(epsilon=8.0, delta=1e-5, max_interactions_per_user=20)
    with pytest.raises(ConfigError, match="DP-SGD runs on the CPU"):
        make(device="cuda", epochs=1).fit(DATA, FitOptions(seed=0, privacy=spec))
    assert torch_device("auto", model="SASRec", cpu_only="DP-SGD") == torch.device("cpu")


def test_the_config_refuses_an_unknown_device():
    with pytest.raises(ValueError, match="device"):
        SASRec(device="tpu")


@needs_gpu
def test_sasrec_on_cuda_trains_as_on_the_cpu():
    # Without dropout the only differences are floating-point summation order: same batches,
    # same negatives (drawn on the CPU generator), same initial weights.
    parts = split(DATA, LeaveLastOut(validation=True), seed=0)
    models = {
        d: sasrec(device=d, dropout=0.0, loss=loss).fit(
            parts.train, FitOptions(seed=5, validation=parts.validation)
        )
        for d in ("cpu", "cuda")
        for loss in ("softmax",)
    }
    for name, value in weights(models["cpu"]).items():
        np.testing.assert_allclose(weights(models["cuda"])[name], value, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(
        models["cuda"].validation_history_, models["cpu"].validation_history_, atol=1e-3
    )
    users = np.arange(20)
    scores = models["cuda"].score(users)
    assert isinstance(scores, np.ndarray)
    np.testing.assert_allclose(scores, models["cpu"].score(users), rtol=1e-3, atol=1e-3)


@needs_gpu
def test_mult_vae_on_cuda_scores_as_on_the_cpu():
    # The latent noise comes from the device's generator, so compare the scoring of one set of
    # weights on each device, and check that a CUDA fit learns (its validation is recorded).
    model = vae().fit(DATA, FitOptions(seed=1))
    users = np.arange(20)
    expected = model.score(users)
    model.network_.to("cuda")
    np.testing.assert_allclose(model.score(users), expected, rtol=1e-4, atol=1e-5)
    parts = split(DATA, LeaveLastOut(validation=True), seed=0)
    fitted = vae(device="cuda").fit(parts.train, FitOptions(seed=1, validation=parts.validation))
    assert fitted.validation_history_.shape[0] >= 1
    assert next(fitted.network_.parameters()).is_cuda
