"""The Numba kernels' register-tiled products (fastlstm/backends/_numba_tiles.py).

Every panel width is compiled and checked on any CPU (LLVM splits the vectors into the
registers it has), so the widths chosen for other CPUs are tested here too.
"""

import numpy as np
import pytest

from fastlstm.backends import _numba_tiles as tiles

WIDTHS = (8, 16, 32)


def in_order_product(a, W):
    """float32 ``a @ W``, each element an in-order sum of fused multiply-adds: the float32
    product is exact in float64 and the float64 sum, rounded to float32, is the FMA's
    result (barring a double rounding, which the tests' data do not meet)."""
    out = np.zeros((a.shape[0], W.shape[1]), a.dtype)
    for k in range(a.shape[1]):
        out = (out.astype(np.float64) + a[:, k:k + 1].astype(np.float64) * W[k]).astype(a.dtype)
    return out


def test_panel_width_fits_the_cpu():
    assert tiles.PANEL_WIDTH in WIDTHS
    assert tiles.padded(1) == tiles.padded(tiles.PANEL_WIDTH) == tiles.PANEL_WIDTH
    assert tiles.padded(70, 16) == 80


@pytest.mark.parametrize("width", WIDTHS)
def test_pack_panels_layout(width):
    W = np.arange(5 * 37, dtype=np.float32).reshape(5, 37)
    P = tiles.pack_panels(W, width=width)
    assert P.shape == (-(-37 // width), 5, width) and P.flags.c_contiguous
    flat = P.transpose(1, 0, 2).reshape(5, -1)
    np.testing.assert_array_equal(flat[:, :37], W)
    assert np.all(flat[:, 37:] == 0)
    np.testing.assert_array_equal(tiles.pack_panels(W.T.copy().T, width=width), P)   # any strides
    np.testing.assert_array_equal(tiles.pack_panels(W[:2], W[2:], width=width), P)  # stacked
    with pytest.raises(ValueError, match="same columns"):
        tiles.pack_panels(W, W[:, 1:], width=width)


@pytest.mark.parametrize("width", WIDTHS)
def test_pack_panels_reads_rows_or_columns_alike(width):
    """Blocks packed by rows (contiguous rows), by columns (a transposed view) or from a
    strided view, on one thread or two, stacked in any mix: the same panels."""
    W = np.random.default_rng(0).standard_normal((67, 2 * width + 5)).astype(np.float32)
    expected = np.zeros((3, 67, width), np.float32)
    for p in range(3):
        cols = W[:, p * width:(p + 1) * width]
        expected[p, :, :cols.shape[1]] = cols
    by_columns = np.asfortranarray(W)
    strided = np.repeat(W, 2, axis=1)[:, ::2]
    assert by_columns.strides[0] == 4 and not strided.flags.c_contiguous
    for n_threads in (1, 2):
        for blocks in ((W,), (by_columns,), (strided,), (W[:30], by_columns[30:]),
                       (by_columns[:1], strided[1:40], W[40:])):
            np.testing.assert_array_equal(
                tiles.pack_panels(*blocks, width=width, n_threads=n_threads), expected)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 9])
def test_product_float32_is_the_in_order_fma_sum(width, n):
    """float32: bit-identical to the in-order FMA sum for every row-tile size;
    the padding columns get zeros and rows past n are left alone."""
    rng = np.random.default_rng(n)
    K, N = 37, 70
    a = rng.standard_normal((10, K + 3)).astype(np.float32)
    W = rng.standard_normal((K, N)).astype(np.float32)
    out = np.full((10, tiles.padded(N, width) + 5), 7.0, np.float32)
    tiles.panel_product(width)(a, n, tiles.pack_panels(W, width=width), out)
    np.testing.assert_array_equal(out[:n, :N], in_order_product(a[:n, :K], W))
    assert np.all(out[:n, N:tiles.padded(N, width)] == 0)
    assert np.all(out[:n, tiles.padded(N, width):] == 7.0)
    assert np.all(out[n:] == 7.0)


@pytest.mark.parametrize("width", WIDTHS)
def test_product_float64(width):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 50))
    W = rng.standard_normal((50, 33))
    out = np.zeros((6, tiles.padded(33, width)))
    tiles.panel_product(width)(a, 6, tiles.pack_panels(W, width=width), out)
    np.testing.assert_allclose(out[:, :33], a @ W, rtol=1e-13, atol=1e-13)


def test_bits_do_not_depend_on_the_panel_width():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((9, 128)).astype(np.float32)
    W = rng.standard_normal((128, 512)).astype(np.float32)
    results = []
    for width in WIDTHS:
        out = np.zeros((9, 512), np.float32)
        tiles.panel_product(width)(a, 9, tiles.pack_panels(W, width=width), out)
        results.append(out)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_bits_do_not_depend_on_the_row_tiles():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((23, 70)).astype(np.float32)
    P = tiles.pack_panels(rng.standard_normal((70, 96)).astype(np.float32))
    results = []
    for tile_rows in range(1, tiles.MAX_TILE_ROWS + 1):
        out = np.zeros((23, 96), np.float32)
        tiles.panel_product(tile_rows=tile_rows)(a, 23, P, out)
        results.append(out)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    with pytest.raises(ValueError, match="tile_rows"):
        tiles.panel_product(tile_rows=tiles.MAX_TILE_ROWS + 1)


@pytest.mark.parametrize("passes", [True, False])
@pytest.mark.parametrize("width", WIDTHS)
def test_long_sums_in_passes_are_the_in_order_fma_sum(width, passes):
    """A panel past L1 (more than 3 passes of PASS_BYTES) is summed in passes over k over
    all row tiles where the CPU's L1 takes them, each pass continuing the stored sums while
    the next one's rows are prefetched, or whole per tile: either way the in-order FMA
    sum's bits, for rows left over the tiles (13 = 4 + 4 + 5) and for a range of panels;
    the columns outside the range are left alone."""
    K = 3 * (tiles.PASS_BYTES // (4 * width)) + 37
    rng = np.random.default_rng(width)
    a = rng.standard_normal((13, K)).astype(np.float32)
    W = rng.standard_normal((K, 3 * width)).astype(np.float32)
    P = tiles.pack_panels(W, width=width)
    want = in_order_product(a, W)
    for n in (3, 13):
        out = np.full((13, 3 * width), 7.0, np.float32)
        tiles.panel_product(width, passes=passes)(a, n, P, out)
        np.testing.assert_array_equal(out[:n], want[:n])
        assert np.all(out[n:] == 7.0)
    out = np.full((13, 3 * width), 7.0, np.float32)
    tiles.panel_product(width, column_range=True, passes=passes)(a, 13, P, out, 1, 2)
    np.testing.assert_array_equal(out[:, width:2 * width], want[:, width:2 * width])
    assert np.all(out[:, :width] == 7.0) and np.all(out[:, 2 * width:] == 7.0)


def test_l1d_cache_size_is_read_from_the_system_or_zero():
    """The rule for passes reads the CPU's L1 data cache: a plausible size where Linux
    reports one, 0 (no passes) where it does not."""
    size = tiles.l1d_cache_bytes()
    assert size == 0 or 8 << 10 <= size <= 1 << 20
    assert tiles.PASSES_OVER_K == (size >= tiles.PASS_MIN_L1D_BYTES)


def test_l1d_cache_size_takes_the_level_1_data_cache_of_the_sysfs_tree(tmp_path):
    """Instruction caches and other levels are passed over; a size in K; a tree without
    a level-1 data cache, or none at all, gives 0."""
    def index(name, level, kind, size):
        d = tmp_path / name
        d.mkdir()
        for f, v in (("level", level), ("type", kind), ("size", size)):
            (d / f).write_text(v + "\n")
    index("index0", "2", "Unified", "1M")
    index("index1", "1", "Instruction", "32K")
    assert tiles.l1d_cache_bytes(str(tmp_path)) == 0
    index("index2", "1", "Data", "48K")
    assert tiles.l1d_cache_bytes(str(tmp_path)) == 48 << 10
    assert tiles.l1d_cache_bytes(str(tmp_path / "missing")) == 0


def test_empty_sum_gives_zeros():
    out = np.full((2, 8), 3.0, np.float32)
    tiles.panel_product(8)(np.zeros((2, 0), np.float32), 2, np.zeros((1, 0, 8), np.float32),
                           out)
    assert np.all(out == 0)
