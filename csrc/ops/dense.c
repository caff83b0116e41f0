/* ops/dense.c -- matmul (batched, transposes folded into the GEMM call) and
 * the fused dense op. All products go through maas_sgemm (blas.c), which
 * checks every size against BLAS's integer; its status is passed on. */
#include "maas.h"

#include <string.h>

/* out (M,N) = op(a) @ op(b), `batch` times; overwrites out. */
maas_status maas_matmul_forward(float *out, const float *a, const float *b,
                                int64_t batch, int64_t M, int64_t N, int64_t K,
                                int ta, int tb)
{
    if (K == 0) {
        memset(out, 0, (size_t)(batch * M * N) * sizeof(float));
        return MAAS_OK;
    }
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    maas_status s = MAAS_OK;
    for (int64_t i = 0; i < batch && s == MAAS_OK; i++)
        s = maas_sgemm(ta ? MAAS_TRANS : MAAS_NO_TRANS, tb ? MAAS_TRANS : MAAS_NO_TRANS,
                       M, N, K, 1.0f, a + i * M * K, lda, b + i * K * N, ldb, 0.0f,
                       out + i * M * N, N);
    return s;
}

/* ga (shaped like a) += gout @ op(b)^T, transposed back when ta;
 * gb (shaped like b) += op(a)^T @ gout, transposed back when tb. */
maas_status maas_matmul_backward(float *ga, float *gb, const float *gout,
                                 const float *a, const float *b, int64_t batch,
                                 int64_t M, int64_t N, int64_t K, int ta, int tb)
{
    maas_status s = MAAS_OK;
    for (int64_t i = 0; i < batch && s == MAAS_OK; i++) {
        const float *A = a + i * M * K, *B = b + i * K * N, *G = gout + i * M * N;
        if (ga) {
            float *GA = ga + i * M * K;
            if (!ta) /* dA (M,K) = G (M,N) op(B)^T */
                s = maas_sgemm(MAAS_NO_TRANS, tb ? MAAS_NO_TRANS : MAAS_TRANS, M, K, N,
                               1.0f, G, N, B, tb ? K : N, 1.0f, GA, K);
            else /* dA stored (K,M) = op(B) (K,N) G^T (N,M) */
                s = maas_sgemm(tb ? MAAS_TRANS : MAAS_NO_TRANS, MAAS_TRANS, K, M, N,
                               1.0f, B, tb ? K : N, G, N, 1.0f, GA, M);
        }
        if (gb && s == MAAS_OK) {
            float *GB = gb + i * K * N;
            if (!tb) /* dB (K,N) = op(A)^T (K,M) G (M,N) */
                s = maas_sgemm(ta ? MAAS_NO_TRANS : MAAS_TRANS, MAAS_NO_TRANS, K, N, M,
                               1.0f, A, ta ? M : K, G, N, 1.0f, GB, N);
            else /* dB stored (N,K) = G^T (N,M) op(A) (M,K) */
                s = maas_sgemm(MAAS_TRANS, ta ? MAAS_TRANS : MAAS_NO_TRANS, N, K, M,
                               1.0f, G, N, A, ta ? M : K, 1.0f, GB, K);
        }
    }
    return s;
}

/* out (N,U) = x (N,C) @ w (C,U) + bias (U): the bias is laid into out first
 * and the GEMM adds onto it (beta = 1), one pass over out. Overwrites. */
maas_status maas_dense_forward(float *out, const float *x, const float *w,
                               const float *bias, int64_t N, int64_t C, int64_t U)
{
    if (bias)
        for (int64_t r = 0; r < N; r++)
            memcpy(out + r * U, bias, (size_t)U * sizeof(float));
    if (C == 0) {
        if (!bias)
            memset(out, 0, (size_t)(N * U) * sizeof(float));
        return MAAS_OK;
    }
    return maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, N, U, C, 1.0f, x, C, w, U,
                      bias ? 1.0f : 0.0f, out, U);
}

/* gx (N,C) += gout @ w^T ; gw (C,U) += x^T @ gout ; gbias (U) += sum_rows gout.
 * Any of gx, gw, gbias may be NULL. */
maas_status maas_dense_backward(float *gx, float *gw, float *gbias,
                                const float *gout, const float *x,
                                const float *w, int64_t N, int64_t C, int64_t U)
{
    maas_status s = MAAS_OK;
    if (gx)
        s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, N, C, U, 1.0f, gout, U, w, U, 1.0f, gx, C);
    if (gw && s == MAAS_OK)
        s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, C, U, N, 1.0f, x, C, gout, U, 1.0f, gw, U);
    if (s != MAAS_OK)
        return s;
    if (gbias)
        for (int64_t r = 0; r < N; r++) {
            const float *g = gout + r * U;
            for (int64_t u = 0; u < U; u++)
                gbias[u] += g[u];
        }
    return MAAS_OK;
}
