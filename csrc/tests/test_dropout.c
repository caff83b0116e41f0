/* The counter-based RNG, dropout and random fills: determinism per
 * (seed, stream, index), independence from the thread count, statistics. */
#include "check.h"
#include <stdlib.h>
#include <string.h>

#define NBIG 1000000L

static double corr(const float *a, const float *b, long n)
{
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (long i = 0; i < n; i++) {
        ma += a[i];
        mb += b[i];
    }
    ma /= n;
    mb /= n;
    for (long i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / sqrt(saa * sbb);
}

static void test_rng(void)
{
    CHECK(maas_rng_u64(1, 2, 3) == maas_rng_u64(1, 2, 3));
    CHECK(maas_rng_u64(1, 2, 3) != maas_rng_u64(1, 2, 4));
    CHECK(maas_rng_u64(1, 2, 3) != maas_rng_u64(1, 3, 3));
    CHECK(maas_rng_u64(1, 2, 3) != maas_rng_u64(2, 2, 3));
    CHECK(maas_rng_u64(0, 0, 0) != 0);

    float *u = malloc(sizeof(float) * NBIG), *w = malloc(sizeof(float) * NBIG);
    double mean = 0;
    float lo = 1, hi = 0;
    for (long i = 0; i < NBIG; i++) {
        u[i] = maas_rng_uniform(42, 0, (uint64_t)i);
        w[i] = maas_rng_uniform(42, 1, (uint64_t)i);
        mean += u[i];
        lo = u[i] < lo ? u[i] : lo;
        hi = u[i] > hi ? u[i] : hi;
    }
    mean /= NBIG;
    CHECK(lo >= 0.0f && hi < 1.0f);
    CHECK(fabs(mean - 0.5) < 0.003);
    /* neighbouring indices, neighbouring streams, neighbouring seeds */
    CHECK(fabs(corr(u, u + 1, NBIG - 1)) < 0.005);
    CHECK(fabs(corr(u, w, NBIG)) < 0.005);
    for (long i = 0; i < NBIG; i++)
        w[i] = maas_rng_uniform(43, 0, (uint64_t)i);
    CHECK(fabs(corr(u, w, NBIG)) < 0.005);
    /* each of the 64 bits is set half the time */
    long bits[64] = {0};
    for (long i = 0; i < 100000; i++) {
        uint64_t r = maas_rng_u64(7, 3, (uint64_t)i);
        for (int b = 0; b < 64; b++)
            bits[b] += (long)((r >> b) & 1);
    }
    for (int b = 0; b < 64; b++)
        CHECK(labs(bits[b] - 50000) < 1000);
    free(u);
    free(w);
}

static void test_dropout(void)
{
    const long n = NBIG;
    float *x = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n);
    float *m1 = malloc(sizeof(float) * n), *m2 = malloc(sizeof(float) * n);
    float *m3 = malloc(sizeof(float) * n);
    check_fill(x, n, 5);

    const float rates[3] = {0.1f, 0.5f, 0.9f};
    for (int r = 0; r < 3; r++) {
        const float rate = rates[r], scale = 1.0f / (1.0f - rate);
        CHECK_OK(maas_dropout_forward(out, m1, x, n, rate, 1234, 7));
        long kept = 0, bad = 0;
        for (long i = 0; i < n; i++) {
            kept += m1[i] != 0.0f;
            bad += !(m1[i] == 0.0f || m1[i] == scale) || out[i] != x[i] * m1[i];
        }
        CHECK(bad == 0);
        double frac = (double)kept / n;
        CHECK(fabs(frac - (1.0 - rate)) <= 0.01 * (1.0 - rate));

        /* the same (seed, stream) -> identical; other streams/seeds differ */
        CHECK_OK(maas_dropout_forward(out, m2, x, n, rate, 1234, 7));
        CHECK(memcmp(m1, m2, sizeof(float) * n) == 0);
        CHECK_OK(maas_dropout_forward(out, m2, x, n, rate, 1234, 8));
        CHECK_OK(maas_dropout_forward(out, m3, x, n, rate, 1235, 7));
        long diff2 = 0, diff3 = 0;
        for (long i = 0; i < n; i++) {
            diff2 += m1[i] != m2[i];
            diff3 += m1[i] != m3[i];
        }
        /* independent masks differ with probability 2 rate (1 - rate) */
        double pd = 2.0 * rate * (1.0 - rate);
        CHECK(fabs((double)diff2 / n - pd) < 0.01);
        CHECK(fabs((double)diff3 / n - pd) < 0.01);

        /* independent of the thread count */
        maas_set_num_threads(1);
        CHECK_OK(maas_dropout_forward(out, m2, x, n, rate, 99, 3));
        maas_set_num_threads(2);
        CHECK_OK(maas_dropout_forward(out, m3, x, n, rate, 99, 3));
        CHECK(memcmp(m2, m3, sizeof(float) * n) == 0);
        /* a prefix gives the same mask (per-index determinism) */
        CHECK_OK(maas_dropout_forward(out, m2, x, 1000, rate, 99, 3));
        CHECK(memcmp(m2, m3, sizeof(float) * 1000) == 0);
    }

    /* in place */
    memcpy(out, x, sizeof(float) * n);
    CHECK_OK(maas_dropout_forward(out, m1, out, n, 0.5f, 1, 1));
    long bad = 0;
    for (long i = 0; i < n; i++)
        bad += out[i] != x[i] * m1[i];
    CHECK(bad == 0);

    /* rate 0: identity */
    CHECK_OK(maas_dropout_forward(out, m1, x, n, 0.0f, 1, 1));
    bad = 0;
    for (long i = 0; i < n; i++)
        bad += m1[i] != 1.0f || out[i] != x[i];
    CHECK(bad == 0);

    /* bad rates */
    CHECK(maas_dropout_forward(out, m1, x, 10, 1.0f, 1, 1) == MAAS_ERR_VALUE);
    CHECK(maas_dropout_forward(out, m1, x, 10, -0.1f, 1, 1) == MAAS_ERR_VALUE);
    CHECK(maas_dropout_forward(out, m1, x, 10, NAN, 1, 1) == MAAS_ERR_VALUE);
    CHECK(maas_dropout_forward(out, m1, x, -1, 0.5f, 1, 1) == MAAS_ERR_VALUE);

    /* backward accumulates gout * mask */
    CHECK_OK(maas_dropout_forward(out, m1, x, n, 0.3f, 5, 5));
    float *gx = m2, *go = m3;
    check_fill(gx, n, 8);
    check_fill(go, n, 9);
    memcpy(out, gx, sizeof(float) * n);
    CHECK_OK(maas_dropout_backward(gx, go, m1, n));
    bad = 0;
    for (long i = 0; i < n; i++)
        bad += gx[i] != out[i] + go[i] * m1[i];
    CHECK(bad == 0);
    CHECK_OK(maas_dropout_backward(NULL, go, m1, n));

    free(x); free(out); free(m1); free(m2); free(m3);
}

static void test_fills(void)
{
    const long n = NBIG + 1; /* odd: the last pair is half used */
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);

    CHECK_OK(maas_rng_fill_normal(a, n, 0.0f, 1.0f, 11, 2));
    double s = 0, ss = 0, s4 = 0;
    for (long i = 0; i < n; i++) {
        s += a[i];
        ss += (double)a[i] * a[i];
        s4 += (double)a[i] * a[i] * a[i] * a[i];
    }
    double mean = s / n, var = ss / n - mean * mean;
    CHECK(fabs(mean) < 0.005);
    CHECK(fabs(sqrt(var) - 1.0) < 0.005);
    CHECK(fabs(s4 / n - 3.0) < 0.05); /* normal kurtosis */
    CHECK(fabs(corr(a, a + 1, n - 1)) < 0.005);

    maas_set_num_threads(1);
    CHECK_OK(maas_rng_fill_normal(b, n, 0.0f, 1.0f, 11, 2));
    maas_set_num_threads(2);
    CHECK(memcmp(a, b, sizeof(float) * n) == 0);
    CHECK_OK(maas_rng_fill_normal(b, 11, 0.0f, 1.0f, 11, 2));
    CHECK(memcmp(a, b, sizeof(float) * 11) == 0);

    CHECK_OK(maas_rng_fill_normal(a, n, 3.0f, 2.0f, 12, 0));
    s = ss = 0;
    for (long i = 0; i < n; i++) {
        s += a[i];
        ss += (double)a[i] * a[i];
    }
    mean = s / n;
    var = ss / n - mean * mean;
    CHECK(fabs(mean - 3.0) < 0.01);
    CHECK(fabs(sqrt(var) - 2.0) < 0.01);

    CHECK_OK(maas_rng_fill_uniform(a, n, -2.0f, 3.0f, 13, 0));
    s = 0;
    long out_of_range = 0;
    for (long i = 0; i < n; i++) {
        s += a[i];
        out_of_range += !(a[i] >= -2.0f && a[i] < 3.0f);
    }
    CHECK(out_of_range == 0);
    CHECK(fabs(s / n - 0.5) < 0.01);
    maas_set_num_threads(1);
    CHECK_OK(maas_rng_fill_uniform(b, n, -2.0f, 3.0f, 13, 0));
    maas_set_num_threads(2);
    CHECK(memcmp(a, b, sizeof(float) * n) == 0);

    CHECK(maas_rng_fill_uniform(a, 10, 1.0f, 0.0f, 1, 1) == MAAS_ERR_VALUE);
    CHECK(maas_rng_fill_normal(a, 10, 0.0f, -1.0f, 1, 1) == MAAS_ERR_VALUE);
    CHECK(maas_rng_fill_normal(a, 10, NAN, 1.0f, 1, 1) == MAAS_ERR_VALUE);
    CHECK_OK(maas_rng_fill_normal(a, 0, 0.0f, 1.0f, 1, 1));
    free(a);
    free(b);
}

int main(void)
{
    maas_set_num_threads(2);
    test_rng();
    test_dropout();
    test_fills();
    return check_done("test_dropout");
}
