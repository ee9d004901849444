"""First-order optimizers that update parameter arrays in place.

The update formulas are the usual ones (Kingma & Ba for Adam, as TensorFlow and
scikit-learn's MLP use them); state is kept per parameter name so that an optimizer can be
saved, restored and continued (``warm_start``, ``partial_fit``).
"""

import numpy as np

try:                                   # one compiled pass per array (src_cy/_update.pyx)
    from . import _update
except ImportError:                    # a build without the extension: NumPy below
    _update = None


def _flat(arr):
    """1-D view of a C-contiguous array (None when it is not one)."""
    return arr.reshape(-1) if arr.flags.c_contiguous else None


class Adam:
    """Adam with bias correction. ``params`` and ``grads`` are dicts of same-shape arrays.

    Parameters
    ----------
    learning_rate : float
    beta_1, beta_2 : float
    epsilon : float
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.m, self.v = {}, {}

    def step(self, params, grads):
        """One update of every array in ``params`` (in place) from ``grads``."""
        self.t += 1
        # Folding both bias corrections into the step size is the formulation of the paper
        # (section 2) and of TensorFlow's AdamOptimizer.
        lr = (self.learning_rate * np.sqrt(1 - self.beta_2 ** self.t)
              / (1 - self.beta_1 ** self.t))
        for name, p in params.items():
            g = grads[name]
            if name not in self.m:         # (setdefault would allocate zeros every step)
                self.m[name], self.v[name] = np.zeros_like(p), np.zeros_like(p)
            m, v = self.m[name], self.v[name]
            flat = [_flat(a) for a in (p, m, v)]
            if _update is not None and all(f is not None for f in flat) \
                    and m.dtype == v.dtype == p.dtype:
                g_flat = np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)
                _update.adam_update(flat[0], g_flat, flat[1], flat[2], self.beta_1,
                                    self.beta_2, lr, self.epsilon)
                continue
            m *= self.beta_1
            m += (1 - self.beta_1) * g
            v *= self.beta_2
            v += (1 - self.beta_2) * g * g
            p -= (lr * m / (np.sqrt(v) + self.epsilon)).astype(p.dtype, copy=False)


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum.

    Parameters
    ----------
    learning_rate : float
    momentum : float, default 0.9
    """

    def __init__(self, learning_rate=1e-3, momentum=0.9):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.velocity = {}

    def step(self, params, grads):
        """One update of every array in ``params`` (in place) from ``grads``."""
        for name, p in params.items():
            if name not in self.velocity:
                self.velocity[name] = np.zeros_like(p)
            v = self.velocity[name]
            flat = [_flat(a) for a in (p, v)]
            if _update is not None and all(f is not None for f in flat) and v.dtype == p.dtype:
                g_flat = np.ascontiguousarray(grads[name], dtype=p.dtype).reshape(-1)
                _update.momentum_update(flat[0], g_flat, flat[1], self.momentum,
                                        self.learning_rate)
                continue
            v *= self.momentum
            v -= self.learning_rate * grads[name]
            p += v.astype(p.dtype, copy=False)


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
