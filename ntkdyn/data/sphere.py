"""data.source 'sphere': points uniform on the unit sphere S^{d-1} with a synthetic target
(gaussian, a random ReLU teacher, or a smooth function); held-out points from their own stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ntkdyn.data._base import Source, given

if TYPE_CHECKING:
    from ntkdyn.config import DataConfig

TARGETS = ("gaussian", "teacher", "smooth")
TEST_STREAM = 0x7E57  # held-out points of synthetic data: seed stream default_rng([seed, TEST_STREAM])


def unit_sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n points uniform on the unit sphere S^{d-1} (normalised Gaussians)."""
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def target_function(rng: np.random.Generator, rule: str, d: int, teacher_width: int, outputs: int = 1):
    """The target rule as a function of x (before centring and scaling), its random parts drawn from
    ``rng``: teacher W (teacher_width, d) and a (teacher_width,), or with k = ``outputs`` > 1 a
    (teacher_width, k): a teacher with k outputs sharing its hidden layer, values (n, k); smooth v, v'
    (two unit vectors); None for gaussian (the targets are not a function of x). Raises ValueError
    for an unknown rule, or k > 1 with a rule other than teacher."""
    if outputs > 1 and rule != "teacher":
        raise ValueError(
            f"model.outputs: {outputs} outputs on sphere data need data.target teacher, got {rule!r}"
        )
    if rule == "gaussian":
        return None
    if rule == "teacher":
        W = rng.standard_normal((teacher_width, d))
        a = rng.standard_normal(teacher_width if outputs == 1 else (teacher_width, outputs))
        return lambda X: np.maximum(X @ W.T, 0) @ a / np.sqrt(teacher_width)
    if rule == "smooth":
        v, w = unit_sphere(rng, 2, d)
        return lambda X: np.sin(np.pi * X @ v) + (X @ w) ** 2
    raise ValueError(f"data.target: unknown rule {rule!r}; allowed: {', '.join(TARGETS)}")


def _sphere_draw(
    rng: np.random.Generator, X: np.ndarray, rule: str, noise: float, teacher_width: int, outputs: int = 1
):
    """(y, f, shift, scale): targets of X (``sphere_targets``), the target function f and the centring
    shift and scale fixed by this sample (0 and 1 for gaussian); k = ``outputs`` > 1 (teacher): y
    (n, k), each output centred and scaled on its own (shift and scale of shape (k,))."""
    n, d = X.shape
    f = target_function(rng, rule, d, teacher_width, outputs)
    raw = rng.standard_normal(n) if f is None else f(X)
    if f is None:
        shift, scale = 0.0, 1.0
    elif outputs > 1:
        shift, scale = np.mean(raw, 0), np.std(raw, 0) + 1e-300
    else:
        shift, scale = float(np.mean(raw)), float(np.std(raw)) + 1e-300
    return (raw - shift) / scale + noise * rng.standard_normal(np.shape(raw)), f, shift, scale


def sphere_targets(
    rng: np.random.Generator, X: np.ndarray, rule: str, noise: float, teacher_width: int
) -> np.ndarray:
    """Targets for sphere data.

    gaussian: y ~ N(0, 1). teacher: a random two-layer ReLU network
    y = (1/sqrt m_t) sum_r a_r relu(w_r . x) with w_r ~ N(0, I), a_r ~ N(0, 1), scaled to unit
    variance. smooth: y = sin(pi v.x) + (v'.x)^2 for random unit v, v', centred and scaled to unit
    variance. Then y += noise * N(0, 1).
    """
    return _sphere_draw(rng, X, rule, noise, teacher_width)[0]


def sphere(
    n: int, d: int, target: str, seed: int, noise: float = 0.0, teacher_width: int = 64, outputs: int = 1
):
    """n points uniform on S^{d-1} from ``default_rng(seed)`` and their targets (``sphere_targets``).
    Returns (X (n, d), y (n,)) float64; k = ``outputs`` > 1 (teacher only): y (n, k), the k outputs of
    one teacher y_b = (1/sqrt m_t) sum_r a_rb relu(w_r . x), a_rb ~ N(0, 1), each scaled to unit
    variance, plus noise * N(0, 1) per entry (model.outputs k with sphere data, docs/outputs.md)."""
    rng = np.random.default_rng(seed)
    X = unit_sphere(rng, n, d)
    return X, _sphere_draw(rng, X, target, noise, teacher_width, outputs)[0]


def sphere_test(
    n: int,
    d: int,
    target: str,
    seed: int,
    n_test: int,
    noise: float = 0.0,
    teacher_width: int = 64,
    outputs: int = 1,
):
    """Held-out points for ``sphere(n, d, target, seed, noise, teacher_width)``: n_test new points
    uniform on the sphere from their own stream ``default_rng([seed, TEST_STREAM])`` (apart from the
    training stream ``default_rng(seed)``; distinct from the training points with probability 1),
    labelled by the SAME target function (teacher / smooth: the one drawn for the training set,
    centred and scaled by the training sample's mean and std) plus fresh noise * N(0, 1);
    gaussian: fresh N(0, 1) targets. Returns (X_test (n_test, d), y_test (n_test,)); k = ``outputs``
    > 1: y_test (n_test, k) of the same k-output teacher (``sphere``)."""
    rng = np.random.default_rng(seed)
    X = unit_sphere(rng, n, d)
    _, f, shift, scale = _sphere_draw(rng, X, target, noise, teacher_width, outputs)
    rng_t = np.random.default_rng([seed, TEST_STREAM])
    X_t = unit_sphere(rng_t, n_test, d)
    raw = rng_t.standard_normal(n_test) if f is None else f(X_t)
    return X_t, (raw - shift) / scale + noise * rng_t.standard_normal(np.shape(raw))


# --------------------------------------------------------------------------- the declaration
def _validate(d: DataConfig) -> None:
    """d >= 1, target in TARGETS, noise >= 0, teacher_width (teacher target only) >= 1; data.test:
    n required (new points are drawn), no path."""
    if given(d.d, "data.d") < 1:
        raise ValueError(f"data.d: must be >= 1, got {d.d}")
    if d.target not in TARGETS:
        raise ValueError(f"data.target: {d.target!r} is not allowed; allowed: {', '.join(TARGETS)}")
    if given(d.noise, "data.noise") < 0:
        raise ValueError(f"data.noise: must be >= 0, got {d.noise}")
    if d.target == "teacher":
        d.teacher_width = width = 64 if d.teacher_width is None else d.teacher_width
        if width < 1:
            raise ValueError(f"data.teacher_width: must be >= 1, got {d.teacher_width}")
    elif d.teacher_width is not None:
        raise ValueError(
            f"data.teacher_width: applies to data.target 'teacher' only (got target {d.target!r}); "
            "leave it out"
        )
    if d.test is not None:
        if d.test.path is not None:
            raise ValueError(
                f"data.test.path: not used for data.source 'sphere' (its held-out points are drawn "
                f"like the training points; got {d.test.path!r}); leave it out"
            )
        if d.test.n is None:
            raise ValueError("data.test.n: required for data.source 'sphere' (held-out points)")


def _load(d: DataConfig, seed: int, outputs: int = 1):
    return sphere(
        given(d.n, "data.n"), given(d.d, "data.d"), given(d.target, "data.target"), seed,
        given(d.noise, "data.noise"), d.teacher_width or 64, outputs,
    )  # fmt: skip


def _load_held_out(d: DataConfig, seed: int, outputs: int = 1):
    test = given(d.test, "data.test")
    return sphere_test(
        given(d.n, "data.n"), given(d.d, "data.d"), given(d.target, "data.target"), seed,
        given(test.n, "data.test.n"), given(d.noise, "data.noise"), d.teacher_width or 64, outputs,
    )  # fmt: skip


def load_outputs(d: DataConfig, seed: int, outputs: int):
    """(X, Y (n, k)): a teacher with k = model.outputs outputs (``sphere``)."""
    return _load(d, seed, outputs)


def load_held_out_outputs(d: DataConfig, seed: int, outputs: int):
    """(X_test, Y_test (n_test, k)) of the same k-output teacher (``sphere_test``)."""
    return _load_held_out(d, seed, outputs)


SOURCE = Source(
    name="sphere",
    keys=("d", "target", "noise", "teacher_width"),
    defaults={"d": 16, "target": "teacher", "noise": 0.0},
    default_n=64,
    default_normalize=None,  # the points lie on the unit sphere
    load=_load,
    load_held_out=_load_held_out,
    input_dim=lambda d: int(given(d.d, "data.d")),
    validate=_validate,
    check=lambda d: None,  # nothing to read
)
