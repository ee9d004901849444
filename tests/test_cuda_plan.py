"""The cuda backend's planner (plain Python: runs without numba.cuda or a GPU)."""

import itertools

import pytest

from fastlstm.backends._cuda_plan import (GATES, H100, GpuLimits, plan_recurrence,
                                          shared_bytes)

KERNEL_CONFIGS = [(128, 128), (1, 64), (1, 256), (8, 128), (32, 64), (16, 256), (64, 512),
                  (64, 1024)]
SMALL = GpuLimits(sm_count=4, shared_per_block=4096, max_threads_per_block=256)


def check_plan(plan, kind, B, H, itemsize, limits):
    """What every plan must satisfy, whatever the regime."""
    R, U = plan.rows_per_tile, plan.units_per_tile
    assert 1 <= R <= B and 1 <= U <= H
    assert (plan.row_tiles - 1) * R < B <= plan.row_tiles * R      # rows covered once
    assert (plan.unit_tiles - 1) * U < H <= plan.unit_tiles * U    # units covered once
    assert plan.shared_bytes == shared_bytes(kind, H, U, itemsize) <= limits.shared_per_block
    assert plan.threads % 32 == 0 and 32 <= plan.threads <= limits.max_threads_per_block
    if plan.regime == "block_local":
        assert plan.unit_tiles == 1
    if plan.regime == "persistent":
        assert plan.tiles <= limits.sm_count          # every block resident at once


@pytest.mark.parametrize("kind", sorted(GATES))
@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("limits", [H100, SMALL], ids=["H100", "small"])
def test_every_plan_covers_the_batch_and_fits(kind, itemsize, limits):
    for B, H in itertools.chain(KERNEL_CONFIGS, [(3, 5), (1, 1), (200, 7)]):
        try:
            plan = plan_recurrence(kind, B, H, itemsize, limits)
        except ValueError as exc:       # only where one unit's weights cannot fit
            assert H * GATES[kind] * itemsize > limits.shared_per_block, exc
            continue
        check_plan(plan, kind, B, H, itemsize, limits)


def test_the_regimes_follow_from_the_sizes_on_an_h100():
    # all of W_h in one block: the small hidden sizes
    assert plan_recurrence("lstm", 32, 64, 4, H100).regime == "block_local"
    assert plan_recurrence("gru", 128, 128, 4, H100).regime == "block_local"
    # LSTM W_h at H = 128 is 256 KiB: units split over the SMs, one resident grid
    plan = plan_recurrence("lstm", 128, 128, 4, H100)
    assert plan.regime == "persistent" and plan.tiles <= H100.sm_count
    big = plan_recurrence("lstm", 64, 1024, 4, H100)
    assert (big.regime, big.units_per_tile, big.unit_tiles) == ("persistent", 8, 128)
    # float64 at H = 1024: more tiles than SMs, a launch per step
    assert plan_recurrence("lstm", 64, 1024, 8, H100).regime == "per_step"


def test_block_local_spreads_the_batch_over_the_sms():
    plan = plan_recurrence("rnn", 1000, 16, 4, GpuLimits(sm_count=10, shared_per_block=49152))
    assert plan.regime == "block_local"
    assert (plan.rows_per_tile, plan.row_tiles) == (100, 10)


def test_forced_regimes_and_tiles():
    plan = plan_recurrence("lstm", 5, 3, 8, SMALL, regime="per_step", rows_per_tile=2,
                           units_per_tile=2)
    assert (plan.regime, plan.row_tiles, plan.unit_tiles) == ("per_step", 3, 2)
    plan = plan_recurrence("gru", 5, 3, 4, GpuLimits(16, 4096), rows_per_tile=2,
                           units_per_tile=1)
    assert (plan.regime, plan.tiles) == ("persistent", 9)
    assert plan_recurrence("rnn", 5, 3, 4, SMALL, regime="block_local").unit_tiles == 1
    assert plan_recurrence("rnn", 5, 3, 4, SMALL, threads=64).threads == 64


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="conv"), "unknown cell kind"),
    (dict(regime="fastest"), "unknown regime"),
    (dict(B=0), "must be >= 1"),
    (dict(H=20, regime="block_local"), "does not fit one block"),
    (dict(H=20, units_per_tile=5, regime="block_local"), "holds every unit"),
    (dict(H=20, units_per_tile=1, rows_per_tile=1, B=8), "does not fit 4 SMs"),
    (dict(H=600), "one unit's weights"),
    (dict(H=20, units_per_tile=20), "needs 6400 bytes"),
])
def test_plans_that_cannot_run_are_refused_with_the_reason(kwargs, message):
    args = dict(kind="lstm", B=4, H=8, itemsize=4, limits=GpuLimits(4, 1024, 256))
    args.update(kwargs)
    kind, B, H, itemsize, limits = (args.pop(k) for k in
                                    ("kind", "B", "H", "itemsize", "limits"))
    with pytest.raises(ValueError, match=message):
        plan_recurrence(kind, B, H, itemsize, limits, **args)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="sm_count"):
        GpuLimits(sm_count=0, shared_per_block=1024)
