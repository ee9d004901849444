"""Every tuned threshold of fastlstm, in one place, one line each: what it trades and how
it was chosen. The measurements behind them are in docs/design.md ("Thresholds").

They depend on the sizes and the machine's core count only, never on the thread count
asked for: a threshold that changes the order of a sum would otherwise change the bits
with ``fastlstm.threads``. Choices between schedules that give the same bits (the split
tuner's) may follow a timing; nothing else does. Read at call time (``_thresholds.NAME``),
so a test or an experiment can set one.

Compile-time constants of the C kernels, listed here so the list is complete:
``FL_TN_KS = 128`` (src_cy/fused_step.h: steps per piece of the weight-gradient tiles,
dz copied contiguous per piece; sized to L2), ``FL_TN_GROUP = 4`` (tile groups per
thread's turn), ``FL_SMALL_GEMM_MAX_ROWS = 16`` (src_cy/small_gemm_avx2.h: the AVX2
few-row kernel's reach; above it OpenBLAS's packing pays off).
"""

# ------------------------------------------------------------------ batch chunks (cores)
#: BLAS path: rows per chunk at least; more chunks pack W_h more often, fewer idle a core
#: (measured 4 vs 8 rows on 2 cores: 4 wins where the units cannot split).
MIN_CHUNK_ROWS = 4
#: The GRU's and the basic RNN's float32 per-step products run on the fused kernels' tiles
#: (W packed once per call) from this batch size; a single sequence keeps BLAS's
#: matrix-vector product. GRU inference, OpenBLAS / tiles ms, 2-core AMD EPYC (Zen 4):
#: (128, 28, 28, 128) 6.3-6.7 / 5.2-5.8; (64, 25, 512, 512) 33-36 / 31; but one sequence
#: gains nothing: (1, 150, 256, 256) 2.0-2.5 / 2.3-2.4, (1, 50, 512, 1024) 13.9-14.7 /
#: 14.0-15.4.
MIN_BATCH_FOR_STEP_TILES = 2
#: Fused path: rows per chunk at least, one 4-row register tile (two 4-row chunks beat
#: one 8-row chunk at (8, 100, 64, 128): 0.93 vs 0.68 of torch).
MIN_CHUNK_ROWS_FUSED = 4
#: BLAS path: batches up to this size split the hidden units instead of the batch (each
#: core streams half of W_h per step; measured up to (32, 50, 256, 512)).
MAX_BATCH_UNIT_SPLIT = 32
#: BLAS path: units per core at least for a unit split (narrower slices lose to the
#: per-step barrier: (1, 100, 32, 64) 1.02 -> 0.79 of torch with 32-unit slices).
MIN_UNITS_PER_SLICE = 128
#: Fused backward: units per core at least for a unit split (whole 64-unit blocks).
MIN_UNITS_PER_SLICE_FUSED = 64

# --------------------------------------------------------- fused step: unit split rules
#: 16-unit groups per core at least before a batch of several chunks splits its units
#: (fewer: the per-step barrier costs what the split saves; (6, 100, 64, 64) measured).
MIN_GROUPS_PER_SLICE = 4
#: 16-unit groups per core at least for a single sequence's unit split (one row against
#: up to four groups keeps four FMA chains busy; one group per core waits on latency).
MIN_GROUPS_PER_SLICE_ONE_ROW = 2
#: Chunks of fewer rows split the hidden units instead (each core streams half the
#: weights against every row; measured (8..16, 100..150, 32..256, 64..256)).
MAX_CHUNK_ROWS_FOR_UNIT_SPLIT = 8
#: ... and at exactly MAX_CHUNK_ROWS_FOR_UNIT_SPLIT rows, only from this many groups (two
#: full tiles per chunk and 8 groups: the barrier cost more than the traffic saved).
UNIT_SPLIT_GROUPS_AT_FULL_TILES = 16
#: Packed weights of this many bytes or more split the units whatever the batch (each
#: core streams half of them from L3 / memory; 32 MB: 5% faster, 8 MB: equal).
UNIT_SPLIT_MIN_WEIGHT_BYTES = 16 << 20
#: On AMX tiles (compute_dtype="bfloat16"), bfloat16 packed weights of this many bytes or
#: more split the units whatever the batch: a core's half of the weights against all
#: rows in one GEMM per step. Intel Xeon, 2 threads, inference: (64, 25, 512, 512), 4 MB,
#: 7.3 ms against 9.2 in batch chunks; (64, 25, 1024, 1024) 32.6 against 34.9; at 1 MB
#: ((64, 25, 256, 256)) and under, the chunks were 3-10% faster.
AMX_UNIT_SPLIT_MIN_WEIGHT_BYTES = 2 << 20
#: Small batches on 2+ threads take the split tuner's measured choice between the unit
#: split and the batch chunks (same bits; the balance is the cross-core latency, which
#: moves on shared machines). False: the fixed rules above.
TUNE_UNIT_SPLIT = True
#: Split tuner: rounds (a timed pair of calls of each candidate) before choosing.
TUNER_PROBES = 5
#: Seconds that small batches run on one core after a unit split whose thread lost its
#: core (``_split_backoff``), doubling while that repeats, up to SPLIT_BACKOFF_MAX.
SPLIT_BACKOFF_MIN = 0.01
SPLIT_BACKOFF_MAX = 1.0
#: Split tuner: a candidate every round of which was this many times faster than every
#: round of the others is chosen at once (the slower one is not run again until reprobing).
TUNER_DECISIVE_RATIO = 1.3
#: Split tuner: calls that use a choice before the candidates are timed again (1% cost).
TUNER_REPROBE_AFTER = 2000

# -------------------------------------------------------- fused step: input projection
#: Largest I + H for which the step computes x W_x itself (a group of packed [W_x; W_h]
#: must stay in L2: (64, 25, 512, 512) 3% faster in-step, (64, 25, 1024, 1024) 23% slower).
MAX_FUSED_INPUT_WIDTH = 1024
#: The same where a core's L2 holds LARGE_L2_BYTES or more: a group of 2048 rows is 512 KB
#: in float32 (256 KB in bfloat16 pairs), a quarter of such an L2. Intel Xeon (2 MB L2),
#: 2 threads, (64, 25, 1024, 1024) inference ms GEMM first / in-step: float32 90.9 / 82.2,
#: bfloat16 products on AMX 26.5-27.3 / 20.3-21.5 (training 90.3 / 85.3).
MAX_FUSED_INPUT_WIDTH_LARGE_L2 = 2048
LARGE_L2_BYTES = 2 << 20
#: Numba backend: largest I + H for which the LSTM step computes x W_x itself (no GEMM
#: before the loop, no xproj round trip; inference ms unfused / fused, 2-core Zen 5: seed
#: 2.14 / 1.75, (64, 25, 512, 512) 21.8 / 21.1, (64, 25, 1024, 1024) 76.7 / 91.3).
MAX_FUSED_INPUT_WIDTH_NUMBA = 1024
#: Numba backend: smallest batch whose LSTM step computes x W_x itself, one 4-row tile
#: ((4, 100, 64, 128) 0.74 / 0.58 ms; (1, 150, 256, 256) 1.70 / 3.30), unless I + H <=
#: MAX_FUSED_SMALL_INPUT_WIDTH.
MIN_BATCH_FUSED_INPUT_NUMBA = 4
#: Below this batch size x W_x stays in the step only for I <= H / 2 (a tiny batch's
#: step is a chain of latencies that x W_x lengthens; one GEMM before the loop does not),
#: or for I + H <= MAX_FUSED_SMALL_INPUT_WIDTH.
MIN_BATCH_FUSED_WIDE_INPUT = 8
#: Largest I + H whose step computes x W_x itself at any batch size (Cython and Numba):
#: there the GEMM before the loop and the xproj round trip cost more than the longer step
#: (the packed weights at most 192 rows, the tiles' one pass over k). Zen 3, inference ms
#: GEMM first / in-step, 1 thread: (1, 29, 12, 16) 0.15 / 0.07, (1, 100, 64, 64) 0.32 /
#: 0.25, (4, 100, 128, 64) 0.89 / 0.68; training 0.89-0.99 as long; but (1, 100, 128,
#: 128) 0.74 / 0.81. Numba (batches under 4): (1, 29, 12, 16) 0.18 / 0.10, (1, 100, 32,
#: 64) 0.35 / 0.25; training 0.92-1.00, but (3, 100, 128, 64) on two threads 1.09.
MAX_FUSED_SMALL_INPUT_WIDTH = 192
#: Packed weights of this many bytes or more are packed by all threads (8 MB took
#: 0.37 ms on one, ~2% of an inference); below, each thread packs what it reads.
PARALLEL_PACK_MIN_BYTES = 1 << 20

# ------------------------------------------------------------- GEMMs outside the loop
#: Narrowest column block worth its own BLAS call (a multiple of the AVX-512 width).
MIN_BLOCK_COLUMNS = 64
#: Products below this many multiply-adds run as one single-threaded call (blocks and a
#: parallel region cost 50-70 us where one call took 5-20 us).
MIN_BLOCKED_MACS = 1 << 22
#: ISAs whose register tiles take the weight gradients (AVX2's lost to OpenBLAS Haswell
#: except for variable lengths; AVX-512's beat SkylakeX: 1.20 vs 1.44 ms, seed size).
WEIGHT_GRADIENT_TILE_ISAS = ("avx512",)
#: Weight gradients a.T @ b with more rows of the result (I + H + 1) than this run as
#: BLAS blocks even where the tiles could: OpenBLAS's cache blocking wins there. 2-core
#: AMD EPYC (Zen 4), [x, h, 1]^T dz, tiles / BLAS GFLOP/s: 513 rows (K = 2400) 194 / 174;
#: 1025 rows (K = 1600) 163 / 181; 2049 rows 177 / 199; (K = 3200) 185 / 186. Whole
#: training steps, taking turns in one process, tiles / BLAS ms: (64, 25, 512, 512) 110.8 /
#: 108.6, 118.2 / 114.2, 132.3 / 134.1; (64, 25, 1024, 1024) 485.3 / 461.1, 441.8 / 425.6.
MAX_WEIGHT_GRADIENT_TILE_ROWS = 640
#: Numba backend: weight gradients a.T @ b with at most this many rows of the result (I +
#: H + 1) run on its register tiles (``_numba_gemm.gemm_tn``), wider ones as BLAS blocks.
#: Training, 2-core AMD EPYC (Zen 4), tiles / BLAS ms: seed 16.5 / 17.4, (8, 100, 64, 128)
#: 3.51 / 3.68, (16, 150, 256, 256) (513 rows) 48.0 / 49.5; (64, 25, 512, 512) (1025
#: rows) 125.5 / 119.4.
MAX_NUMBA_TN_TILE_ROWS = 640
#: The same where the panels are 16 floats wide or narrower (AVX2, NEON, SSE: a tile row
#: is two vectors of 8 or 4 floats). 2-core AMD EPYC Zen 3 (AVX2), the product alone,
#: (K, M rows, N), tiles / BLAS blocks ms: (3584, 28, 512) 1.14-1.43 / 1.59-1.68, (3200,
#: 64, 256) 0.83-1.17 / 1.06-1.34; (3584, 129, 512) 5.2-5.6 / 4.5-4.8, (2400, 256, 1024)
#: 15.3-16.6 / 9.7-10.7, (3200, 512, 2048) 81.6-99.7 / 38.9-47.2. Whole training steps in
#: turns in one process, new / old: (64, 25, 512, 512) 0.84-0.86, (16, 150, 256, 256)
#: 0.90-0.92, seed 0.93-0.98, (8, 100, 64, 128) and (32, 100, 64, 64) 0.98-1.01.
MAX_NUMBA_TN_TILE_ROWS_NARROW_PANELS = 64
#: Widest input (I) whose gradient dz W_x^T runs on the tiles (at I = 1024 packing 16 MB
#: of W_x^T per call cost more than the tiles gain over BLAS at ~450 GFLOP/s).
MAX_TILED_INPUT_GRADIENT = 512
#: A last partial 64-column block this narrow or narrower runs on the 8-row narrow tiles;
#: wider, the 64-column tile's padding loses to BLAS (I = 48: 488 vs 458 us).
MAX_TILED_INPUT_GRADIENT_TAIL = 32
#: Widest input (I) whose gradient runs on the Numba backend's panel tiles
#: (``_numba_gemm.input_gradient_tiles``), at every size (a row's bits then do not depend
#: on the rest of the batch, which OpenBLAS's Haswell kernels do not give): elsewhere its
#: BLAS blocks. Tiles / blocks ms, 2 threads, Zen 4: (T, B, I, H) = (28, 128, 28, 128)
#: 0.68 / 0.84-0.91, (100, 32, 64, 64) 0.63 / 0.81, (100, 64, 128, 128) 5.3-5.7 /
#: 6.1-6.6, (150, 16, 256, 256) 7.0-8.0 / 7.5-8.1; (25, 64, 512, 512) 19.8-20.1 / 18.7.
#: Small ones, Zen 3, us: (6, 64, 12, 48) 60 / 56-74, (100, 1, 32, 64) 60 / 45, (28, 16,
#: 28, 64) 89-99 / 116-118, (100, 8, 64, 128) 402-412 / 358-432.
MAX_NUMBA_TILED_INPUT_GRADIENT = 256
#: The weight gradients gather the existing rows first when at most this share of the
#: T * B rows exists (62% existing: 11.0 ms gathered vs 12.1 over all rows).
MAX_SHARE_FOR_GATHER = 0.85

# --------------------------------------------------------------------------- estimators
#: Sequences per forward pass when predicting (1024 cost 168 ms on a first call, first
#: touch of ~150 MB of buffers, against 45 for 256; no faster once warm).
PREDICT_BATCH = 256
#: A batch padded to more than this many times its existing steps runs as groups of
#: similar lengths (one 20,000-step sequence among 20-step ones: 805 MB padded).
MAX_PADDING_FACTOR = 2.0

# ------------------------------------------------------- default thread count (governor)
#: Seconds between two looks at /proc/stat for the cores other processes keep busy (its
#: counters tick every 10 ms: a shorter window reads mostly rounding).
LOAD_WINDOW = 0.1
#: Another process using this much of a core over a window takes the core (one busy
#: process measured 0.94-1.19 cores; an idle machine 0.00).
BUSY_CORE = 0.3
#: Timed runs of each candidate (the free cores, one thread) per look, at least ...
THREAD_PROBE_RUNS = 3
#: ... and seconds, at least: threads lose by rare long runs (digits batches 0.7 ms on two
#: threads, 0.9 on one, but one in five took 2.5-5 ms), which a few runs would miss.
THREAD_PROBE_TIME = 0.025
#: One-thread runs count only this long after the last threaded one: OpenMP's idle
#: workers spin ~9 ms (GOMP's 300,000 pauses) beside them first.
THREAD_SETTLE = 0.02
#: Threads are chosen only when their mean run is at most this share of one thread's.
PREFER_THREADS = 0.95
#: Runs of the chosen count before the next look; doubled each time a look confirms the
#: choice, up to the second. A look at a losing candidate costs ~9 ms for digits-sized
#: batches: 64 keeps the first fits' share small, 4096 a long fit's below 1%.
FIRST_LOOK_AFTER = 64
LAST_LOOK_AFTER = 4096
#: The chosen count's recent runs this many times slower than when chosen: look again
#: at once (a process that took a core slowed seed-size training 1.2-2x).
THREAD_SLOWDOWN = 1.5
