/* maas_sgemm: the size guard every caller gets (and dense/matmul pass on),
 * products against a double reference over odd shapes, transposes and
 * padded leading dimensions, beta = 0 never reading C, and deterministic
 * mode: the same bits at 1, 2, 3 and 4 threads, on shapes that are really
 * split (maas_sgemm_tiles > 1), and the switch itself. */
#include "check.h"
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static const int64_t BIG = (int64_t)INT_MAX + 1;

static void check_guard(void)
{
    float a[4] = {1, 2, 3, 4}, c[4] = {0};
    CHECK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, BIG, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2) ==
          MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "too large for 32-bit BLAS") != NULL);
    CHECK(strstr(maas_last_error(), "M=2147483648") != NULL);
    CHECK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 2, 2, BIG, 1.0f, a, BIG, a, 2, 0.0f, c, 2) ==
          MAAS_ERR_VALUE);
    /* a leading dimension alone can overflow BLAS's int */
    CHECK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 2, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, BIG) ==
          MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "ldc=2147483648") != NULL);
    CHECK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, -1, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2) ==
          MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "negative size") != NULL);
    CHECK(maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, 2, 2, 2, 1.0f, a, 1, a, 2, 0.0f, c, 2) ==
          MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "leading dimension lda=1 shorter than its row (2)") != NULL);
    CHECK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 2, 3, 2, 1.0f, a, 2, a, 3, 0.0f, c, 2) ==
          MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "ldc=2 shorter than its row (3)") != NULL);
    for (int i = 0; i < 4; i++) CHECK(c[i] == 0.0f); /* nothing written on error */
    /* the kernels built on it pass the status on (nothing is touched first) */
    CHECK(maas_matmul_forward(c, a, a, 1, 2, 2, BIG, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_matmul_backward(c, c, a, a, a, 1, BIG, 2, 2, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_dense_forward(c, a, a, NULL, 2, BIG, 2) == MAAS_ERR_VALUE);
    CHECK(maas_dense_backward(c, c, NULL, a, a, a, BIG, 2, 2) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "too large") != NULL);
    /* empty products are fine whatever the leading dims (zero-size arrays) */
    CHECK_OK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 0, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2));
    CHECK_OK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 4, 0, 4, 1.0f, a, 4, a, 0, 0.0f, c, 0));
    /* K == 0: C = beta C, A and B never read (their leading dims may be 0) */
    float z[4] = {NAN, NAN, NAN, NAN}, h[4] = {1, 2, 3, 4};
    CHECK_OK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 2, 2, 0, 1.0f, NULL, 0, NULL, 2, 0.0f, z, 2));
    CHECK_OK(maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, 2, 2, 0, 1.0f, NULL, 0, NULL, 2, 1.0f, h, 2));
    CHECK_OK(maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, 2, 1, 0, 1.0f, NULL, 2, NULL, 1, 0.5f, h, 2));
    for (int i = 0; i < 4; i++) CHECK(z[i] == 0.0f);
    CHECK(h[0] == 0.5f && h[1] == 2.0f && h[2] == 1.5f && h[3] == 4.0f);
}

/* C (M,N) with leading dims padded by `pad`; returns max error vs double. */
static int check_product(int ta, int tb, long M, long N, long K, long pad, float beta,
                         unsigned seed, float *out_copy)
{
    long lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    long ra = ta ? K : M, rb = tb ? N : K;
    float *A = malloc(sizeof(float) * (size_t)(ra * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(rb * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    check_fill(A, ra * lda, seed);
    check_fill(B, rb * ldb, seed + 1);
    check_fill(C0, M * ldc, seed + 2);
    for (long i = 0; i < M * ldc; i++) /* beta = 0 must not read C: NaN would stay */
        C[i] = beta == 0.0f ? NAN : C0[i];
    int before = check_failures;
    CHECK_OK(maas_sgemm(ta ? MAAS_TRANS : MAAS_NO_TRANS, tb ? MAAS_TRANS : MAAS_NO_TRANS, M, N,
                        K, 1.0f, A, lda, B, ldb, beta, C, ldc));
    for (long i = 0; i < M && check_failures == before; i++)
        for (long j = 0; j < N && check_failures == before; j++) {
            double s = beta == 0.0f ? 0.0 : (double)C0[i * ldc + j], sa = fabs(s);
            for (long k = 0; k < K; k++) {
                double p = (double)A[ta ? k * lda + i : i * lda + k] *
                           (double)B[tb ? j * ldb + k : k * ldb + j];
                s += p;
                sa += fabs(p);
            }
            double got = C[i * ldc + j];
            if (!(fabs(got - s) <= 1e-5 * sa + 1e-6)) {
                check_failures++;
                fprintf(stderr, "sgemm ta=%d tb=%d (%ld,%ld,%ld) pad=%ld beta=%g at %ld,%ld: "
                        "%.9g vs %.9g\n", ta, tb, M, N, K, pad, beta, i, j, got, s);
            }
        }
    if (out_copy)
        for (long i = 0; i < M; i++)
            memcpy(out_copy + i * N, C + i * ldc, sizeof(float) * (size_t)N);
    free(A); free(B); free(C); free(C0);
    return check_failures == before;
}

static void check_products(void)
{
    const long sizes[] = {1, 2, 3, 7, 16, 17, 33};
    int n = (int)(sizeof sizes / sizeof sizes[0]);
    unsigned seed = 1;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    for (int k = 0; k < n; k += 2) {
                        check_product(ta, tb, sizes[i], sizes[j], sizes[k], (i + j) % 3, 0.0f,
                                      seed++, NULL);
                        check_product(ta, tb, sizes[i], sizes[j], sizes[k], 0, 1.0f, seed++, NULL);
                    }
}

/* Shapes above the split cut-off, odd in every way; each must be split
 * into more than one block at 2 threads for the test to mean anything. */
static const long SPLIT[][3] = {
    {129, 257, 65}, {1025, 17, 129}, {17, 1031, 129}, {300, 300, 31},
    {64, 513, 784}, {33, 4097, 17}, {2049, 63, 33}, {127, 129, 200}, {256, 256, 256},
    {32768, 32, 288}, /* a convolution's columns (32 filters, 3x3x32) */
    /* mid-size: always two blocks, some small enough for OpenBLAS's small kernels */
    {32, 257, 128}, {129, 63, 100}, {47, 47, 400}, {1000, 9, 90},
};

static void check_thread_independence(void)
{
    int nt0 = maas_get_num_threads();
    int ns = (int)(sizeof SPLIT / sizeof SPLIT[0]);
    for (int s = 0; s < ns; s++) {
        long M = SPLIT[s][0], N = SPLIT[s][1], K = SPLIT[s][2];
        CHECK(maas_sgemm_tiles(M, N, K, 2, NULL) > 1);
        CHECK(maas_sgemm_tiles(M, N, K, 1, NULL) == (M * N * K < (1 << 21) ? 2 : 1));
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int b = 0; b < 2; b++) {
                    float beta = (float)b;
                    float *ref = malloc(sizeof(float) * (size_t)(M * N));
                    float *got = malloc(sizeof(float) * (size_t)(M * N));
                    unsigned seed = (unsigned)(100 + s * 8 + ta * 4 + tb * 2 + b);
                    maas_set_num_threads(1);
                    check_product(ta, tb, M, N, K, ta + 2 * tb, beta, seed, ref);
                    for (int nt = 2; nt <= 4; nt++) {
                        maas_set_num_threads(nt);
                        check_product(ta, tb, M, N, K, ta + 2 * tb, beta, seed, got);
                        if (memcmp(ref, got, sizeof(float) * (size_t)(M * N)) != 0) {
                            check_failures++;
                            fprintf(stderr, "sgemm ta=%d tb=%d (%ld,%ld,%ld) beta=%g: %d threads "
                                    "differ from 1\n", ta, tb, M, N, K, beta, nt);
                        }
                    }
                    free(ref); free(got);
                }
    }
    maas_set_num_threads(nt0);
}

static void check_split_rule(void)
{
    int rows = -1;
    /* small products are one call whatever the thread count */
    CHECK(maas_sgemm_tiles(64, 64, 100, 4, &rows) == 1);
    /* mid-size ones always two blocks, even at one thread */
    CHECK(maas_sgemm_tiles(32, 256, 128, 1, &rows) == 2 && rows == 0);
    CHECK(maas_sgemm_tiles(32, 256, 128, 4, &rows) == 2);
    CHECK(maas_sgemm_tiles(20, 20, 2000, 4, &rows) == 1); /* too narrow to split */
    CHECK(maas_sgemm_tiles(5, 5, 1000000, 64, &rows) == 1); /* nothing to split */
    /* the longer side of C is split; blocks never fall below the cut-off */
    CHECK(maas_sgemm_tiles(784, 256, 128, 2, &rows) == 2 && rows == 1);
    CHECK(maas_sgemm_tiles(128, 256, 784, 2, &rows) == 2 && rows == 0);
    CHECK(maas_sgemm_tiles(128, 256, 784, 64, &rows) == 16);
    CHECK(maas_sgemm_tiles(4096, 4096, 4096, 1, &rows) == 1);
}

/* The digits MLP's products (batch 128: 64 -> 256 -> 128 -> 10, forward and
 * backward) give the same bits at 1, 2 and 4 threads. */
static void check_small_products_one_thread(void)
{
    static const long S[][3] = {{128, 256, 64}, {128, 128, 256}, {128, 10, 128},
                                {64, 256, 128}, {256, 128, 128}, {128, 64, 256}};
    int nt0 = maas_get_num_threads();
    for (int s = 0; s < (int)(sizeof S / sizeof S[0]); s++) {
        long M = S[s][0], N = S[s][1], K = S[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                float *ref = malloc(sizeof(float) * (size_t)(M * N));
                float *got = malloc(sizeof(float) * (size_t)(M * N));
                unsigned seed = (unsigned)(900 + s * 4 + ta * 2 + tb);
                maas_set_num_threads(1);
                check_product(ta, tb, M, N, K, 1, 0.0f, seed, ref);
                for (int nt = 2; nt <= 4; nt += 2) {
                    maas_set_num_threads(nt);
                    check_product(ta, tb, M, N, K, 1, 0.0f, seed, got);
                    CHECK(memcmp(ref, got, sizeof(float) * (size_t)(M * N)) == 0);
                }
                free(ref); free(got);
            }
    }
    maas_set_num_threads(nt0);
}

static void check_switch(void)
{
    CHECK(maas_get_deterministic() == 1); /* the default (the Makefile does not set the env) */
    maas_set_num_threads(2);
    CHECK(maas_blas_get_num_threads() == 2);
    maas_set_deterministic(0);
    CHECK(maas_get_deterministic() == 0);
    CHECK(maas_blas_get_num_threads() == 2); /* OpenBLAS's own pool now */
    CHECK(check_product(0, 0, 129, 257, 65, 0, 0.0f, 7, NULL));
    maas_set_deterministic(1);
    CHECK(maas_get_deterministic() == 1);
}

int main(void)
{
    check_guard();
    check_products();
    check_split_rule();
    check_thread_independence();
    check_small_products_one_thread();
    check_switch();
    return check_done("test_blas");
}
