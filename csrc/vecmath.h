/* vecmath.h -- float32 transcendentals over arrays, internal to the core.
 *
 * Every function below computes y[i] = f(x[i]) for 0 <= i < n (y == x is
 * allowed: in place; any other overlap is not). They do not thread: the
 * kernels that call them split their work with OpenMP above
 * MAAS_PAR_THRESHOLD and hand each thread its own blocks.
 *
 * Two implementations exist of each, chosen once per process at run time:
 *   _portable  libm's expf/expm1f/logf/log1pf/tanhf/erff in a scalar loop;
 *              always available, and the oracle the tests compare against.
 *   _avx2      8 floats at a time with AVX2 + FMA polynomials (vecmath.c),
 *              compiled with __attribute__((target("avx2,fma"))) so they
 *              exist even in a MAAS_PORTABLE=1 build without -march=native.
 * The AVX2 path is taken when the CPU has AVX2 and FMA (cpuid, through
 * __builtin_cpu_supports) and the environment variable MAAS_ISA is not
 * "portable" (read once, at the first call). The _avx2 symbols may only be
 * called directly when maas_vm_cpu_has_avx2() is true.
 *
 * Accuracy of the _avx2 functions: max error against the float64 libm
 * result, in ulp of float32 at the exact result (2^-149 for subnormal
 * results), over a strided walk of every binade of both signs, a dense
 * sweep of the useful range and the special values (csrc/tests/
 * test_vecmath.c asserts the bound; tests/test_vecmath.py the same through
 * the ops). Measured maximum in brackets (AMD EPYC Zen 4, gcc):
 *   exp      <= 1.5 ulp [0.98]; +inf above 88.7228, 0 below -103.97,
 *            subnormal results in between rounded once
 *   expm1    <= 2 ulp   [1.36]; -1 below -17.5
 *   log      <= 1 ulp   [0.75]; log(+-0) = -inf, log(x<0) = NaN,
 *            log(+inf) = +inf, subnormal inputs exact in the exponent
 *   log1p    <= 3 ulp   [2.31] on [-1, inf)
 *   tanh     <= 3 ulp   [2.20]; exactly +-1 for |x| >= 10, -0 kept
 *   sigmoid  <= 3 ulp   [2.14] (absolute 3 * 2^-149 for subnormal results,
 *            x < -87.3); exactly 0 / 0.5 / 1 at -inf / 0 / +inf
 *   erf      <= 2 ulp   [1.50]; exactly +-1 for |x| >= 3.925, -0 kept
 * NaN in gives NaN out everywhere. The portable (glibc) functions measure
 * <= 1 ulp except tanhf and the sigmoid (2.03 and 2.14; bound 3).
 */
#ifndef MAAS_VECMATH_H
#define MAAS_VECMATH_H

#include <stdint.h>

typedef enum { MAAS_ISA_PORTABLE = 0, MAAS_ISA_AVX2 = 1 } maas_isa;

/* The ISA the dispatching functions use; decided at the first call. */
maas_isa maas_vm_isa(void);
/* 1 if this CPU (and OS) can run the _avx2 functions. */
int maas_vm_cpu_has_avx2(void);

#define MAAS_VM_FUNCS(X) X(exp) X(expm1) X(log) X(log1p) X(tanh) X(sigmoid) X(erf)

/* Fused, so that the exact gelu's forward and backward read x once:
 *   gelu       y = 0.5 x (1 + erf(x / sqrt 2)); the sum cancels for x < 0,
 *              as in every float32 gelu: error <= 3 ulp of
 *              max(|gelu(x)|, |x| / 2) [measured 1.45; libm 1.61]
 *   gelu_grad  y = cdf(x) + x pdf(x), the derivative: error
 *              <= 4e-7 |y| + 1.2e-7 (1 + |x|) */
#define MAAS_VM_FUSED(X) X(gelu) X(gelu_grad)

#define MAAS_VM_DECLARE(f)                                                    \
    void maas_vm_##f(float *y, const float *x, int64_t n);                    \
    void maas_vm_##f##_portable(float *y, const float *x, int64_t n);         \
    void maas_vm_##f##_avx2(float *y, const float *x, int64_t n);
MAAS_VM_FUNCS(MAAS_VM_DECLARE)
MAAS_VM_FUSED(MAAS_VM_DECLARE)
#undef MAAS_VM_DECLARE

/* Block length the op kernels use for their per-thread scratch (a
 * multiple of 8). */
#define MAAS_VM_BLOCK 512

/* Adds t[0..m) in double into 8 running partial sums, acc[k % 8] (callers
 * pass blocks whose lengths are multiples of 8 but for a row's last), and
 * folds them in a fixed order: a sum that does not wait on one add per
 * element yet does not depend on threads or ISA. */
static inline void maas_vm_sum8_f64(double acc[8], const float *t, int64_t m)
{
    int64_t k = 0;
    for (; k + 8 <= m; k += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)t[k + j];
    for (int j = 0; k + j < m; j++)
        acc[j] += (double)t[k + j];
}

static inline double maas_vm_fold8_f64(const double acc[8])
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
           ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#endif
