r"""Post-hoc calibration of click probabilities, fitted on the validation part.

- **Isotonic** (Zadrozny & Elkan 2002): the non-decreasing step function :math:`g` minimising
  :math:`\sum_i (y_i - g(p_i))^2` over the validation rows, by pool-adjacent-violators
  (:func:`scipy.optimize.isotonic_regression`); applied by linear interpolation between the
  fitted points (constant beyond them). Keeps the ranking up to ties (AUC changes only by the
  ties it creates).
- **Platt** (Platt 1999): :math:`\sigma(a \cdot \mathrm{logit}(p) + b)` with :math:`(a, b)`
  maximising the validation log likelihood (:func:`scipy.optimize.minimize`, L-BFGS). Monotone,
  so the AUC is unchanged.
- **None**: the identity.

The output is clipped to :math:`[10^{-6}, 1 - 10^{-6}]` so that log loss stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression, minimize
from scipy.special import expit, logit

from privrank.errors import ConfigError

__all__ = ["Calibrator", "fit_calibrator"]

_CLIP = 1e-6


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map.

    Attributes:
        kind: ``isotonic``, ``platt`` or ``none``.
        x: Isotonic: the fitted points' raw probabilities (increasing).
        y: Isotonic: the calibrated probability at each point.
        a: Platt slope.
        b: Platt intercept.
    """

    kind: str
    x: tuple[float, ...] = field(default=())
    y: tuple[float, ...] = field(default=())
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw probabilities ``p``."""
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "isotonic":
            out = np.interp(p, np.asarray(self.x), np.asarray(self.y))
        elif self.kind == "platt":
            out = expit(self.a * logit(np.clip(p, _CLIP, 1 - _CLIP)) + self.b)
        else:
            out = p
        return np.clip(out, _CLIP, 1 - _CLIP)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """The calibrator of :meth:`to_dict`'s form."""
        return cls(
            data["kind"],
            tuple(data.get("x", ())),
            tuple(data.get("y", ())),
            float(data.get("a", 1.0)),
            float(data.get("b", 0.0)),
        )


def fit_calibrator(kind: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit a calibration map of ``kind`` on raw probabilities ``p`` and labels ``y``.

    Raises:
        ConfigError: Unknown kind, or no validation rows.
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if kind == "none":
        return Calibrator("none")
    if len(p) == 0:
        raise ConfigError("calibration needs validation rows; the validation part is empty")
    if kind == "isotonic":
        values, inverse = np.unique(p, return_inverse=True)
        sums = np.bincount(inverse, weights=y)
        counts = np.bincount(inverse).astype(np.float64)
        fitted = isotonic_regression(sums / counts, weights=counts, increasing=True).x
        # keep the step ends only: the first and last point of each constant block
        change = np.flatnonzero(np.diff(fitted) != 0)
        keep = np.unique(np.concatenate([[0], change, change + 1, [len(values) - 1]]))
        return Calibrator("isotonic", tuple(values[keep].tolist()), tuple(fitted[keep].tolist()))
    if kind == "platt":
        z = logit(np.clip(p, _CLIP, 1 - _CLIP))

        def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
            q = expit(params[0] * z + params[1])
            q = np.clip(q, 1e-12, 1 - 1e-12)
            value = -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))
            gradient = np.array([np.mean((q - y) * z), np.mean(q - y)])
            return float(value), gradient

        result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        return Calibrator("platt", a=float(result.x[0]), b=float(result.x[1]))
    raise ConfigError(f"unknown calibration {kind!r}; expected isotonic, platt or none")
