/* blas.c -- the one place that calls CBLAS. By default the symbols are the
 * scipy-openblas32 wheel's (prefixed `scipy_`); building with
 * MAAS_SYSTEM_BLAS uses a system OpenBLAS's unprefixed names.
 *
 * Threading: OpenBLAS's own pool (pthreads) and maas's OpenMP kernels are
 * two sets of threads on the same cores. After a parallel region each
 * pool's idle workers keep spinning for a while (OpenBLAS yields in a loop
 * for ~0.1 s, libgomp spins ~300k iterations), and a kernel of the other
 * pool waits for a core: on 2 cores a 784-256-128-10 training step at
 * batch 32 took 8 ms instead of 0.5 ms. So with the wheel's OpenBLAS
 * (>= 0.3.27) maas hands OpenBLAS's parallel jobs to OpenMP through
 * openblas_set_threads_callback_function: one pool for everything. */
#include "maas.h"

#include <cblas.h>

#ifdef MAAS_SYSTEM_BLAS
#define MAAS_BLAS(name) name
#else
#define MAAS_BLAS(name) scipy_##name
#define MAAS_BLAS_CALLBACK 1
#endif

#ifdef MAAS_BLAS_CALLBACK
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    openblas_dojob_callback dojob;
    int job;
    void *data;
    int dojob_data;
} blas_job;

static void *run_job(void *arg)
{
    blas_job *j = arg;
    j->dojob(j->job, j->data, j->dojob_data);
    return NULL;
}

/* Runs job `first` on the caller and the jobs after it on fresh pthreads:
 * OpenBLAS's level-3 jobs wait on each other, so they must all run at once
 * (an OpenMP team smaller than numjobs, e.g. when nested, would deadlock).
 * Used only when OpenMP cannot give a full team. A job whose thread cannot
 * be created runs inline, the best left to do then. */
static void run_on_pthreads(openblas_dojob_callback dojob, int first, int numjobs,
                            size_t elsize, char *jobdata, int dojob_data)
{
    enum { MAX_JOBS = 64 };
    pthread_t th[MAX_JOBS];
    blas_job jobs[MAX_JOBS];
    int started[MAX_JOBS] = {0};
    for (int i = first + 1; i < numjobs && i < MAX_JOBS; i++) {
        jobs[i] = (blas_job){dojob, i, jobdata + (size_t)i * elsize, dojob_data};
        started[i] = pthread_create(&th[i], NULL, run_job, &jobs[i]) == 0;
        if (!started[i])
            run_job(&jobs[i]);
    }
    dojob(first, jobdata + (size_t)first * elsize, dojob_data);
    for (int i = first + 1; i < numjobs && i < MAX_JOBS; i++)
        if (started[i])
            pthread_join(th[i], NULL);
}

/* OpenBLAS's threading callback: job i gets jobdata + i * elsize; all
 * numjobs run concurrently on maas's OpenMP team. */
static void omp_threads_callback(int sync, openblas_dojob_callback dojob, int numjobs,
                                 size_t elsize, void *jobdata, int dojob_data)
{
    char *data = jobdata;
    if (numjobs <= 1) {
        if (numjobs == 1)
            dojob(0, data, dojob_data);
        return;
    }
#ifdef _OPENMP
    if (!omp_in_parallel()) {
#pragma omp parallel num_threads(numjobs)
        {
            int nt = omp_get_num_threads(), me = omp_get_thread_num();
            if (nt == numjobs)
                dojob(me, data + (size_t)me * elsize, dojob_data);
            else if (me == 0) /* a smaller team than asked (thread limit) */
                run_on_pthreads(dojob, 0, numjobs, elsize, data, dojob_data);
        }
        return;
    }
#endif
    run_on_pthreads(dojob, 0, numjobs, elsize, data, dojob_data);
}

static pthread_once_t callback_once = PTHREAD_ONCE_INIT;

static void install_callback(void)
{
    MAAS_BLAS(openblas_set_threads_callback_function)(omp_threads_callback);
}
#define ENSURE_CALLBACK() pthread_once(&callback_once, install_callback)
#else
#define ENSURE_CALLBACK() ((void)0)
#endif

/* y (n elements, stride incy) = 0, so that a beta = 0 call never reads the
 * uninitialized output (0 * NaN would stay NaN in BLAS's scaling). */
static void zero_strided(float *y, int64_t n, int64_t incy)
{
    for (int64_t i = 0; i < n; i++)
        y[i * incy] = 0.0f;
}

/* Matrix-vector shapes go to GEMV/GER: OpenBLAS's GEMM packs whole panels
 * of both operands even when one of them is a single row or column, which
 * made a batch-1 dense layer (1x784 @ 784x256) about twice as slow as a
 * GEMV. Returns 1 when the product was done here. */
static int sgemm_as_level2(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (K == 0)
        return 0;
    if (M == 1) { /* C (1,N) row = op(B)^T a, a = op(A) (1,K) */
        int64_t inca = ta ? lda : 1;
        if (beta == 0.0f)
            zero_strided(C, N, 1);
        if (!tb) /* B (K,N) */
            MAAS_BLAS(cblas_sgemv)(CblasRowMajor, CblasTrans, (blasint)K, (blasint)N, alpha,
                                   B, (blasint)ldb, A, (blasint)inca, beta, C, 1);
        else /* B stored (N,K) */
            MAAS_BLAS(cblas_sgemv)(CblasRowMajor, CblasNoTrans, (blasint)N, (blasint)K, alpha,
                                   B, (blasint)ldb, A, (blasint)inca, beta, C, 1);
        return 1;
    }
    if (N == 1) { /* C (M,1) column = op(A) b, b = op(B) (K,1) */
        int64_t incb = tb ? 1 : ldb;
        if (beta == 0.0f)
            zero_strided(C, M, ldc);
        if (!ta) /* A (M,K) */
            MAAS_BLAS(cblas_sgemv)(CblasRowMajor, CblasNoTrans, (blasint)M, (blasint)K, alpha,
                                   A, (blasint)lda, B, (blasint)incb, beta, C, (blasint)ldc);
        else /* A stored (K,M) */
            MAAS_BLAS(cblas_sgemv)(CblasRowMajor, CblasTrans, (blasint)K, (blasint)M, alpha,
                                   A, (blasint)lda, B, (blasint)incb, beta, C, (blasint)ldc);
        return 1;
    }
    if (K == 1 && beta == 1.0f) { /* C += alpha * a b^T, a = op(A) (M,1), b = op(B) (1,N) */
        MAAS_BLAS(cblas_sger)(CblasRowMajor, (blasint)M, (blasint)N, alpha, A,
                              (blasint)(ta ? 1 : lda), B, (blasint)(tb ? ldb : 1), C,
                              (blasint)ldc);
        return 1;
    }
    return 0;
}

void maas_sgemm(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                float alpha, const float *A, int64_t lda, const float *B,
                int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    ENSURE_CALLBACK();
    if (sgemm_as_level2(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return;
    MAAS_BLAS(cblas_sgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                           tb ? CblasTrans : CblasNoTrans, (blasint)M,
                           (blasint)N, (blasint)K, alpha, A, (blasint)lda, B,
                           (blasint)ldb, beta, C, (blasint)ldc);
}

void maas_blas_set_num_threads(int n)
{
    ENSURE_CALLBACK();
    MAAS_BLAS(openblas_set_num_threads)(n);
}

int maas_blas_get_num_threads(void) { return MAAS_BLAS(openblas_get_num_threads)(); }

const char *maas_blas_name(void) { return MAAS_BLAS(openblas_get_config)(); }
