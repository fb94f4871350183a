"""The config's typed sections (dataclasses, one per YAML section), ``ConfigError``, the step size
relative to the spectrum (``RelativeStep``, ``resolve_eta``) and which ``model.<key>`` apply to
which model (``MODEL_KEYS``). Reads no file."""

from __future__ import annotations

import dataclasses
import math

from ntkdyn import schedules


class ConfigError(ValueError):
    """A bad configuration: the message names the key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class RelativeStep:
    """A step size relative to the spectrum: eta = per_lambda_max / lambda_max, with lambda_max the
    largest eigenvalue of K = c H, the kernel the predictions use (theory.kernel; c the loss scale),
    so that eta * lambda_max = per_lambda_max (GD is stable for per_lambda_max < 2). Written
    ``eta: {per_lambda_max: 1.0}``; resolved to a number at setup time by ``resolve_eta``."""

    per_lambda_max: float


def resolve_eta(value, lam_max: float):
    """The step size a run uses: ``RelativeStep(p)`` -> p / lam_max (lam_max > 0: the largest
    eigenvalue of K = c H the predictions use, ``Setup.lam[-1]``); a number or a schedule object is
    returned unchanged.

    Raises:
        ConfigError: lam_max not finite and > 0 (no step relative to it exists).
    """
    if not isinstance(value, RelativeStep):
        return value
    if not (math.isfinite(lam_max) and lam_max > 0):
        raise ConfigError(
            f"eta: {{per_lambda_max: {value.per_lambda_max}}} needs the kernel's lambda_max > 0, "
            f"got {lam_max}"
        )
    return float(value.per_lambda_max) / float(lam_max)


@dataclasses.dataclass
class DataConfig:
    source: str = "sphere"  # sphere | digits | npz | mnist (ntkdyn.data.SOURCES)
    n: int | None = (
        None  # default: sphere, digits 64; npz all its points; mnist 600 (the released notebook's)
    )
    d: int | None = None  # sphere only (default 16)
    target: str | None = (
        None  # sphere: gaussian|teacher (default)|smooth; digits: pm1|label; mnist: label (default)
    )
    noise: float | None = None  # sphere only (default 0)
    teacher_width: int | None = None  # sphere with target teacher only (default 64)
    classes: list[int] | None = None  # digits
    normalize: str | None = None  # unit | standardize | none | pixels (digits /16, mnist /255); default:
    # mnist pixels (torchvision ToTensor, as the notebook), else unit
    path: str | None = None  # npz: the file; mnist: the IDX images file, a folder holding them, or an .npz
    test: HeldOutConfig | None = None  # held-out points: loss along training and its kernel prediction


@dataclasses.dataclass
class HeldOutConfig:
    """data.test: held-out points (docs/configuration.md). sphere: n new points of the same
    distribution and target function (own seed stream); digits: the n images after the training
    ones in the same random order; npz / mnist: the n points after the training ones in data.path,
    or (with ``path``) the first n of another file (default: all of it)."""

    n: int | None = None
    path: str | None = None


@dataclasses.dataclass
class ModelConfig:
    name: str = "paper"  # paper | released | mlp | flax
    width: int | None = None  # paper, released, mlp (default 2048)
    init_std: float | None = None  # paper: kappa (default 1); released: first-layer std (default 1/m)
    init: str | None = None  # released only: notebook (default; bias U(-1/sqrt d, 1/sqrt d)) | gaussian_bias
    depth: int | None = None  # mlp hidden layers (default 2)
    W_std: float | None = None  # mlp (default sqrt 2)
    b_std: float | None = None  # mlp (default 0)
    loss: str | None = None  # half_sum | mse | half_mse | softmax_ce | logistic; default: the model's own
    outputs: int | None = None  # k outputs (paper, mlp, flax; default 1; data.target onehot: the classes)
    module: str | None = None  # flax: 'package.module:factory', factory(key, d, **kwargs) -> nnx.Module
    kwargs: dict | None = None
    init_params: str | None = None  # .npz with the initial parameters


@dataclasses.dataclass
class TrainConfig:
    steps: int = 1000
    record_every: int = 1
    error_at: list[int] | None = None  # default [0, steps]; steps past train.steps are clipped (a note)
    kernel_at: list[int] | None = None  # default [0, steps/4, steps/2, steps]; clipped likewise
    divergence_factor: float = 1e6
    batch_size: int | None = None  # mini-batch size b (default: full batch); 1..data.n
    sampling: str | None = None  # with batch_size: replacement (default; b i.i.d. indices a step) | shuffle
    sampling_runs: int = 1  # independent batch orders trained per optimizer (one program; same data, init)
    # lambda_max of the loss Hessian and of K = c H at steps 0, k, 2k, ... and train.steps (k a multiple
    # of record_every); null: not recorded (pipeline.sharpness)
    sharpness_every: int | None = None


@dataclasses.dataclass
class TheoryConfig:
    kernel: str = "H0"  # H0 | Hinf
    diffrax: bool = True
    rtol: float | None = None  # with diffrax (default 1e-10)
    atol: float | None = None  # with diffrax (default 1e-12)
    # train the network's linearisation too: auto (optimizers without a recurrence) | always | never
    linearized: str = "auto"
    # train the second-order Taylor model at theta_0 too (ntkdyn.quadratic): never | auto (where Hess f
    # does not vanish: both layers trained, smooth activations) | always (and say why where it cannot)
    quadratic: str = "never"
    # the GD central flow at the edge of stability (ntkdyn.central_flow; pipeline.faces.central_flow):
    # full-batch gd with a constant eta and a squared loss only; off by default (costly)
    central_flow: bool = False
    mc_runs: int | None = (
        None  # with batch_size (default 2000): sampled batch orders of the kernel recurrence
    )
    # how the predictions are computed: eigen (K's eigendecomposition) | krylov (products with K,
    # Lanczos; ntkdyn.largen) | auto (krylov when n > KRYLOV_AUTO_N, else eigen)
    solver: str = "auto"
    # k > 1 outputs: the kernel over (point, output) pairs the predictions use: traced (H_shared ⊗ I_k,
    # exact for Hinf) | full (the (n k x n k) Gram of the outputs); default: traced for Hinf, full for H0
    kernel_outputs: str | None = None


# theory.solver auto: the Krylov path above this many training points. At n = 4096 the
# eigendecomposition already takes ~10 % of training on 2 cores and grows like n^2.2
# (benchmarks/measured/scaling-cpu-2core-2026-11-30.json); the Krylov path is O(n^2) per product.
KRYLOV_AUTO_N = 4096
SOLVERS: tuple[str, ...] = ("auto", "eigen", "krylov")


def resolve_solver(solver: str, n: int) -> str:
    """The solver a run uses: ``eigen`` or ``krylov`` as given; ``auto``: krylov when n > KRYLOV_AUTO_N."""
    if solver == "auto":
        return "krylov" if n > KRYLOV_AUTO_N else "eigen"
    return solver


@dataclasses.dataclass
class RatesConfig:
    window: list[float] = dataclasses.field(default_factory=lambda: [0.1, 1.0])
    stall_factor: float = 1.01


@dataclasses.dataclass
class OptimizerConfig:
    name: str
    # a number, an optax schedule {schedule: NAME, **its arguments} (ntkdyn.schedules) or a step
    # relative to the spectrum {per_lambda_max: p} (RelativeStep); required unless the optimizer sets
    # it from the spectrum (hb_polyak)
    eta: float | dict | RelativeStep | None = None
    label: str | None = None
    beta: float | None = None
    r: float | None = None
    kwargs: dict | None = None  # extra arguments of an optax optimizer (empirical only)

    def hyper(self) -> dict:
        h = {"eta": schedules.from_config(self.eta) if isinstance(self.eta, dict) else self.eta}
        for key in ("beta", "r"):
            if getattr(self, key) is not None:
                h[key] = getattr(self, key)
        return {**h, **(self.kwargs or {})}


@dataclasses.dataclass
class ControlConfig:
    """``control:`` section (``ntkdyn.control``): per-mode linear systems, transfer functions, maps."""

    labels: list[str] | None = None  # optimizer labels analysed (default: every one with a recurrence)
    extra: list[OptimizerConfig] | None = None  # analysed, not trained (e.g. implicit_gd: recurrence only)
    band: float = 0.02  # settling band
    max_iters: int = 100000  # settling is certified within this many iterations, else reported null
    step_steps: int = 200  # step-response plot length
    map_optimizers: list[str] = dataclasses.field(default_factory=lambda: ["hb"])  # (eta, beta) maps
    map_eta: list[float] = dataclasses.field(default_factory=lambda: [0.1, 8.0])  # eta * lambda_max, log grid
    map_beta: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.95])
    map_grid: list[int] = dataclasses.field(default_factory=lambda: [16, 12])  # [n_eta, n_beta]
    map_steps: int = 100  # training steps per map cell (0: predicted map only)
    map_dtype: str = "float32"  # training dtype of the map cells
    locus: str = "beta"  # root locus parameter where the optimizer takes it: beta | eta
    locus_points: int = 200
    sweep_optimizer: str = "nag_c"  # eta sweep: low- vs high-resolution ODE against training
    sweep_etas: list[float] = dataclasses.field(default_factory=list)
    sweep_time: float = 200.0  # ODE time of each sweep run (steps = sweep_time / time_step)


@dataclasses.dataclass
class Config:
    optimizers: list[OptimizerConfig]
    name: str = "run"
    seed: int = 0
    dtype: str = "float32"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    theory: TheoryConfig = dataclasses.field(default_factory=TheoryConfig)
    rates: RatesConfig = dataclasses.field(default_factory=RatesConfig)
    control: ControlConfig | None = None
    # what validation changed (e.g. clipped step lists); derived, never read from a file
    notes: list[str] = dataclasses.field(default_factory=list, metadata={"derived": True})


MODEL_KEYS = {  # model.<key>s that apply per model.name, besides name, loss and init_params
    "paper": ("width", "init_std"),
    "released": ("width", "init_std", "init"),
    "mlp": ("width", "depth", "W_std", "b_std"),
    "flax": ("module", "kwargs"),
}
MODEL_DEFAULTS = {"width": 2048, "depth": 2, "W_std": math.sqrt(2.0), "b_std": 0.0}


def number_from_text(text: str, key: str, expected: str):
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {expected}, got {text!r}") from None
