"""A user-written flax NNX model, loaded by the CLI as 'user_model:make' (tests only)."""

import jax
from flax import nnx


class TanhNet(nnx.Module):
    def __init__(self, d: int, width: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(d, width, rngs=rngs)
        self.out = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.numpy.tanh(self.hidden(x)))


def make(key, d: int, width: int = 32):
    return TanhNet(d, width, nnx.Rngs(params=int(jax.random.randint(key, (), 0, 2**31 - 1))))
