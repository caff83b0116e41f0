/* Unary activations, softmax and log_softmax: forward against a double
 * reference, backward against central differences of that reference,
 * accumulation, large logits, sizes 0 / 1 and the threaded path. */
#include "check.h"
#include <stdint.h>
#include <stdlib.h>

static double ref_sig(double v) { return v >= 0 ? 1 / (1 + exp(-v)) : exp(v) / (1 + exp(v)); }

static double ref_f(int op, double v, double al)
{
    switch (op) {
    case MAAS_U_RELU: return v > 0 ? v : 0;
    case MAAS_U_LEAKY_RELU: return v > 0 ? v : al * v;
    case MAAS_U_ELU: return v > 0 ? v : al * expm1(v);
    case MAAS_U_GELU: return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    case MAAS_U_GELU_TANH:
        return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case MAAS_U_SIGMOID: return ref_sig(v);
    case MAAS_U_TANH: return tanh(v);
    case MAAS_U_SOFTPLUS: return fmax(v, 0) + log1p(exp(-fabs(v)));
    case MAAS_U_SILU: return v * ref_sig(v);
    case MAAS_U_EXP: return exp(v);
    case MAAS_U_LOG: return log(v);
    case MAAS_U_SQRT: return sqrt(v);
    case MAAS_U_NEG: return -v;
    case MAAS_U_ABS: return fabs(v);
    case MAAS_U_SQUARE: return v * v;
    case MAAS_U_POW_SCALAR: return pow(v, al);
    case MAAS_U_RELU6: return v < 0 ? 0 : (v > 6 ? 6 : v);
    }
    return NAN;
}

static int positive_domain(int op)
{
    return op == MAAS_U_LOG || op == MAAS_U_SQRT || op == MAAS_U_POW_SCALAR;
}

/* Checks op on n points; x in [-3, 3] (or (0.2, 3.2) for positive-only ops)
 * kept away from the kinks at 0 and 6. */
static void check_unary(int op, float alpha, long n, unsigned seed)
{
    float *x = malloc(sizeof(float) * (size_t)(n + 1));
    float *y = malloc(sizeof(float) * (size_t)(n + 1));
    float *g = malloc(sizeof(float) * (size_t)(n + 1));
    float *gx = malloc(sizeof(float) * (size_t)(n + 1));
    check_fill(x, n, seed);
    check_fill(g, n, seed + 101);
    for (long i = 0; i < n; i++) {
        float v = x[i];
        if (positive_domain(op))
            x[i] = 0.2f + 1.5f * (v + 1.0f);
        else
            x[i] = (v < 0 ? -1.0f : 1.0f) * (0.05f + 3.0f * fabsf(v));
        if (op == MAAS_U_RELU6 && i % 3 == 0)
            x[i] = 6.5f + x[i];   /* also cover the upper kink region */
        if (fabsf(x[i] - 6.0f) < 0.02f)
            x[i] += 0.05f;
        gx[i] = 0.25f;            /* pre-existing gradient */
    }
    CHECK_OK(maas_unary_forward((maas_unary_op)op, y, x, n, alpha));
    CHECK_OK(maas_unary_backward((maas_unary_op)op, gx, g, x, y, n, alpha));
    int bad = 0;
    for (long i = 0; i < n && bad < 5; i++) {
        double v = x[i], h = 1e-4;
        double ref = ref_f(op, v, alpha);
        double fd = (ref_f(op, v + h, alpha) - ref_f(op, v - h, alpha)) / (2 * h);
        double want = 0.25 + (double)g[i] * fd;
        int before = check_failures;
        CHECK_CLOSE(y[i], ref, 1e-5);
        CHECK_CLOSE(gx[i], want, 1e-3);
        if (check_failures != before) {
            fprintf(stderr, "  op %d alpha %g x %.9g\n", op, alpha, v);
            bad++;
        }
    }
    /* in place forward */
    CHECK_OK(maas_unary_forward((maas_unary_op)op, x, x, n, alpha));
    for (long i = 0; i < n; i++)
        if (!(x[i] == y[i] || (x[i] != x[i] && y[i] != y[i]))) {
            CHECK(x[i] == y[i]);
            break;
        }
    free(x); free(y); free(g); free(gx);
}

/* double reference softmax of row xs (n values, stride `st`) */
static void ref_softmax(double *o, const double *xs, long n, int lg)
{
    double m = -INFINITY, s = 0;
    for (long k = 0; k < n; k++) m = fmax(m, xs[k]);
    for (long k = 0; k < n; k++) s += exp(xs[k] - m);
    for (long k = 0; k < n; k++)
        o[k] = lg ? xs[k] - m - log(s) : exp(xs[k] - m) / s;
}

static void check_softmax(long outer, long n, long inner, int lg, unsigned seed,
                          int fd)
{
    long tot = outer * n * inner;
    float *x = malloc(sizeof(float) * (size_t)(tot + 1));
    float *y = malloc(sizeof(float) * (size_t)(tot + 1));
    float *g = malloc(sizeof(float) * (size_t)(tot + 1));
    float *gx = malloc(sizeof(float) * (size_t)(tot + 1));
    double *row = malloc(sizeof(double) * (size_t)(n + 1));
    double *ro = malloc(sizeof(double) * (size_t)(n + 1));
    double *rp = malloc(sizeof(double) * (size_t)(n + 1));
    check_fill(x, tot, seed);
    check_fill(g, tot, seed + 7);
    for (long i = 0; i < tot; i++) {
        x[i] *= 4.0f;
        gx[i] = -0.5f;
    }
    CHECK_OK(maas_softmax_forward(y, x, outer, n, inner, lg));
    CHECK_OK(maas_softmax_backward(gx, g, y, outer, n, inner, lg));
    int bad = 0;
    for (long o = 0; o < outer; o++)
        for (long j = 0; j < inner; j++) {
            for (long k = 0; k < n; k++) row[k] = x[(o * n + k) * inner + j];
            ref_softmax(ro, row, n, lg);
            for (long k = 0; k < n && bad < 5; k++) {
                long idx = (o * n + k) * inner + j;
                int before = check_failures;
                CHECK_CLOSE(y[idx], ro[k], 1e-5);
                if (fd) {
                    /* d/dx_k of sum_q g_q * f_q(x) */
                    double h = 1e-4, fp = 0, fm = 0, xk = row[k];
                    row[k] = xk + h; ref_softmax(rp, row, n, lg);
                    for (long q = 0; q < n; q++) fp += g[(o * n + q) * inner + j] * rp[q];
                    row[k] = xk - h; ref_softmax(rp, row, n, lg);
                    for (long q = 0; q < n; q++) fm += g[(o * n + q) * inner + j] * rp[q];
                    row[k] = xk;
                    CHECK_CLOSE(gx[idx], -0.5 + (fp - fm) / (2 * h), 1e-3);
                }
                if (check_failures != before) {
                    fprintf(stderr, "  softmax (%ld,%ld,%ld) log=%d at %ld,%ld,%ld\n",
                            outer, n, inner, lg, o, k, j);
                    bad++;
                }
            }
        }
    free(x); free(y); free(g); free(gx); free(row); free(ro); free(rp);
}

int main(void)
{
    maas_set_num_threads(3);
    for (int op = 0; op < MAAS_U_COUNT; op++) {
        float alpha = op == MAAS_U_LEAKY_RELU ? 0.1f
                    : op == MAAS_U_ELU ? 1.3f
                    : op == MAAS_U_POW_SCALAR ? 2.5f : 0.0f;
        check_unary(op, alpha, 257, 1u + (unsigned)op);
        check_unary(op, alpha, 1, 50u + (unsigned)op);
        check_unary(op, alpha, 0, 3);
    }
    check_unary(MAAS_U_POW_SCALAR, 2.0f, 64, 9);
    check_unary(MAAS_U_POW_SCALAR, 1.0f, 64, 9);
    check_unary(MAAS_U_POW_SCALAR, -0.5f, 64, 9);
    check_unary(MAAS_U_POW_SCALAR, 0.0f, 64, 9);
    /* threaded path */
    check_unary(MAAS_U_GELU, 0, 100003, 11);
    check_unary(MAAS_U_SIGMOID, 0, 100003, 12);
    check_unary(MAAS_U_RELU, 0, 70000, 13);

    /* large |x|: finite, right limits */
    {
        float x[4] = {1e4f, -1e4f, 88.0f, -104.0f}, y[4], gx[4], g[4] = {1, 1, 1, 1};
        int ops[] = {MAAS_U_SIGMOID, MAAS_U_SOFTPLUS, MAAS_U_SILU, MAAS_U_TANH,
                     MAAS_U_GELU, MAAS_U_GELU_TANH, MAAS_U_ELU};
        for (unsigned k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            for (int i = 0; i < 4; i++) gx[i] = 0;
            CHECK_OK(maas_unary_forward((maas_unary_op)ops[k], y, x, 4, 1.0f));
            CHECK_OK(maas_unary_backward((maas_unary_op)ops[k], gx, g, x, y, 4, 1.0f));
            for (int i = 0; i < 4; i++) {
                CHECK(isfinite(y[i]) && isfinite(gx[i]));
                CHECK_CLOSE(y[i], ref_f(ops[k], x[i], 1.0), 1e-5);
            }
        }
        CHECK_OK(maas_unary_forward(MAAS_U_SIGMOID, y, x, 2, 0));
        CHECK(y[0] == 1.0f && y[1] == 0.0f);
        CHECK_OK(maas_unary_forward(MAAS_U_SOFTPLUS, y, x, 2, 0));
        CHECK(y[0] == 1e4f && y[1] == 0.0f);
    }
    /* unknown op */
    {
        float v = 1, w = 0;
        CHECK(maas_unary_forward((maas_unary_op)99, &w, &v, 1, 0) == MAAS_ERR_VALUE);
        CHECK(maas_unary_backward((maas_unary_op)-1, &w, &v, &v, &v, 1, 0) == MAAS_ERR_VALUE);
    }

    /* softmax */
    for (int lg = 0; lg < 2; lg++) {
        check_softmax(3, 5, 1, lg, 1, 1);
        check_softmax(2, 4, 3, lg, 2, 1);
        check_softmax(1, 1, 1, lg, 3, 1);
        check_softmax(2, 1, 4, lg, 4, 1);
        check_softmax(0, 5, 1, lg, 5, 1);
        check_softmax(3, 0, 2, lg, 6, 1);
        check_softmax(2, 7, 300, lg, 7, 1);
        check_softmax(200, 300, 1, lg, 8, 0);   /* threaded, inner == 1 */
        check_softmax(4, 100, 100, lg, 9, 0);   /* threaded, inner > 1 */
    }
    /* large logits */
    for (int lg = 0; lg < 2; lg++)
        for (int inner = 1; inner <= 2; inner++) {
            float x[6] = {1e4f, 1e4f, -1e4f, 0.0f, -1e4f, 5.0f}, y[6], gx[6] = {0};
            float g[6] = {1, -2, 0.5f, 1, 3, -1};
            long n = 6 / inner;
            CHECK_OK(maas_softmax_forward(y, x, 1, n, inner, lg));
            CHECK_OK(maas_softmax_backward(gx, g, y, 1, n, inner, lg));
            for (int i = 0; i < 6; i++)
                CHECK(isfinite(y[i]) && isfinite(gx[i]));
            if (!lg && inner == 1) {
                CHECK_CLOSE(y[0], 0.5, 1e-6);
                CHECK(y[2] == 0.0f);
            }
        }
    return check_done("test_activation");
}
