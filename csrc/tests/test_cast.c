/* maas_cast between every pair of dtypes on edge values, and the integer-
 * label SCCE kernels against the float-label ones (same bits). NumPy's
 * astype is the oracle in tests/test_typed.py; here the values are spelled
 * out so that ASan/UBSan run every conversion path. */
#include "check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_float_to_int_edges(void)
{
    const float x[] = {0.0f, -0.0f, 0.5f, -0.5f, 1.999f, -1.999f, 127.9f, -128.9f, 300.0f,
                       -300.0f, 3e9f, -3e9f, 1e20f, -1e20f, INFINITY, -INFINITY, NAN, 255.5f};
    enum { N = sizeof x / sizeof x[0] };
    int8_t i8[N];
    uint8_t u8[N], b[N];
    int32_t i32[N];
    int64_t i64[N];
    const int8_t w8[N] = {0, 0, 0, 0, 1, -1, 127, -128, 127, -128, 127, -128, 127, -128, 127, -128, 0, 127};
    const uint8_t wu8[N] = {0, 0, 0, 0, 1, 0, 127, 0, 255, 0, 255, 0, 255, 0, 255, 0, 0, 255};
    const int32_t w32[N] = {0, 0, 0, 0, 1, -1, 127, -128, 300, -300, INT32_MAX, INT32_MIN,
                            INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, 0, 255};
    const int64_t w64[N] = {0, 0, 0, 0, 1, -1, 127, -128, 300, -300, 3000000000LL, -3000000000LL,
                            INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN, 0, 255};
    const uint8_t wb[N] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_OK(maas_cast(i8, MAAS_I8, x, MAAS_F32, N));
    CHECK_OK(maas_cast(u8, MAAS_U8, x, MAAS_F32, N));
    CHECK_OK(maas_cast(i32, MAAS_I32, x, MAAS_F32, N));
    CHECK_OK(maas_cast(i64, MAAS_I64, x, MAAS_F32, N));
    CHECK_OK(maas_cast(b, MAAS_BOOL, x, MAAS_F32, N));
    for (int i = 0; i < N; i++) {
        CHECK(i8[i] == w8[i]);
        CHECK(u8[i] == wu8[i]);
        CHECK(i32[i] == w32[i]);
        CHECK(i64[i] == w64[i]);
        CHECK(b[i] == wb[i]);
    }
}

static void test_int_conversions(void)
{
    const int64_t x[] = {0, 1, -1, 127, 128, -129, 255, 256, 300, INT32_MAX, (int64_t)INT32_MAX + 1,
                         INT64_MAX, INT64_MIN, 16777217};
    enum { N = sizeof x / sizeof x[0] };
    int8_t i8[N];
    uint8_t u8[N], b[N];
    int32_t i32[N];
    float f[N];
    CHECK_OK(maas_cast(i8, MAAS_I8, x, MAAS_I64, N));
    CHECK_OK(maas_cast(u8, MAAS_U8, x, MAAS_I64, N));
    CHECK_OK(maas_cast(i32, MAAS_I32, x, MAAS_I64, N));
    CHECK_OK(maas_cast(f, MAAS_F32, x, MAAS_I64, N));
    CHECK_OK(maas_cast(b, MAAS_BOOL, x, MAAS_I64, N));
    for (int i = 0; i < N; i++) {
        CHECK(i8[i] == (int8_t)(uint8_t)(uint64_t)x[i]);  /* modulo 2^8 */
        CHECK(u8[i] == (uint8_t)(uint64_t)x[i]);
        CHECK(i32[i] == (int32_t)(uint32_t)(uint64_t)x[i]);
        CHECK(f[i] == (float)x[i]);
        CHECK(b[i] == (x[i] != 0));
    }
    CHECK(i8[4] == -128 && u8[2] == 255 && i32[10] == INT32_MIN && f[13] == 16777216.0f);
    /* bool -> everything: any nonzero byte is true */
    const uint8_t bb[3] = {0, 1, 7};
    float bf[3];
    int64_t bl[3];
    uint8_t bo[3];
    CHECK_OK(maas_cast(bf, MAAS_F32, bb, MAAS_BOOL, 3));
    CHECK_OK(maas_cast(bl, MAAS_I64, bb, MAAS_BOOL, 3));
    CHECK_OK(maas_cast(bo, MAAS_BOOL, bb, MAAS_BOOL, 3));
    CHECK(bf[0] == 0 && bf[1] == 1 && bf[2] == 1 && bl[2] == 1 && bo[2] == 1);
    /* uint8 and int8 sources widen by value */
    const uint8_t ub[2] = {200, 0};
    const int8_t sb[2] = {-100, 5};
    int32_t w[2];
    CHECK_OK(maas_cast(w, MAAS_I32, ub, MAAS_U8, 2));
    CHECK(w[0] == 200 && w[1] == 0);
    CHECK_OK(maas_cast(w, MAAS_I32, sb, MAAS_I8, 2));
    CHECK(w[0] == -100 && w[1] == 5);
    /* same dtype, same buffer: nothing changes */
    int32_t same[2] = {4, -4};
    CHECK_OK(maas_cast(same, MAAS_I32, same, MAAS_I32, 2));
    CHECK(same[0] == 4 && same[1] == -4);
}

static void test_every_pair_and_errors(void)
{
    /* small non-negative integers survive every pair unchanged */
    const float src[4] = {0, 1, 2, 100};
    for (int a = 0; a < MAAS_DTYPE_COUNT; a++)
        for (int b = 0; b < MAAS_DTYPE_COUNT; b++) {
            uint64_t ba[4], bb[4];
            float back[4];
            CHECK_OK(maas_cast(ba, (maas_dtype)a, src, MAAS_F32, 4));
            CHECK_OK(maas_cast(bb, (maas_dtype)b, ba, (maas_dtype)a, 4));
            CHECK_OK(maas_cast(back, MAAS_F32, bb, (maas_dtype)b, 4));
            for (int i = 0; i < 4; i++) {
                float want = (a == MAAS_BOOL || b == MAAS_BOOL) ? (src[i] != 0) : src[i];
                CHECK(back[i] == want);
            }
        }
    /* many elements (the OpenMP path) give the same as a few */
    int64_t n = 3 * MAAS_PAR_THRESHOLD + 7;
    float *x = malloc((size_t)n * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    CHECK(x && y);
    if (x && y) {
        check_fill(x, (long)n, 3);
        for (int64_t i = 0; i < n; i++)
            x[i] *= 1000.0f;
        CHECK_OK(maas_cast(y, MAAS_I32, x, MAAS_F32, n));
        int ok = 1;
        for (int64_t i = 0; i < n; i++)
            ok &= y[i] == (int32_t)x[i];
        CHECK(ok);
    }
    free(x);
    free(y);
    float one = 1.0f;
    int32_t o;
    CHECK(maas_cast(&o, (maas_dtype)99, &one, MAAS_F32, 1) == MAAS_ERR_TYPE);
    CHECK(maas_cast(&o, MAAS_I32, &one, MAAS_F32, -1) == MAAS_ERR_VALUE);
    CHECK(maas_cast(&o, MAAS_I32, NULL, MAAS_F32, 1) == MAAS_ERR_VALUE);
    CHECK_OK(maas_cast(NULL, MAAS_I32, NULL, MAAS_F32, 0));
}

static void test_scce_integer_labels(void)
{
    enum { N = 5, C = 4 };
    float p[N * C], probs[N * C], fl[N], out_f[N], out_i[N];
    int64_t l64[N] = {0, 3, 2, 1, 3};
    int32_t l32[N];
    uint8_t lu8[N];
    check_fill(p, N * C, 7);
    for (int i = 0; i < N * C; i++)
        probs[i] = 0.05f + (p[i] + 1.0f) / 2.0f;
    for (int n = 0; n < N; n++) {
        fl[n] = (float)l64[n];
        l32[n] = (int32_t)l64[n];
        lu8[n] = (uint8_t)l64[n];
    }
    for (int logits = 0; logits < 2; logits++) {
        const float *yp = logits ? p : probs;
        CHECK_OK(maas_loss_forward(MAAS_L_SCCE, out_f, fl, yp, N, C, logits));
        const void *ls[3] = {l64, l32, lu8};
        const maas_dtype dts[3] = {MAAS_I64, MAAS_I32, MAAS_U8};
        for (int k = 0; k < 3; k++) {
            CHECK_OK(maas_scce_forward_typed(out_i, ls[k], dts[k], yp, N, C, logits));
            CHECK(memcmp(out_i, out_f, sizeof out_f) == 0);
            float gf[N * C] = {0}, gi[N * C] = {0}, go[N];
            for (int n = 0; n < N; n++)
                go[n] = 0.5f + (float)n;
            CHECK_OK(maas_loss_backward(MAAS_L_SCCE, gf, go, fl, yp, N, C, logits));
            CHECK_OK(maas_scce_backward_typed(gi, go, ls[k], dts[k], yp, N, C, logits));
            CHECK(memcmp(gf, gi, sizeof gf) == 0);
            /* backward accumulates */
            CHECK_OK(maas_scce_backward_typed(gi, go, ls[k], dts[k], yp, N, C, logits));
            for (int i = 0; i < N * C; i++)
                CHECK_CLOSE(gi[i], 2.0 * gf[i], 1e-6);
        }
    }
    int64_t bad[N] = {0, 1, 4, 0, 0};
    out_i[0] = 42.0f;
    CHECK(maas_scce_forward_typed(out_i, bad, MAAS_I64, p, N, C, 1) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "label 4 at row 2 is out of range [0, 4)") != NULL);
    CHECK(out_i[0] == 42.0f); /* checked before anything is written */
    int8_t neg[N] = {0, -1, 0, 0, 0};
    CHECK(maas_scce_forward_typed(out_i, neg, MAAS_I8, p, N, C, 1) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "label -1 at row 1") != NULL);
    CHECK(maas_scce_forward_typed(out_i, fl, MAAS_F32, p, N, C, 1) == MAAS_ERR_TYPE);
    CHECK(strstr(maas_last_error(), "labels must be an integer tensor") != NULL);
    CHECK(maas_scce_forward_typed(out_i, lu8, MAAS_BOOL, p, N, C, 1) == MAAS_ERR_TYPE);
    CHECK_OK(maas_scce_forward_typed(NULL, NULL, MAAS_I64, NULL, 0, C, 1));
}

int main(void)
{
    test_float_to_int_edges();
    test_int_conversions();
    test_every_pair_and_errors();
    test_scce_integer_labels();
    return check_done("test_cast");
}
