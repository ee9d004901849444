/* Lets the kernels ask whether they were built with OpenMP; a serial build (no -fopenmp,
 * or FASTLSTM_NO_OPENMP=1) compiles without omp.h and prange runs as a plain loop. */
#ifndef FASTLSTM_OPENMP_SHIM_H
#define FASTLSTM_OPENMP_SHIM_H
#include <sched.h>
#include <stdatomic.h>
#ifdef _OPENMP
#include <omp.h>
static int fastlstm_openmp_enabled(void) { return 1; }
static int fastlstm_max_threads(void) { return omp_get_max_threads(); }
/* Inside a parallel region: its size. */
static int fastlstm_num_threads(void) { return omp_get_num_threads(); }
#else
static int fastlstm_openmp_enabled(void) { return 0; }
static int fastlstm_max_threads(void) { return 1; }
static int fastlstm_num_threads(void) { return 1; }
#endif

/* The per-step barrier of the hidden-unit split (every thread must see the whole new h
 * before the next step). Not `omp barrier`: libgomp's last thread to arrive wakes the
 * others with a futex system call even when they are spinning, and that call was most
 * of a barrier: ~0.28 us per step measured at (1, T, 8, 32) (0.22 us per step on one
 * thread, 0.39 split over two), more than the whole step of a small batch. Here the
 * last thread bumps a generation counter that the others spin on; a waiter that has
 * spun for long (more threads than free cores) yields its core between looks.
 * One barrier per parallel region, on the caller's stack, zeroed by
 * fastlstm_spin_barrier_init; the threads' writes before a wait are visible to every
 * thread after it (release/acquire through the two counters). */
typedef struct {
    _Alignas(64) atomic_int arrived;
    _Alignas(64) atomic_int generation;
} fastlstm_spin_barrier;

#define FASTLSTM_SPINS_BEFORE_YIELD 16384

static void fastlstm_spin_barrier_init(fastlstm_spin_barrier* b) {
    atomic_init(&b->arrived, 0);
    atomic_init(&b->generation, 0);
}

static void fastlstm_spin_barrier_wait(fastlstm_spin_barrier* b, int n_threads) {
    if (n_threads <= 1) return;
    /* the generation cannot move before this thread arrives */
    const int gen = atomic_load_explicit(&b->generation, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == n_threads - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&b->generation, gen + 1, memory_order_release);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == gen) {
        if (spins < FASTLSTM_SPINS_BEFORE_YIELD) {
            spins++;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}
#endif
