"""Control-theory view of the optimizers, exact per NTK eigenmode (float64, numpy only).

Wu et al. (2021) model SGD as a first-order control system, SGD-momentum as a second-order one
and NAG as a second-order one with an extra zero. In the kernel regime this is exact: each
eigenvalue lambda of K = c H is a separate linear plant.

**State space.** For an optimizer declared as a linear method (``optimizers``), the output-space
state of one mode is X = (u, J z_1, ..., J z_p) (points as outputs, vectors as J v), and with the
target y as input

    X_k = A_k X_{k-1} + B y,   u_k = C X_k,
    A_k = T_k + lambda u_k e_0^T (``optimizers.companion``),  B = -lambda u_k,  C = e_0^T.

The error e = u - y obeys X~_k = A_k X~_{k-1} from X~_0 = (e_0, e_0 for points, 0 for vectors)
(``optimizers.initial_state``). Recurrence-only optimizers (``optimizers.RECURRENCE_ONLY``:
implicit GD, A = (1 + eta lambda)^{-1}) give (A, B, C, x0) directly.

**Transfer function reported**: G(z) = U(z) / Y(z) = C (zI - A)^{-1} B, target -> output, zero
initial state; scheduled methods (NAG-C, OGM, Adams-Bashforth start-up) are reported frozen at
k -> infinity. Its poles are the eigenvalues of A (the same for every input/output pair) and its
zeros are the roots of det(zI - A + BC) - det(zI - A). G(1) = 1 for every convergent method (the
output tracks the target). A zero at z = 0 is a pure one-step advance (z F(z) is F shifted by one
step) and does not shape the response: GD has none, HB has only that one (G = eta lam z /
(z^2 - (1 + beta - eta lam) z + beta)), while NAG, whose gradient is taken at the look-ahead point,
has G = eta lam ((1 + beta) z - beta) / (z^2 - (1 + beta)(1 - eta lam) z + beta (1 - eta lam)): a
finite zero at z = beta / (1 + beta). The free error response from an initial condition has
z-transform C (zI - A)^{-1} z X~_0 whose numerator zeros depend on X~_0; the step response of G
is exactly 1 - e_k / e_0 (the free response normalised), so overshoot and settling read from it.

**Per-mode quantities**: poles, zeros, spectral radius rho (the per-iteration error contraction;
the loss factor is rho^2), overshoot max_k (s_k - 1)^+ of the step response s_k, settling
iterations (the first K with |s_k - 1| <= band for all k >= K, band = 2%), and the continuous
counterpart from the limiting ODE: natural frequency omega_n and damping ratio zeta (per unit ODE
time; t -> infinity values for vanishing damping), for the low-resolution ODE (``spec.ode``) and
the high-resolution one (``spec.ode_hr``), and the same pair read off the discrete system itself
(``discrete_equivalent``: from both dominant z-poles, s = log z / time_step, omega_n^2 = s1 s2,
zeta = -(s1 + s2) / (2 omega_n); it tends to the ODE's values as eta -> 0). Settling is certified, not
truncated: the trajectory is iterated until a Lyapunov bound |C x|^2 <= (C P^-1 C^T) x^T P x
(A^T P A - P = -I) guarantees that no later step leaves the band (for scheduled methods with the
frozen k -> infinity matrix).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ntkdyn import odes, optimizers, rates, results, theory

BAND = 0.02


# --------------------------------------------------------------------------- declarations
get = optimizers.modal_spec  # an OptimizerSpec with a recurrence, or a recurrence-only ModalSpec


def resolve(spec, hyper: dict, lam) -> dict:
    """Defaults filled, then ``spec.tune(hyper, lam)`` where declared (``optimizers.resolve_hyper``)."""
    return optimizers.resolve_hyper(spec, hyper, lam)


@dataclasses.dataclass
class StateSpace:
    """x_k = A x_{k-1} + B y, u_k = C x_k per mode; x0: free-response state for e_0 = 1."""

    lam: np.ndarray  # (n,)
    A: np.ndarray  # (n, d, d)
    B: np.ndarray  # (n, d)
    C: np.ndarray  # (d,)
    x0: np.ndarray  # (n, d)


ASYMPTOTIC_K = 1e12


def state_space(spec, hyper: dict, lam, k: float | None = None) -> StateSpace:
    """(A, B, C, x0) per mode at update k (None: the k -> infinity system for scheduled methods)."""
    lam = np.atleast_1d(np.asarray(lam, np.float64))
    if isinstance(spec, optimizers.ModalSpec):
        A, B, C, x0 = spec.system(hyper, lam)
        return StateSpace(
            lam,
            np.asarray(A, np.float64),
            np.asarray(B, np.float64),
            np.asarray(C, np.float64),
            np.asarray(x0, np.float64),
        )
    kk = (1.0 if spec.constant else ASYMPTOTIC_K) if k is None else float(k)
    A = optimizers.companion(spec, hyper, lam, kk)
    _, u = spec.method.step(hyper, kk)
    u = np.asarray(u, np.float64)
    d = u.size
    return StateSpace(
        lam, A, -lam[:, None] * u, np.eye(d)[0], optimizers.initial_state(spec, np.ones_like(lam))
    )


def poles(ss: StateSpace) -> np.ndarray:
    """Eigenvalues of A per mode, largest modulus first: (n, d) complex."""
    p = np.linalg.eigvals(ss.A)
    order = np.argsort(-np.abs(p), axis=-1, kind="stable")
    return np.take_along_axis(p, order, axis=-1)


def spectral_radius(ss: StateSpace) -> np.ndarray:
    return optimizers.spectral_radius(ss.A)


def transfer_function(ss: StateSpace, tol: float = 1e-12) -> tuple[list[np.ndarray], np.ndarray]:
    """Numerator (leading zeros trimmed) and monic denominator coefficients of G(z) = C (zI - A)^{-1} B
    per mode, highest power first: N(z) = det(zI - A + B C) - det(zI - A), D(z) = det(zI - A)."""
    nums, dens = [], []
    for A, B in zip(ss.A, ss.B):
        den = np.real(np.poly(A))
        num = np.real(np.poly(A - np.outer(B, ss.C))) - den
        scale = max(np.max(np.abs(num)), np.max(np.abs(B)) * np.max(np.abs(ss.C)), 1e-300)
        num = np.where(np.abs(num) < tol * scale, 0.0, num)
        nz = np.flatnonzero(num)
        nums.append(num[nz[0] :] if nz.size else np.zeros(1))
        dens.append(den)
    return nums, np.asarray(dens)


def zeros(ss: StateSpace) -> list[np.ndarray]:
    """Finite zeros of G(z) per mode (roots of the trimmed numerator)."""
    nums, _ = transfer_function(ss)
    return [np.roots(num) if num.size > 1 else np.zeros(0, complex) for num in nums]


def dc_gain(ss: StateSpace) -> np.ndarray:
    """G(1) = C (I - A)^{-1} B per mode (1 when the output settles on the target)."""
    d = ss.A.shape[-1]
    return np.einsum("j,nj->n", ss.C, np.linalg.solve(np.eye(d) - ss.A, ss.B[..., None])[..., 0])


# --------------------------------------------------------------------------- responses
def free_response(spec, hyper: dict, lam, steps: int) -> np.ndarray:
    """e_k / e_0 per mode for k = 0..steps (the actual schedule from k = 1): (steps + 1, n)."""
    lam = np.atleast_1d(np.asarray(lam, np.float64))
    if isinstance(spec, optimizers.ModalSpec):
        ss = state_space(spec, hyper, lam)
        out = np.empty((steps + 1, lam.size))
        x = ss.x0.copy()
        out[0] = x @ ss.C
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(1, steps + 1):
                x = np.einsum("nij,nj->ni", ss.A, x)
                out[k] = x @ ss.C
        return out
    return theory.discrete_modes(spec, hyper, lam, np.ones_like(lam), steps)


def step_response(spec, hyper: dict, lam, steps: int) -> np.ndarray:
    """Output for a unit step in the target from rest: s_k = 1 - e_k / e_0, (steps + 1, n)."""
    return 1.0 - free_response(spec, hyper, lam, steps)


def lyapunov(A: np.ndarray) -> np.ndarray:
    """P with A^T P A - P = -I for each stable A in a stack (Kronecker solve; d <= 4 here)."""
    n, d, _ = A.shape
    At = np.swapaxes(A, -1, -2)
    M = np.eye(d * d) - np.einsum("nij,nkl->nikjl", At, At).reshape(n, d * d, d * d)
    P = np.linalg.solve(M, np.broadcast_to(np.eye(d).reshape(d * d), (n, d * d))[..., None])[..., 0]
    P = P.reshape(n, d, d)
    return 0.5 * (P + np.swapaxes(P, -1, -2))


def settling(
    spec, hyper: dict, lam, band: float = BAND, max_iters: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Settling iterations (first K with |e_k / e_0| <= band for all k >= K; -1 where unstable or not
    certified within ``max_iters``) and overshoot max_k(-e_k / e_0)^+ of each mode.

    The trajectory is iterated until the Lyapunov certificate of the (frozen, k -> infinity)
    system guarantees that no later step leaves the band or exceeds the overshoot found."""
    lam = np.atleast_1d(np.asarray(lam, np.float64))
    n = lam.size
    ss_inf = state_space(spec, hyper, lam)
    rho = spectral_radius(ss_inf)
    settle = np.full(n, -1, dtype=np.int64)
    over = np.zeros(n)
    active = np.flatnonzero(rho < 1.0 - 1e-13)
    if active.size == 0:
        return settle, over
    P = lyapunov(ss_inf.A[active])
    gain = np.einsum("i,nij,j->n", ss_inf.C, np.linalg.inv(P), ss_inf.C)
    varying = not spec.constant and not isinstance(spec, optimizers.ModalSpec)
    x = ss_inf.x0[active].copy()
    last = np.zeros(active.size, dtype=np.int64)  # 1 + last k with |c_k| > band
    c = x @ ss_inf.C
    last[np.abs(c) > band] = 1
    peak = np.maximum(-c, 0.0)
    A = ss_inf.A[active]
    margin = 0.1 if varying else 1.0  # scheduled methods: certificate of the frozen system, with margin
    alive = np.ones(active.size, bool)
    for k in range(1, max_iters + 1):
        if varying:
            A = optimizers.companion(spec, hyper, lam[active], k)
        x = np.einsum("nij,nj->ni", A, x)
        c = x @ ss_inf.C
        hit = alive & (np.abs(c) > band)
        last[hit] = k + 1
        peak = np.where(alive, np.maximum(peak, -c), peak)
        bound = np.sqrt(np.maximum(np.einsum("ni,nij,nj->n", x, P, x), 0.0) * gain)
        done = alive & (bound <= margin * band) & (bound <= np.maximum(peak, 1e-6 * band))
        alive &= ~done
        if not alive.any():
            break
    settle[active[~alive]] = last[~alive]
    over[active] = peak
    return settle, over


def settling_from_trajectory(c: np.ndarray, band: float = BAND) -> np.ndarray:
    """1 + the last k with |c_k| > band along axis 0 (0 if none): the settling read off a trajectory."""
    c = np.asarray(c)
    out = np.zeros(c.shape[1:], dtype=np.int64)
    above = np.abs(c) > band
    anyk = above.any(axis=0)
    last = c.shape[0] - 1 - np.argmax(above[::-1], axis=0)
    out[anyk] = last[anyk] + 1
    return out


# --------------------------------------------------------------------------- continuous counterpart
def ode_damping(ode, lam) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(zeta, omega_n) per mode of a LimitODE or HighResODE, per unit ODE time (t -> infinity
    for vanishing damping). First-order ODE e' = -K e: zeta None, omega_n = lambda (pole at -lambda)."""
    lam = np.asarray(lam, np.float64)
    if ode is None:
        return None, None
    if isinstance(ode, optimizers.LimitODE):
        if ode.order == 1:
            return None, lam.copy()
        omega = np.sqrt(np.maximum(lam, 0.0))
        gamma = ode.gamma if isinstance(ode, odes.ConstantDamping) else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(omega > 0, gamma / (2 * np.where(omega > 0, omega, 1.0)), np.inf), omega
    omega = np.sqrt(np.maximum(ode.stiffness * lam, 0.0))
    gamma = (0.0 if ode.vanishing else ode.gamma) + ode.hess_damping * lam
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(omega > 0, gamma / (2 * np.where(omega > 0, omega, 1.0)), np.inf), omega


def discrete_equivalent(
    p: np.ndarray, time_step: float = 1.0, order: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(zeta, omega_n) per mode of the continuous system equivalent to the discrete one, from its
    ``order`` dominant poles (``p``: (n, d) largest modulus first, as ``poles`` returns them).

    Each z-pole maps to s = log(z) / time_step (per unit ODE time, so the values compare with
    ``ode_damping``). order 2 (momentum methods): both poles s1, s2 of the pair give
    omega_n^2 = s1 s2 and zeta = -(s1 + s2) / (2 omega_n) (Vieta for s^2 + 2 zeta omega_n s + omega_n^2);
    for a complex pair this is omega_n = |s|, zeta = -Re s / |s|, for two real poles zeta >= 1
    (overdamped). order 1: omega_n = -s of the dominant pole (the ODE e' = -omega_n e), zeta NaN.
    NaN where no real continuous equivalent exists: a pole <= 0 on the real axis (the mode flips sign
    every step), one real and one complex pole, or a pole outside the unit circle with real s1 s2 < 0.
    """
    p = np.asarray(p, complex)
    if p.ndim == 1:
        p = p[:, None]
    n = p.shape[0]
    nan = np.full(n, np.nan)
    tiny = 1e-12 * np.maximum(np.abs(p), 1.0)
    real = np.abs(p.imag) <= tiny
    bad = real & (p.real <= 0)  # negative or zero real pole: no continuous counterpart
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.log(np.where(bad, 1.0, p)) / time_step
    if order == 1:
        ok = real[:, 0] & ~bad[:, 0]
        return nan, np.where(ok, -s[:, 0].real, np.nan)
    if p.shape[1] < 2:
        raise ValueError(
            f"discrete_equivalent: order {order} needs at least 2 poles per mode, got {p.shape[1]}"
        )
    s1, s2 = s[:, 0], s[:, 1]
    pair = ~bad[:, 0] & ~bad[:, 1] & (real[:, 0] == real[:, 1])
    pair &= real[:, 0] | (np.abs(p[:, 0] - np.conj(p[:, 1])) <= 1e-9 * np.abs(p[:, 0]))  # a conjugate pair
    prod, total = (s1 * s2).real, (s1 + s2).real
    ok = pair & (prod > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        omega = np.sqrt(np.where(ok, prod, 1.0))
        zeta = -total / (2.0 * omega)
    return np.where(ok, zeta, np.nan), np.where(ok, omega, np.nan)


# --------------------------------------------------------------------------- one optimizer
def _pairs(z) -> list[list[float]]:
    return [[float(v.real), float(v.imag)] for v in np.asarray(z, complex).ravel()]


_num = results.finite  # None for None, NaN, inf


def analyse(spec, hyper: dict, lam, band: float = BAND, max_iters: int = 100_000) -> dict:
    """control.json entry of one optimizer on the spectrum ``lam`` (hyper already resolved)."""
    lam = np.atleast_1d(np.asarray(lam, np.float64))
    ss = state_space(spec, hyper, lam)
    p = poles(ss)
    zs = zeros(ss)
    rho = np.max(np.abs(p), axis=-1)
    settle, over = settling(spec, hyper, lam, band, max_iters)
    ode = spec.ode(hyper) if spec.ode is not None else None
    ode_hr = spec.ode_hr(hyper) if spec.ode_hr is not None else None
    zeta, omega = ode_damping(ode, lam)
    zeta_hr, omega_hr = ode_damping(ode_hr, lam)
    dt = ode.time_step if ode is not None else 1.0
    order = ode.order if ode is not None else min(p.shape[-1], 2)
    zeta_d, omega_d = discrete_equivalent(p, dt, order)
    gain = dc_gain(ss)
    modes = []
    for i, lm in enumerate(lam):
        modes.append(
            {
                "lambda": float(lm),
                "poles": _pairs(p[i]),
                "zeros": _pairs(zs[i]),
                "spectral_radius": float(rho[i]),
                "stable": bool(rho[i] < 1.0),
                "zeta": None if zeta is None else _num(zeta[i]),
                "omega_n": None if omega is None else _num(omega[i]),
                "zeta_hr": None if zeta_hr is None else _num(zeta_hr[i]),
                "omega_n_hr": None if omega_hr is None else _num(omega_hr[i]),
                "zeta_discrete": _num(zeta_d[i]),
                "omega_n_discrete": _num(omega_d[i]),
                "settling_iters": None if settle[i] < 0 else int(settle[i]),
                "overshoot": _num(over[i]) if rho[i] < 1 else None,
                "dc_gain": _num(gain[i]),
            }
        )
    worst = int(np.argmax(rho))
    nz = [z[np.abs(z) > 1e-12] for z in zs]
    return {
        "optimizer": spec.name,
        "eta": _num(hyper.get("eta")),
        "beta": _num(hyper.get("beta")),
        "r": _num(hyper.get("r")),
        "hyper": {k: _num(v) for k, v in hyper.items() if isinstance(v, (int, float))},
        "time_varying": not spec.constant,
        "system": "k -> infinity (frozen schedule)" if not spec.constant else "constant",
        "ode": ode.description if ode is not None else None,
        "ode_hr": ode_hr.description if ode_hr is not None else None,
        "ode_time_step": ode.time_step if ode is not None else None,
        "spectral_radius": float(rho[worst]),
        "rate": float(rho[worst] ** 2),
        "stable": bool(np.all(rho < 1.0)),
        "slowest_mode": {"lambda": float(lam[worst]), "index": worst},
        "settling_iters_max": None if np.any(settle < 0) else int(np.max(settle)),
        "overshoot_max": _num(np.max(over)) if np.all(rho < 1) else None,
        "nonzero_zeros": bool(any(z.size for z in nz)),
        "modes": modes,
    }


# --------------------------------------------------------------------------- maps and loci
def rate_map(spec, base: dict, lam, etas, betas) -> tuple[np.ndarray, np.ndarray]:
    """Predicted loss factor max_i rho(A(lambda_i))^2 and stability on the grid (len(betas), len(etas))."""
    lam = np.asarray(lam, np.float64)
    rate = np.empty((len(betas), len(etas)))
    for j, b in enumerate(betas):
        for i, e in enumerate(etas):
            h = {**base, "eta": float(e), "beta": float(b)}
            rate[j, i] = np.max(spectral_radius(state_space(spec, h, lam))) ** 2
    return rate, rate < 1.0


def first_unstable(unstable: np.ndarray) -> np.ndarray:
    """Per row, the index of the first unstable column (row length if none)."""
    u = np.asarray(unstable, bool)
    return np.where(u.any(axis=1), np.argmax(u, axis=1), u.shape[1])


def stability_limit(spec, hyper: dict, lam: float, key: str = "eta", hi: float | None = None) -> float | None:
    """Largest value of ``key`` keeping rho(A(lam)) <= 1 (bisection from 0; None if stable up to ``hi``)."""
    hi = hi if hi is not None else 1000.0 / lam
    f = lambda v: float(spectral_radius(state_space(spec, {**hyper, key: v}, [lam]))[0]) <= 1.0 + 1e-12
    if f(hi):
        return None
    lo = 0.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) else (lo, mid)
    return lo


def root_locus(spec, hyper: dict, lams, key: str, values) -> np.ndarray:
    """Poles of A(lambda) for each value of ``key``: (len(values), len(lams), d) complex."""
    return np.stack([poles(state_space(spec, {**hyper, key: float(v)}, lams)) for v in values])


# --------------------------------------------------------------------------- NAG-C tail
def measure_tail(step, loss, window: tuple[float, float], floor: float = 0.0) -> dict:
    """Fit log L = a + p log k + k log q to the peaks of the loss over ``window`` (absolute steps):
    power exponent p, tail loss factor q and crossover step k* = p / log q (``rates.tail_fit``)."""
    return rates.tail_fit(step, loss, window, floor, peaks_only=True, min_points=4)


def log_gap(pred, ref, floor: float) -> float | None:
    """Mean |log10 L_pred - log10 L_ref| (decades) over the steps where both exceed ``floor``
    (``rates.log_gap``'s mean; None where no step counts)."""
    return rates.log_gap(pred, ref, floor).as_dict()["mean"]


def ode_losses(spec, hyper: dict, lam, coef, c: float, step) -> dict[str, np.ndarray]:
    """Loss predicted by the low- and high-resolution ODEs at the given steps (where declared)."""
    out = {}
    step = np.asarray(step, np.float64)
    if spec.ode is not None:
        ode = spec.ode(hyper)
        out["low"] = theory.modal_loss(theory.ode_modes(ode, lam, coef, step * ode.time_step), c)
    if spec.ode_hr is not None:
        ode = spec.ode_hr(hyper)
        out["high"] = theory.modal_loss(theory.highres_modes(ode, lam, coef, step * ode.time_step), c)
    return out
