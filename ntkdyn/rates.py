"""Rate fits and verdicts on loss trajectories.

linear:    log L_k = a + k log q        -> ``linear_rate`` q (loss factor per iteration)
power law: log L_k = a + p log k        -> ``power_exponent`` p (L ~ k^p)
Both are least-squares fits over the same window of steps with their R^2. The verdict:
diverged (a non-finite loss or one recorded by training), stalled (the loss fell by less
than ``stall_factor`` over the window), else linear if R^2_linear >= R^2_power, else sublinear.
"""
from __future__ import annotations

import dataclasses

import numpy as np

VERDICTS = ("linear", "sublinear", "stalled", "diverged")


@dataclasses.dataclass(frozen=True)
class RateFit:
    verdict: str
    linear_rate: float
    r2_linear: float
    power_exponent: float
    r2_power: float
    window: tuple[int, int]

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["window"] = list(self.window)
        return d


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and R^2 of the least-squares line y ~ a + b x."""
    xc, yc = x - x.mean(), y - y.mean()
    sxx, syy = float(xc @ xc), float(yc @ yc)
    if sxx == 0:
        return float("nan"), float("nan")
    b = float(xc @ yc) / sxx
    r2 = 1.0 - float(np.sum((yc - b * xc) ** 2)) / syy if syy > 0 else 1.0
    return b, r2


def window_mask(steps: np.ndarray, loss: np.ndarray, window: tuple[float, float], floor: float) -> np.ndarray:
    """Steps in [window[0] * T, window[1] * T] (fractions of the last step T; values > 1 are
    absolute steps) with k >= 1 and loss above ``floor`` (the float-precision floor)."""
    T = steps[-1]
    lo, hi = (w * T if w <= 1 else w for w in window)
    return (steps >= max(lo, 1)) & (steps <= hi) & np.isfinite(loss) & (loss > floor)


def fit_rates(steps, loss, window=(0.1, 1.0), floor: float = 0.0, diverged: bool = False,
              stall_factor: float = 1.01) -> RateFit:
    """Fit linear and power-law rates of ``loss`` over ``window``; classify (module docstring)."""
    steps = np.asarray(steps, np.float64)
    loss = np.asarray(loss, np.float64)
    nan = float("nan")
    if diverged or not np.all(np.isfinite(loss)):
        return RateFit("diverged", nan, nan, nan, nan, (0, 0))
    mask = window_mask(steps, loss, window, floor)
    if mask.sum() < 3:  # the loss reached the floor before the window: fit from step 1 instead
        mask = (steps >= 1) & np.isfinite(loss) & (loss > floor)
    if mask.sum() < 3:
        return RateFit("stalled", nan, nan, nan, nan, (0, 0))
    k, logl = steps[mask], np.log(loss[mask])
    slope, r2_lin = _line_fit(k, logl)
    power, r2_pow = _line_fit(np.log(k), logl)
    win = (int(k[0]), int(k[-1]))
    if logl[0] - logl[-1] < np.log(stall_factor):
        return RateFit("stalled", float(np.exp(slope)), r2_lin, power, r2_pow, win)
    verdict = "linear" if r2_lin >= r2_pow else "sublinear"
    return RateFit(verdict, float(np.exp(slope)), r2_lin, power, r2_pow, win)


def max_relative_gap(reference, other, mask) -> float:
    """max over the masked steps of |other - reference| / reference."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if not np.any(mask):
        return float("nan")
    return float(np.max(np.abs(other[mask] - reference[mask]) / reference[mask]))
