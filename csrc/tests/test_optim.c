/* Optimizer updates: several steps against a double reference written from
 * the header's (Keras's) formulas; argument checks; sum_squares in a fixed
 * order; scale and clip. */
#include "check.h"
#include <stdlib.h>
#include <string.h>

#define N 40000L   /* above MAAS_PAR_THRESHOLD: the OpenMP path */
#define STEPS 6
#define TOL 2e-5

typedef enum { OPT_SGD, OPT_ADAM, OPT_RMS } opt_kind;

typedef struct {
    const char *name;
    opt_kind kind;
    float lr, a, b, eps, wd; /* sgd: a = momentum; adam: a, b = betas; rms: a = rho, b = momentum */
    int flag;                /* sgd: nesterov; adam: amsgrad; rms: centered */
} opt_case;

/* one double reference step for element i; s[] are the slots */
static void ref_step(const opt_case *oc, double *p, double s[3], double g, long t)
{
    const double lr = oc->lr, wd = oc->wd, eps = oc->eps;
    if (wd != 0)
        *p -= lr * wd * *p;
    switch (oc->kind) {
    case OPT_SGD: {
        const double mu = oc->a;
        if (mu != 0) {
            s[0] = mu * s[0] - lr * g;
            if (oc->flag)
                *p += mu * s[0] - lr * g;
            else
                *p += s[0];
        } else {
            *p -= lr * g;
        }
        break;
    }
    case OPT_ADAM: {
        const double b1 = oc->a, b2 = oc->b;
        s[0] = b1 * s[0] + (1 - b1) * g;
        s[1] = b2 * s[1] + (1 - b2) * g * g;
        double v = s[1];
        if (oc->flag) {
            s[2] = s[2] > v ? s[2] : v;
            v = s[2];
        }
        double alpha = lr * sqrt(1 - pow(b2, (double)t)) / (1 - pow(b1, (double)t));
        *p -= alpha * s[0] / (sqrt(v) + eps);
        break;
    }
    case OPT_RMS: {
        const double rho = oc->a, mu = oc->b;
        s[0] = rho * s[0] + (1 - rho) * g * g;
        double d;
        if (oc->flag) {
            s[1] = rho * s[1] + (1 - rho) * g;
            d = s[0] - s[1] * s[1] + eps;
        } else {
            d = s[0] + eps;
        }
        double inc = lr * g / sqrt(d);
        if (mu > 0) {
            s[2] = mu * s[2] + inc;
            *p -= s[2];
        } else {
            *p -= inc;
        }
        break;
    }
    }
}

static maas_status kernel_step(const opt_case *oc, float *p, float *s0, float *s1,
                               float *s2, const float *g, long n, long t)
{
    switch (oc->kind) {
    case OPT_SGD:
        return maas_sgd_update(p, oc->a != 0 ? s0 : NULL, g, n, oc->lr, oc->a,
                               oc->flag, oc->wd);
    case OPT_ADAM:
        return maas_adam_update(p, s0, s1, oc->flag ? s2 : NULL, g, n, oc->lr,
                                oc->a, oc->b, oc->eps, t, oc->wd);
    case OPT_RMS:
        return maas_rmsprop_update(p, s0, oc->flag ? s1 : NULL, oc->b > 0 ? s2 : NULL,
                                   g, n, oc->lr, oc->a, oc->b, oc->eps, oc->flag,
                                   oc->wd);
    }
    return MAAS_ERR_VALUE;
}

static void run_case(const opt_case *oc, long n)
{
    float *p = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    float *s0 = calloc((size_t)n, sizeof(float)), *s1 = calloc((size_t)n, sizeof(float));
    float *s2 = calloc((size_t)n, sizeof(float));
    double *pd = malloc(sizeof(double) * n), *sd = calloc((size_t)n * 3, sizeof(double));
    check_fill(p, n, 1);
    for (long i = 0; i < n; i++)
        pd[i] = p[i];
    for (long t = 1; t <= STEPS; t++) {
        check_fill(g, n, 100 + (unsigned)t);
        if (t == 4) /* a small gradient step: amsgrad's vhat then matters */
            for (long i = 0; i < n; i++)
                g[i] *= 0.1f;
        CHECK_OK(kernel_step(oc, p, s0, s1, s2, g, n, t));
        for (long i = 0; i < n; i++)
            ref_step(oc, &pd[i], &sd[3 * i], (double)g[i], t);
    }
    double err = 0.0;
    for (long i = 0; i < n; i++) {
        double e = fabs(p[i] - pd[i]) / (1.0 + fabs(pd[i]));
        err = e > err ? e : err;
    }
    CHECK(err < TOL);
    if (!(err < TOL))
        fprintf(stderr, "  in %s (n=%ld): max error %g\n", oc->name, n, err);

    /* slot check: the first slot follows the reference too */
    double serr = 0.0;
    for (long i = 0; i < n; i++) {
        double e = fabs(s0[i] - sd[3 * i]) / (1e-3 + fabs(sd[3 * i]));
        serr = e > serr ? e : serr;
    }
    if (!(oc->kind == OPT_SGD && oc->a == 0))
        CHECK(serr < 1e-4);
    free(p); free(g); free(s0); free(s1); free(s2); free(pd); free(sd);
}

/* the parameters move: a kernel that did nothing would fail the comparison */
static void test_moves(void)
{
    float p[3] = {1, 2, 3}, g[3] = {1, -1, 0.5f};
    CHECK_OK(maas_sgd_update(p, NULL, g, 3, 0.1f, 0.0f, 0, 0.0f));
    CHECK_CLOSE(p[0], 0.9, 1e-7);
    CHECK_CLOSE(p[1], 2.1, 1e-7);
    CHECK_CLOSE(p[2], 2.95, 1e-7);
    /* AdamW first step: p(1 - lr wd) - lr * sign(g) (up to eps) */
    float q[2] = {1, -1}, m[2] = {0, 0}, v[2] = {0, 0}, gg[2] = {0.5f, -2};
    CHECK_OK(maas_adam_update(q, m, v, NULL, gg, 2, 0.01f, 0.9f, 0.999f, 1e-7f, 1, 0.1f));
    CHECK_CLOSE(q[0], 1 - 0.001 - 0.01, 1e-5);
    CHECK_CLOSE(q[1], -1 + 0.001 + 0.01, 1e-5);
}

static void test_checks(void)
{
    float p[4] = {0}, g[4] = {0}, s[4] = {0};
    CHECK(maas_sgd_update(p, NULL, g, 4, 0.1f, 0.9f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_sgd_update(p, s, g, 4, NAN, 0.9f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_sgd_update(p, s, g, 4, INFINITY, 0.9f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_sgd_update(NULL, s, g, 4, 0.1f, 0.9f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_sgd_update(p, s, NULL, 4, 0.1f, 0.9f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_sgd_update(p, s, g, -1, 0.1f, 0.9f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_adam_update(p, s, s, NULL, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 0, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_adam_update(p, NULL, s, NULL, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 1, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_adam_update(p, s, NULL, NULL, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 1, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_adam_update(p, s, s, NULL, g, 4, NAN, 0.9f, 0.999f, 1e-7f, 1, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_rmsprop_update(p, NULL, NULL, NULL, g, 4, 0.1f, 0.9f, 0, 1e-7f, 0, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_rmsprop_update(p, s, NULL, NULL, g, 4, 0.1f, 0.9f, 0, 1e-7f, 1, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_rmsprop_update(p, s, NULL, NULL, g, 4, 0.1f, 0.9f, 0.5f, 1e-7f, 0, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_rmsprop_update(p, s, NULL, NULL, g, 4, -INFINITY, 0.9f, 0, 1e-7f, 0, 0) ==
          MAAS_ERR_VALUE);
    /* n == 0 is fine with NULL buffers */
    CHECK_OK(maas_sgd_update(NULL, NULL, NULL, 0, 0.1f, 0.9f, 1, 0));
    CHECK_OK(maas_adam_update(NULL, NULL, NULL, NULL, NULL, 0, 0.1f, 0.9f, 0.999f,
                              1e-7f, 1, 0));
}

static void test_helpers(void)
{
    const long n = 1000003;
    float *x = malloc(sizeof(float) * n);
    check_fill(x, n, 3);
    double ref = 0.0;
    for (long i = 0; i < n; i++)
        ref += (double)x[i] * x[i];
    maas_set_num_threads(1);
    double s1 = maas_sum_squares(x, n);
    maas_set_num_threads(2);
    double s2 = maas_sum_squares(x, n);
    CHECK(s1 == s2);
    CHECK_CLOSE(s2, ref, 1e-12);
    CHECK(maas_sum_squares(x, 0) == 0.0);
    CHECK(maas_sum_squares(x, 5) == (double)x[0] * x[0] + (double)x[1] * x[1] +
                                        (double)x[2] * x[2] + (double)x[3] * x[3] +
                                        (double)x[4] * x[4]);

    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    CHECK_OK(maas_scale_inplace(y, n, 0.5f));
    long bad = 0;
    for (long i = 0; i < n; i++)
        bad += y[i] != x[i] * 0.5f;
    CHECK(bad == 0);
    CHECK_OK(maas_clip_inplace(y, n, -0.25f, 0.1f));
    bad = 0;
    for (long i = 0; i < n; i++) {
        float e = x[i] * 0.5f;
        e = e < -0.25f ? -0.25f : (e > 0.1f ? 0.1f : e);
        bad += y[i] != e;
    }
    CHECK(bad == 0);
    CHECK(maas_clip_inplace(y, n, 1.0f, 0.0f) == MAAS_ERR_VALUE);
    float nan1[1] = {NAN};
    CHECK_OK(maas_clip_inplace(nan1, 1, 0.0f, 1.0f));
    CHECK(isnan(nan1[0]));
    free(x);
    free(y);
}

int main(void)
{
    maas_set_num_threads(2);
    const opt_case cases[] = {
        {"sgd", OPT_SGD, 0.1f, 0.0f, 0, 0, 0, 0},
        {"sgd momentum", OPT_SGD, 0.1f, 0.9f, 0, 0, 0, 0},
        {"sgd nesterov", OPT_SGD, 0.1f, 0.9f, 0, 0, 0, 1},
        {"sgd nesterov wd", OPT_SGD, 0.1f, 0.9f, 0, 0, 0.01f, 1},
        {"adam", OPT_ADAM, 0.01f, 0.9f, 0.999f, 1e-7f, 0, 0},
        {"adam amsgrad", OPT_ADAM, 0.01f, 0.9f, 0.999f, 1e-7f, 0, 1},
        {"adamw", OPT_ADAM, 0.01f, 0.9f, 0.999f, 1e-7f, 0.004f, 0},
        {"adamw amsgrad", OPT_ADAM, 0.01f, 0.8f, 0.99f, 1e-3f, 0.05f, 1},
        {"rmsprop", OPT_RMS, 0.01f, 0.9f, 0.0f, 1e-7f, 0, 0},
        {"rmsprop centered", OPT_RMS, 0.01f, 0.9f, 0.0f, 1e-7f, 0, 1},
        {"rmsprop momentum", OPT_RMS, 0.01f, 0.9f, 0.5f, 1e-7f, 0, 0},
        {"rmsprop centered momentum wd", OPT_RMS, 0.01f, 0.9f, 0.5f, 1e-7f, 0.01f, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], N);
        run_case(&cases[i], 37);
    }
    test_moves();
    test_checks();
    test_helpers();
    return check_done("test_optim");
}
