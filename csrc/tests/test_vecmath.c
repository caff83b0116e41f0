/* vecmath: each function's error against its double-precision libm value,
 * in ulp of float32 at the exact result, over a strided sweep of every
 * binade (tiny to huge, both signs), a dense linear sweep of the useful
 * range, and the special values; for the portable (libm) and, when the CPU
 * has it, the AVX2 implementation. Also: tails (n % 8), in place, n == 0,
 * and the run-time choice of ISA. MAAS_VM_VERBOSE=1 prints the measured
 * maxima. */
#include "check.h"
#include "../vecmath.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*vm_fn)(float *, const float *, int64_t);

static double ref_sigmoid(double v) { return v >= 0 ? 1 / (1 + exp(-v)) : exp(v) / (1 + exp(v)); }

struct fn_case {
    const char *name;
    vm_fn portable, avx2;
    double (*ref)(double);
    double lo, hi;        /* the useful range of the dense linear sweep */
    double bound_avx2;    /* max ulp asserted (vecmath.h states the same) */
    double bound_portable;
    int x_min_neg1;       /* domain starts at -1 (log1p) */
    int x_positive;       /* domain is x >= 0 (log) */
};

static const struct fn_case cases[] = {
    {"exp", maas_vm_exp_portable, maas_vm_exp_avx2, exp, -104, 89, 1.5, 1, 0, 0},
    {"expm1", maas_vm_expm1_portable, maas_vm_expm1_avx2, expm1, -20, 89, 2, 1, 0, 0},
    {"log", maas_vm_log_portable, maas_vm_log_avx2, log, 0, 100, 1, 1, 0, 1},
    {"log1p", maas_vm_log1p_portable, maas_vm_log1p_avx2, log1p, -1, 10, 3, 1, 1, 0},
    {"tanh", maas_vm_tanh_portable, maas_vm_tanh_avx2, tanh, -12, 12, 3, 3, 0, 0},
    {"sigmoid", maas_vm_sigmoid_portable, maas_vm_sigmoid_avx2, ref_sigmoid, -110, 30, 3, 3, 0, 0},
    {"erf", maas_vm_erf_portable, maas_vm_erf_avx2, erf, -5, 5, 2, 1, 0, 0},
};

static float f_of_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* The spacing of float32 at a >= 0 (2^-149 below FLT_MIN) */
static double ulp_at(double a)
{
    if (a < FLT_MIN)
        return ldexp(1.0, -149);
    int e;
    frexp(a, &e);
    return ldexp(1.0, e - 24);
}

/* Error of y against the exact r, in ulp of float32 at r; special values
 * (NaN, inf, overflowed results) must match exactly (returns 1e30 if not). */
static double ulp_err(float y, double r)
{
    if (isnan(r))
        return isnan(y) ? 0.0 : 1e30;
    float rf = (float)r;
    if (isinf(rf) || isinf(y))
        return (y == rf) ? 0.0 : 1e30;
    return fabs((double)y - r) / ulp_at(fabs(r));
}

/* The sample points: a strided walk over every float bit pattern (both
 * signs), a dense linear sweep of [lo, hi], and the special values. */
static long make_points(const struct fn_case *c, float *x, long cap)
{
    long n = 0;
    const uint32_t stride = 1543;
    for (uint32_t b = 0; b < 0x7f800000u && n + 2 <= cap; b += stride) {
        x[n++] = f_of_bits(b);
        x[n++] = f_of_bits(b | 0x80000000u);
    }
    const long dense = 400000;
    for (long i = 0; i <= dense && n < cap; i++)
        x[n++] = (float)(c->lo + (c->hi - c->lo) * (double)i / (double)dense);
    const float special[] = {0.0f, -0.0f, FLT_MIN, -FLT_MIN, 1e-45f, -1e-45f,
                             1e-30f, -1e-30f, 1.0f, -1.0f, FLT_MAX, -FLT_MAX,
                             INFINITY, -INFINITY, NAN, -NAN,
                             88.72283f, 88.72284f, 88.7f, 89.0f, -87.33654f,
                             -87.34f, -103.9720f, -103.98f, -104.0f, -150.0f,
                             9.0f, -9.0f, 10.0f, -10.0f, 3.9f, 4.0f, -4.0f,
                             0.921875f, 0.92f, -0.921875f, 0.875f, 0.3465736f,
                             -0.3465736f, -17.5f, -17.3f, 80.0f, 80.1f,
                             0.70710677f, 0.70710683f, 1.0000001f, 0.99999994f,
                             -0.99999994f, -1.0f, 1e7f, 3e38f};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && n < cap; i++)
        x[n++] = special[i];
    return n;
}

static double max_err(const struct fn_case *c, vm_fn f, const float *x,
                      float *y, long n, float *worst_x)
{
    f(y, x, n);
    double m = 0.0;
    *worst_x = 0.0f;
    for (long i = 0; i < n; i++) {
        double xd = x[i];
        if ((c->x_positive && xd < 0) || (c->x_min_neg1 && xd < -1)) {
            if (!isnan(y[i])) { /* outside the domain: NaN */
                m = 1e30;
                *worst_x = x[i];
            }
            continue;
        }
        double e = ulp_err(y[i], c->ref(xd));
        if (e > m) {
            m = e;
            *worst_x = x[i];
        }
    }
    return m;
}

static void check_accuracy(int have_avx2, int verbose)
{
    const long cap = 3500000;
    float *x = malloc(sizeof(float) * (size_t)cap);
    float *y = malloc(sizeof(float) * (size_t)cap);
    CHECK(x && y);
    if (!x || !y)
        return;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct fn_case *c = &cases[k];
        long n = make_points(c, x, cap);
        float wx;
        double ep = max_err(c, c->portable, x, y, n, &wx);
        if (verbose)
            printf("  %-8s portable max %.3f ulp at %.9g\n", c->name, ep, wx);
        if (!(ep <= c->bound_portable)) {
            fprintf(stderr, "%s portable: %.3f ulp at x = %.9g\n", c->name, ep, wx);
            CHECK(ep <= c->bound_portable);
        }
        if (have_avx2) {
            double ea = max_err(c, c->avx2, x, y, n, &wx);
            if (verbose)
                printf("  %-8s avx2     max %.3f ulp at %.9g\n", c->name, ea, wx);
            if (!(ea <= c->bound_avx2)) {
                fprintf(stderr, "%s avx2: %.3f ulp at x = %.9g\n", c->name, ea, wx);
                CHECK(ea <= c->bound_avx2);
            }
        }
    }
    free(x);
    free(y);
}

/* The fused gelu and its derivative against double, over [-10, 10] and a
 * strided walk of the floats up to 1e4 in magnitude: gelu within 3 ulp of
 * max(|gelu|, |x| / 2) (its 1 + erf cancels for x < 0), the derivative
 * within 4e-7 |g| + 1.2e-7 (1 + |x|) (vecmath.h). */
static double ref_gelu(double v) { return 0.5 * v * (1 + erf(v / sqrt(2.0))); }
static double ref_gelu_grad(double v)
{
    return 0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
}

static void check_gelu(vm_fn gelu, vm_fn grad, const char *name, int verbose)
{
    const long cap = 1200000;
    float *x = malloc(sizeof(float) * (size_t)cap);
    float *y = malloc(sizeof(float) * (size_t)cap);
    float *g = malloc(sizeof(float) * (size_t)cap);
    CHECK(x && y && g);
    if (!x || !y || !g)
        return;
    long n = 0;
    for (long i = 0; i <= 400000; i++)
        x[n++] = (float)(-10.0 + 20.0 * (double)i / 400000.0);
    for (uint32_t b = 0; b < 0x461c4000u && n + 2 <= cap; b += 2039) { /* |x| < 1e4 */
        x[n++] = f_of_bits(b);
        x[n++] = f_of_bits(b | 0x80000000u);
    }
    gelu(y, x, n);
    grad(g, x, n);
    double ey = 0.0, eg = 0.0;
    float wy = 0.0f, wg = 0.0f;
    for (long i = 0; i < n; i++) {
        double v = x[i], r = ref_gelu(v), rg = ref_gelu_grad(v);
        double sc = fmax(fabs(r), 0.5 * fabs(v));
        double e = fabs((double)y[i] - r) / ulp_at(sc);
        if (e > ey) { ey = e; wy = x[i]; }
        double tol = 4e-7 * fabs(rg) + 1.2e-7 * (1 + fabs(v)) + ldexp(1.0, -148);
        double q = fabs((double)g[i] - rg) / tol;
        if (q > eg) { eg = q; wg = x[i]; }
    }
    if (verbose)
        printf("  gelu     %-8s max %.3f ulp at %.9g; gelu' max %.3f of its bound at %.9g\n",
               name, ey, wy, eg, wg);
    if (!(ey <= 3.0))
        fprintf(stderr, "gelu %s: %.3f ulp at x = %.9g\n", name, ey, wy);
    if (!(eg <= 1.0))
        fprintf(stderr, "gelu' %s: %.3f of the bound at x = %.9g\n", name, eg, wg);
    CHECK(ey <= 3.0);
    CHECK(eg <= 1.0);
    float sp[5] = {INFINITY, NAN, 0.0f, -0.0f, -INFINITY}, o[5];
    gelu(o, sp, 5);
    CHECK(o[0] == INFINITY && isnan(o[1]) && o[2] == 0.0f && o[3] == 0.0f);
    grad(o, sp, 5);
    CHECK(o[0] == 1.0f && isnan(o[1]) && o[2] == 0.5f && o[3] == 0.5f && o[4] == 0.0f);
    free(x);
    free(y);
    free(g);
}

/* Every length 0..40 (all tail sizes), out of place and in place, gives
 * the same values as one long call, and writes nothing past n. */
static void check_tails(void)
{
    float x[48], y[48], z[48], full[48];
    check_fill(x, 48, 7);
    for (int i = 0; i < 48; i++)
        x[i] *= 5.0f;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        vm_fn f = maas_vm_isa() == MAAS_ISA_AVX2 ? cases[k].avx2 : cases[k].portable;
        f(full, x, 40);
        for (int n = 0; n <= 40; n++) {
            for (int i = 0; i < 48; i++)
                y[i] = z[i] = -7.0f;
            f(y, x, n);
            memcpy(z, x, sizeof(float) * (size_t)n);
            f(z, z, n);
            for (int i = 0; i < n; i++) {
                CHECK(memcmp(&y[i], &full[i], sizeof(float)) == 0 || (isnan(y[i]) && isnan(full[i])));
                CHECK(memcmp(&z[i], &full[i], sizeof(float)) == 0 || (isnan(z[i]) && isnan(full[i])));
            }
            for (int i = n; i < 48; i++)
                CHECK(y[i] == -7.0f);
        }
    }
}

/* The dispatching entry points run the implementation maas_vm_isa names,
 * and that is AVX2 exactly when the CPU has it and MAAS_ISA != portable. */
static void check_dispatch(int have_avx2)
{
    const char *env = getenv("MAAS_ISA");
    int forced = env && strcmp(env, "portable") == 0;
    maas_isa want = (have_avx2 && !forced) ? MAAS_ISA_AVX2 : MAAS_ISA_PORTABLE;
    CHECK(maas_vm_isa() == want);
    float x[37], a[37], b[37];
    check_fill(x, 37, 3);
    for (int i = 0; i < 37; i++)
        x[i] *= 3.0f;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        vm_fn chosen = want == MAAS_ISA_AVX2 ? cases[k].avx2 : cases[k].portable;
        chosen(a, x, 37);
        void (*disp)(float *, const float *, int64_t) = NULL;
        switch (k) {
        case 0: disp = maas_vm_exp; break;
        case 1: disp = maas_vm_expm1; break;
        case 2: disp = maas_vm_log; break;
        case 3: disp = maas_vm_log1p; break;
        case 4: disp = maas_vm_tanh; break;
        case 5: disp = maas_vm_sigmoid; break;
        default: disp = maas_vm_erf; break;
        }
        disp(b, x, 37);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
}

/* Exact values the kernels promise (not merely within the bound). */
static void check_exact(vm_fn exp_f, vm_fn tanh_f, vm_fn sig_f, vm_fn erf_f, vm_fn log_f)
{
    float in[6] = {INFINITY, -INFINITY, 0.0f, -0.0f, 200.0f, -200.0f}, out[6];
    exp_f(out, in, 6);
    CHECK(out[0] == INFINITY && out[1] == 0.0f && out[2] == 1.0f && out[3] == 1.0f);
    CHECK(out[4] == INFINITY && out[5] == 0.0f);
    tanh_f(out, in, 6);
    CHECK(out[0] == 1.0f && out[1] == -1.0f && out[2] == 0.0f && signbit(out[3]));
    CHECK(out[4] == 1.0f && out[5] == -1.0f);
    sig_f(out, in, 6);
    CHECK(out[0] == 1.0f && out[1] == 0.0f && out[2] == 0.5f && out[3] == 0.5f);
    CHECK(out[4] == 1.0f && out[5] == 0.0f);
    erf_f(out, in, 6);
    CHECK(out[0] == 1.0f && out[1] == -1.0f && out[2] == 0.0f && signbit(out[3]));
    CHECK(out[4] == 1.0f && out[5] == -1.0f);
    float lin[5] = {0.0f, -0.0f, -1.0f, INFINITY, 1.0f};
    log_f(out, lin, 5);
    CHECK(out[0] == -INFINITY && out[1] == -INFINITY && isnan(out[2]));
    CHECK(out[3] == INFINITY && out[4] == 0.0f);
}

int main(void)
{
    const char *v = getenv("MAAS_VM_VERBOSE");
    int verbose = v && strcmp(v, "1") == 0;
    int have_avx2 = maas_vm_cpu_has_avx2();
    if (verbose)
        printf("  cpu has avx2+fma: %d, dispatch: %s\n", have_avx2,
               maas_vm_isa() == MAAS_ISA_AVX2 ? "avx2" : "portable");
    check_accuracy(have_avx2, verbose);
    check_gelu(maas_vm_gelu_portable, maas_vm_gelu_grad_portable, "portable", verbose);
    if (have_avx2)
        check_gelu(maas_vm_gelu_avx2, maas_vm_gelu_grad_avx2, "avx2", verbose);
    check_tails();
    check_dispatch(have_avx2);
    check_exact(maas_vm_exp_portable, maas_vm_tanh_portable, maas_vm_sigmoid_portable,
                maas_vm_erf_portable, maas_vm_log_portable);
    if (have_avx2)
        check_exact(maas_vm_exp_avx2, maas_vm_tanh_avx2, maas_vm_sigmoid_avx2,
                    maas_vm_erf_avx2, maas_vm_log_avx2);
    return check_done("test_vecmath");
}
