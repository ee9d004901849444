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
 * last thread bumps a generation counter that the others spin on. A waiter that has
 * spun for long (its partner's core is taken by another process) yields a few times and
 * then sleeps on the counter (a Linux futex), and the last thread makes the wake-up call
 * only when someone sleeps: spinning on, a waiter held a core that the descheduled
 * partner needed (forced two threads beside one busy process: (1, 150, 256, 256) took
 * 5.4 ms on average against 1.8 on one thread).
 * One barrier per parallel region, on the caller's stack, zeroed by
 * fastlstm_spin_barrier_init; the threads' writes before a wait are visible to every
 * thread after it (release/acquire through the counters). */
#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

typedef struct {
    _Alignas(64) atomic_int arrived;
    _Alignas(64) atomic_int generation;
    atomic_int sleepers;
} fastlstm_spin_barrier;

/* ~0.5 ms of pause instructions on Zen 5 (~28 ns each), more on Intel (~40 ns) */
static int fastlstm_spins_before_yield = 16384;
static int fastlstm_yields_before_sleep = 16;

static void fastlstm_spin_barrier_init(fastlstm_spin_barrier* b) {
    atomic_init(&b->arrived, 0);
    atomic_init(&b->generation, 0);
    atomic_init(&b->sleepers, 0);
}

static void fastlstm_sleep_while(atomic_int* word, int value) {
#ifdef __linux__
    /* sleeps only while *word == value (checked by the kernel); wakes after 1 ms at the
     * latest, so a wake-up lost to any race costs a millisecond, never a hang */
    struct timespec timeout = {0, 1000000};
    syscall(SYS_futex, (int*)word, FUTEX_WAIT_PRIVATE, value, &timeout, NULL, 0);
#else
    (void)word; (void)value;
    sched_yield();
#endif
}

static void fastlstm_wake_all(atomic_int* word) {
#ifdef __linux__
    syscall(SYS_futex, (int*)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

static void fastlstm_spin_barrier_wait(fastlstm_spin_barrier* b, int n_threads) {
    if (n_threads <= 1) return;
    /* the generation cannot move before this thread arrives */
    const int gen = atomic_load_explicit(&b->generation, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == n_threads - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        /* seq_cst store, then load: with the sleeper's seq_cst increment and load below,
         * either it sees the new generation or this thread sees it asleep */
        atomic_store(&b->generation, gen + 1);
        if (atomic_load(&b->sleepers) > 0) fastlstm_wake_all(&b->generation);
        return;
    }
    int spins = 0, yields = 0;
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == gen) {
        if (spins < fastlstm_spins_before_yield) {
            spins++;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else if (yields < fastlstm_yields_before_sleep) {
            yields++;
            sched_yield();
        } else {
            atomic_fetch_add(&b->sleepers, 1);
            if (atomic_load(&b->generation) == gen) fastlstm_sleep_while(&b->generation, gen);
            atomic_fetch_sub(&b->sleepers, 1);
        }
    }
}
#endif
