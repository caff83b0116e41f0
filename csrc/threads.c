/* threads.c -- one thread-count setting for maas's OpenMP kernels and
 * OpenBLAS's pool, and the deterministic-GEMM switch next to it. */
#include "maas.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

/* On by default; MAAS_DETERMINISTIC=0 in the environment turns it off,
 * read once (at the first GEMM or the first call here). */
static int deterministic = 1;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void read_env(void)
{
    const char *e = getenv("MAAS_DETERMINISTIC");
    if (e && strcmp(e, "0") == 0)
        deterministic = 0;
}

int maas_get_deterministic(void)
{
    pthread_once(&env_once, read_env);
    return deterministic;
}

void maas_set_deterministic(int on)
{
    pthread_once(&env_once, read_env);
    deterministic = on != 0;
    maas_blas_set_num_threads(maas_get_num_threads()); /* 1 when on */
}
