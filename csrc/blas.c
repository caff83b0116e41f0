/* blas.c -- the one place that calls CBLAS. By default the symbols are the
 * scipy-openblas32 wheel's (prefixed `scipy_`); building with
 * MAAS_SYSTEM_BLAS uses a system OpenBLAS's unprefixed names. */
#include "maas.h"

#include <cblas.h>

#ifdef MAAS_SYSTEM_BLAS
#define MAAS_BLAS(name) name
#else
#define MAAS_BLAS(name) scipy_##name
#endif

void maas_sgemm(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                float alpha, const float *A, int64_t lda, const float *B,
                int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    MAAS_BLAS(cblas_sgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                           tb ? CblasTrans : CblasNoTrans, (blasint)M,
                           (blasint)N, (blasint)K, alpha, A, (blasint)lda, B,
                           (blasint)ldb, beta, C, (blasint)ldc);
}

void maas_blas_set_num_threads(int n) { MAAS_BLAS(openblas_set_num_threads)(n); }

int maas_blas_get_num_threads(void) { return MAAS_BLAS(openblas_get_num_threads)(); }

const char *maas_blas_name(void) { return MAAS_BLAS(openblas_get_config)(); }
