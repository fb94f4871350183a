"""Rate fits and verdicts on loss trajectories.

Everything here works on the **fitted quantity** y_k = L_k - L* over a window of steps, where
L* is the loss floor (0 for data the model can interpolate; for data it cannot, the
least-squares floor (c/2)||P_null e0||^2 from ``theory.loss_floor_star``); ``fitted_on`` says
which. Natural logs throughout, except the ``*_log10`` fields (decades).

Old global fits (kept, as before; least squares over all window points):
  linear:    log y_k = a + k log q   -> ``linear_rate`` q (loss factor per step), ``r2_linear``
  power law: log y_k = a + p log k   -> ``power_exponent`` p (y ~ k^p), ``r2_power``

The verdict does not use those R^2: a sum of geometric modes, an oscillating envelope or a
window that starts near a zero of the oscillation fool them. It uses

1. the **envelope**: the points of y that are not inside one cycle of an oscillation
   (``envelope_points``): for a monotone sequence every point, for an oscillating one its
   peaks (local maxima), so the zeros of cos^2-like factors never enter;
2. **local rates** over log-spaced sub-windows of the envelope (at least two envelope points
   each): the per-step rate d_j = slope of log y on k (log loss factor per step) and the power
   exponent p_j = slope of log y on log k;
3. their **spreads**, s = median|x - median x| / |median x| (relative median absolute
   deviation; infinite unless the median local slope is negative). A geometric sequence has
   constant d_j (s_linear = 0); a power law has constant p_j (s_power = 0).
   ``margin`` = (s_power - s_linear) / max(s_power, s_linear) in [-1, 1]: > 0 favours linear,
   < 0 sublinear. If the local per-step rate scales as k^b (log y ~ -k^(1+b)), s_linear = s_power
   at b = -1/2, the stretched exponential exp(-c sqrt k), which is neither.

Verdicts, in this order:
  diverged   a non-finite loss, or one recorded as diverged by training;
  undecided  fewer than 3 points above the floor, fewer than ``min_rates`` sub-windows, or
             |margin| < ``margin_min`` (no model is clearly the more nearly constant);
  growing    the envelope rose by more than ``stall_factor`` over the window (an unstable run
             that stayed under ``train.divergence_factor``);
  stalled    it changed by less than ``stall_factor``;
  linear     margin >= margin_min;   sublinear   margin <= -margin_min.
A verdict holds over its window only: every fixed-step method is eventually linear (loss factor
rho^2 per step; ``theory.asymptotic_regime`` gives rho^2 and the horizon after which that regime
sets in, ``window_position`` where the window lies relative to it, ``scope`` the sentence).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

VERDICTS = ("linear", "sublinear", "undecided", "growing", "stalled", "diverged")


@dataclasses.dataclass(frozen=True)
class RateFit:
    """A verdict with the numbers behind it (module docstring). ``window`` (first, last step
    fitted); ``local_linear_rate`` exp(median d_j), a loss factor per step; ``local_power_exponent``
    median p_j; ``change_log10`` log10 y at the envelope's last point minus at its first;
    ``subwindows`` how many local rates were formed; ``reason`` one line on why."""

    verdict: str
    linear_rate: float
    r2_linear: float
    power_exponent: float
    r2_power: float
    window: tuple[int, int]
    fitted_on: str = "L"
    floor_star: float = 0.0
    local_linear_rate: float = math.nan
    local_power_exponent: float = math.nan
    spread_linear: float = math.nan
    spread_power: float = math.nan
    margin: float = math.nan
    change_log10: float = math.nan
    subwindows: int = 0
    reason: str = ""

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["window"] = list(self.window)
        return d


@dataclasses.dataclass(frozen=True)
class LocalRates:
    """Per sub-window: first and last step, slope of log y on k (``per_step``) and on log k
    (``exponent``)."""

    start: np.ndarray
    end: np.ndarray
    per_step: np.ndarray
    exponent: np.ndarray


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


def envelope_peaks(loss) -> np.ndarray:
    """Indices of the interior local maxima (>= both neighbours) of a positive sequence, finite
    and > 0 there."""
    a = np.asarray(loss, np.float64)
    return np.flatnonzero((a[1:-1] >= a[:-2]) & (a[1:-1] >= a[2:]) & np.isfinite(a[1:-1]) & (a[1:-1] > 0)) + 1


def envelope_points(values) -> np.ndarray:
    """Indices of the upper envelope of a positive, possibly oscillating sequence.

    With P the median spacing of its peaks (``envelope_peaks``; needs 3 peaks, else P = 0, no
    oscillation): a point strictly between two consecutive peaks at most 2P apart lies inside a
    cycle (a flank or a trough) and is dropped, and so are the points before the first peak
    and after the last one when that peak is within 2P of the end (a partial cycle). Kept:
    the peaks and the points of monotone stretches longer than 2P. For a monotone sequence
    that is every point, for a sampled q^k cos^2(wk) its peaks. Index order is preserved."""
    a = np.asarray(values, np.float64)
    n = a.size
    pk = envelope_peaks(a)
    if pk.size < 3:
        return np.arange(n)
    span = 2.0 * float(np.median(np.diff(pk)))
    keep = np.ones(n, bool)
    for lo, hi in zip(pk[:-1], pk[1:]):
        if hi - lo <= span:
            keep[lo + 1: hi] = False
    if pk[0] <= span:
        keep[: pk[0]] = False
    if n - 1 - pk[-1] <= span:
        keep[pk[-1] + 1:] = False
    return np.flatnonzero(keep)


def local_rates(k, logy, subwindows: int = 10) -> LocalRates:
    """Local slopes of ``logy`` (envelope points, steps ``k`` >= 1 ascending) over ``subwindows``
    log-spaced sub-windows of [k[0], k[-1]]; a sub-window with fewer than 2 points is merged
    into the next one (the last into the one before)."""
    k = np.asarray(k, np.float64)
    logy = np.asarray(logy, np.float64)
    edges = np.geomspace(k[0], k[-1], subwindows + 1)
    idx = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, subwindows - 1)
    groups: list[np.ndarray] = []
    pending = np.zeros(0, int)
    for j in range(subwindows):
        pending = np.concatenate([pending, np.flatnonzero(idx == j)])
        if pending.size >= 2:
            groups.append(pending)
            pending = np.zeros(0, int)
    if pending.size and groups:
        groups[-1] = np.concatenate([groups[-1], pending])
    start, end, per_step, exponent = [], [], [], []
    for g in groups:
        start.append(k[g[0]])
        end.append(k[g[-1]])
        per_step.append(_line_fit(k[g], logy[g])[0])
        exponent.append(_line_fit(np.log(k[g]), logy[g])[0])
    return LocalRates(*(np.asarray(v, np.float64) for v in (start, end, per_step, exponent)))


def relative_spread(x) -> float:
    """median|x - median x| / |median x| when median x < 0 (a decreasing loss), else inf."""
    x = np.asarray(x, np.float64)
    med = float(np.median(x))
    if not med < 0:
        return math.inf
    return float(np.median(np.abs(x - med))) / abs(med)


def fit_rates(steps, loss, window=(0.1, 1.0), floor: float = 0.0, diverged: bool = False,
              stall_factor: float = 1.01, *, floor_star: float = 0.0, margin_min: float = 0.2,
              subwindows: int = 10, min_rates: int = 4) -> RateFit:
    """Fit and classify ``loss`` - ``floor_star`` over ``window`` (module docstring).

    ``floor``: values of L - L* at or below it are float noise and left out (if fewer than 3
    points of the window remain, the fit falls back to all steps >= 1 above it). ``floor_star``
    = L* > 0 makes ``fitted_on`` "L - L*"."""
    steps = np.asarray(steps, np.float64)
    loss = np.asarray(loss, np.float64)
    nan = float("nan")
    fitted_on = "L - L*" if floor_star > 0 else "L"
    tag = dict(fitted_on=fitted_on, floor_star=float(floor_star))
    if diverged or not np.all(np.isfinite(loss)):
        return RateFit("diverged", nan, nan, nan, nan, (0, 0), **tag,
                       reason="training recorded divergence" if diverged else "non-finite loss")
    y = loss - floor_star
    mask = window_mask(steps, y, window, floor)
    if mask.sum() < 3:  # the loss reached the floor before the window: fit from step 1 instead
        mask = (steps >= 1) & (y > floor)
    if mask.sum() < 3:
        return RateFit("undecided", nan, nan, nan, nan, (0, 0), **tag,
                       reason=f"fewer than 3 steps with {fitted_on} above the floor {floor:.3g}")
    k, logy = steps[mask], np.log(y[mask])
    slope, r2_lin = _line_fit(k, logy)
    power, r2_pow = _line_fit(np.log(k), logy)
    base = (float(np.exp(slope)), r2_lin, power, r2_pow, (int(k[0]), int(k[-1])))

    env = envelope_points(y[mask])
    ke, le = k[env], logy[env]
    change = float(le[-1] - le[0])
    lr = local_rates(ke, le, subwindows) if env.size >= 2 else None
    n_rates = 0 if lr is None else lr.per_step.size
    s_lin = relative_spread(lr.per_step) if n_rates else nan
    s_pow = relative_spread(lr.exponent) if n_rates else nan
    if n_rates and math.isfinite(max(s_lin, s_pow)) and max(s_lin, s_pow) > 0:
        margin = (s_pow - s_lin) / max(s_pow, s_lin)
    elif n_rates and math.isfinite(s_lin) != math.isfinite(s_pow):
        margin = 1.0 if math.isfinite(s_lin) else -1.0
    else:
        margin = nan
    numbers = dict(local_linear_rate=float(np.exp(np.median(lr.per_step))) if n_rates else nan,
                   local_power_exponent=float(np.median(lr.exponent)) if n_rates else nan,
                   spread_linear=s_lin, spread_power=s_pow, margin=margin, change_log10=change / math.log(10),
                   subwindows=n_rates, **tag)
    fell = f"the envelope of {fitted_on} changed by a factor {math.exp(change):.3g}"
    if change > math.log(stall_factor):
        return RateFit("growing", *base, **numbers, reason=f"{fell} (up by more than {stall_factor:g})")
    if change >= -math.log(stall_factor):
        return RateFit("stalled", *base, **numbers, reason=f"{fell} (less than {stall_factor:g})")
    if n_rates < min_rates:
        return RateFit("undecided", *base, **numbers,
                       reason=f"window too short: {n_rates} sub-windows of envelope points, need {min_rates}")
    spreads = f"spread of local per-step rates {s_lin:.3g}, of local exponents {s_pow:.3g}"
    if not margin >= margin_min and not margin <= -margin_min:
        return RateFit("undecided", *base, **numbers,
                       reason=f"{spreads}: margin {margin:.2f} within +-{margin_min:g}")
    verdict = "linear" if margin > 0 else "sublinear"
    return RateFit(verdict, *base, **numbers, reason=f"{spreads}: margin {margin:.2f}")


def window_position(window, horizon: float | None) -> str | None:
    """Where the fitted steps [first, last] lie relative to a theory horizon: "before" (last <=
    horizon), "after" (first >= horizon) or "straddles"; None without a horizon or window."""
    if horizon is None or not math.isfinite(horizon) or window is None or window[1] <= 0:
        return None
    first, last = window
    return "before" if last <= horizon else "after" if first >= horizon else "straddles"


def scope(fit: RateFit, regime: dict | None) -> str:
    """One sentence: the verdict, its window and what theory says holds beyond it.
    ``regime``: ``theory.asymptotic_regime``'s dict (``regime``, ``rate``, ``horizon``,
    ``horizon_kind``) or None."""
    if fit.verdict == "diverged":
        return "diverged"
    w = f"over k = {fit.window[0]}..{fit.window[1]}" if fit.window[1] > 0 else "(no window)"
    head = f"{fit.verdict} {w}" + (f" on {fit.fitted_on}" if fit.fitted_on != "L" else "")
    if fit.verdict in ("linear", "sublinear", "undecided") and math.isfinite(fit.margin):
        head += f" (margin {fit.margin:+.2f})"
    if not regime or regime.get("regime") is None:
        return head
    tail = f"asymptotically {regime['regime']}"
    if regime.get("rate") is not None:
        tail += f", loss factor {regime['rate']:.6g} per step"
    pos = window_position(fit.window, regime.get("horizon"))
    if pos is not None:
        where = {"before": "ends before", "after": "starts after", "straddles": "straddles"}[pos]
        tail += f"; the window {where} the {regime['horizon_kind']} k = {regime['horizon']:.4g}"
    return f"{head}; {tail}"


def max_relative_gap(reference, other, mask) -> float:
    """max over the masked steps of |other - reference| / reference."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if not np.any(mask):
        return float("nan")
    return float(np.max(np.abs(other[mask] - reference[mask]) / reference[mask]))


@dataclasses.dataclass(frozen=True)
class LogGap:
    """max and mean over ``steps`` steps of |log10 L_pred - log10 L_ref| (decades); NaN if none."""

    max: float
    mean: float
    steps: int

    def as_dict(self) -> dict:
        f = lambda v: v if math.isfinite(v) else None
        return {"max": f(self.max), "mean": f(self.mean), "steps": self.steps}


def log_gap(pred, ref, floor: float = 0.0, mask=None) -> LogGap:
    """|log10 L_pred - log10 L_ref| (decades) over the steps in ``mask`` (all if None) where both
    are finite and above ``floor``: its max and mean. Unlike ``max_relative_gap`` it is symmetric
    and does not saturate when a prediction falls orders of magnitude below the training loss."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    m = np.isfinite(pred) & np.isfinite(ref) & (pred > floor) & (ref > floor)
    if mask is not None:
        m &= np.asarray(mask, bool)
    if not m.any():
        return LogGap(math.nan, math.nan, 0)
    d = np.abs(np.log10(pred[m]) - np.log10(ref[m]))
    return LogGap(float(np.max(d)), float(np.mean(d)), int(m.sum()))


def difference_floor(floor: float, floor_star: float, eps: float, steps: int = 0) -> float:
    """The noise floor of y = L - L*: ``floor`` (that of L) plus (100 + 4 ``steps``) eps L*. A loss
    near L* is known only to about eps L* in a dtype of machine epsilon ``eps`` (100 eps of slack);
    a recurrence run for ``steps`` steps also moves the null modes, whose computed eigenvalues are
    ~eps lambda_max rather than 0, by up to a factor (1 + 2 eps)^(2 steps) ~ 1 + 4 steps eps (pass
    ``steps`` for predictions iterated in float; training's outputs on repeated inputs are equal)."""
    return float(floor) + (100.0 + 4.0 * steps) * float(eps) * float(floor_star)
