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
 * openblas_set_threads_callback_function: one pool for everything.
 *
 * Determinism (on by default, maas_set_deterministic): OpenBLAS's own
 * threading splits a product differently for each thread count, and picks
 * other kernels by thread count (sgemm_direct's cut-off reads it), so its
 * results moved by up to 6e-5 between 1 and 2 threads. In deterministic mode
 * OpenBLAS runs single-threaded and maas_sgemm splits C itself over its
 * OpenMP team, into row or column blocks, never over K: each element is then
 * one single-threaded OpenBLAS reduction over the whole K. That needs
 * OpenBLAS to give an element the same bits whatever block it lies in, which
 * holds for its blocked (packed) path at any block boundary, and NOT for its
 * small-matrix kernels (M*N*K <= 100^3 on SkylakeX/Zen 4, a different
 * accumulation): measured over odd shapes, transposes and boundaries (see
 * csrc/tests/test_blas.c and tests/test_determinism.py). So large products
 * are split only into blocks above that cut-off, mid-size ones always into
 * the same two blocks, small ones not at all (see maas_sgemm_tiles). */
#include "maas.h"

#include <cblas.h>
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef MAAS_SYSTEM_BLAS
#define MAAS_BLAS(name) name
#else
#define MAAS_BLAS(name) scipy_##name
#define MAAS_BLAS_CALLBACK 1
#endif

#ifdef MAAS_BLAS_CALLBACK

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

#endif

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Once, before the first BLAS call: OpenBLAS's jobs go to OpenMP, and in
 * deterministic mode OpenBLAS is single-threaded from the start. */
static void blas_init(void)
{
#ifdef MAAS_BLAS_CALLBACK
    MAAS_BLAS(openblas_set_threads_callback_function)(omp_threads_callback);
#endif
    if (maas_get_deterministic())
        MAAS_BLAS(openblas_set_num_threads)(1);
}
#define ENSURE_INIT() pthread_once(&init_once, blas_init)

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

/* The largest value of OpenBLAS's integer type (int, or int64 for an
 * INTERFACE64 build). */
#define BLASINT_MAX ((int64_t)(sizeof(blasint) >= 8 ? INT64_MAX : INT32_MAX))

/* Every size and leading dimension must fit BLAS's integer, and a leading
 * dimension must cover its row (else OpenBLAS's xerbla prints and the call
 * is dropped): MAAS_ERR_VALUE naming the values otherwise. */
static maas_status check_args(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                              int64_t lda, int64_t ldb, int64_t ldc)
{
    if (M < 0 || N < 0 || K < 0)
        return maas_error(MAAS_ERR_VALUE, "sgemm: negative size (M=%lld, N=%lld, K=%lld)",
                          (long long)M, (long long)N, (long long)K);
    if (M == 0 || N == 0) /* nothing is read or written */
        return MAAS_OK;
    if (M > BLASINT_MAX || N > BLASINT_MAX || K > BLASINT_MAX || lda > BLASINT_MAX ||
        ldb > BLASINT_MAX || ldc > BLASINT_MAX)
        return maas_error(MAAS_ERR_VALUE,
                          "sgemm: size too large for %d-bit BLAS (M=%lld, N=%lld, K=%lld, "
                          "lda=%lld, ldb=%lld, ldc=%lld); split the product",
                          (int)(8 * sizeof(blasint)), (long long)M, (long long)N, (long long)K,
                          (long long)lda, (long long)ldb, (long long)ldc);
    /* with K == 0, A and B are never read (maas_sgemm only scales C) */
    struct { const char *name; int64_t ld, row; } ld[3] = {
        {"lda", lda, ta ? M : K}, {"ldb", ldb, tb ? K : N}, {"ldc", ldc, N}};
    for (int i = K == 0 ? 2 : 0; i < 3; i++)
        if (ld[i].ld < (ld[i].row > 1 ? ld[i].row : 1))
            return maas_error(MAAS_ERR_VALUE,
                              "sgemm: leading dimension %s=%lld shorter than its row (%lld)",
                              ld[i].name, (long long)ld[i].ld,
                              (long long)(ld[i].row > 1 ? ld[i].row : 1));
    return MAAS_OK;
}

/* Row-major C (M,N) = alpha op(A) op(B) + beta C as the column-major
 * product C^T = op(B)^T op(A)^T, which is what OpenBLAS's cblas does with
 * CblasRowMajor anyway, minus its sgemm_direct shortcut (row-major only,
 * chosen by size and OpenBLAS's thread count). */
static void sgemm_colmajor(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc)
{
    MAAS_BLAS(cblas_sgemm)(CblasColMajor, tb ? CblasTrans : CblasNoTrans,
                           ta ? CblasTrans : CblasNoTrans, (blasint)N, (blasint)M, (blasint)K,
                           alpha, B, (blasint)ldb, A, (blasint)lda, beta, C, (blasint)ldc);
}

/* Deterministic splitting, two regimes, the regime chosen by the shape alone:
 *
 * - large products (>= 2 TILE_MIN multiply-adds): as many blocks as threads,
 *   each of at least TILE_MIN (~2 MFLOP, some 10 us of one core), well above
 *   OpenBLAS's small-matrix cut-off (1e6), so that neither the whole product
 *   nor any block takes the small kernels; the blocked path then gives an
 *   element the same bits in any block. One thread: one call.
 * - mid-size products (MID_MIN ... 2 TILE_MIN): always the same two blocks,
 *   whatever the thread count (one thread runs both in turn), so the bits
 *   are the same by construction even where a block is small enough for
 *   OpenBLAS's small kernels. Below MID_MIN one call: threads cost more.
 *
 * Blocks are rows of C only, their edges on multiples of TILE_UNIT = 48
 * rows (a multiple of every micro-kernel width, 16 on SkylakeX, 4/8/12/24
 * on Haswell/Zen 3). Measured on Zen 3 (OpenBLAS's Haswell kernels): row
 * blocks of 16 changed the bits of the rows before the edge, and column
 * blocks of any width (16 ... 512) changed bits across whole blocks (in
 * row-major terms; OpenBLAS sees the transpose), so C is never split by
 * columns: a product of fewer than 96 rows runs on one thread. */
#define TILE_MIN ((double)(1 << 20))
#define MID_MIN ((double)(1 << 19))
#define TILE_UNIT 48

int maas_sgemm_tiles(int64_t M, int64_t N, int64_t K, int nthreads, int *split_rows)
{
    /* rows only (see above) */
    int rows = 1;
    int64_t len = rows ? M : N, other = rows ? N : M;
    int64_t units = len / TILE_UNIT;
    double mnk = (double)M * (double)N * (double)K;
    if (split_rows)
        *split_rows = rows;
    if (mnk < MID_MIN || units < 2)
        return 1;
    if (mnk < 2.0 * TILE_MIN)
        return 2;
    int64_t t = nthreads < units ? nthreads : units;
    double per_unit = (double)TILE_UNIT * (double)other * (double)K;
    /* the smallest block has units / t units */
    while (t > 1 && (double)(units / t) * per_unit < TILE_MIN)
        t--;
    return t < 1 ? 1 : (int)t;
}

/* C split into row or column blocks (maas_sgemm_tiles) over maas's OpenMP
 * team; each block one single-threaded OpenBLAS call over the whole K. */
static void sgemm_split(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                        float alpha, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc)
{
    int rows, nt = maas_get_num_threads();
    int tiles = maas_sgemm_tiles(M, N, K, nt, &rows);
    if (tiles <= 1) {
        sgemm_colmajor(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int64_t len = rows ? M : N, units = len / TILE_UNIT;
#pragma omp parallel for num_threads(tiles < nt ? tiles : nt) schedule(static, 1)
    for (int t = 0; t < tiles; t++) {
        int64_t lo = units * t / tiles * TILE_UNIT;
        int64_t hi = t == tiles - 1 ? len : units * (t + 1) / tiles * TILE_UNIT;
        if (rows) /* C rows lo..hi = op(A) rows lo..hi @ op(B) */
            sgemm_colmajor(ta, tb, hi - lo, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B,
                           ldb, beta, C + lo * ldc, ldc);
        else /* C columns lo..hi = op(A) @ op(B) columns lo..hi */
            sgemm_colmajor(ta, tb, M, hi - lo, K, alpha, A, lda, tb ? B + lo * ldb : B + lo,
                           ldb, beta, C + lo, ldc);
    }
}

maas_status maas_sgemm(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                       float alpha, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float beta, float *C, int64_t ldc)
{
    maas_status s = check_args(ta, tb, M, N, K, lda, ldb, ldc);
    if (s != MAAS_OK)
        return s;
    if (M == 0 || N == 0)
        return MAAS_OK;
    if (K == 0) { /* C = beta C; beta = 0 writes zeros without reading C */
        for (int64_t i = 0; i < M && beta != 1.0f; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return MAAS_OK;
    }
    ENSURE_INIT();
    if (sgemm_as_level2(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return MAAS_OK;
    if (maas_get_deterministic() && (double)M * (double)N * (double)K >= MID_MIN) {
        sgemm_split(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return MAAS_OK;
    }
    MAAS_BLAS(cblas_sgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                           tb ? CblasTrans : CblasNoTrans, (blasint)M,
                           (blasint)N, (blasint)K, alpha, A, (blasint)lda, B,
                           (blasint)ldb, beta, C, (blasint)ldc);
    return MAAS_OK;
}

/* In deterministic mode OpenBLAS's pool is one thread (maas splits the
 * products); otherwise it has n. */
void maas_blas_set_num_threads(int n)
{
    ENSURE_INIT();
    MAAS_BLAS(openblas_set_num_threads)(maas_get_deterministic() ? 1 : n);
}

/* The threads a large GEMM runs on: maas's team in deterministic mode,
 * OpenBLAS's pool otherwise. */
int maas_blas_get_num_threads(void)
{
    return maas_get_deterministic() ? maas_get_num_threads()
                                    : MAAS_BLAS(openblas_get_num_threads)();
}

const char *maas_blas_name(void) { return MAAS_BLAS(openblas_get_config)(); }
