"""Where runs live: the device mesh of the run axis (``run_mesh``), host values to global arrays and
back (``put``, ``to_host``), multi-process start-up (``init_distributed``), and the host-side checks
``all_equal`` / ``shape_key`` that decide what a compiled training call can share. Used by
``ntkdyn.train``."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding


def run_mesh() -> Mesh:
    """A one-axis mesh ("runs") over all devices jax sees (all processes after jax.distributed)."""
    return Mesh(np.asarray(jax.devices()), ("runs",))


def all_equal(trees: list) -> bool:
    """True when every pytree in ``trees`` equals the first (same structure, shapes and values)."""
    first = jax.tree.leaves(trees[0])
    for other in trees[1:]:
        leaves = jax.tree.leaves(other)
        if len(leaves) != len(first) or not all(
            a is b or (a.shape == b.shape and bool(np.array_equal(np.asarray(a), np.asarray(b))))
            for a, b in zip(first, leaves)
        ):
            return False
    return True


def shape_key(tree):
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


def put(tree, sharding: NamedSharding):
    """Host values -> global arrays with ``sharding``. Every process holds the same host values
    (runs are prepared identically everywhere), so each fills only its own devices' shards."""

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree)


def to_host(tree):
    """Global arrays -> numpy on every process (gathered from all processes when there are several)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def init_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """``jax.distributed.initialize`` for multi-process runs (call before any other jax use).

    On a cluster jax finds the coordinator, process count and id itself (SLURM, Open MPI, TPU
    pods); elsewhere give them (or set JAX_COORDINATOR_ADDRESS). CPU processes exchange data
    through gloo collectives, so two processes on one machine work too: the run axis then spans
    the devices of every process, and results are gathered on every process (process 0 writes).
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
