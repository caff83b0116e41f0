/* threads.c -- one thread-count setting for maas's OpenMP kernels and
 * OpenBLAS's pool. */
#include "maas.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int n_threads = 0; /* 0: not set yet -> the number of cores */

int maas_get_num_threads(void)
{
    if (n_threads <= 0) {
#ifdef _OPENMP
        n_threads = omp_get_num_procs();
#else
        n_threads = 1;
#endif
        if (n_threads < 1)
            n_threads = 1;
    }
    return n_threads;
}

void maas_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    n_threads = n;
    maas_blas_set_num_threads(n);
}
