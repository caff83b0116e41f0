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

/* ---------------------------------------------- Adagrad .. Ftrl (optim.c) */

typedef enum { OPT_ADAGRAD, OPT_ADADELTA, OPT_ADAMAX, OPT_NADAM, OPT_LION, OPT_FTRL } opt2_kind;

typedef struct {
    const char *name;
    opt2_kind kind;
    float lr, a, b, eps, wd; /* a, b: betas / rho; eps also Adagrad's and Ftrl's initial accumulator */
    float lr_power, l1, l2, l2s, beta; /* Ftrl */
} opt2_case;

static void ref2_step(const opt2_case *oc, double *p, double s[2], double g, long t,
                      double u_product)
{
    const double lr = oc->lr, eps = oc->eps, a = oc->a, b = oc->b;
    if (oc->wd != 0)
        *p -= lr * oc->wd * *p;
    switch (oc->kind) {
    case OPT_ADAGRAD:
        s[0] += g * g;
        *p -= lr * g / sqrt(s[0] + eps);
        break;
    case OPT_ADADELTA: {
        s[0] = a * s[0] + (1 - a) * g * g;
        const double d = -sqrt(s[1] + eps) / sqrt(s[0] + eps) * g;
        s[1] = a * s[1] + (1 - a) * d * d;
        *p += lr * d;
        break;
    }
    case OPT_ADAMAX:
        s[0] = a * s[0] + (1 - a) * g;
        s[1] = fmax(b * s[1], fabs(g));
        *p -= lr / (1 - pow(a, (double)t)) * s[0] / (s[1] + eps);
        break;
    case OPT_NADAM: {
        const double ut = a * (1 - 0.5 * pow(0.96, (double)t));
        const double ut1 = a * (1 - 0.5 * pow(0.96, (double)t + 1));
        s[0] = a * s[0] + (1 - a) * g;
        s[1] = b * s[1] + (1 - b) * g * g;
        const double mhat = ut1 * s[0] / (1 - u_product * ut1) + (1 - ut) * g / (1 - u_product);
        *p -= lr * mhat / (sqrt(s[1] / (1 - pow(b, (double)t))) + eps);
        break;
    }
    case OPT_LION: {
        const double c = a * s[0] + (1 - a) * g;
        *p -= lr * (c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0);
        s[0] = b * s[0] + (1 - b) * g;
        break;
    }
    case OPT_FTRL: {
        const double k = -oc->lr_power, na = s[0] + g * g;
        s[1] += g + 2 * oc->l2s * *p - (pow(na, k) - pow(s[0], k)) / lr * *p;
        const double quad = pow(na, k) / lr + 2 * (oc->l2 + oc->beta / (2 * lr));
        const double lc = fmin(fmax(s[1], -oc->l1), oc->l1);
        *p = (lc - s[1]) / quad;
        s[0] = na;
        break;
    }
    }
}

static maas_status kernel2_step(const opt2_case *oc, float *p, float *s0, float *s1,
                                const float *g, long n, long t, double u_product)
{
    switch (oc->kind) {
    case OPT_ADAGRAD:
        return maas_adagrad_update(p, s0, g, n, oc->lr, oc->eps, oc->wd);
    case OPT_ADADELTA:
        return maas_adadelta_update(p, s0, s1, g, n, oc->lr, oc->a, oc->eps, oc->wd);
    case OPT_ADAMAX:
        return maas_adamax_update(p, s0, s1, g, n, oc->lr, oc->a, oc->b, oc->eps, t, oc->wd);
    case OPT_NADAM:
        return maas_nadam_update(p, s0, s1, g, n, oc->lr, oc->a, oc->b, oc->eps, t, u_product,
                                 oc->wd);
    case OPT_LION:
        return maas_lion_update(p, s0, g, n, oc->lr, oc->a, oc->b, oc->wd);
    case OPT_FTRL:
        return maas_ftrl_update(p, s0, s1, g, n, oc->lr, oc->lr_power, oc->l1, oc->l2, oc->l2s,
                                oc->beta, oc->wd);
    }
    return MAAS_ERR_VALUE;
}

static void run_case2(const opt2_case *oc, long n)
{
    float *p = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    float *s0 = calloc((size_t)n, sizeof(float)), *s1 = calloc((size_t)n, sizeof(float));
    double *pd = malloc(sizeof(double) * n), *sd = calloc((size_t)n * 2, sizeof(double));
    const double init = (oc->kind == OPT_FTRL) ? oc->eps : (oc->kind == OPT_ADAGRAD ? 0.1 : 0.0);
    check_fill(p, n, 7);
    for (long i = 0; i < n; i++) {
        pd[i] = p[i];
        s0[i] = (float)init;
        sd[2 * i] = (float)init;
    }
    double u_product = 1.0;
    for (long t = 1; t <= STEPS; t++) {
        check_fill(g, n, 200 + (unsigned)t);
        u_product *= oc->a * (1 - 0.5 * pow(0.96, (double)t));
        CHECK_OK(kernel2_step(oc, p, s0, s1, g, n, t, u_product));
        for (long i = 0; i < n; i++)
            ref2_step(oc, &pd[i], &sd[2 * i], (double)g[i], t, u_product);
    }
    double err = 0.0;
    for (long i = 0; i < n; i++) {
        double e = fabs(p[i] - pd[i]) / (1.0 + fabs(pd[i]));
        err = e > err ? e : err;
    }
    CHECK(err < TOL);
    if (!(err < TOL))
        fprintf(stderr, "  in %s (n=%ld): max error %g\n", oc->name, n, err);
    free(p); free(g); free(s0); free(s1); free(pd); free(sd);
}

static void test_checks2(void)
{
    float p[4] = {1, 1, 1, 1}, g[4] = {1, 1, 1, 1}, s[4] = {0}, q[4] = {0};
    CHECK(maas_adagrad_update(p, NULL, g, 4, 0.1f, 1e-7f, 0) == MAAS_ERR_VALUE);
    CHECK(maas_adagrad_update(p, s, g, 4, NAN, 1e-7f, 0) == MAAS_ERR_VALUE);
    CHECK(maas_adadelta_update(p, s, NULL, g, 4, 0.1f, 0.9f, 1e-7f, 0) == MAAS_ERR_VALUE);
    CHECK(maas_adadelta_update(p, s, q, g, 4, 0.1f, INFINITY, 1e-7f, 0) == MAAS_ERR_VALUE);
    CHECK(maas_adamax_update(p, s, q, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_adamax_update(p, s, NULL, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 1, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_nadam_update(p, s, q, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 0, 0.5, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_nadam_update(p, s, q, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 1, 1.0, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_nadam_update(p, s, q, g, 4, 0.1f, 0.9f, 0.999f, 1e-7f, 1, NAN, 0) ==
          MAAS_ERR_VALUE);
    CHECK(maas_lion_update(p, NULL, g, 4, 0.1f, 0.9f, 0.99f, 0) == MAAS_ERR_VALUE);
    CHECK(maas_lion_update(p, s, NULL, 4, 0.1f, 0.9f, 0.99f, 0) == MAAS_ERR_VALUE);
    CHECK(maas_ftrl_update(p, s, q, g, 4, 0.0f, -0.5f, 0, 0, 0, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_ftrl_update(p, s, q, g, 4, 0.1f, 0.5f, 0, 0, 0, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_ftrl_update(p, s, q, g, 4, 0.1f, -0.5f, -1, 0, 0, 0, 0) == MAAS_ERR_VALUE);
    CHECK(maas_ftrl_update(p, s, NULL, g, 4, 0.1f, -0.5f, 0, 0, 0, 0, 0) == MAAS_ERR_VALUE);
    /* nothing was written by the refused calls */
    for (int i = 0; i < 4; i++)
        CHECK(p[i] == 1.0f && s[i] == 0.0f && q[i] == 0.0f);
    /* n == 0 with NULL buffers is fine */
    CHECK_OK(maas_lion_update(NULL, NULL, NULL, 0, 0.1f, 0.9f, 0.99f, 0));
    CHECK_OK(maas_ftrl_update(NULL, NULL, NULL, NULL, 0, 0.1f, -0.5f, 0, 0, 0, 0, 0));
    /* Lion moves by exactly lr per element (sign), and not where c == 0 */
    float lp[3] = {0, 0, 0}, lm[3] = {0, 0, 0}, lg[3] = {2.0f, -0.001f, 0.0f};
    CHECK_OK(maas_lion_update(lp, lm, lg, 3, 0.5f, 0.9f, 0.99f, 0));
    CHECK(lp[0] == -0.5f && lp[1] == 0.5f && lp[2] == 0.0f);
}

static void test_new_kernels(void)
{
    const opt2_case cases[] = {
        {"adagrad", OPT_ADAGRAD, 0.05f, 0, 0, 1e-7f, 0, 0, 0, 0, 0, 0},
        {"adagrad big eps wd", OPT_ADAGRAD, 0.05f, 0, 0, 0.3f, 0.1f, 0, 0, 0, 0, 0},
        {"adadelta", OPT_ADADELTA, 1.0f, 0.95f, 0, 1e-7f, 0, 0, 0, 0, 0, 0},
        {"adadelta wd", OPT_ADADELTA, 0.5f, 0.7f, 0, 1e-3f, 0.1f, 0, 0, 0, 0, 0},
        {"adamax", OPT_ADAMAX, 0.01f, 0.9f, 0.999f, 1e-7f, 0, 0, 0, 0, 0, 0},
        {"adamax wd", OPT_ADAMAX, 0.02f, 0.5f, 0.9f, 0.5f, 0.1f, 0, 0, 0, 0, 0},
        {"nadam", OPT_NADAM, 0.01f, 0.9f, 0.999f, 1e-7f, 0, 0, 0, 0, 0, 0},
        {"nadam wd", OPT_NADAM, 0.02f, 0.5f, 0.9f, 1e-3f, 0.1f, 0, 0, 0, 0, 0},
        {"lion", OPT_LION, 0.01f, 0.9f, 0.99f, 0, 0, 0, 0, 0, 0, 0},
        {"lion wd", OPT_LION, 0.01f, 0.5f, 0.9f, 0, 0.3f, 0, 0, 0, 0, 0},
        {"ftrl", OPT_FTRL, 0.1f, 0, 0, 0.1f, 0, -0.5f, 0, 0, 0, 0},
        {"ftrl regularized", OPT_FTRL, 0.1f, 0, 0, 0.1f, 0, -0.5f, 0.05f, 0.1f, 0.02f, 0.5f},
        {"ftrl pow", OPT_FTRL, 0.1f, 0, 0, 0.5f, 0, -0.7f, 0, 0, 0, 0},
        {"ftrl pow0 wd", OPT_FTRL, 0.1f, 0, 0, 0.0f, 0.1f, 0.0f, 0.1f, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case2(&cases[i], N);
        run_case2(&cases[i], 37);
    }
    test_checks2();
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
    test_new_kernels();
    return check_done("test_optim");
}
