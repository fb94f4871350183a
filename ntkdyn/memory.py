"""Memory a run needs, estimated from its config before anything is built or computed.

``check(cfg, runs)`` raises ``TooLarge`` (a ``ConfigError``, so a ValueError) when the estimate
exceeds the memory this process can use, so ``--set model.width=2000000000`` stops at once with
both numbers instead of an allocation error deep inside XLA. The estimate is an upper-side count
of the large arrays, in bytes (s = bytes per training float, P = trained parameters, H = hidden
units per input, R = runs trained together, n = inputs, T = recorded steps, S = kernel snapshots):

  training     R * P * s * (8 + S)    params, new params, gradient, update, 2 optimizer states
                                      (old and new), S snapshots
               R * n * H * s * 3      pre-activations, activations and their gradient
  kernels      R * n^2 * 8 * max(6 + h, 2 + h + S)
                                      float64 n x n arrays alive at once, h = 1 for a model with an H_inf
                                      (paper, mlp), else 0. At the eigendecomposition (``theory.eigen``):
                                      H0, H_inf, K = c H (a copy even at c = 1), its symmetrised copy
                                      (K + K^T) / 2, and inside ``np.linalg.eigh`` (LAPACK dsyevd) the
                                      eigenvector array and its 2 n^2 workspace; later H0, H_inf, the
                                      eigenvectors and one Gram per snapshot (the diffrax face's dense
                                      K = V diag(lam) V^T with its temporary and jax copy stays below
                                      the first count). Measured (benchmarks/run.py --memory with
                                      theory.solver eigen, configs/large_n.yaml): estimate / peak RSS
                                      0.96-1.02 at n = 1024 ... 4096, 0.85-0.91 with the diffrax face
                                      (docs/large-n.md)
               R * n * H * s * 2      the Gram's intermediate (activation patterns)
  predictions  R * T * n * 8 * 4      discrete, ODE, high-resolution ODE and diffrax modes

On the Krylov path (theory.solver krylov, or auto with n > 4096: ``config.schema.resolve_solver``)
there are no eigenvectors, no modal arrays and no Gram per snapshot (the drift is taken by tiles,
``largen.drift_tiled``); with b = bytes per stored kernel entry (4 when n >
``pipeline.setup.FLOAT32_STORAGE_N`` = 8192, else 8) and k = stored n x n kernels (H0; H_inf with
theory.kernel Hinf; K = c H as its own array when the loss scale c != 1):

  kernels      R * n^2 * b * k             stored kernels
               R * 2 * (2 t)^2 * 8         one Gram tile and its temporaries (t = 1024 rows; the fast
                                           path's tile is the Gram of 2 t inputs)
               R * n * H * s * 2           the Gram tiles' intermediate
  predictions  R * (M + 1) * n * 8         the run's one Krylov basis of (K, e0) shared by its faces
                                           (M = ``pipeline.setup.ODE_MAX_ITER``)
               R * (E + 1) * n * 8         the Lanczos basis of the extremes (E: setup.extremes_max_iter)
               R * n * 8 * 8               products, held-out weights

Above ``COMPILED_ABOVE`` bytes the training part is taken instead from the compiled programs
(``compiled_training``: ``jax.jit(f).lower(...).compile().memory_analysis()`` of the run's
chunk program (the training loop) of the optimizer with the largest state on abstract shapes, nothing
built: argument + output + temporary bytes, less the donated state) where the model's parameters
can be traced abstractly, and the estimate records it (``Estimate.compiled``).
``Estimate.process``: the resident memory of this process when the estimate was made (imports,
jax) plus ``RUNTIME`` (jax's compiler and runtime buffers), so ``Estimate.peak_rss`` = process +
total is the peak RSS the run should reach; the check compares ``total`` with the memory still
available.

The limit is the host's available memory (``MemAvailable``), and on an accelerator also its
memory (``bytes_limit``) for the training and kernel parts. User flax modules count their
parameters exactly (``nnx.eval_shape``) and their activations as H = P / d (one hidden layer);
so do models given from Python (``params=``: their parameters counted leaf by leaf).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ntkdyn import data as data_mod
from ntkdyn.config import Config, ConfigError
from ntkdyn.config.schema import resolve_solver

GB = 1e9
COMPILED_ABOVE = 0.5e9  # training part taken from the compiled programs when the estimate exceeds this
# jax's runtime and compiler beyond the import, once the run's programs are compiled and run (measured on
# CPU, jax 0.10.2: a run at n = 256 peaks 0.25 GB above the resident memory at its estimate)
RUNTIME = 0.25e9
TILE_ROWS = 1024  # rows of a Gram tile (largen.gram_tiled's default)


class TooLarge(ConfigError):
    """The estimated memory of a run exceeds the limit (the message gives both)."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    parts: dict  # bytes per part: training, kernels, predictions
    n: int
    d: int
    params: int  # P per run
    hidden: int  # H per input
    runs: int
    note: str = ""  # what the estimate leaves out, if anything
    compiled: bool = False  # the training part is from the compiled programs (memory_analysis)
    process: float = 0.0  # resident bytes of this process when estimated (VmRSS)

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    @property
    def peak_rss(self) -> float:
        """The peak resident memory the run should reach: this process's RSS plus the estimate."""
        return self.process + self.total

    @property
    def device_part(self) -> float:
        return float(self.parts["training"] + self.parts["kernels"])


def input_dim(cfg: Config) -> int:
    """d of the inputs, read without loading the data (``ntkdyn.data.input_dim``: the source's)."""
    try:
        return data_mod.input_dim(cfg)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def model_size(cfg: Config, d: int) -> tuple[int, int] | None:
    """(P trained parameters, H hidden units per input) of the model in ``cfg``; None for a user
    factory that cannot be traced abstractly (e.g. it turns its key into a Python int)."""
    m = cfg.model
    w = int(m.width or 0)  # flax modules: no model.width (their factory sets their size)
    if m.name == "paper":
        return w * d, w
    if m.name == "released":
        return w * d + 2 * w, w
    if m.name == "mlp":
        depth = m.depth
        if depth is None:  # validate fills it (default 2)
            raise ValueError("model.depth: missing; a config gets it from config.from_dict / config.validate")
        return d * w + (depth - 1) * w * w + w + depth * w + 1, w * depth
    import jax
    from flax import nnx

    from ntkdyn import models

    if m.module is None:  # validate requires it for a flax model
        raise ValueError("model.module: required for model.name 'flax' ('package.module:factory')")
    factory = models.load_factory(m.module)
    try:
        abstract = nnx.eval_shape(lambda: factory(jax.random.PRNGKey(0), d, **(m.kwargs or {})))
    except Exception:  # noqa: BLE001 - any failure to trace: the real build reports real errors
        return None
    P = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    return P, max(P // max(d, 1), 1)


def params_size(params, d: int) -> tuple[int, int]:
    """(P, H) of given parameters: P counted leaf by leaf, H = P / d (one hidden layer)."""
    import jax

    P = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    return P, max(P // max(d, 1), 1)


def estimate(cfg: Config, runs: int = 1, d: int | None = None, params=None, n: int | None = None) -> Estimate:
    """The estimate of the module docstring; ``d`` the input dimension (default: the data source's),
    ``params`` the parameters of a model given from Python (default: the config's model), ``n`` the
    number of points (default data.n)."""
    points = cfg.data.n if n is None else n
    if points is None:
        raise ValueError("data.n: missing; a config gets it from config.from_dict / config.validate")
    n = int(points)
    d = input_dim(cfg) if d is None else d
    size = model_size(cfg, d) if params is None else params_size(params, d)
    note = (
        ""
        if size is not None
        else " (the model's parameters and activations are not counted: its factory "
        "cannot be traced abstractly)"
    )
    P, H = size if size is not None else (0, 0)
    s = 8 if cfg.dtype == "float64" else 4
    S = len(cfg.train.kernel_at or ())
    T = cfg.train.steps // cfg.train.record_every + 1
    R = runs
    every = cfg.train.sharpness_every  # its snapshots travel with the kernel snapshots
    S_sharp = 0 if every is None else cfg.train.steps // every + 2
    training = R * (P * s * (8 + S + S_sharp) + n * H * s * 3)
    if resolve_solver(cfg.theory.solver, n) == "krylov":
        kernels, predictions = krylov_parts(cfg, n, H, s, S)
        parts: dict[str, float] = {
            "training": training,
            "kernels": R * kernels,
            "predictions": R * predictions,
        }
    else:
        h = int(cfg.model.name in ("paper", "mlp"))  # models with an H_inf (built beside H0)
        parts = {
            "training": training,
            "kernels": R * (n * n * 8 * max(6 + h, 2 + h + S) + n * H * s * 2),
            "predictions": R * T * n * 8 * 4,
        }
    process = resident() + RUNTIME  # before compiling: the compiler's memory is in RUNTIME
    compiled = False
    if sum(parts.values()) > COMPILED_ABOVE and params is None and size is not None:
        got = compiled_training(cfg, R, n, d)
        if got is not None:
            parts["training"], compiled = got, True
    return Estimate(parts, n, d, P, H, R, note, compiled, process)


def resident() -> float:
    """Resident bytes of this process now (VmRSS; 0 where /proc is absent), with jax imported (the run
    imports it)."""
    import jax  # noqa: F401

    rss = _proc_bytes("/proc/self/status", "VmRSS:")
    return 0.0 if rss is None else rss


def _proc_bytes(path: str, key: str) -> float | None:
    """The value of line ``key`` (in kB) of a /proc file, in bytes; None where the file or line is absent."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def compiled_training(cfg: Config, runs: int, n: int, d: int) -> float | None:
    """Bytes of the run's training from its compiled programs, before anything is built: the model's
    parameters by ``jax.eval_shape`` of ``pipeline.setup.build_model``, the batched init / chunk /
    finish programs of ``train.batched_fns`` on ``jax.ShapeDtypeStruct`` inputs; the chunk program (the
    training loop) of the optimizer with the largest state lowered and compiled, its argument + output
    + temporary bytes (``memory_analysis``) less the aliased (donated) bytes, plus the recorded trajectories
    (steps / record_every losses per run, the error vectors and snapshots, on the host). None when a
    program cannot be traced abstractly (e.g. a flax factory that needs concrete values). Cached per
    run shape (the CLI and ``setup.prepare`` both check)."""
    key = (repr(cfg.model), cfg.dtype, repr(cfg.train), repr(cfg.optimizers), runs, n, d)
    if key not in _COMPILED:  # the CLI and setup.prepare both check: one compile per run shape
        _COMPILED[key] = _compiled_training(cfg, runs, n, d)
    return _COMPILED[key]


_COMPILED: dict = {}


def _compiled_training(cfg: Config, runs: int, n: int, d: int) -> float | None:
    import jax
    import jax.numpy as jnp

    from ntkdyn import optimizers
    from ntkdyn.pipeline import setup as setup_mod
    from ntkdyn.pipeline.training import train_plan
    from ntkdyn.train import batched_fns

    R = runs
    try:
        with jax.enable_x64(cfg.dtype == "float64"):
            dtype = setup_mod.jax_dtype(cfg)
            held: dict = {}

            def build():
                model, p, c = setup_mod.build_model(cfg, d)
                held["model"] = model
                return p, c

            p_sds, c_sds = jax.eval_shape(build)
            stack = lambda tree: jax.tree.map(  # noqa: E731
                lambda x: jax.ShapeDtypeStruct((R, *x.shape), x.dtype), tree
            )
            X = jax.ShapeDtypeStruct((n, d), dtype)
            y = jax.ShapeDtypeStruct((n,), dtype)
            plan = train_plan(cfg)
            # the chunk program (the training loop; init and finish hold the same state and less) of
            # the optimizer with the largest state: one compile
            best_state, chosen = -1, None
            for oc in cfg.optimizers:
                spec = optimizers.get(oc.name)
                hyper = oc.hyper()
                numeric = [
                    k for k, v in hyper.items() if isinstance(v, float | int) and not isinstance(v, bool)
                ]
                if "eta" not in numeric:
                    numeric.append("eta")  # relative or scheduled steps: a number per run as well
                static = {k: v for k, v in hyper.items() if k not in numeric}
                h = {k: jax.ShapeDtypeStruct((R,), dtype) for k in numeric}
                fns = batched_fns(held["model"], spec, static, 1.0, plan, (None, None, None))
                state = jax.eval_shape(fns[0], h, stack(p_sds), c_sds, X, y)
                nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
                if nbytes > best_state:
                    best_state, chosen = nbytes, (fns[1], state, h)
            assert chosen is not None  # validate: at least one optimizer
            chunk, state, h = chosen
            b0 = jax.ShapeDtypeStruct((), jnp.int32)
            ma = jax.jit(chunk, donate_argnums=0).lower(state, h, c_sds, X, y, b0).compile().memory_analysis()
            if ma is None:
                return None
            best = float(
                ma.argument_size_in_bytes
                + ma.output_size_in_bytes
                + ma.temp_size_in_bytes
                - ma.alias_size_in_bytes
            )
    except Exception:  # noqa: BLE001 - no abstract trace: the formula stays
        return None
    T = cfg.train.steps // cfg.train.record_every + 1
    s = 8 if cfg.dtype == "float64" else 4
    P = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(p_sds))
    host = R * (T * 8 * 3 + len(cfg.train.error_at or ()) * n * 8 + len(cfg.train.kernel_at or ()) * P * s)
    return best + host


def krylov_parts(cfg: Config, n: int, H: int, s: int, S: int) -> tuple[int, int]:
    """Bytes of one run's kernels and predictions on the Krylov path (module docstring)."""
    from ntkdyn.pipeline import setup as setup_mod

    b = 4 if setup_mod.storage_dtype(n) == "float32" else 8
    stored = 1 + (cfg.theory.kernel == "Hinf") + (_loss_scale_is_not_one(cfg))
    tile = 2 * (2 * min(n, TILE_ROWS)) ** 2 * 8
    kernels = n * n * b * stored + tile + n * H * s * 2
    predictions = (setup_mod.ODE_MAX_ITER + 1 + setup_mod.extremes_max_iter(n) + 1) * n * 8 + n * 8 * 8
    return kernels, predictions


def _loss_scale_is_not_one(cfg: Config) -> bool:
    """Is c != 1 (then K = c H is an array of its own)? The model's loss: model.loss, else the
    model's default (paper, mlp, flax: half_sum, c = 1; released: mse)."""
    loss = cfg.model.loss or ("mse" if cfg.model.name == "released" else "half_sum")
    return loss != "half_sum"


def host_available() -> float:
    """Bytes the host can still give (MemAvailable; total physical memory where /proc is absent)."""
    available = _proc_bytes("/proc/meminfo", "MemAvailable:")
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) if available is None else available


def device_limit() -> float | None:
    """Memory of the first accelerator (bytes), None on CPU or when jax does not say."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return None
    stats = dev.memory_stats() or {}
    return float(stats["bytes_limit"]) if "bytes_limit" in stats else None


def check(
    cfg: Config,
    runs: int = 1,
    d: int | None = None,
    host: float | None = None,
    device: float | None = None,
    params=None,
    n: int | None = None,
) -> Estimate:
    """``TooLarge`` unless the estimate fits; ``host``/``device`` override the measured limits;
    ``params``, ``n``: a model and the number of points given from Python (``estimate``)."""
    est = estimate(cfg, runs, d, params, n)
    host = host_available() if host is None else host
    device = device_limit() if device is None else device
    where = (
        f"{est.runs} run(s) of n={est.n}, d={est.d}, "
        + (f"{cfg.model.name} width {cfg.model.width} " if params is None else "the given model ")
        + f"({est.params:,} parameters per run, {cfg.dtype})"
    )
    detail = ", ".join(f"{k} {v / GB:.3g} GB" for k, v in est.parts.items()) + est.note
    if est.total > host:
        raise TooLarge(
            f"{where} needs about {est.total / GB:.3g} GB ({detail}); this machine has "
            f"{host / GB:.3g} GB available. Lower model.width, data.n, the sweep's group size "
            f"or train.steps / train.record_every"
        )
    if device is not None and est.device_part > device:
        raise TooLarge(
            f"{where} needs about {est.device_part / GB:.3g} GB on the accelerator ({detail}); "
            f"it has {device / GB:.3g} GB. Lower model.width, data.n or the sweep's group size"
        )
    return est
