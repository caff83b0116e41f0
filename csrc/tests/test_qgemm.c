/* The int8 GEMM: packing round-trips, the reference kernel against a naive
 * (K,U) computation written out here, and every fast path the CPU has
 * (AVX2, AVX512-VNNI) against the reference bit for bit, on random and odd
 * shapes, dynamic and static input scales, with and without bias, at 1 and
 * 2 threads; the worst case for 16-bit saturation; the error paths. */
#include "check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* out computed the obvious way from q (K,U), in the documented arithmetic. */
static void naive(float *out, const float *x, const int8_t *q, const float *sw, const float *bias,
                  float fixed, int64_t N, int64_t K, int64_t U)
{
    for (int64_t i = 0; i < N; i++) {
        float s = fixed;
        if (!(fixed > 0.f)) {
            float m = 0.f;
            for (int64_t k = 0; k < K; k++)
                m = fabsf(x[i * K + k]) > m ? fabsf(x[i * K + k]) : m;
            s = 127.f / (m + 1e-7f);
        }
        for (int64_t j = 0; j < U; j++) {
            int32_t acc = 0;
            for (int64_t k = 0; k < K; k++) {
                float r = nearbyintf(x[i * K + k] * s);
                r = r > 127.f ? 127.f : r < -127.f ? -127.f : r;
                acc += (int32_t)r * q[k * U + j];
            }
            float v = (float)acc / (s * sw[j]);
            out[i * U + j] = bias ? v + bias[j] : v;
        }
    }
}

/* relu: 0 keeps x signed; 1 zeroes every negative x (a layer after ReLU:
 * the AVX2 kernel skips vpsignb for such rows); 2 zeroes them in every row
 * but those with i % 5 == 3 (groups of 4 rows that mix both kinds). */
static void one_shape_x(int64_t N, int64_t K, int64_t U, unsigned seed, int use_bias, float fixed,
                        int relu)
{
    float *w = malloc(sizeof(float) * (size_t)(K * U)), *x = malloc(sizeof(float) * (size_t)(N * K));
    float *sw = malloc(sizeof(float) * (size_t)U), *b = malloc(sizeof(float) * (size_t)U);
    int8_t *q = malloc((size_t)(K * U)), *q2 = malloc((size_t)(K * U));
    int64_t pb = maas_qgemm_blocks(U) * maas_qgemm_row_bytes(K);
    int8_t *p = malloc((size_t)pb);
    float *ref = malloc(sizeof(float) * (size_t)(N * U)), *got = malloc(sizeof(float) * (size_t)(N * U));
    float *nv = malloc(sizeof(float) * (size_t)(N * U));
    check_fill(w, (long)(K * U), seed);
    check_fill(x, (long)(N * K), seed + 1);
    check_fill(b, (long)U, seed + 2);
    for (int64_t i = 0; i < N * K; i++) {
        x[i] *= 3.0f; /* some rows exceed a static scale's range: clipped */
        if ((relu == 1 || (relu == 2 && (i / K) % 5 != 3)) && x[i] < 0.f)
            x[i] = 0.f;
    }
    CHECK_OK(maas_quantize_weights(q, sw, w, K, U));
    CHECK_OK(maas_qgemm_pack(p, q, K, U));
    CHECK_OK(maas_qgemm_unpack(q2, p, K, U));
    CHECK(memcmp(q, q2, (size_t)(K * U)) == 0);
    const float *bias = use_bias ? b : NULL;
    naive(nv, x, q, sw, bias, fixed, N, K, U);
    CHECK_OK(maas_qgemm_forward(ref, x, p, sw, bias, fixed, N, K, U, MAAS_QISA_REF));
    CHECK(memcmp(ref, nv, sizeof(float) * (size_t)(N * U)) == 0);
    for (int isa = MAAS_QISA_AVX2; isa < MAAS_QISA_COUNT; isa++) {
        if (!maas_qgemm_isa_supported(isa))
            continue;
        for (int nt = 1; nt <= 3; nt++) {
            maas_set_num_threads(nt);
            memset(got, 0xff, sizeof(float) * (size_t)(N * U));
            CHECK_OK(maas_qgemm_forward(got, x, p, sw, bias, fixed, N, K, U, isa));
            int same = memcmp(got, ref, sizeof(float) * (size_t)(N * U)) == 0;
            if (!same)
                fprintf(stderr, "%s differs from the reference: N=%lld K=%lld U=%lld bias=%d "
                        "static=%g relu=%d threads=%d\n", maas_qgemm_isa_name(isa), (long long)N,
                        (long long)K, (long long)U, use_bias, (double)fixed, relu, nt);
            CHECK(same);
        }
    }
    maas_set_num_threads(2);
    free(w), free(x), free(sw), free(b), free(q), free(q2), free(p), free(ref), free(got), free(nv);
}

static void one_shape(int64_t N, int64_t K, int64_t U, unsigned seed, int use_bias, float fixed)
{
    for (int relu = 0; relu < 3; relu++)
        one_shape_x(N, K, U, seed + 101u * (unsigned)relu, use_bias, fixed, relu);
}

static void test_shapes(void)
{
    static const int64_t shapes[][3] = {{1, 1, 1},   {1, 3, 5},    {2, 4, 16},   {3, 5, 17},
                                        {5, 7, 33},  {7, 33, 31},  {4, 64, 64},  {9, 130, 67},
                                        {1, 257, 100}, {65, 71, 129}, {130, 300, 70},
                                        {1, 1024, 300}, {17, 3, 200},
                                        /* groups of 4 rows with padding; K over the
                                         * AVX2 kernel's chunk (512) and the VNNI one's
                                         * (256); more than one tile of 64 rows */
                                        {6, 513, 33},  {7, 1030, 47}, {2, 2049, 64},
                                        {70, 600, 65}, {129, 37, 18}, {3, 1, 80}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int bias = 0; bias < 2; bias++) {
            one_shape(shapes[s][0], shapes[s][1], shapes[s][2], (unsigned)(11 * s + bias), bias, 0.f);
            one_shape(shapes[s][0], shapes[s][1], shapes[s][2], (unsigned)(7 * s + 3), bias, 60.f);
        }
}

/* Every pair of products at the extreme: 127 * 127 (same signs) and the
 * signs alternating; a u8 (+128) x s8 pair sum would saturate 16 bits. */
static void test_extremes(void)
{
    enum { N = 7, K = 64, U = 16 };
    int8_t q[K * U], p[16 * 4 * 17];
    float sw[U], x[N * K], ref[N * U], got[N * U];
    for (int k = 0; k < K; k++)
        for (int j = 0; j < U; j++)
            q[k * U + j] = (int8_t)((j & 1) ? -127 : 127);
    for (int j = 0; j < U; j++)
        sw[j] = 1.f;
    for (int k = 0; k < K; k++) {
        x[k] = 1.f;
        x[K + k] = -1.f;
        x[2 * K + k] = (k & 1) ? 1.f : -1.f;
        x[3 * K + k] = -1.f;
        x[4 * K + k] = x[5 * K + k] = x[6 * K + k] = 1.f; /* a group with no a < 0 */
    }
    CHECK(maas_qgemm_row_bytes(K) * maas_qgemm_blocks(U) == (int64_t)sizeof p);
    CHECK_OK(maas_qgemm_pack(p, q, K, U));
    CHECK_OK(maas_qgemm_forward(ref, x, p, sw, NULL, 0.f, N, K, U, MAAS_QISA_REF));
    /* acc = +-127*127*64, scales 127/(1+1e-7) and 1 */
    float s = 127.f / (1.f + 1e-7f);
    CHECK(ref[0] == (float)(127 * 127 * 64) / s);
    CHECK(ref[U] == -(float)(127 * 127 * 64) / s);
    CHECK(ref[2 * U] == 0.f);
    CHECK(ref[3 * U] == -(float)(127 * 127 * 64) / s && ref[4 * U] == ref[0] && ref[6 * U + 1] == -ref[0]);
    for (int isa = MAAS_QISA_AVX2; isa < MAAS_QISA_COUNT; isa++)
        if (maas_qgemm_isa_supported(isa)) {
            for (int64_t n = 1; n <= N; n++) { /* every row alone too (the one-row kernel) */
                CHECK_OK(maas_qgemm_forward(got, x + (n - 1) * K, p, sw, NULL, 0.f, 1, K, U, isa));
                CHECK(memcmp(got, ref + (n - 1) * U, sizeof(float) * U) == 0);
            }
            CHECK_OK(maas_qgemm_forward(got, x, p, sw, NULL, 0.f, N, K, U, isa));
            CHECK(memcmp(got, ref, sizeof ref) == 0);
        }
}

/* The int8 result is within the bound quantization implies of the float
 * product: |err| <= sum_k (|x||dq_w| + |w||dq_x| + |dq_x||dq_w|) where
 * dq = half a step (absmax / 254) of each operand. */
static void test_error_bound(void)
{
    enum { N = 4, K = 200, U = 23 };
    float w[K * U], x[N * K], sw[U], out[N * U];
    int8_t q[K * U];
    int8_t *p = malloc((size_t)(maas_qgemm_blocks(U) * maas_qgemm_row_bytes(K)));
    check_fill(w, K * U, 5);
    check_fill(x, N * K, 6);
    CHECK_OK(maas_quantize_weights(q, sw, w, K, U));
    CHECK_OK(maas_qgemm_pack(p, q, K, U));
    CHECK_OK(maas_qgemm_forward(out, x, p, sw, NULL, 0.f, N, K, U, MAAS_QISA_AUTO));
    for (int i = 0; i < N; i++) {
        float mx = 0.f;
        for (int k = 0; k < K; k++)
            mx = fabsf(x[i * K + k]) > mx ? fabsf(x[i * K + k]) : mx;
        for (int j = 0; j < U; j++) {
            double exact = 0, bound = 0, hw = 127.0 / sw[j] / 254.0, hx = mx / 254.0;
            for (int k = 0; k < K; k++) {
                exact += (double)x[i * K + k] * w[k * U + j];
                bound += fabs(x[i * K + k]) * hw + fabs(w[k * U + j]) * hx + hx * hw;
            }
            CHECK(fabs(out[i * U + j] - exact) <= bound * 1.001 + 1e-6);
        }
    }
    free(p);
}

/* A NaN in the input: the row's abs-max skips it and it quantizes to 0,
 * on every path (the vectorized quantization included), K long enough for
 * the vector loops and with a tail. */
static void test_nan_input(void)
{
    enum { N = 5, K = 77, U = 20 };
    float w[K * U], x[N * K], sw[U], ref[N * U], got[N * U], x0[N * K], ref0[N * U];
    int8_t q[K * U];
    int8_t *p = malloc((size_t)(maas_qgemm_blocks(U) * maas_qgemm_row_bytes(K)));
    check_fill(w, K * U, 12);
    check_fill(x, N * K, 13);
    CHECK_OK(maas_quantize_weights(q, sw, w, K, U));
    CHECK_OK(maas_qgemm_pack(p, q, K, U));
    memcpy(x0, x, sizeof x);
    x[1 * K + 3] = NAN;  /* in a vector of 32 */
    x[2 * K + 70] = NAN; /* in the tail */
    x0[1 * K + 3] = 0.f;
    x0[2 * K + 70] = 0.f;
    CHECK_OK(maas_qgemm_forward(ref, x, p, sw, NULL, 0.f, N, K, U, MAAS_QISA_REF));
    CHECK_OK(maas_qgemm_forward(ref0, x0, p, sw, NULL, 0.f, N, K, U, MAAS_QISA_REF));
    CHECK(memcmp(ref, ref0, sizeof ref) == 0); /* the NaN counted as 0 */
    for (int isa = MAAS_QISA_AVX2; isa < MAAS_QISA_COUNT; isa++)
        if (maas_qgemm_isa_supported(isa)) {
            CHECK_OK(maas_qgemm_forward(got, x, p, sw, NULL, 0.f, N, K, U, isa));
            CHECK(memcmp(got, ref, sizeof ref) == 0);
            CHECK_OK(maas_qgemm_forward(got, x, p, sw, NULL, 0.f, 1, K, U, isa));
            CHECK(memcmp(got, ref, sizeof(float) * U) == 0);
        }
    free(p);
}

static void test_errors(void)
{
    float out[1], x[1] = {1.f}, sw[1] = {1.f};
    int8_t p[128];
    memset(p, 0, sizeof p);
    CHECK(maas_qgemm_forward(out, x, p, sw, NULL, 0.f, 1, MAAS_QGEMM_MAX_K + 1, 1,
                             MAAS_QISA_REF) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "input features") != NULL);
    CHECK(maas_qgemm_forward(out, x, p, sw, NULL, 0.f, 1, 1, 1, 99) == MAAS_ERR_VALUE);
    float bad[2] = {NAN, 1.f};
    int8_t q[2];
    float s[2];
    CHECK(maas_quantize_weights(q, s, bad, 1, 2) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "NaN") != NULL);
    /* an all-zero column: scale 127/1e-7, quantized to zeros, outputs 0 */
    float zw[2] = {0.f, 0.5f};
    CHECK_OK(maas_quantize_weights(q, s, zw, 1, 2));
    CHECK(q[0] == 0 && q[1] == 127);
}

/* The CSR kernel against the dense product in double, at batch 1 and 5,
 * and its refusal of malformed CSR. */
static void test_spdense(void)
{
    enum { K = 37, U = 23 };
    float w[K * U], x[5 * K], out[5 * U], bias[U];
    int64_t rowptr[U + 1];
    int32_t cols[K * U];
    float vals[K * U];
    check_fill(w, K * U, 8);
    check_fill(x, 5 * K, 9);
    check_fill(bias, U, 10);
    for (int i = 0; i < K * U; i++)
        if (i % 7)
            w[i] = 0.f;
    int64_t nnz = 0;
    rowptr[0] = 0;
    for (int j = 0; j < U; j++) {
        for (int k = 0; k < K; k++)
            if (w[k * U + j] != 0.f) {
                cols[nnz] = k;
                vals[nnz++] = w[k * U + j];
            }
        rowptr[j + 1] = nnz;
    }
    for (int n = 1; n <= 5; n += 4) {
        CHECK_OK(maas_spdense_forward(out, x, rowptr, cols, vals, bias, n, K, U));
        for (int i = 0; i < n; i++)
            for (int j = 0; j < U; j++) {
                double e = bias[j];
                for (int k = 0; k < K; k++)
                    e += (double)x[i * K + k] * w[k * U + j];
                CHECK_CLOSE(out[i * U + j], e, 1e-5);
            }
    }
    cols[3] = K;
    CHECK(maas_spdense_forward(out, x, rowptr, cols, vals, NULL, 1, K, U) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "out of range") != NULL);
}

int main(void)
{
    printf("qgemm paths: avx2=%d avx512vnni=%d (best %s)\n",
           maas_qgemm_isa_supported(MAAS_QISA_AVX2), maas_qgemm_isa_supported(MAAS_QISA_AVX512VNNI),
           maas_qgemm_isa_name(maas_qgemm_best_isa()));
    test_shapes();
    test_extremes();
    test_error_bound();
    test_nan_input();
    test_errors();
    test_spdense();
    return check_done("test_qgemm");
}
