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
#include <unistd.h>
#endif
#if defined(__linux__) || defined(__APPLE__)
#include <time.h>
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

static void fastlstm_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One round of a waiter's patience: a pause while `*spins` is under
 * fastlstm_spins_before_yield, then fastlstm_yields_before_sleep yields, then a sleep
 * while `*word` holds `value` (counted in `*sleepers`, whom the thread that changes
 * `*word` wakes; the seq_cst increment and load pair with its seq_cst store and load). */
static void fastlstm_wait_round(int* spins, int* yields, atomic_int* word, int value,
                                atomic_int* sleepers) {
    if (*spins < fastlstm_spins_before_yield) {
        (*spins)++;
        fastlstm_pause();
    } else if (*yields < fastlstm_yields_before_sleep) {
        (*yields)++;
        sched_yield();
    } else {
        atomic_fetch_add(sleepers, 1);
        if (atomic_load(word) == value) fastlstm_sleep_while(word, value);
        atomic_fetch_sub(sleepers, 1);
    }
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
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == gen)
        fastlstm_wait_round(&spins, &yields, &b->generation, gen, &b->sleepers);
}

/* Steps of slices that any thread of the region may compute: the fused forward's hidden-
 * unit split. Each thread computes its own slices of a step, then waits for the step's
 * other slices; a waiter that has spun `fastlstm_spins_before_steal` pauses takes (by a
 * compare-and-swap on the slice's claim) an unclaimed slice of the step and computes it
 * itself. A partner whose core is taken (a busy process, or OpenBLAS's threads spinning
 * ~0.1 s after a NumPy product) then costs one core's time, not a scheduler time slice per
 * step: (1, 100, 32, 64) took 47-52 ms a call there with a barrier per step, against
 * 0.11 ms. After a steal the thread steals after `FASTLSTM_SPINS_AFTER_STEAL` pauses until
 * a step completes without one. Which thread computes a slice never changes its bits.
 * `claims`: per slice, 64 bytes apart, the next step it may be taken for; `steps_done`:
 * completed steps (a 32-bit word, for the futex of waiters that sleep). */
typedef struct {
    _Alignas(64) atomic_llong done;          /* slices finished, over all steps */
    _Alignas(64) atomic_int steps_done;
    atomic_int sleepers;
    atomic_int stolen;                       /* slices taken over in this region */
    atomic_llong* claims;
    int n_slices;
} fastlstm_slice_steps;

#define FASTLSTM_CLAIM_STRIDE 8
#define FASTLSTM_SPINS_AFTER_STEAL 64
static int fastlstm_spins_before_steal = 2048;
static atomic_llong fastlstm_steals;        /* slices computed by another thread, ever */

/* `claims`: room for n_slices * FASTLSTM_CLAIM_STRIDE atomic_llong, 64-byte aligned. */
static long long fastlstm_steal_count(void) { return atomic_load(&fastlstm_steals); }

/* Regions in which a thread lost its core for long: a batch chunk (or a thread's part of
 * a unit split) whose wall time was over 1 ms more than its CPU time, and the CPU time
 * under 70% of it, or a unit split with many slices taken over (a thread that came late). Every parallel region waits for such a thread, so
 * the caller then runs on one thread for a while (fastlstm._governor.LateThreadBackoff). */
static atomic_llong fastlstm_lost_core_chunks;

static double fastlstm_wall_clock(void) {
#if defined(__linux__) || defined(__APPLE__)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
#else
    return 0.0;
#endif
}

static double fastlstm_thread_cpu_clock(void) {
#if defined(__linux__) || defined(__APPLE__)
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
#else
    return 0.0;
#endif
}

/* After a chunk started at `wall0` / `cpu0` (the two clocks above) in this thread. */
static void fastlstm_check_lost_core(double wall0, double cpu0) {
    const double wall = fastlstm_wall_clock() - wall0;
    const double cpu = fastlstm_thread_cpu_clock() - cpu0;
    if (wall - cpu > 1e-3 && cpu < 0.7 * wall)
        atomic_fetch_add_explicit(&fastlstm_lost_core_chunks, 1, memory_order_relaxed);
}

/* After a unit split's region of `steps` steps: a thread was late for long when slices
 * of an eighth of the steps (two at least) were taken over; one or two taken over is a
 * hiccup of the machine (on a shared VM, a few a second), not a core taken. */
static void fastlstm_check_stolen(fastlstm_slice_steps* p, long long steps) {
    const int stolen = atomic_load(&p->stolen);
    if (stolen >= 2 && 8LL * stolen >= steps)
        atomic_fetch_add_explicit(&fastlstm_lost_core_chunks, 1, memory_order_relaxed);
}

static long long fastlstm_late_count(void) {
    return atomic_load(&fastlstm_lost_core_chunks);
}

/* Tests: thread `fastlstm_late_thread` of a unit split starts `fastlstm_late_us` late
 * (as if its core were taken); -1: none. */
static int fastlstm_late_thread = -1;
static int fastlstm_late_us = 0;
static void fastlstm_maybe_late(int tid) {
#ifdef __linux__
    if (tid == fastlstm_late_thread) {
        struct timespec delay = {fastlstm_late_us / 1000000,
                                 (fastlstm_late_us % 1000000) * 1000L};
        nanosleep(&delay, NULL);
    }
#else
    (void)tid;
#endif
}

static void fastlstm_slice_steps_init(fastlstm_slice_steps* p, void* claims, int n_slices) {
    atomic_init(&p->done, 0);
    atomic_init(&p->steps_done, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stolen, 0);
    p->claims = (atomic_llong*)claims;
    p->n_slices = n_slices;
    for (int s = 0; s < n_slices; s++) atomic_init(&p->claims[s * FASTLSTM_CLAIM_STRIDE], 0);
}

/* Claims slice s of step t: 1 if this thread is to compute it. */
static int fastlstm_slice_take(fastlstm_slice_steps* p, int s, long long t) {
    long long expected = t;
    return atomic_compare_exchange_strong(&p->claims[s * FASTLSTM_CLAIM_STRIDE], &expected,
                                          t + 1);
}

/* Slice computed (its writes are seen by every thread that sees its step complete). */
static void fastlstm_slice_finish(fastlstm_slice_steps* p) {
    long long d = atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1;
    if (d % p->n_slices == 0) {
        atomic_store(&p->steps_done, (int)(d / p->n_slices));
        if (atomic_load(&p->sleepers) > 0) fastlstm_wake_all(&p->steps_done);
    }
}

/* Waits until step t is complete (returns -1), or claims one of its slices that nobody
 * took after `*patience` pauses and returns it for the caller to compute (then
 * fastlstm_slice_finish, and wait again). `*patience`: this thread's spins before a
 * steal, FASTLSTM_SPINS_AFTER_STEAL after one, back to fastlstm_spins_before_steal once
 * a step completes without one. */
static int fastlstm_slice_wait(fastlstm_slice_steps* p, long long t, int* patience) {
    const long long target = (t + 1) * p->n_slices;
    int spins = 0, yields = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < target) {
        if (spins < *patience) {
            spins++;
            fastlstm_pause();
            continue;
        }
        for (int s = 0; s < p->n_slices; s++) {
            if (fastlstm_slice_take(p, s, t)) {
                atomic_fetch_add_explicit(&fastlstm_steals, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&p->stolen, 1, memory_order_relaxed);
                *patience = FASTLSTM_SPINS_AFTER_STEAL;
                return s;
            }
        }
        /* every slice taken, one still computing: its thread may have lost its core
         * (steps_done is t until step t completes) */
        fastlstm_wait_round(&spins, &yields, &p->steps_done, (int)t, &p->sleepers);
    }
    /* the others completed the step while this thread waited: all there */
    if (spins > 0 && spins < *patience) *patience = fastlstm_spins_before_steal;
    return -1;
}
#endif
