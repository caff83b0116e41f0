/* Per-sample losses: forward against a double reference, backward against
 * central finite differences of that reference (in double), accumulation,
 * stability at logits of +-1e4, scce label checks, thread-count
 * independence. */
#include "check.h"
#include <stdlib.h>
#include <string.h>

/* Keras clips in float32: [1e-7f, 1 - 1e-7f] */
#define EPS ((double)1e-7f)
#define HI ((double)(1.0f - 1e-7f))

static int failures_before;

/* ------------------------------------------------- double reference */

static double clipd(double v) { return v < EPS ? EPS : (v > HI ? HI : v); }

static double lse(const double *x, long C)
{
    double m = x[0], z = 0.0;
    for (long c = 1; c < C; c++)
        m = x[c] > m ? x[c] : m;
    for (long c = 0; c < C; c++)
        z += exp(x[c] - m);
    return m + log(z);
}

/* One row's loss; y is the label row, or y[0] the class index for scce. */
static double ref_loss(maas_loss_op op, const double *y, const double *p, long C,
                       int logits, int hmap)
{
    double s = 0.0, S = 0.0;
    switch (op) {
    case MAAS_L_MSE:
        for (long c = 0; c < C; c++)
            s += (y[c] - p[c]) * (y[c] - p[c]);
        return s / C;
    case MAAS_L_MAE:
        for (long c = 0; c < C; c++)
            s += fabs(y[c] - p[c]);
        return s / C;
    case MAAS_L_BCE:
        for (long c = 0; c < C; c++) {
            if (logits) {
                double x = p[c];
                s += (x > 0 ? x : 0) - x * y[c] + log1p(exp(-fabs(x)));
            } else {
                double q = clipd(p[c]);
                s -= y[c] * log(q) + (1 - y[c]) * log(1 - q);
            }
        }
        return s / C;
    case MAAS_L_CCE:
        if (logits) {
            double l = lse(p, C);
            for (long c = 0; c < C; c++)
                s += y[c] * (l - p[c]);
            return s;
        }
        for (long c = 0; c < C; c++)
            S += p[c];
        for (long c = 0; c < C; c++)
            s -= y[c] * log(clipd(p[c] / S));
        return s;
    case MAAS_L_SCCE: {
        long l = (long)y[0];
        if (logits)
            return lse(p, C) - p[l];
        for (long c = 0; c < C; c++)
            S += p[c];
        return -log(clipd(p[l] / S));
    }
    case MAAS_L_HINGE:
        for (long c = 0; c < C; c++) {
            double yy = hmap ? 2 * y[c] - 1 : y[c];
            double h = 1 - yy * p[c];
            s += h > 0 ? h : 0;
        }
        return s / C;
    default:
        return NAN;
    }
}

/* --------------------------------------------------------- test data */

static double urand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (*s >> 8) / 16777216.0;
}

typedef struct {
    maas_loss_op op;
    int logits;
    int hinge01;      /* hinge with {0, 1} labels */
    const char *name;
} loss_case;

/* Fills y (N*C, or N for scce) and p (N*C) away from clips and kinks. */
static void make_data(const loss_case *lc, float *y, float *p, long N, long C,
                      unsigned seed)
{
    unsigned s = seed;
    for (long n = 0; n < N; n++) {
        float *yr = y + n * C, *pr = p + n * C;
        if (lc->op == MAAS_L_SCCE)
            y[n] = (float)(long)(urand(&s) * C);
        for (long c = 0; c < C; c++) {
            double u = urand(&s), v = urand(&s);
            switch (lc->op) {
            case MAAS_L_MSE:
                yr[c] = (float)(2 * u - 1);
                pr[c] = (float)(2 * v - 1);
                break;
            case MAAS_L_MAE:
                yr[c] = (float)(2 * u - 1);
                pr[c] = (float)(2 * v - 1);
                if (fabsf(pr[c] - yr[c]) < 1e-2f)
                    pr[c] = yr[c] + 0.05f;
                break;
            case MAAS_L_BCE:
                yr[c] = (float)u;
                pr[c] = lc->logits ? (float)(6 * v - 3) : (float)(0.05 + 0.9 * v);
                break;
            case MAAS_L_CCE:
                yr[c] = (float)(u * u);
                pr[c] = lc->logits ? (float)(6 * v - 3) : (float)(0.1 + v);
                break;
            case MAAS_L_SCCE:
                pr[c] = lc->logits ? (float)(6 * v - 3) : (float)(0.1 + v);
                break;
            case MAAS_L_HINGE:
                if (lc->hinge01)
                    yr[c] = u < 0.5 ? 0.0f : 1.0f;
                else
                    yr[c] = u < 0.5 ? -1.0f : 1.0f;
                pr[c] = (float)(4 * v - 2);
                /* keep away from the kink 1 - y p = 0, i.e. p = +-1 */
                if (fabsf(fabsf(pr[c]) - 1.0f) < 2e-2f)
                    pr[c] *= 1.1f;
                break;
            default:
                break;
            }
        }
    }
}

static int hinge_map(const loss_case *lc) { return lc->op == MAAS_L_HINGE && lc->hinge01; }

static void run_case(const loss_case *lc, long N, long C, unsigned seed, int check_fd)
{
    failures_before = check_failures;
    long ylen = lc->op == MAAS_L_SCCE ? N : N * C;
    float *y = malloc(sizeof(float) * ylen), *p = malloc(sizeof(float) * N * C);
    float *out = malloc(sizeof(float) * N), *gout = malloc(sizeof(float) * N);
    float *g = malloc(sizeof(float) * N * C), *base = malloc(sizeof(float) * N * C);
    double *yd = malloc(sizeof(double) * C), *pd = malloc(sizeof(double) * C);
    make_data(lc, y, p, N, C, seed);
    check_fill(base, N * C, seed + 7);
    memcpy(g, base, sizeof(float) * N * C);
    unsigned s = seed + 11;
    for (long n = 0; n < N; n++)
        gout[n] = (float)(0.5 + urand(&s));

    CHECK_OK(maas_loss_forward(lc->op, out, y, p, N, C, lc->logits));
    CHECK_OK(maas_loss_backward(lc->op, g, gout, y, p, N, C, lc->logits));

    double max_fwd = 0.0, max_bwd = 0.0;
    const double h = 1e-4;
    for (long n = 0; n < N; n++) {
        for (long c = 0; c < C; c++) {
            pd[c] = p[n * C + c];
            if (lc->op != MAAS_L_SCCE)
                yd[c] = y[n * C + c];
        }
        if (lc->op == MAAS_L_SCCE)
            yd[0] = y[n];
        double ref = ref_loss(lc->op, yd, pd, C, lc->logits, hinge_map(lc));
        double e = fabs(out[n] - ref) / (1e-6 + fabs(ref));
        max_fwd = e > max_fwd ? e : max_fwd;
        if (!check_fd)
            continue;
        for (long c = 0; c < C; c++) {
            double keep = pd[c];
            pd[c] = keep + h;
            double lp = ref_loss(lc->op, yd, pd, C, lc->logits, hinge_map(lc));
            pd[c] = keep - h;
            double lm = ref_loss(lc->op, yd, pd, C, lc->logits, hinge_map(lc));
            pd[c] = keep;
            double fd = gout[n] * (lp - lm) / (2 * h);
            double got = (double)g[n * C + c] - (double)base[n * C + c];
            double err = fabs(got - fd) / (1e-3 * fabs(fd) + 1e-5);
            max_bwd = err > max_bwd ? err : max_bwd;
        }
    }
    CHECK(max_fwd < 1e-5);
    if (check_fd)
        CHECK(max_bwd <= 1.0);
    if (check_failures != failures_before)
        fprintf(stderr, "  in case %s N=%ld C=%ld: fwd rel err %g, bwd err/tol %g\n",
                lc->name, N, C, max_fwd, max_bwd);

    /* the same results with 1 and 2 threads */
    float *out1 = malloc(sizeof(float) * N), *g1 = malloc(sizeof(float) * N * C);
    float *g2 = malloc(sizeof(float) * N * C);
    memcpy(g1, base, sizeof(float) * N * C);
    memcpy(g2, base, sizeof(float) * N * C);
    maas_set_num_threads(1);
    CHECK_OK(maas_loss_forward(lc->op, out1, y, p, N, C, lc->logits));
    CHECK_OK(maas_loss_backward(lc->op, g1, gout, y, p, N, C, lc->logits));
    maas_set_num_threads(2);
    CHECK_OK(maas_loss_backward(lc->op, g2, gout, y, p, N, C, lc->logits));
    CHECK(memcmp(out1, out, sizeof(float) * N) == 0);
    CHECK(memcmp(g1, g2, sizeof(float) * N * C) == 0);
    free(out1); free(g1); free(g2);
    free(y); free(p); free(out); free(gout); free(g); free(base); free(yd); free(pd);
}

static int all_finite(const float *x, long n)
{
    for (long i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static void test_extreme_logits(void)
{
    /* bce logits at +-1e4 */
    float x[4] = {1e4f, -1e4f, 1e4f, -1e4f}, y[4] = {0, 1, 1, 0};
    float out[1], g[4] = {0, 0, 0, 0}, go[1] = {1};
    CHECK_OK(maas_loss_forward(MAAS_L_BCE, out, y, x, 1, 4, 1));
    CHECK_CLOSE(out[0], 2e4 / 4, 1e-6);
    CHECK_OK(maas_loss_backward(MAAS_L_BCE, g, go, y, x, 1, 4, 1));
    CHECK(all_finite(g, 4));
    CHECK_CLOSE(g[0], 0.25, 1e-6);
    CHECK_CLOSE(g[1], -0.25, 1e-6);
    CHECK_CLOSE(g[2], 0.0, 1e-6);
    CHECK_CLOSE(g[3], 0.0, 1e-6);

    /* cce / scce logits at +-1e4 */
    float xc[6] = {1e4f, -1e4f, 0.0f, -1e4f, 1e4f, 1e4f};
    float yc[6] = {0, 1, 0, 0, 0.5f, 0.5f}, ys[2] = {1, 0};
    float o2[2], gc[6] = {0}, go2[2] = {1, 1};
    CHECK_OK(maas_loss_forward(MAAS_L_CCE, o2, yc, xc, 2, 3, 1));
    CHECK(all_finite(o2, 2));
    CHECK_CLOSE(o2[0], 2e4, 1e-6);
    CHECK_CLOSE(o2[1], log(2.0), 1e-6);
    CHECK_OK(maas_loss_backward(MAAS_L_CCE, gc, go2, yc, xc, 2, 3, 1));
    CHECK(all_finite(gc, 6));
    CHECK_CLOSE(gc[0], 1.0, 1e-6);
    CHECK_CLOSE(gc[1], -1.0, 1e-6);
    CHECK_CLOSE(gc[2], 0.0, 1e-6);
    CHECK_CLOSE(gc[4], 0.0, 1e-6);
    memset(gc, 0, sizeof gc);
    CHECK_OK(maas_loss_forward(MAAS_L_SCCE, o2, ys, xc, 2, 3, 1));
    CHECK(all_finite(o2, 2));
    CHECK_CLOSE(o2[0], 2e4, 1e-6);
    CHECK_CLOSE(o2[1], 2e4 + log(2.0), 1e-6);
    CHECK_OK(maas_loss_backward(MAAS_L_SCCE, gc, go2, ys, xc, 2, 3, 1));
    CHECK(all_finite(gc, 6));
    CHECK_CLOSE(gc[0], 1.0, 1e-6);
    CHECK_CLOSE(gc[1], -1.0, 1e-6);
    CHECK_CLOSE(gc[3], -1.0, 1e-6);
    CHECK_CLOSE(gc[4], 0.5, 1e-6);
}

static void test_clipping(void)
{
    /* bce probabilities 0 and 1 are clipped; no gradient through the clip */
    float p[3] = {0.0f, 1.0f, 0.5f}, y[3] = {1.0f, 0.0f, 1.0f};
    float out[1], g[3] = {0, 0, 0}, go[1] = {1};
    CHECK_OK(maas_loss_forward(MAAS_L_BCE, out, y, p, 1, 3, 0));
    CHECK(isfinite(out[0]));
    CHECK_CLOSE(out[0], (-log(EPS) - log(1.0 - HI) + log(2.0)) / 3, 1e-6);
    CHECK_OK(maas_loss_backward(MAAS_L_BCE, g, go, y, p, 1, 3, 0));
    CHECK(g[0] == 0.0f && g[1] == 0.0f);
    CHECK_CLOSE(g[2], -2.0 / 3, 1e-6);

    /* cce probabilities with a zero entry: finite loss and gradient */
    float pc[3] = {0.0f, 0.5f, 0.5f}, yc[3] = {1.0f, 0.0f, 0.0f};
    float gc[3] = {0, 0, 0};
    CHECK_OK(maas_loss_forward(MAAS_L_CCE, out, yc, pc, 1, 3, 0));
    CHECK_CLOSE(out[0], -log(EPS), 1e-6);
    CHECK_OK(maas_loss_backward(MAAS_L_CCE, gc, go, yc, pc, 1, 3, 0));
    CHECK(all_finite(gc, 3));
    CHECK(gc[0] == 0.0f && gc[1] == 0.0f && gc[2] == 0.0f);
}

static void test_scce_labels(void)
{
    float p[6] = {0.2f, 0.3f, 0.5f, 0.1f, 0.1f, 0.8f};
    float bad[4][2] = {{0, 1.5f}, {-1, 0}, {0, 3}, {NAN, 0}};
    for (int k = 0; k < 4; k++) {
        float out[2] = {-7, -7}, g[6] = {0}, go[2] = {1, 1};
        maas_clear_error();
        CHECK(maas_loss_forward(MAAS_L_SCCE, out, bad[k], p, 2, 3, 0) == MAAS_ERR_VALUE);
        CHECK(strstr(maas_last_error(), "out of range [0, 3)") != NULL);
        CHECK(out[0] == -7 && out[1] == -7);
        CHECK(maas_loss_backward(MAAS_L_SCCE, g, go, bad[k], p, 2, 3, 1) == MAAS_ERR_VALUE);
        for (int i = 0; i < 6; i++)
            CHECK(g[i] == 0.0f);
    }
    float ok[2] = {2, 0}, out[2];
    CHECK_OK(maas_loss_forward(MAAS_L_SCCE, out, ok, p, 2, 3, 0));
    CHECK_CLOSE(out[0], -log(0.5), 1e-6);
    CHECK_CLOSE(out[1], -log(0.1), 1e-6);
}

static void test_misc(void)
{
    float out[2], y[2] = {0, 1}, p[2] = {0.5f, 0.5f};
    CHECK(maas_loss_forward(MAAS_L_COUNT, out, y, p, 1, 2, 0) == MAAS_ERR_VALUE);
    CHECK(maas_loss_forward(MAAS_L_MSE, out, y, p, -1, 2, 0) == MAAS_ERR_VALUE);
    CHECK_OK(maas_loss_backward(MAAS_L_MSE, NULL, out, y, p, 1, 2, 0));
    CHECK_OK(maas_loss_forward(MAAS_L_MSE, out, y, p, 0, 2, 0));
    /* hinge with {0,1} labels is mapped to {-1,1}: y=0,p=0.5 -> 1.5; y=1 -> 0.5 */
    CHECK_OK(maas_loss_forward(MAAS_L_HINGE, out, y, p, 1, 2, 0));
    CHECK_CLOSE(out[0], 1.0, 1e-6);
}

int main(void)
{
    maas_set_num_threads(2);
    const loss_case cases[] = {
        {MAAS_L_MSE, 0, 0, "mse"},
        {MAAS_L_MAE, 0, 0, "mae"},
        {MAAS_L_BCE, 0, 0, "bce"},
        {MAAS_L_BCE, 1, 0, "bce logits"},
        {MAAS_L_CCE, 0, 0, "cce"},
        {MAAS_L_CCE, 1, 0, "cce logits"},
        {MAAS_L_SCCE, 0, 0, "scce"},
        {MAAS_L_SCCE, 1, 0, "scce logits"},
        {MAAS_L_HINGE, 0, 0, "hinge"},
        {MAAS_L_HINGE, 0, 1, "hinge 0/1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], 9, 5, 100 + (unsigned)i, 1);
        run_case(&cases[i], 3, 1, 200 + (unsigned)i, 1);
        /* above MAAS_PAR_THRESHOLD: the OpenMP path */
        run_case(&cases[i], 2100, 20, 300 + (unsigned)i, 1);
    }
    test_extreme_logits();
    test_clipping();
    test_scce_labels();
    test_misc();
    return check_done("test_loss");
}
