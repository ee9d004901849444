"""Optimizers on the GPU: every parameter updated by one kernel launch.

The parameters of a model live in one flat device buffer (:class:`DeviceParams`, named
views into it), as do their gradients and the optimizer's state, so a step of
:class:`DeviceAdam` or :class:`DeviceSGD` is a single elementwise launch with the
formulas of :mod:`fastlstm.optimizers` (same update, same state), whatever the number of
parameter arrays.
"""

import math

import numpy as np
from numba import cuda

_THREADS = 256


@cuda.jit
def _adam(p, g, m, v, beta_1, beta_2, one_minus_1, one_minus_2, step, epsilon):
    i = cuda.grid(1)
    if i < p.shape[0]:
        m[i] = beta_1 * m[i] + one_minus_1 * g[i]
        v[i] = beta_2 * v[i] + one_minus_2 * g[i] * g[i]
        p[i] = p[i] - step * m[i] / (math.sqrt(v[i]) + epsilon)


@cuda.jit
def _momentum(p, g, velocity, momentum, learning_rate):
    i = cuda.grid(1)
    if i < p.shape[0]:
        velocity[i] = momentum * velocity[i] - learning_rate * g[i]
        p[i] = p[i] + velocity[i]


def _grid(n):
    return max(1, -(-n // _THREADS)), _THREADS


class DeviceParams:
    """Named arrays packed into one flat device buffer.

    Parameters
    ----------
    shapes : dict of str -> tuple
        Name and shape of each array, in the packing order.
    dtype : numpy dtype

    Attributes
    ----------
    flat : device array, shape (n,)
    """

    def __init__(self, shapes, dtype):
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.dtype = np.dtype(dtype)
        sizes = [int(np.prod(s)) for s in self.shapes.values()]
        self._offsets = dict(zip(self.shapes, np.cumsum([0] + sizes[:-1]).tolist()))
        self.flat = cuda.device_array(sum(sizes), self.dtype)

    @classmethod
    def from_host(cls, arrays):
        """Pack a dict of same-dtype host arrays (one upload)."""
        dtypes = {np.asarray(a).dtype for a in arrays.values()}
        if len(dtypes) != 1:
            raise ValueError("DeviceParams needs arrays of one dtype, got "
                             f"{sorted(map(str, dtypes))}")
        packed = cls({k: np.shape(a) for k, a in arrays.items()}, dtypes.pop())
        packed.flat.copy_to_device(np.concatenate([np.ravel(a) for a in arrays.values()])
                                   if arrays else np.zeros(0, packed.dtype))
        return packed

    def zeros_like(self):
        """A zeroed :class:`DeviceParams` of the same layout."""
        out = DeviceParams(self.shapes, self.dtype)
        out.flat.copy_to_device(np.zeros(out.flat.shape[0], self.dtype))
        return out

    def offset(self, name):
        """Where array ``name`` starts in :attr:`flat`."""
        return self._offsets[name]

    def __getitem__(self, name):
        """The device view of array ``name``."""
        start = self._offsets[name]
        size = int(np.prod(self.shapes[name]))
        return self.flat[start:start + size].reshape(self.shapes[name])

    def to_host(self):
        """Every array as a host array (one download)."""
        flat = self.flat.copy_to_host()
        return {name: flat[self._offsets[name]:self._offsets[name] + int(np.prod(shape))]
                .reshape(shape) for name, shape in self.shapes.items()}


def _check(params, grads):
    if grads.shapes != params.shapes or grads.dtype != params.dtype:
        raise ValueError("grads must have the layout and dtype of params")


class DeviceAdam:
    """:class:`fastlstm.optimizers.Adam` on :class:`DeviceParams` (one launch a step)."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.m = self.v = None

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (both :class:`DeviceParams`)."""
        _check(params, grads)
        if self.m is None:
            self.m, self.v = params.zeros_like(), params.zeros_like()
        self.t += 1
        # Both bias corrections folded into the step size, as fastlstm.optimizers.Adam.
        step = (self.learning_rate * np.sqrt(1 - self.beta_2 ** self.t)
                / (1 - self.beta_1 ** self.t))
        n = params.flat.shape[0]
        if n:
            dt = params.dtype.type
            _adam[_grid(n)](params.flat, grads.flat, self.m.flat, self.v.flat,
                            dt(self.beta_1), dt(self.beta_2), dt(1 - self.beta_1),
                            dt(1 - self.beta_2), dt(step), dt(self.epsilon))


class DeviceSGD:
    """:class:`fastlstm.optimizers.SGD` (heavy-ball momentum) on :class:`DeviceParams`."""

    def __init__(self, learning_rate=1e-3, momentum=0.9):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.velocity = None

    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (both :class:`DeviceParams`)."""
        _check(params, grads)
        if self.velocity is None:
            self.velocity = params.zeros_like()
        n = params.flat.shape[0]
        if n:
            dt = params.dtype.type
            _momentum[_grid(n)](params.flat, grads.flat, self.velocity.flat,
                                dt(self.momentum), dt(self.learning_rate))
