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

1. the **envelope** (``envelope_points``): every point of a monotone sequence; of an
   oscillating one, the points within a factor 1.25 of the line through neighbouring peaks, so the
   troughs near the zeros of a cos^2-like factor never enter;
2. **local rates** over (about 6) log-spaced sub-windows of the envelope (``local_rates``; each
   with at least two envelope points and, for an oscillation of period P steps, at least P steps):
   the per-step rate d_j = slope of log y on k (log loss factor per step) and the power exponent
   p_j = slope of log y on log k;
3. how **nearly constant** each is. Over the sub-windows the per-step rate scales as
   -d_j ~ k^b (least squares of log(-d_j) on the sub-window's mid log k, ``rate_trend`` b with
   standard error ``rate_trend_se``), so the local exponent scales as k^(b+1): b = 0 for a
   geometric sequence (constant d), b = -1 for a power law (constant p). The linear model's
   local rate is the more nearly constant when |b| < |b + 1|, i.e. b > -1/2.
   ``margin`` = (|b + 1| - |b|) / max(|b|, |b + 1|) in [-1, 1]: > 0 favours linear, < 0
   sublinear, 0 at b = -1/2 (log y ~ -sqrt k, the stretched exponential, which is neither);
4. whether the loss **rises at the end** of the window (``tail_rise``): the least-squares slope s
   (with standard error se) of log y on k over the envelope points in the window's **tail**, its
   last ``tail_fraction`` (default 10 %) of steps, lengthened to two oscillation periods when the
   sequence oscillates; the fitted rise over the tail is R = s (k_last - k_tail_first). A rise is
   **significant** when R > log(``rise_factor``) (default 10: more than a decade by the fitted line)
   and s - z se > 0 (the slope is z standard errors above 0). Float noise near a floor, the
   flanks of an oscillation's peaks (within a factor 1.25 of the envelope line) and the ripples of
   a decaying momentum method change the fitted tail line by far less than a decade. A rise that
   is significant by the slope but smaller than ``rise_factor`` does not change the verdict; its
   reason then ends with a note giving the factor and the tail.

The superlinear rule. Any positive sum of real geometric modes (GD's loss; the envelope of an
oscillating momentum method behaves as one) has log y convex in k, so its per-step
rate can only slow down: b <= 0 (b = 0 exactly for one mode). exp(-c k^a) with a > 1 has
-d ~ k^(a-1), b = a - 1 > 0: its per-step rate grows, which no fixed-step linear regime does.

Verdicts, in this order:
  diverged     a non-finite loss, or one recorded as diverged by training;
  growing      the envelope rose by more than ``stall_factor`` over the window (an unstable run
               that stayed under ``train.divergence_factor``), or it rose significantly in the
               window's tail (4.; e.g. a loss that fell for 90 % of the window and then grew);
  stalled      it changed by less than ``stall_factor``;
  undecided    fewer than 3 points above the floor, fewer than ``min_rates`` sub-windows in which
               the envelope decreases, |margin| < ``margin_min``, b within ``z`` standard errors
               of -1/2 (the local rates are too noisy to tell), or b between the linear and the
               superlinear zone (below);
  superlinear  b - z se > ``super_min`` (default 1/4: over a window [0.1 T, T] the local per-step
               rate grows by more than 10^(1/4) = 1.8x): faster than any geometric law;
  linear       margin >= margin_min, b - z se > -1/2 and b + z se <= ``super_min``;
  sublinear    margin <= -margin_min and b + z se < -1/2.
A verdict holds over its window only: every fixed-step method is eventually linear (loss factor
rho^2 per step; ``theory.asymptotic_regime`` gives rho^2 and the horizon after which that regime
sets in, ``window_position`` where the window lies relative to it, ``scope`` the sentence).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

VERDICTS = (
    "linear", "sublinear", "superlinear", "undecided", "growing", "stalled", "diverged", "unclassified",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RateFit:
    """A verdict with the numbers behind it (module docstring). ``window`` (first, last step
    fitted); ``local_linear_rate`` exp(median d_j), a loss factor per step; ``local_power_exponent``
    median p_j; ``rate_trend`` b and ``rate_trend_se``; ``change_log10`` log10 y at the envelope's
    last point minus at its first; ``subwindows`` how many local rates entered the trend;
    ``tail_rise_log10`` the fitted rise of log10 y over the window's tail (``tail_rise``; NaN when
    the tail has fewer than 3 envelope points) and ``tail_start`` the tail's first step;
    ``reason`` one line on why."""

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
    rate_trend: float = math.nan
    rate_trend_se: float = math.nan
    margin: float = math.nan
    change_log10: float = math.nan
    subwindows: int = 0
    tail_rise_log10: float = math.nan
    tail_start: int = 0
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


def oscillation_period(values) -> float:
    """Median spacing (in indices) of the peaks of a positive sequence (``envelope_peaks``), or 0
    with fewer than 3 peaks (no oscillation to speak of)."""
    pk = envelope_peaks(values)
    return float(np.median(np.diff(pk))) if pk.size >= 3 else 0.0


def envelope_points(values, tol: float = math.log(1.25)) -> np.ndarray:
    """Indices of the points of a positive, possibly oscillating sequence that lie on or near its
    upper envelope.

    With P = ``oscillation_period`` (0: every point is kept), the upper envelope between two
    consecutive peaks at most 2P apart (one cycle) is the straight line through them in log y; a
    point of that cycle is kept if it lies less than ``tol`` (natural log; default a factor 1.25)
    below it, so the flanks next to the peaks stay and the troughs near the zeros of a cos^2-like
    factor go. The partial cycles before the first peak and after the last one (if within 2P of
    the ends) are measured against the line through the first two or the last two peaks,
    extended. Gaps longer than 2P between peaks are monotone stretches: every point is kept.
    For a monotone sequence that is every point, for q^k cos^2(wk) the points with cos^2 > 0.8."""
    a = np.asarray(values, np.float64)
    n = a.size
    period = oscillation_period(a)
    if period == 0:
        return np.arange(n)
    pk = envelope_peaks(a)
    span = 2.0 * period
    with np.errstate(divide="ignore"):
        la = np.log(a)
    keep = np.ones(n, bool)

    def below_line(idx, i0, i1):  # more than tol under the line through (i0, la[i0]) and (i1, la[i1])
        line = la[i0] + (la[i1] - la[i0]) * (idx - i0) / (i1 - i0)
        return la[idx] < line - tol

    for lo, hi in zip(pk[:-1], pk[1:]):
        if hi - lo <= span:
            idx = np.arange(lo + 1, hi)
            keep[idx] = ~below_line(idx, lo, hi)
    if pk[0] <= span:
        idx = np.arange(0, pk[0])
        keep[idx] = ~below_line(idx, pk[0], pk[1])
    if n - 1 - pk[-1] <= span:
        idx = np.arange(pk[-1] + 1, n)
        keep[idx] = ~below_line(idx, pk[-2], pk[-1])
    return np.flatnonzero(keep)


def local_rates(k, logy, subwindows: int = 6, min_span: float = 0.0) -> LocalRates:
    """Local slopes of ``logy`` (envelope points, steps ``k`` >= 1 ascending) over ``subwindows``
    log-spaced sub-windows of [k[0], k[-1]]: least squares of logy on k (``per_step``) and on
    log k (``exponent``). A sub-window with fewer than 2 points or spanning fewer than
    ``min_span`` steps is merged into the next one (what is left at the end, into the last)."""
    k = np.asarray(k, np.float64)
    logy = np.asarray(logy, np.float64)
    edges = np.geomspace(k[0], k[-1], subwindows + 1)
    idx = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, subwindows - 1)
    groups: list[np.ndarray] = []
    pending = np.zeros(0, int)
    for j in range(subwindows):
        pending = np.concatenate([pending, np.flatnonzero(idx == j)])
        if pending.size >= 2 and k[pending[-1]] - k[pending[0]] >= min_span:
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


def rate_trend(lr: LocalRates) -> tuple[float, float, int]:
    """(b, its standard error, sub-windows used): least squares of log(-d_j) on the mid log k of
    each sub-window, sqrt(start * end), over the sub-windows where the envelope decreases
    (d_j < 0). NaN with fewer than 3 of them; the standard error needs 3."""
    ok = lr.per_step < 0
    if ok.sum() < 3:
        return math.nan, math.nan, int(ok.sum())
    x = 0.5 * (np.log(lr.start[ok]) + np.log(lr.end[ok]))
    y = np.log(-lr.per_step[ok])
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx == 0:
        return math.nan, math.nan, int(ok.sum())
    b = float(xc @ (y - y.mean())) / sxx
    res = y - y.mean() - b * xc
    return b, math.sqrt(float(res @ res) / (x.size - 2) / sxx), int(ok.sum())


@dataclasses.dataclass(frozen=True)
class TailRise:
    """The least-squares line of log y on k over the envelope points in a window's tail
    (``tail_rise``): its first and last step, ``slope`` (natural log per step) with standard error
    ``slope_se`` (NaN with fewer than 3 points), ``rise`` = slope x (end - start) (natural log),
    ``points`` used."""

    start: int
    end: int
    slope: float
    slope_se: float
    rise: float
    points: int

    def significant(self, rise_factor: float, z: float) -> bool:
        """rise > log(rise_factor) and slope - z slope_se > 0 (module docstring, 4.)."""
        return bool(
            math.isfinite(self.rise)
            and self.rise > math.log(rise_factor)
            and self.slope - z * self.slope_se > 0
        )


def tail_rise(k, logy, fraction: float = 0.1, min_span: float = 0.0) -> TailRise:
    """The rise of ``logy`` (envelope points at ascending steps ``k``) over the window's tail: the
    points with k >= k[-1] - max(``fraction`` (k[-1] - k[0]), ``min_span``), fitted by least
    squares logy ~ a + s k. ``min_span``: two oscillation periods for an oscillating sequence, so
    that the tail is never one rising flank of a peak."""
    k = np.asarray(k, np.float64)
    logy = np.asarray(logy, np.float64)
    if k.size == 0:
        return TailRise(0, 0, math.nan, math.nan, math.nan, 0)
    sel = k >= k[-1] - max(fraction * (k[-1] - k[0]), min_span)
    kt, lt = k[sel], logy[sel]
    start, end = int(kt[0]), int(kt[-1])
    if kt.size < 3 or kt[-1] == kt[0]:
        return TailRise(start, end, math.nan, math.nan, math.nan, int(kt.size))
    xc = kt - kt.mean()
    sxx = float(xc @ xc)
    s = float(xc @ (lt - lt.mean())) / sxx
    res = lt - lt.mean() - s * xc
    se = math.sqrt(float(res @ res) / (kt.size - 2) / sxx)
    return TailRise(start, end, s, se, s * float(kt[-1] - kt[0]), int(kt.size))


def fit_rates(
    steps,
    loss,
    window=(0.1, 1.0),
    floor: float = 0.0,
    diverged: bool = False,
    stall_factor: float = 1.01,
    *,
    floor_star: float = 0.0,
    margin_min: float = 0.2,
    z: float = 2.0,
    subwindows: int = 6,
    min_rates: int = 4,
    super_min: float = 0.25,
    rise_factor: float = 10.0,
    tail_fraction: float = 0.1,
) -> RateFit:
    """Fit and classify ``loss`` - ``floor_star`` over ``window`` (module docstring).

    ``floor``: values of L - L* at or below it are float noise and left out (if fewer than 3
    points of the window remain, the fit falls back to all steps >= 1 above it). ``floor_star``
    = L* > 0 makes ``fitted_on`` "L - L*". ``super_min``, ``rise_factor``, ``tail_fraction``: the
    superlinear and tail-rise rules (module docstring)."""
    steps = np.asarray(steps, np.float64)
    loss = np.asarray(loss, np.float64)
    nan = float("nan")
    fitted_on = "L - L*" if floor_star > 0 else "L"
    tag: dict[str, Any] = dict(fitted_on=fitted_on, floor_star=float(floor_star))
    if diverged or not np.all(np.isfinite(loss)):
        return RateFit(
            "diverged",
            nan,
            nan,
            nan,
            nan,
            (0, 0),
            **tag,
            reason="training recorded divergence" if diverged else "non-finite loss",
        )
    y = loss - floor_star
    mask = window_mask(steps, y, window, floor)
    if mask.sum() < 3:  # the loss reached the floor before the window: fit from step 1 instead
        mask = (steps >= 1) & (y > floor)
    if mask.sum() < 3:
        return RateFit(
            "undecided",
            nan,
            nan,
            nan,
            nan,
            (0, 0),
            **tag,
            reason=f"fewer than 3 steps with {fitted_on} above the floor {floor:.3g}",
        )
    k, logy = steps[mask], np.log(y[mask])
    slope, r2_lin = _line_fit(k, logy)
    power, r2_pow = _line_fit(np.log(k), logy)
    base = (float(np.exp(slope)), r2_lin, power, r2_pow, (int(k[0]), int(k[-1])))

    env = envelope_points(y[mask])
    ke, le = k[env], logy[env]
    change = float(le[-1] - le[0])
    period_steps = oscillation_period(y[mask]) * float(np.median(np.diff(k)))
    lr = local_rates(ke, le, subwindows, period_steps) if env.size >= 2 else None
    b, se, used = rate_trend(lr) if lr is not None and lr.per_step.size else (nan, nan, 0)
    margin = (abs(b + 1) - abs(b)) / max(abs(b), abs(b + 1)) if math.isfinite(b) else nan
    formed = 0 if lr is None else lr.per_step.size
    tr = tail_rise(ke, le, tail_fraction, 2.0 * period_steps)
    numbers: dict[str, Any] = dict(
        local_linear_rate=float(np.exp(np.median(lr.per_step))) if lr is not None and formed else nan,
        local_power_exponent=float(np.median(lr.exponent)) if lr is not None and formed else nan,
        rate_trend=b,
        rate_trend_se=se,
        margin=margin,
        change_log10=change / math.log(10),
        subwindows=used,
        tail_rise_log10=tr.rise / math.log(10),
        tail_start=tr.start,
        **tag,
    )
    fell = f"the envelope of {fitted_on} changed by a factor {math.exp(change):.3g}"
    rises = math.isfinite(tr.rise) and tr.rise > 0 and tr.slope - z * tr.slope_se > 0
    note = (
        f"; note: it rises by a factor {math.exp(tr.rise):.3g} (fitted) over the tail k = "
        f"{tr.start}..{tr.end}, below the {rise_factor:g}x that makes it growing"
        if rises
        else ""
    )

    def verdict(name: str, reason: str) -> RateFit:
        return RateFit(name, *base, **numbers, reason=reason + (note if name != "growing" else ""))

    if change > math.log(stall_factor):
        return verdict("growing", f"{fell} (up by more than {stall_factor:g})")
    if tr.significant(rise_factor, z):
        return verdict(
            "growing",
            f"{fell}, but it rose by a factor {math.exp(tr.rise):.3g} (fitted) over the tail k = "
            f"{tr.start}..{tr.end} (slope {tr.slope:.3g} +- {tr.slope_se:.2g} per step; significant: "
            f"more than {rise_factor:g}x and {z:g} standard errors above 0)",
        )
    if change >= -math.log(stall_factor):
        return verdict("stalled", f"{fell} (less than {stall_factor:g})")
    if used < min_rates:
        why = (
            f"{formed - used} of {formed} sub-windows not decreasing"
            if used < formed
            else f"window too short for {min_rates} sub-windows"
            + (f" of one oscillation period ({period_steps:.3g} steps)" if period_steps else "")
        )
        return verdict("undecided", f"{why}: {used} local rates, need {min_rates}")
    trend = (
        f"local per-step rate ~ k^b, b = {b:.2f} +- {se:.2f} (0 linear, -1 power law; "
        f"{used} sub-windows): margin {margin:+.2f}"
    )
    if b - z * se > super_min:
        return verdict(
            "superlinear",
            f"{trend}; the per-step rate grows (b {z:g} standard errors above {super_min:g}): "
            "faster than any geometric law, which has b <= 0",
        )
    if margin >= margin_min and b - z * se > -0.5 and b + z * se <= super_min:
        return verdict("linear", trend)
    if margin <= -margin_min and b + z * se < -0.5:
        return verdict("sublinear", trend)
    return verdict(
        "undecided",
        f"{trend}; needs |margin| >= {margin_min:g} and b {z:g} standard errors from -1/2 "
        f"(and, for linear, at most {super_min:g}; superlinear above it)",
    )


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
    if fit.verdict in ("linear", "sublinear", "superlinear", "undecided") and math.isfinite(fit.margin):
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


FLOAT_MARGIN = 100  # losses below (FLOAT_MARGIN eps)^2 L0 are float noise (``loss_floor``)


def loss_floor(dtype, L0: float, margin: float = FLOAT_MARGIN) -> float:
    """The float floor of a loss that started at ``L0`` in ``dtype``: (margin eps)^2 L0. An error
    e whose entries are known to about margin eps |e_0| gives L = (c/2)||e||^2 known to that level;
    below it round-off, not the dynamics, sets the loss, so fits and gaps leave it out. The one
    definition of the floor; callers that compare against a trained network's outputs (whose
    round-off accumulates over steps) pass a larger ``margin`` and say why."""
    return (margin * float(np.finfo(dtype).eps)) ** 2 * float(L0)


def tail_fit(step, loss, window, floor: float = 0.0, peaks_only: bool = True, min_points: int = 4) -> dict:
    """Fit log L = a + p log k + k log q over ``window`` (absolute steps) to the finite losses above
    ``floor`` (only the envelope peaks ``envelope_peaks`` when ``peaks_only``): power exponent p,
    tail loss factor q and crossover step k* = p / log q (where the exponential factor's share of
    the log-log slope p + k log q equals the power law's; None unless p < 0 and q < 1). Fewer than
    ``min_points`` points leave p, q, k* None.

    Returns:
        {"window": [k0, k1], "peaks" | "points": count used, "power_exponent", "tail_rate",
        "crossover_step"}.
    """
    step, loss = np.asarray(step, np.float64), np.asarray(loss, np.float64)
    ok = (step >= window[0]) & (step <= window[1]) & np.isfinite(loss) & (loss > floor)
    if peaks_only:
        pk = envelope_peaks(loss)
        sel = pk[ok[pk]]
    else:
        sel = np.flatnonzero(ok)
    out: dict[str, Any] = {
        "window": [float(window[0]), float(window[1])],
        "peaks" if peaks_only else "points": int(sel.size),
        "power_exponent": None,
        "tail_rate": None,
        "crossover_step": None,
    }
    if sel.size < min_points:
        return out
    k = step[sel]
    M = np.stack([np.ones_like(k), np.log(k), k], axis=1)
    _, p, logq = np.linalg.lstsq(M, np.log(loss[sel]), rcond=None)[0]
    out.update(
        power_exponent=float(p),
        tail_rate=float(math.exp(logq)),
        crossover_step=float(p / logq) if logq < 0 and p < 0 else None,
    )
    return out


def cross_entropy_verdict(fit: RateFit, separable: bool) -> RateFit:
    """The verdict on a cross-entropy loss (softmax_ce, logistic; ``models.loss_value``).

    On data the kernel separates (K = c H positive definite: every labelling is interpolated, so the
    outputs can grow along a separating direction for ever) the loss has no minimiser: it tends to 0
    while the margin grows like log t, so L decays like a power of t times log factors (about 1/t for
    gradient flow on an exponential-tailed loss; Soudry et al. 2018, JMLR 19(70)), not geometrically,
    and a fixed window's "linear" or "sublinear" label depends on where the window lies. The verdict
    is then ``unclassified`` with the reason; the fitted numbers (local rate, power exponent) are
    kept. Without separability the loss has a minimiser and the ordinary verdict stands. A diverged
    run stays ``diverged``."""
    if fit.verdict == "diverged" or not separable:
        return fit
    reason = (
        f"not classified: cross-entropy on separable data (K positive definite) has no minimiser; the "
        f"loss decays like a power of t with log factors, not geometrically (window fit: "
        f"{fit.verdict}; local power exponent {fit.local_power_exponent:.3g})"
    )
    return dataclasses.replace(fit, verdict="unclassified", reason=reason)
