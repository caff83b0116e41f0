/* ops/vecmath.c -- vectorized float32 exp, expm1, log, log1p, tanh, sigmoid
 * and erf (the contract and the accuracy bounds are in vecmath.h).
 *
 * The AVX2 kernels follow the classic recipes:
 *   exp/expm1  Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, with
 *              ln2 split in two (Cephes' C1 = 0.693359375 holds 9 bits, so
 *              n*C1 is exact), Cephes' degree-7 expf polynomial
 *              1 + r + r^2 P(r), and 2^n built in the exponent bits. exp
 *              scales in two steps 2^(n/2) 2^(n-n/2) so that subnormal
 *              results round once and 2^128 overflows to +inf; expm1 is
 *              2^n expm1(r) + (2^n - 1) (as XNNPACK's ELU kernels), exact
 *              near 0.
 *   log        Cephes logf: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
 *              log(m) = f - f^2/2 + f^3 P(f), f = m - 1, degree-8 P.
 *   log1p      Goldberg's trick on that log: log1p(x) = log(u) x / (u - 1)
 *              with u = 1 + x rounded (x itself when u == 1).
 *   tanh       t = expm1(2|x|) / (expm1(2|x|) + 2) with the sign of x:
 *              no cancellation near 0, saturates to exactly 1 at |x| >= 10.
 *   sigmoid    e = exp(-|x|); (x >= 0 ? 1 : e) / (1 + e): one division,
 *              never overflows.
 *   erf        erf(a) = -expm1(-(a + a Q(a))), a = |x| clamped to 3.925
 *              (erf rounds to 1 beyond 3.915), with one degree-8 polynomial
 *              Q fitted here to -log(erfc(a))/a - 1. It is the form of the
 *              upper interval of ARM optimized-routines' erff,
 *              1 - exp(-poly), carried down to 0 by taking expm1, which is
 *              exact near 0: one polynomial and one expm1, no branches.
 *   gelu       0.5 x + 0.5 x erf(x / sqrt 2) in registers; gelu_grad
 *              cdf + x pdf likewise (x pdf taken as 0 where pdf is 0).
 * Lanes hold their own special cases (NaN, +-inf, 0, subnormals) by
 * clamping with operands ordered so NaN passes through, and by blends at
 * the end; no lane falls back to a scalar call. A tail of n % 8 elements
 * runs through the same 8-wide code on a zero-padded copy.
 */
#include "vecmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define VM_X86 1
#include <immintrin.h>
#else
#define VM_X86 0
#endif

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* ------------------------------------------------------------ dispatch */

static int vm_state = -1; /* -1 undecided, else a maas_isa */

int maas_vm_cpu_has_avx2(void)
{
#if VM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

maas_isa maas_vm_isa(void)
{
    int s = __atomic_load_n(&vm_state, __ATOMIC_RELAXED);
    if (s < 0) {
        /* Idempotent: racing first calls compute the same value. */
        const char *env = getenv("MAAS_ISA");
        int forced_portable = env && strcmp(env, "portable") == 0;
        s = (!forced_portable && maas_vm_cpu_has_avx2()) ? MAAS_ISA_AVX2
                                                         : MAAS_ISA_PORTABLE;
        __atomic_store_n(&vm_state, s, __ATOMIC_RELAXED);
    }
    return (maas_isa)s;
}

#define VM_DISPATCH(f)                                                        \
    void maas_vm_##f(float *y, const float *x, int64_t n)                     \
    {                                                                         \
        if (maas_vm_isa() == MAAS_ISA_AVX2)                                   \
            maas_vm_##f##_avx2(y, x, n);                                      \
        else                                                                  \
            maas_vm_##f##_portable(y, x, n);                                  \
    }
MAAS_VM_FUNCS(VM_DISPATCH)
MAAS_VM_FUSED(VM_DISPATCH)
#undef VM_DISPATCH

/* ------------------------------------------------------------ portable */

static inline float sigmoid_ref(float v)
{
    float e = expf(-fabsf(v));       /* in (0, 1]: never overflows */
    return (v >= 0.0f ? 1.0f : e) / (1.0f + e);
}

/* cdf(v) + v pdf(v), with v pdf(v) = 0 where pdf underflows (so +-inf
 * gives 1 and 0, not inf * 0) */
static inline float gelu_grad_ref(float v)
{
    float pdf = (float)INV_SQRT_2PI * expf(-0.5f * v * v);
    return 0.5f * (1.0f + erff(v * (float)SQRT1_2)) + (pdf > 0.0f ? v * pdf : 0.0f);
}

#define VM_PORTABLE(f, expr)                                                  \
    void maas_vm_##f##_portable(float *y, const float *x, int64_t n)          \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            float v = x[i];                                                   \
            y[i] = (expr);                                                    \
        }                                                                     \
    }
VM_PORTABLE(exp, expf(v))
VM_PORTABLE(expm1, expm1f(v))
VM_PORTABLE(log, logf(v))
VM_PORTABLE(log1p, log1pf(v))
VM_PORTABLE(tanh, tanhf(v))
VM_PORTABLE(sigmoid, sigmoid_ref(v))
VM_PORTABLE(erf, erff(v))
VM_PORTABLE(gelu, 0.5f * v * (1.0f + erff(v * (float)SQRT1_2)))
VM_PORTABLE(gelu_grad, gelu_grad_ref(v))
#undef VM_PORTABLE

/* ---------------------------------------------------------------- AVX2 */

#if VM_X86

#define TGT __attribute__((target("avx2,fma")))
#define V1(c) _mm256_set1_ps(c)

/* Cephes expf coefficients: exp(r) = 1 + r + r^2 P(r) on |r| <= ln2/2. */
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)

/* n = round(x / ln2) and the reduced r = x - n ln2; returns expm1(r). */
TGT static inline __m256 exp_core(__m256 x, __m256 *nf)
{
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, V1(LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, V1(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, V1(LN2_LO), r);
    __m256 p = V1(EXP_P0);
    p = _mm256_fmadd_ps(p, r, V1(EXP_P1));
    p = _mm256_fmadd_ps(p, r, V1(EXP_P2));
    p = _mm256_fmadd_ps(p, r, V1(EXP_P3));
    p = _mm256_fmadd_ps(p, r, V1(EXP_P4));
    p = _mm256_fmadd_ps(p, r, V1(EXP_P5));
    *nf = n;
    return _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
}

/* 2^k for integer lanes k in [-126, 127] */
TGT static inline __m256 pow2i(__m256i k)
{
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

TGT static inline __m256 v_exp(__m256 x)
{
    __m256 n;
    __m256 outside = _mm256_or_ps(_mm256_cmp_ps(x, V1(-87.0f), _CMP_LT_OQ),
                                  _mm256_cmp_ps(x, V1(88.0f), _CMP_GT_OQ));
    if (!_mm256_movemask_ps(outside)) {
        /* every lane in [-87, 88] (or NaN): n in [-126, 127], one scaling */
        __m256 q = exp_core(x, &n);
        return _mm256_mul_ps(_mm256_add_ps(q, V1(1.0f)), pow2i(_mm256_cvtps_epi32(n)));
    }
    /* min/max return their second operand when either is NaN: keep x there */
    x = _mm256_min_ps(V1(89.0f), _mm256_max_ps(V1(-104.0f), x));
    __m256 q = exp_core(x, &n);
    __m256 y = _mm256_add_ps(q, V1(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n); /* in [-150, 129] */
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    return _mm256_mul_ps(_mm256_mul_ps(y, pow2i(n1)), pow2i(n2));
}

TGT static inline __m256 v_expm1(__m256 x)
{
    /* below -17.5 expm1 is -1 in float; above 80, expm1 == exp */
    __m256 xc = _mm256_min_ps(V1(80.0f), _mm256_max_ps(V1(-17.5f), x));
    __m256 n;
    __m256 q = exp_core(xc, &n);
    __m256 s = pow2i(_mm256_cvtps_epi32(n)); /* n in [-25, 116] */
    __m256 y = _mm256_fmadd_ps(s, q, _mm256_sub_ps(s, V1(1.0f)));
    __m256 big = _mm256_cmp_ps(x, V1(80.0f), _CMP_GT_OQ);
    if (_mm256_movemask_ps(big))
        y = _mm256_blendv_ps(y, v_exp(x), big);
    return y;
}

/* Cephes logf coefficients: log(1+f) = f - f^2/2 + f^3 P(f). */
#define LOG_P0 7.0376836292e-2f
#define LOG_P1 (-1.1514610310e-1f)
#define LOG_P2 1.1676998740e-1f
#define LOG_P3 (-1.2420140846e-1f)
#define LOG_P4 1.4249322787e-1f
#define LOG_P5 (-1.6668057665e-1f)
#define LOG_P6 2.0000714765e-1f
#define LOG_P7 (-2.4999993993e-1f)
#define LOG_P8 3.3333331174e-1f
#define SQRT_HALF 0.707106781186547524f

TGT static inline __m256 v_log(__m256 x)
{
    /* subnormals: scale by 2^23 and take 23 off the exponent */
    __m256 sub = _mm256_cmp_ps(x, V1(1.17549435e-38f), _CMP_LT_OQ);
    __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, V1(8388608.0f)), sub);
    __m256 eadj = _mm256_and_ps(sub, V1(-23.0f));
    __m256i bits = _mm256_castps_si256(xs);
    __m256i ei = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
        _mm256_set1_epi32(0x3f000000))); /* m in [0.5, 1) */
    __m256 e = _mm256_add_ps(_mm256_cvtepi32_ps(ei), eadj);
    /* m < sqrt(1/2): f = 2m - 1, e -= 1; else f = m - 1 */
    __m256 lo = _mm256_cmp_ps(m, V1(SQRT_HALF), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(lo, V1(1.0f)));
    __m256 f = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(lo, m)), V1(1.0f));
    __m256 z = _mm256_mul_ps(f, f);
    __m256 p = V1(LOG_P0);
    p = _mm256_fmadd_ps(p, f, V1(LOG_P1));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P2));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P3));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P4));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P5));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P6));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P7));
    p = _mm256_fmadd_ps(p, f, V1(LOG_P8));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, f), z);
    y = _mm256_fmadd_ps(e, V1(LN2_LO), y);
    y = _mm256_fnmadd_ps(z, V1(0.5f), y);
    __m256 r = _mm256_add_ps(f, y);
    r = _mm256_fmadd_ps(e, V1(LN2_HI), r);
    /* x < 0 (and -inf): NaN; x == 0: -inf; +inf and NaN: x itself */
    r = _mm256_blendv_ps(r, V1(NAN), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
    r = _mm256_blendv_ps(r, V1(-INFINITY), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, V1(INFINITY), _CMP_NLT_UQ));
    return r;
}

TGT static inline __m256 v_log1p(__m256 x)
{
    __m256 u = _mm256_add_ps(x, V1(1.0f));
    __m256 d = _mm256_sub_ps(u, V1(1.0f));
    __m256 y = _mm256_mul_ps(v_log(u), _mm256_div_ps(x, d));
    /* u == 1 (|x| below half an ulp of 1): x; +inf: +inf (inf/inf above) */
    y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ));
    y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, V1(INFINITY), _CMP_EQ_OQ));
    return y;
}

TGT static inline __m256 v_tanh(__m256 x)
{
    const __m256 sign = V1(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, x);
    __m256 a2 = _mm256_min_ps(V1(20.0f), _mm256_add_ps(a, a)); /* keeps NaN */
    /* expm1 on [0, 20]: n in [0, 29], no clamp and no overflow to handle */
    __m256 n;
    __m256 q = exp_core(a2, &n);
    __m256 s = pow2i(_mm256_cvtps_epi32(n));
    __m256 em = _mm256_fmadd_ps(s, q, _mm256_sub_ps(s, V1(1.0f)));
    __m256 t = _mm256_div_ps(em, _mm256_add_ps(em, V1(2.0f)));
    return _mm256_or_ps(t, _mm256_and_ps(sign, x));
}

TGT static inline __m256 v_sigmoid(__m256 x)
{
    __m256 na = _mm256_or_ps(x, V1(-0.0f)); /* -|x| */
    __m256 e = v_exp(na);
    __m256 num = _mm256_blendv_ps(e, V1(1.0f),
                                  _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
    return _mm256_div_ps(num, _mm256_add_ps(e, V1(1.0f)));
}

/* erf: Q(a) ~ -log(erfc(a)) / a - 1 on [0, 3.925], degree 8, maas's own
 * fit (float64 weighted least squares with Lawson reweighting towards
 * minimax; weights = ulp of erf per unit error of Q), rounded to float:
 * fit error 0.14 ulp of erf. */
#define ERF_Q0 0x1.06eba8p-3f /* 2/sqrt(pi) - 1 */
#define ERF_Q1 0x1.45f2fap-1f
#define ERF_Q2 0x1.a4fa4cp-4f
#define ERF_Q3 (-0x1.39ccd8p-6f)
#define ERF_Q4 (-0x1.5129dcp-13f)
#define ERF_Q5 0x1.b517eep-10f
#define ERF_Q6 (-0x1.4be264p-11f)
#define ERF_Q7 0x1.eda0bap-14f
#define ERF_Q8 (-0x1.36c3b0p-17f)

TGT static inline __m256 v_erf(__m256 x)
{
    const __m256 sign = V1(-0.0f);
    /* a = min(|x|, 3.925) keeps NaN; erf rounds to 1 beyond 3.915 */
    __m256 a = _mm256_min_ps(V1(3.925f), _mm256_andnot_ps(sign, x));
    __m256 q = V1(ERF_Q8);
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q7));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q6));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q5));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q4));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q3));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q2));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q1));
    q = _mm256_fmadd_ps(q, a, V1(ERF_Q0));
    /* r = -log(erfc(a)) in [0, 17.6]; erf(a) = 1 - exp(-r) = -expm1(-r),
     * with expm1 on its range [-17.6, 0] (n in [-26, 0]) needing no clamp */
    __m256 nr = _mm256_xor_ps(_mm256_fmadd_ps(q, a, a), sign);
    __m256 n;
    __m256 em = exp_core(nr, &n);
    __m256 s = pow2i(_mm256_cvtps_epi32(n));
    em = _mm256_fmadd_ps(s, em, _mm256_sub_ps(s, V1(1.0f))); /* <= 0 */
    return _mm256_or_ps(_mm256_andnot_ps(sign, em), _mm256_and_ps(sign, x));
}

TGT static inline __m256 v_gelu(__m256 x)
{
    __m256 e = v_erf(_mm256_mul_ps(x, V1((float)SQRT1_2)));
    __m256 hx = _mm256_mul_ps(x, V1(0.5f));
    return _mm256_fmadd_ps(hx, e, hx);
}

TGT static inline __m256 v_gelu_grad(__m256 x)
{
    __m256 e = v_erf(_mm256_mul_ps(x, V1((float)SQRT1_2)));
    __m256 cdf = _mm256_fmadd_ps(V1(0.5f), e, V1(0.5f));
    __m256 g = v_exp(_mm256_mul_ps(_mm256_mul_ps(V1(-0.5f), x), x));
    __m256 pdf = _mm256_mul_ps(V1((float)INV_SQRT_2PI), g);
    __m256 xpdf = _mm256_and_ps(_mm256_mul_ps(x, pdf), /* 0 where pdf is: no inf * 0 */
                                _mm256_cmp_ps(pdf, _mm256_setzero_ps(), _CMP_NEQ_UQ));
    return _mm256_add_ps(cdf, xpdf);
}

#define VM_AVX2(f)                                                            \
    TGT void maas_vm_##f##_avx2(float *y, const float *x, int64_t n)          \
    {                                                                         \
        int64_t i = 0;                                                        \
        for (; i + 8 <= n; i += 8)                                            \
            _mm256_storeu_ps(y + i, v_##f(_mm256_loadu_ps(x + i)));          \
        if (i < n) {                                                          \
            float buf[8] = {0};                                               \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));              \
            _mm256_storeu_ps(buf, v_##f(_mm256_loadu_ps(buf)));              \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));              \
        }                                                                     \
    }
MAAS_VM_FUNCS(VM_AVX2)
MAAS_VM_FUSED(VM_AVX2)
#undef VM_AVX2

#else /* not x86: the AVX2 entry points exist and run the portable code */

#define VM_AVX2(f)                                                            \
    void maas_vm_##f##_avx2(float *y, const float *x, int64_t n)              \
    {                                                                         \
        maas_vm_##f##_portable(y, x, n);                                      \
    }
MAAS_VM_FUNCS(VM_AVX2)
MAAS_VM_FUSED(VM_AVX2)
#undef VM_AVX2

#endif
