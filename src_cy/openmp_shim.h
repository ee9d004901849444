/* Lets the kernels ask whether they were built with OpenMP; a serial build (no -fopenmp,
 * or FASTLSTM_NO_OPENMP=1) compiles without omp.h and prange runs as a plain loop. */
#ifndef FASTLSTM_OPENMP_SHIM_H
#define FASTLSTM_OPENMP_SHIM_H
#ifdef _OPENMP
#include <omp.h>
static int fastlstm_openmp_enabled(void) { return 1; }
static int fastlstm_max_threads(void) { return omp_get_max_threads(); }
/* Inside a parallel region: its size, and a barrier of all its threads. */
static int fastlstm_num_threads(void) { return omp_get_num_threads(); }
static void fastlstm_barrier(void) { _Pragma("omp barrier") }
#else
static int fastlstm_openmp_enabled(void) { return 0; }
static int fastlstm_max_threads(void) { return 1; }
static int fastlstm_num_threads(void) { return 1; }
static void fastlstm_barrier(void) {}
#endif
#endif
