"""How the ``"cuda"`` backend lays a recurrence out on a GPU: the planner (plain Python).

A step's work is cut into tiles of ``rows_per_tile`` sequences (sorted by length) by
``units_per_tile`` hidden units. A CUDA block owns a tile: it keeps the tile's slice of
the recurrent weights in shared memory (the forward's columns of its units, every gate;
the backward's rows of its units) and computes every output of the tile: one thread per
(row, unit) pair sums all its gates, each sum in a fixed order, so results do not depend
on the tiling or the regime. Three regimes:

``"block_local"``
    One tile holds every unit (all of ``W_h`` fits one block's shared memory): blocks
    only split the batch and never wait for each other; one launch, a block barrier per
    step.
``"persistent"``
    Units split over blocks, at most one tile per SM, all blocks resident at once: one
    launch for the whole sequence and a grid-wide barrier per step (two for the GRU's
    TF1 form, whose candidate product needs every unit's ``r * h``).
``"per_step"``
    The fallback when the tiles do not fit on the GPU at once: a launch per step (per
    phase), the kernel boundary as the barrier, each launch reloading its slice.

The planner only reads the GPU's limits (:class:`GpuLimits`), so it is tested without one.
"""

import dataclasses

#: Gate blocks of ``W_h`` per kind: its columns are ``GATES[kind] * H`` wide.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
REGIMES = ("block_local", "persistent", "per_step")
_WARP = 32


@dataclasses.dataclass(frozen=True)
class GpuLimits:
    """What the planner needs to know about a GPU.

    Parameters
    ----------
    sm_count : int
        Streaming multiprocessors.
    shared_per_block : int
        Bytes of dynamic shared memory one block may use (the opt-in maximum where the
        backend could raise the 48 KiB default, else the default).
    max_threads_per_block : int
    """

    sm_count: int
    shared_per_block: int
    max_threads_per_block: int = 1024

    def __post_init__(self):
        for name in ("sm_count", "shared_per_block", "max_threads_per_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"GpuLimits.{name} must be >= 1, got {getattr(self, name)}")


#: An H100 SXM (132 SMs, 227 KiB of opt-in shared memory per block), for examples and
#: tests; the backend reads the real limits from the device.
H100 = GpuLimits(sm_count=132, shared_per_block=227 * 1024)


@dataclasses.dataclass(frozen=True)
class RecurrencePlan:
    """A recurrence's layout on the GPU (see the module docstring).

    Attributes
    ----------
    regime : {"block_local", "persistent", "per_step"}
    rows_per_tile, units_per_tile : int
        A tile's size; the last row and unit tiles may be partial.
    row_tiles, unit_tiles : int
    threads : int
        Threads per block (a multiple of 32).
    shared_bytes : int
        Dynamic shared memory per block: the tile's weight slice.
    """

    regime: str
    rows_per_tile: int
    units_per_tile: int
    row_tiles: int
    unit_tiles: int
    threads: int
    shared_bytes: int

    @property
    def tiles(self):
        return self.row_tiles * self.unit_tiles

    @property
    def grid(self):
        """Blocks per launch: one per tile."""
        return self.tiles


def shared_bytes(kind, num_units, units_per_tile, itemsize):
    """Dynamic shared memory of one tile: the forward's ``H x (G U)`` weight columns (the
    backward's ``U x (G H)`` rows, the same size)."""
    return num_units * GATES[kind] * units_per_tile * itemsize


def _threads(pairs, limits):
    """A thread per (row, unit) pair of a tile, in whole warps, at most a block's."""
    want = max(_WARP, -(-pairs // _WARP) * _WARP)
    return min(want, max(_WARP, limits.max_threads_per_block // _WARP * _WARP))


def _spread(n, parts):
    """``n`` items in ``parts`` near-equal tiles: (tile size, tiles)."""
    size = -(-n // max(1, min(n, parts)))
    return size, -(-n // size)


def plan_recurrence(kind, batch_size, num_units, itemsize, limits, regime=None,
                    rows_per_tile=None, units_per_tile=None, threads=None):
    """Choose the layout of a ``kind`` recurrence over ``batch_size`` sequences.

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
    batch_size, num_units : int
        ``B`` and ``H``; ``B >= 1``.
    itemsize : int
        Bytes per element (4 for float32, 8 for float64).
    limits : GpuLimits
    regime : {"block_local", "persistent", "per_step"}, optional
        Force a regime (tests, benchmarks); by default the first that fits, in that order.
    rows_per_tile, units_per_tile, threads : int, optional
        Force a tile size or the block size (tests: many tiles on tiny shapes).

    Returns
    -------
    RecurrencePlan

    Raises
    ------
    ValueError
        Unknown kind or regime; a forced regime or tile that does not fit; or a hidden
        size so large that one unit's weights exceed a block's shared memory.
    """
    if kind not in GATES:
        raise ValueError(f"unknown cell kind {kind!r}; expected one of {sorted(GATES)}")
    if regime is not None and regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; expected one of {REGIMES}")
    if batch_size < 1 or num_units < 1:
        raise ValueError(f"batch_size and num_units must be >= 1, got {batch_size}, "
                         f"{num_units}")
    B, H, G = batch_size, num_units, GATES[kind]

    def make(name, R, U):
        R, U = min(R, B), min(U, H)
        size = shared_bytes(kind, H, U, itemsize)
        if size > limits.shared_per_block:
            raise ValueError(
                f"a tile of {R} rows x {U} units of a {kind} with {H} units needs {size} "
                f"bytes of shared memory; this GPU's blocks have {limits.shared_per_block}")
        n_threads = threads or _threads(R * U, limits)
        return RecurrencePlan(name, R, U, -(-B // R), -(-H // U), n_threads, size)

    largest_units = limits.shared_per_block // (H * G * itemsize)
    if largest_units < 1:
        raise ValueError(
            f"the cuda backend cannot run a {kind} with {H} units at {itemsize}-byte "
            f"precision: one unit's weights ({H * G * itemsize} bytes) exceed a "
            f"block's shared memory ({limits.shared_per_block} bytes)")

    forced_tile = rows_per_tile is not None or units_per_tile is not None
    if forced_tile:
        R = rows_per_tile or B
        U = units_per_tile or H
        name = regime or ("block_local" if U >= H else "persistent")
        if name == "block_local" and U < H:
            raise ValueError("a block_local plan holds every unit: units_per_tile must be "
                             f">= num_units ({H}), got {U}")
        plan = make(name, R, U)
        if name == "persistent" and plan.tiles > limits.sm_count:
            raise ValueError(f"a persistent plan of {plan.tiles} tiles does not fit "
                             f"{limits.sm_count} SMs")
        return plan

    # block_local: the batch over the SMs, every block holding all of W_h
    R, row_tiles = _spread(B, limits.sm_count)
    if regime in (None, "block_local"):
        if largest_units >= H:
            return make("block_local", R, H)
        if regime == "block_local":
            raise ValueError(f"W_h of a {kind} with {H} units does not fit one block's "
                             f"shared memory ({limits.shared_per_block} bytes)")

    # persistent: units first over the SMs (each block streams less of W_h), then rows
    U, unit_tiles = _spread(H, limits.sm_count)
    R, row_tiles = _spread(B, max(1, limits.sm_count // unit_tiles))
    fits = largest_units >= U
    if regime in (None, "persistent") and fits and unit_tiles * row_tiles <= limits.sm_count:
        return make("persistent", R, U)
    if regime == "persistent":
        raise ValueError(f"no persistent plan for a {kind} with {H} units and batch "
                         f"{B}: its tiles do not fit {limits.sm_count} SMs at once")

    # per_step: the widest unit tile that fits, every tile its own block
    return make("per_step", R, min(U, largest_units))
