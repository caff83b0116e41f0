/* ops/qgemm.c -- int8 GEMM: weights quantized per output channel and packed
 * once, activations quantized per row at run time, requantization and bias
 * fused into the epilogue; and the ops "qpack" and "qdense" on the table.
 *
 * Arithmetic (Keras 3's int8 Dense):
 *   weights  sw[j] = 127 / (max_k |w[k][j]| + 1e-7)          (float32)
 *            q[k][j] = clip(round_half_even(w[k][j] * sw[j]), -127, 127)
 *   inputs   dynamic: sx[i] = 127 / (max_k |x[i][k]| + 1e-7) per row
 *            static:  sx[i] = s for every row (a calibrated scale)
 *            a[i][k] = clip(round_half_even(x[i][k] * sx[i]), -127, 127)
 *   output   acc[i][j] = sum_k a[i][k] q[k][j]                 (int32, exact)
 *            out[i][j] = (float)acc / (sx[i] * sw[j]) (+ bias[j])
 * Every path computes acc exactly (integer arithmetic) and then the same
 * float operations in the same order, so every path equals the reference
 * bit for bit.
 *
 * Packed weights (maas_qgemm_pack), one layout for every path: the U
 * columns in blocks of 16 (the last zero-padded), K padded to a multiple
 * of 4 with zeros. Block b is one row of maas_qgemm_row_bytes(K) bytes:
 *   for g in 0..K4/4-1, c in 0..15, t in 0..3:  q[4g+t][16b+c]
 *   then 16 int32 (little-endian) column sums  sum_k q[k][16b+c]
 * so that 4 consecutive k of 16 columns are one 64-byte vector: one
 * vpdpbusd (AVX512-VNNI) or two vpmaddubsw/vpmaddwd pairs (AVX2).
 *
 * Paths (chosen by cpuid at run time, or forced by the op's `isa`):
 *   reference   plain C on the packed layout (the oracle in tests)
 *   avx2        vpmaddubsw needs u8 x s8 and its pair sums saturate at
 *               16 bits; with activations shifted to u8 (+128) a pair can
 *               reach 2*255*127 > 32767. Here the u8 operand is |a| <= 127
 *               and the weights take a's sign (vpsignb), so a pair is at
 *               most 2*127*127 = 32258: never saturates, no correction
 *               term. vpmaddwd against ones widens the pairs to int32.
 *               Rows with no negative value skip vpsignb (same products).
 *               Several rows: 4 rows x 16 columns in 8 ymm accumulators,
 *               the 4 rows' activations interleaved into one stream, K in
 *               chunks of 512 so that a block's chunk of weights stays in
 *               L1 while every group of 4 rows passes over it. One row:
 *               1 x 64 columns, the weights streamed once.
 *   avx512vnni  vpdpbusd multiplies u8 x s8 and adds groups of 4 into int32
 *               without intermediate saturation: activations are shifted to
 *               u8 by +128 and the result corrected with 128 * column sum
 *               (as FBGEMM and oneDNN do), all exact modulo 2^32.
 * K is limited to MAAS_QGEMM_MAX_K so that |acc| and 128 * colsum fit int32.
 *
 * Threads: output tiles (a panel of 64 columns x a chunk of 64 rows) are
 * handed out to threads dynamically (never split over K); each output is
 * computed by one thread in a fixed order, so results do not depend on the
 * thread count. */
#include "opdef.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define QG_X86 1
#include <immintrin.h>
#else
#define QG_X86 0
#endif

#define QB 16        /* columns per block */
#define QPANEL 4     /* blocks per panel */
#define QROWS 64     /* rows per tile */

int64_t maas_qgemm_row_bytes(int64_t K)
{
    return ((K + 3) / 4) * 4 * QB + QB * 4;
}

int64_t maas_qgemm_blocks(int64_t U)
{
    return (U + QB - 1) / QB;
}

/* --------------------------------------------------------- quantization */

static inline float q_round(float v)
{
    return nearbyintf(v); /* round half to even in the default mode */
}

/* r clipped to [-127, 127]; NaN (an input holding NaN) gives 0. */
static inline int8_t q_clip(float r)
{
    return (int8_t)(r > 127.f ? 127.f : r < -127.f ? -127.f : r == r ? r : 0.f);
}

maas_status maas_quantize_weights(int8_t *q, float *scale, const float *w, int64_t K, int64_t U)
{
    for (int64_t j = 0; j < U; j++)
        scale[j] = 0.f;
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < U; j++) {
            float a = fabsf(w[k * U + j]);
            if (!(a <= scale[j])) /* NaN propagates as a non-finite scale */
                scale[j] = a;
        }
    for (int64_t j = 0; j < U; j++) {
        if (!isfinite(scale[j]))
            return maas_error(MAAS_ERR_VALUE, "quantize: column %lld of the kernel holds a NaN or "
                              "infinite value; int8 cannot represent it", (long long)j);
        scale[j] = 127.f / (scale[j] + 1e-7f);
    }
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < U; j++)
            q[k * U + j] = q_clip(q_round(w[k * U + j] * scale[j]));
    return MAAS_OK;
}

maas_status maas_qgemm_pack(int8_t *packed, const int8_t *q, int64_t K, int64_t U)
{
    int64_t rb = maas_qgemm_row_bytes(K), nb = maas_qgemm_blocks(U), K4 = (K + 3) / 4;
    memset(packed, 0, (size_t)(rb * nb));
    for (int64_t b = 0; b < nb; b++) {
        int8_t *row = packed + b * rb;
        int32_t sums[QB] = {0};
        for (int64_t c = 0; c < QB; c++) {
            int64_t j = b * QB + c;
            if (j >= U)
                break;
            for (int64_t k = 0; k < K; k++) {
                int8_t v = q[k * U + j];
                row[(k / 4) * 64 + c * 4 + (k % 4)] = v;
                sums[c] += v;
            }
        }
        for (int c = 0; c < QB; c++) {
            uint32_t s = (uint32_t)sums[c];
            unsigned char *p = (unsigned char *)row + K4 * 64 + c * 4;
            p[0] = (unsigned char)s;
            p[1] = (unsigned char)(s >> 8);
            p[2] = (unsigned char)(s >> 16);
            p[3] = (unsigned char)(s >> 24);
        }
    }
    return MAAS_OK;
}

maas_status maas_qgemm_unpack(int8_t *q, const int8_t *packed, int64_t K, int64_t U)
{
    int64_t rb = maas_qgemm_row_bytes(K);
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < U; j++)
            q[k * U + j] = packed[(j / QB) * rb + (k / 4) * 64 + (j % QB) * 4 + (k % 4)];
    return MAAS_OK;
}

/* Row i of x quantized into a (K4 bytes, zero-padded): the scale it used.
 * The reference; quantize_row_avx2 computes the same bits. */
static float quantize_row(int8_t *a, const float *x, int64_t K, int64_t K4, float fixed)
{
    float s = fixed;
    if (!(fixed > 0.f)) {
        float m = 0.f;
        for (int64_t k = 0; k < K; k++) {
            float v = fabsf(x[k]);
            m = v > m ? v : m; /* a NaN never enters */
        }
        s = 127.f / (m + 1e-7f);
    }
    for (int64_t k = 0; k < K; k++)
        a[k] = q_clip(q_round(x[k] * s));
    for (int64_t k = K; k < K4; k++)
        a[k] = 0;
    return s;
}

#if QG_X86
/* quantize_row, 32 values at a time: max is exact and order-free (vmaxps
 * returns its second operand when the first is NaN: NaN skipped, as
 * above), the product is the same IEEE product, vroundps in the current
 * mode is nearbyintf, the clip is the same and NaN lanes are zeroed. */
__attribute__((target("avx2,fma"))) static float quantize_row_avx2(int8_t *a, const float *x,
                                                                   int64_t K, int64_t K4,
                                                                   float fixed)
{
    float s = fixed;
    int64_t k;
    if (!(fixed > 0.f)) {
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        __m256 m8 = _mm256_setzero_ps();
        for (k = 0; k + 8 <= K; k += 8)
            m8 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absmask), m8);
        float lanes[8], m = 0.f;
        _mm256_storeu_ps(lanes, m8);
        for (int l = 0; l < 8; l++)
            m = lanes[l] > m ? lanes[l] : m;
        for (; k < K; k++) {
            float v = fabsf(x[k]);
            m = v > m ? v : m;
        }
        s = 127.f / (m + 1e-7f);
    }
    const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (k = 0; k + 32 <= K; k += 32) {
        __m256i q[4];
        for (int j = 0; j < 4; j++) {
            __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * j), vs),
                                       _MM_FROUND_CUR_DIRECTION);
            __m256 c = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
            c = _mm256_and_ps(c, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
            q[j] = _mm256_cvtps_epi32(c);
        }
        /* packs work per 128-bit lane: the dwords come out as
         * 0-3 8-11 16-19 24-27 4-7 12-15 20-23 28-31, put back in order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(a + k), _mm256_permutevar8x32_epi32(p, order));
    }
    for (; k < K; k++)
        a[k] = q_clip(q_round(x[k] * s));
    for (k = K; k < K4; k++)
        a[k] = 0;
    return s;
}
#endif

/* The quantized row by the path's own routine (the same bits). */
static inline float quantize_row_isa(int isa, int8_t *a, const float *x, int64_t K, int64_t K4,
                                     float fixed)
{
#if QG_X86
    if (isa != MAAS_QISA_REF)
        return quantize_row_avx2(a, x, K, K4, fixed);
#endif
    return quantize_row(a, x, K, K4, fixed);
}

/* ------------------------------------------------------------- kernels */

typedef struct {
    float *out;
    const int8_t *a;      /* (N, K4) quantized activations (int8) */
    const uint8_t *au;    /* (N, K4) the same + 128 (VNNI) or |a| (AVX2, N == 1), or NULL */
    const int8_t *ap;     /* AVX2, N > 1: rows in groups of 4 (see pack_rows4), or NULL */
    const uint8_t *neg;   /* AVX2: 1 where a row (N == 1) or a group of 4 rows has a < 0 */
    const float *sx;      /* (N) */
    const int8_t *packed; /* nb rows of rb bytes */
    const float *sw;      /* (nb*16) padded with 1 */
    const float *bias;    /* (nb*16) padded with 0, or NULL */
    int64_t N, K, U, K4, rb, nb;
} qctx;

/* The epilogue of one output: the same float operations on every path. */
static inline float epi(int32_t acc, float sx, float sw, const float *bias, int64_t j)
{
    float v = (float)acc / (sx * sw);
    return bias ? v + bias[j] : v;
}

static void tile_ref(const qctx *c, int64_t i0, int64_t i1, int64_t b0, int64_t b1)
{
    int64_t j1 = b1 * QB < c->U ? b1 * QB : c->U;
    for (int64_t i = i0; i < i1; i++) {
        const int8_t *a = c->a + i * c->K4;
        for (int64_t j = b0 * QB; j < j1; j++) {
            const int8_t *w = c->packed + (j / QB) * c->rb + (j % QB) * 4;
            int32_t acc = 0;
            for (int64_t k = 0; k < c->K; k++)
                acc += (int32_t)a[k] * (int32_t)w[(k / 4) * 64 + (k % 4)];
            c->out[i * c->U + j] = epi(acc, c->sx[i], c->sw[j], c->bias, j);
        }
    }
}

#if QG_X86
/* Stores the 16 outputs of one block for row i (only the columns < U). */
#define QG_STORE16(c, i, b, vals)                                                      \
    do {                                                                               \
        int64_t j0_ = (b) * QB;                                                        \
        if (j0_ + QB <= (c)->U)                                                        \
            memcpy((c)->out + (i) * (c)->U + j0_, (vals), QB * sizeof(float));         \
        else                                                                           \
            memcpy((c)->out + (i) * (c)->U + j0_, (vals),                              \
                   (size_t)((c)->U - j0_) * sizeof(float));                            \
    } while (0)

/* ---- AVX2: |a| (u8) x sign(q, a) (s8) through vpmaddubsw + vpmaddwd
 *
 * vpmaddubsw multiplies u8 x s8 and adds pairs into int16 with saturation:
 * with |a| <= 127 as the u8 operand and q carrying a's sign (vpsignb), a
 * pair is at most 2 * 127 * 127 = 32258 < 32767, so nothing saturates and
 * no correction is needed; vpmaddwd against ones widens the pairs into
 * int32 sums of 4. A row with no negative value (the input of a layer
 * after ReLU, or static scales on such data) skips vpsignb: |a| = a and
 * q * 0 = sign(q, 0) * 0, the same products, 3 instructions per 32
 * multiply-adds instead of 4 (vpsignb competes with the multiplies for
 * Zen 3's vector pipes: measured 68 against 86 GMAC/s per core). */

__attribute__((target("avx2,fma"))) static inline void
avx2_epilogue(const qctx *c, int64_t i, int64_t b, __m256i lo, __m256i hi)
{
    float vals[QB];
    __m256 d = _mm256_set1_ps(c->sx[i]);
    const float *sw = c->sw + b * QB;
    __m256 v0 = _mm256_div_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(d, _mm256_loadu_ps(sw)));
    __m256 v1 = _mm256_div_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(d, _mm256_loadu_ps(sw + 8)));
    if (c->bias) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c->bias + b * QB));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c->bias + b * QB + 8));
    }
    if ((b + 1) * QB <= c->U) {
        _mm256_storeu_ps(c->out + i * c->U + b * QB, v0);
        _mm256_storeu_ps(c->out + i * c->U + b * QB + 8, v1);
        return;
    }
    _mm256_storeu_ps(vals, v0);
    _mm256_storeu_ps(vals + 8, v1);
    QG_STORE16(c, i, b, vals);
}

/* 4 bytes at p broadcast to the 8 int32 lanes (vpbroadcastd from memory). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256i qg_bcast4(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* One step: 4 k of 16 columns (w0, w1) into one row's accumulators (lo,
 * hi); as = the row's 4 signed bytes, aa = their absolute values; sgn = 0
 * when the row has no negative value. */
#define QG_AVX2_STEP(lo, hi, as, aa, w0, w1, sgn)                                              \
    do {                                                                                       \
        const __m256i x0_ = (sgn) ? _mm256_sign_epi8(w0, as) : (w0);                           \
        const __m256i x1_ = (sgn) ? _mm256_sign_epi8(w1, as) : (w1);                           \
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_maddubs_epi16(aa, x0_), ones));     \
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_maddubs_epi16(aa, x1_), ones));     \
    } while (0)

/* Rows in groups of 4 for the AVX2 kernel: group q holds, for each k-group
 * g, 32 bytes: a[4q+r][4g..4g+3] for r = 0..3, then |a| of the same; rows
 * past N are zeros. The 4x16 kernel reads one sequential stream. Returns 1
 * when a value of the group is negative. Eight k-groups at a time: the 4
 * rows' dwords transposed (unpack 32/64) into [g: r0 r1 r2 r3]. */
__attribute__((target("avx2,fma"))) static int pack_rows4(int8_t *ap, const int8_t *a, int64_t N,
                                                          int64_t K4)
{
    const int64_t G = K4 / 4;
    const __m256i zero = _mm256_setzero_si256();
    __m256i any = zero;
    int64_t g = 0;
    for (; g + 8 <= G; g += 8) {
        __m256i r[4];
        for (int i = 0; i < 4; i++)
            r[i] = i < N ? _mm256_loadu_si256((const __m256i *)(a + i * K4 + 4 * g)) : zero;
        any = _mm256_or_si256(any, _mm256_or_si256(_mm256_or_si256(r[0], r[1]),
                                                   _mm256_or_si256(r[2], r[3])));
        /* per 128-bit lane (lane 0: g..g+3, lane 1: g+4..g+7) */
        __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpacklo_epi32(r[2], r[3]);
        __m256i t2 = _mm256_unpackhi_epi32(r[0], r[1]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        __m256i u[4] = {_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1),
                        _mm256_unpacklo_epi64(t2, t3), _mm256_unpackhi_epi64(t2, t3)};
        for (int j = 0; j < 4; j++) { /* u[j]: k-group g+j (low lane), g+4+j (high) */
            __m256i m = _mm256_abs_epi8(u[j]);
            _mm256_storeu_si256((__m256i *)(ap + (g + j) * 32), _mm256_permute2x128_si256(u[j], m, 0x20));
            _mm256_storeu_si256((__m256i *)(ap + (g + 4 + j) * 32),
                                _mm256_permute2x128_si256(u[j], m, 0x31));
        }
    }
    int neg = _mm256_movemask_epi8(any) != 0;
    for (; g < G; g++)
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < 4; t++) {
                int8_t v = i < N ? a[i * K4 + 4 * g + t] : 0;
                neg |= v < 0;
                ap[g * 32 + i * 4 + t] = v;
                ap[g * 32 + 16 + i * 4 + t] = (int8_t)(v < 0 ? -v : v);
            }
    return neg;
}

/* 4 rows (group q of c->ap) x one block over the k-groups [g0, g1); the
 * partial sums live in buf (64 int32 a row) between K chunks, the last
 * chunk runs the epilogue; rows at or past N are computed (zeros) but not
 * stored. Integer sums: the chunking changes no bit. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
avx2_rows4(const qctx *c, int64_t q, int64_t b, int32_t *buf, int64_t g0, int64_t g1, int last,
           const int sgn)
{
    __m256i l0, h0, l1, h1, l2, h2, l3, h3;
    const __m256i ones = _mm256_set1_epi16(1);
    if (g0) {
        l0 = _mm256_loadu_si256((const __m256i *)(buf + 0 * QPANEL * QB));
        h0 = _mm256_loadu_si256((const __m256i *)(buf + 0 * QPANEL * QB + 8));
        l1 = _mm256_loadu_si256((const __m256i *)(buf + 1 * QPANEL * QB));
        h1 = _mm256_loadu_si256((const __m256i *)(buf + 1 * QPANEL * QB + 8));
        l2 = _mm256_loadu_si256((const __m256i *)(buf + 2 * QPANEL * QB));
        h2 = _mm256_loadu_si256((const __m256i *)(buf + 2 * QPANEL * QB + 8));
        l3 = _mm256_loadu_si256((const __m256i *)(buf + 3 * QPANEL * QB));
        h3 = _mm256_loadu_si256((const __m256i *)(buf + 3 * QPANEL * QB + 8));
    } else {
        l0 = h0 = l1 = h1 = l2 = h2 = l3 = h3 = _mm256_setzero_si256();
    }
    const int64_t G = c->K4 / 4;
    const int8_t *wp = c->packed + b * c->rb + g0 * 64;
    const int8_t *ap = c->ap + q * G * 32 + g0 * 32;
    for (int64_t g = g0; g < g1; g++, wp += 64, ap += 32) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)wp);
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wp + 32));
        QG_AVX2_STEP(l0, h0, qg_bcast4(ap), qg_bcast4(ap + 16), w0, w1, sgn);
        QG_AVX2_STEP(l1, h1, qg_bcast4(ap + 4), qg_bcast4(ap + 20), w0, w1, sgn);
        QG_AVX2_STEP(l2, h2, qg_bcast4(ap + 8), qg_bcast4(ap + 24), w0, w1, sgn);
        QG_AVX2_STEP(l3, h3, qg_bcast4(ap + 12), qg_bcast4(ap + 28), w0, w1, sgn);
    }
    if (!last) {
        _mm256_storeu_si256((__m256i *)(buf + 0 * QPANEL * QB), l0);
        _mm256_storeu_si256((__m256i *)(buf + 0 * QPANEL * QB + 8), h0);
        _mm256_storeu_si256((__m256i *)(buf + 1 * QPANEL * QB), l1);
        _mm256_storeu_si256((__m256i *)(buf + 1 * QPANEL * QB + 8), h1);
        _mm256_storeu_si256((__m256i *)(buf + 2 * QPANEL * QB), l2);
        _mm256_storeu_si256((__m256i *)(buf + 2 * QPANEL * QB + 8), h2);
        _mm256_storeu_si256((__m256i *)(buf + 3 * QPANEL * QB), l3);
        _mm256_storeu_si256((__m256i *)(buf + 3 * QPANEL * QB + 8), h3);
        return;
    }
    int64_t i = 4 * q;
    avx2_epilogue(c, i, b, l0, h0);
    if (i + 1 < c->N)
        avx2_epilogue(c, i + 1, b, l1, h1);
    if (i + 2 < c->N)
        avx2_epilogue(c, i + 2, b, l2, h2);
    if (i + 3 < c->N)
        avx2_epilogue(c, i + 3, b, l3, h3);
}

/* One row x nb (1..4) blocks over all of K (one row: the weights stream
 * once, four blocks side by side). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
avx2_wide(const qctx *c, int64_t i, int64_t b, const int nb, const int sgn)
{
    __m256i lo[4], hi[4];
    const __m256i ones = _mm256_set1_epi16(1);
    for (int n = 0; n < nb; n++)
        lo[n] = hi[n] = _mm256_setzero_si256();
    const int64_t G = c->K4 / 4, rb = c->rb;
    const int8_t *wp = c->packed + b * rb;
    const int8_t *ap = c->a + i * c->K4;
    const uint8_t *up = c->au + i * c->K4;
    for (int64_t g = 0; g < G; g++, wp += 64, ap += 4, up += 4) {
        const __m256i as = qg_bcast4(ap), aa = qg_bcast4(up);
        for (int n = 0; n < nb; n++)
            QG_AVX2_STEP(lo[n], hi[n], as, aa, _mm256_loadu_si256((const __m256i *)(wp + n * rb)),
                         _mm256_loadu_si256((const __m256i *)(wp + n * rb + 32)), sgn);
    }
    for (int n = 0; n < nb; n++)
        avx2_epilogue(c, i, b + n, lo[n], hi[n]);
}

#ifndef QKC2
#define QKC2 128 /* k-groups per chunk: one block's 8 KiB of weights stay in L1 */
#endif

/* Rows [i0, i1) x blocks [b0, b1). One row (c->ap NULL) streams the weights
 * once, 4 blocks at a time. Several rows (i0 a multiple of 4) go chunk by
 * chunk of K, block by block, so that a block's chunk of weights (QKC2 * 64
 * bytes) is read from L1 by every group of 4 rows. */
__attribute__((target("avx2,fma"))) static void tile_avx2(const qctx *c, int64_t i0, int64_t i1,
                                                          int64_t b0, int64_t b1)
{
    int32_t buf[QROWS * QPANEL * QB];
    const int64_t G = c->K4 / 4;
    if (!c->ap) {
        for (int64_t i = i0; i < i1; i++) {
            const int sgn = c->neg[i];
            int64_t b = b0;
            for (; b + 4 <= b1; b += 4)
                if (sgn)
                    avx2_wide(c, i, b, 4, 1);
                else
                    avx2_wide(c, i, b, 4, 0);
            for (; b < b1; b++)
                if (sgn)
                    avx2_wide(c, i, b, 1, 1);
                else
                    avx2_wide(c, i, b, 1, 0);
        }
        return;
    }
    for (int64_t g0 = 0; g0 < G || g0 == 0; g0 += QKC2) {
        int64_t g1 = g0 + QKC2 < G ? g0 + QKC2 : G;
        int last = g1 == G;
        for (int64_t b = b0; b < b1; b++)
            for (int64_t i = i0; i < i1; i += 4) {
                int32_t *bi = buf + (i - i0) * QPANEL * QB + (b - b0) * QB;
                if (c->neg[i / 4])
                    avx2_rows4(c, i / 4, b, bi, g0, g1, last, 1);
                else
                    avx2_rows4(c, i / 4, b, bi, g0, g1, last, 0);
            }
        if (last)
            break;
    }
}
#undef QG_AVX2_STEP

/* ---- AVX512-VNNI: (a + 128) (u8) x q (s8) through vpdpbusd */

#define QG_VNNI_TARGET "avx512f,avx512bw,avx512vnni,avx2,fma"

__attribute__((target(QG_VNNI_TARGET))) static inline void
vnni_epilogue(const qctx *c, int64_t i, int64_t b, __m512i acc)
{
    float vals[QB];
    const int8_t *row = c->packed + b * c->rb + c->K4 * QB; /* after K4/4 groups of 64 */
    __m512i cs = _mm512_loadu_si512((const void *)row);
    acc = _mm512_sub_epi32(acc, _mm512_slli_epi32(cs, 7));
    __m512 d = _mm512_mul_ps(_mm512_set1_ps(c->sx[i]), _mm512_loadu_ps(c->sw + b * QB));
    __m512 v = _mm512_div_ps(_mm512_cvtepi32_ps(acc), d);
    if (c->bias)
        v = _mm512_add_ps(v, _mm512_loadu_ps(c->bias + b * QB));
    if ((b + 1) * QB <= c->U) {
        _mm512_storeu_ps(c->out + i * c->U + b * QB, v);
        return;
    }
    _mm512_storeu_ps(vals, v);
    QG_STORE16(c, i, b, vals);
}

/* MR rows x NB blocks over the k-groups [g0, g1): the partial sums live in
 * `buf` (the tile's int32 accumulators, 64 per row) between K chunks; the
 * last chunk runs the epilogue. Integer sums: the chunking changes no bit. */
__attribute__((target(QG_VNNI_TARGET), always_inline)) static inline void
vnni_tile(const qctx *c, int64_t i, int64_t b, int32_t *buf, int64_t g0, int64_t g1, int last,
          const int MR, const int NB)
{
    __m512i acc[4][4];
    for (int r = 0; r < MR; r++)
        for (int n = 0; n < NB; n++)
            acc[r][n] = g0 ? _mm512_loadu_si512((const void *)(buf + r * QPANEL * QB + n * QB))
                           : _mm512_setzero_si512();
    for (int64_t g = g0; g < g1; g++) {
        __m512i w[4];
        for (int n = 0; n < NB; n++)
            w[n] = _mm512_loadu_si512((const void *)(c->packed + (b + n) * c->rb + g * 64));
        for (int r = 0; r < MR; r++) {
            int32_t av;
            memcpy(&av, c->au + (i + r) * c->K4 + g * 4, 4);
            __m512i a = _mm512_set1_epi32(av);
            for (int n = 0; n < NB; n++)
                acc[r][n] = _mm512_dpbusd_epi32(acc[r][n], a, w[n]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int n = 0; n < NB; n++) {
            if (last)
                vnni_epilogue(c, i + r, b + n, acc[r][n]);
            else
                _mm512_storeu_si512((void *)(buf + r * QPANEL * QB + n * QB), acc[r][n]);
        }
}

#define QKC 64 /* k-groups per chunk: 4 blocks x 64 x 64 bytes = 16 KiB of weights */

__attribute__((target(QG_VNNI_TARGET))) static void tile_vnni(const qctx *c, int64_t i0, int64_t i1,
                                                              int64_t b0, int64_t b1)
{
    int32_t buf[QROWS * QPANEL * QB];
    const int64_t G = c->K4 / 4;
    for (int64_t g0 = 0; g0 < G || g0 == 0; g0 += QKC) {
        int64_t g1 = g0 + QKC < G ? g0 + QKC : G;
        int last = g1 == G;
        int64_t i = i0;
        for (; i + 4 <= i1; i += 4) {
            int32_t *bi = buf + (i - i0) * QPANEL * QB;
            int64_t b = b0;
            for (; b + 4 <= b1; b += 4)
                vnni_tile(c, i, b, bi + (b - b0) * QB, g0, g1, last, 4, 4);
            for (; b < b1; b++)
                vnni_tile(c, i, b, bi + (b - b0) * QB, g0, g1, last, 4, 1);
        }
        for (; i < i1; i++) {
            int32_t *bi = buf + (i - i0) * QPANEL * QB;
            int64_t b = b0;
            for (; b + 4 <= b1; b += 4)
                vnni_tile(c, i, b, bi + (b - b0) * QB, g0, g1, last, 1, 4);
            for (; b < b1; b++)
                vnni_tile(c, i, b, bi + (b - b0) * QB, g0, g1, last, 1, 1);
        }
        if (last)
            break;
    }
}
#endif

/* ------------------------------------------------------------ dispatch */

int maas_qgemm_isa_supported(int isa)
{
    switch (isa) {
    case MAAS_QISA_REF:
        return 1;
#if QG_X86
    case MAAS_QISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case MAAS_QISA_AVX512VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

int maas_qgemm_best_isa(void)
{
    static int best = -1;
    int s = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (s < 0) {
        const char *env = getenv("MAAS_ISA");
        if (env && strcmp(env, "portable") == 0)
            s = MAAS_QISA_REF;
        else if (maas_qgemm_isa_supported(MAAS_QISA_AVX512VNNI))
            s = MAAS_QISA_AVX512VNNI;
        else if (maas_qgemm_isa_supported(MAAS_QISA_AVX2))
            s = MAAS_QISA_AVX2;
        else
            s = MAAS_QISA_REF;
        __atomic_store_n(&best, s, __ATOMIC_RELAXED);
    }
    return s;
}

const char *maas_qgemm_isa_name(int isa)
{
    static const char *names[] = {"auto", "reference", "avx2", "avx512vnni"};
    return isa >= 0 && isa < MAAS_QISA_COUNT ? names[isa] : "?";
}

maas_status maas_qgemm_forward(float *out, const float *x, const int8_t *packed, const float *sw,
                               const float *bias, float static_scale, int64_t N, int64_t K,
                               int64_t U, int isa)
{
    if (isa == MAAS_QISA_AUTO)
        isa = maas_qgemm_best_isa();
    if (!maas_qgemm_isa_supported(isa))
        return maas_error(MAAS_ERR_VALUE, "qgemm: the %s kernel is not supported by this CPU",
                          maas_qgemm_isa_name(isa));
    if (K > MAAS_QGEMM_MAX_K)
        return maas_error(MAAS_ERR_VALUE, "qgemm: at most %d input features, received %lld",
                          MAAS_QGEMM_MAX_K, (long long)K);
    if (N == 0 || U == 0)
        return MAAS_OK;
    qctx c;
    memset(&c, 0, sizeof c);
    c.N = N, c.K = K, c.U = U, c.K4 = (K + 3) / 4 * 4;
    c.rb = maas_qgemm_row_bytes(K), c.nb = maas_qgemm_blocks(U);
    c.packed = packed, c.out = out;
    int64_t abytes = 0, up = c.nb * QB;
    if (maas_mul_size(N, c.K4, &abytes))
        return maas_error(MAAS_ERR_NOMEM, "qgemm: activation buffer size overflows");
    int vnni = isa == MAAS_QISA_AVX512VNNI, avx2 = isa == MAAS_QISA_AVX2;
    int two = vnni || (avx2 && N == 1), rows4 = avx2 && N > 1;
    int64_t ngroups = (N + 3) / 4, pbytes = 0; /* pack_rows4: ngroups * 4 rows of 2*K4 bytes */
    if (rows4 && maas_mul_size(ngroups * 4, 2 * c.K4, &pbytes))
        return maas_error(MAAS_ERR_NOMEM, "qgemm: activation buffer size overflows");
    int8_t *a = malloc((size_t)abytes * (two ? 2 : 1) + (size_t)pbytes + (size_t)ngroups + 1);
    float *fl = malloc(sizeof(float) * (size_t)(N + 2 * up));
    if (!a || !fl) {
        free(a);
        free(fl);
        return maas_error(MAAS_ERR_NOMEM, "qgemm: out of memory for a (%lld, %lld) input",
                          (long long)N, (long long)K);
    }
    float *sx = fl, *swp = fl + N, *bp = fl + N + up;
    for (int64_t j = 0; j < up; j++) {
        swp[j] = j < U ? sw[j] : 1.f;
        bp[j] = bias && j < U ? bias[j] : 0.f;
    }
    int nt = maas_get_num_threads();
    int par = (double)N * (double)K * (double)U > 2e5 && nt > 1;
    int8_t *ap = a + abytes * (two ? 2 : 1);
    uint8_t *neg = (uint8_t *)ap + pbytes;
    c.a = a, c.au = two ? (const uint8_t *)a + abytes : NULL;
    c.ap = rows4 ? ap : NULL, c.neg = neg;
    c.sx = sx, c.sw = swp, c.bias = bias ? bp : NULL;
    int64_t npanels = (c.nb + QPANEL - 1) / QPANEL, nchunks = (N + QROWS - 1) / QROWS;
    int64_t ntiles = npanels * nchunks, nprep = rows4 ? ngroups : N;
    /* one team for both steps (one wake-up of the threads, not two): the
     * rows quantized (static split), then the output tiles handed out one
     * at a time, so that a thread the OS preempts does not hold the other
     * up; each output is one thread's, in a fixed order: the bits do not
     * depend on the thread count or on which thread took a tile. */
#pragma omp parallel num_threads(nt) if (par && (ntiles > 1 || N * K > MAAS_PAR_THRESHOLD))
    {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < nprep; t++) {
            if (rows4) {
                /* 4 rows quantized, then interleaved (and whether the
                 * group holds a negative value) */
                int64_t n = N - 4 * t < 4 ? N - 4 * t : 4;
                for (int64_t i = 4 * t; i < 4 * t + n; i++)
                    sx[i] = quantize_row_isa(isa, a + i * c.K4, x + i * K, K, c.K4, static_scale);
                neg[t] = (uint8_t)pack_rows4(ap + t * c.K4 * 8, a + t * 4 * c.K4, n, c.K4);
                continue;
            }
            int64_t i = t;
            sx[i] = quantize_row_isa(isa, a + i * c.K4, x + i * K, K, c.K4, static_scale);
            uint8_t *u = (uint8_t *)a + abytes + i * c.K4;
            int ng = 0;
            if (vnni)
                for (int64_t k = 0; k < c.K4; k++)
                    u[k] = (uint8_t)(a[i * c.K4 + k] + 128);
            else if (two)
                for (int64_t k = 0; k < c.K4; k++) {
                    ng |= a[i * c.K4 + k] < 0;
                    u[k] = (uint8_t)abs(a[i * c.K4 + k]);
                }
            if (two && !vnni)
                neg[i] = (uint8_t)ng; /* N == 1 here: ngroups == 1 */
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntiles; t++) {
            int64_t p = t / nchunks, ch = t % nchunks;
            int64_t i0 = ch * QROWS, i1 = i0 + QROWS < N ? i0 + QROWS : N;
            int64_t b0 = p * QPANEL, b1 = b0 + QPANEL < c.nb ? b0 + QPANEL : c.nb;
            switch (isa) {
#if QG_X86
            case MAAS_QISA_AVX2:
                tile_avx2(&c, i0, i1, b0, b1);
                break;
            case MAAS_QISA_AVX512VNNI:
                tile_vnni(&c, i0, i1, b0, b1);
                break;
#endif
            default:
                tile_ref(&c, i0, i1, b0, b1);
            }
        }
    }
    free(a);
    free(fl);
    return MAAS_OK;
}

/* gx (N,K) += gout (N,U) @ (q / sw)^T, gbias (U) += column sums of gout:
 * the gradient through the dequantized kernel (Keras's int8 Dense). */
maas_status maas_qgemm_backward(float *gx, float *gbias, const float *gout, const int8_t *packed,
                                const float *sw, int64_t N, int64_t K, int64_t U)
{
    float *w = NULL;
    maas_status s = MAAS_OK;
    if (gx) {
        int64_t n = 0;
        if (maas_mul_size(K, U, &n))
            return maas_error(MAAS_ERR_NOMEM, "qdense: kernel size overflows");
        w = malloc(sizeof(float) * (size_t)(n ? n : 1));
        int8_t *q = malloc((size_t)(n ? n : 1));
        if (!w || !q) {
            free(w);
            free(q);
            return maas_error(MAAS_ERR_NOMEM, "qdense: out of memory for the dequantized kernel");
        }
        maas_qgemm_unpack(q, packed, K, U);
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < U; j++)
                w[k * U + j] = (float)q[k * U + j] / sw[j];
        free(q);
    }
    s = maas_dense_backward(gx, NULL, gbias, gout, NULL, w, N, K, U);
    free(w);
    return s;
}

/* ------------------------------------------------------------------ ops */

/* qpack: q (K,U) int8 -> packed (blocks, row_bytes) int8 */
typedef struct {
    int64_t K, U;
} qpack_attr;

static const maas_attr_field qpack_fields[] = {{NULL, 0, 0}};

static maas_status qpack_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    qpack_attr *a = ATTR(qpack_attr, nd);
    const maas_tensor *w = nd->in[0];
    char sw[160];
    if (w->dtype != MAAS_I8)
        return maas_error(MAAS_ERR_TYPE, "qpack: the quantized kernel must be int8, received %s",
                          maas_dtype_name(w->dtype));
    if (w->ndim != 2)
        return maas_error(MAAS_ERR_SHAPE, "qpack: the kernel must be 2-D (in, units), got shape %s",
                          SHAPE(w, sw));
    if (w->shape[0] > MAAS_QGEMM_MAX_K)
        return maas_error(MAAS_ERR_VALUE, "qpack: at most %d input features, received %lld",
                          MAAS_QGEMM_MAX_K, (long long)w->shape[0]);
    a->K = w->shape[0];
    a->U = w->shape[1];
    nd->nograd = 1u;
    outs[0].dtype = MAAS_I8;
    outs[0].ndim = 2;
    outs[0].shape[0] = maas_qgemm_blocks(a->U);
    outs[0].shape[1] = maas_qgemm_row_bytes(a->K);
    return MAAS_OK;
}

static maas_status qpack_forward(maas_node *nd)
{
    const qpack_attr *a = CATTR(qpack_attr, nd);
    return maas_qgemm_pack(nd->out[0]->ptr, nd->in[0]->ptr, a->K, a->U);
}

#define qpack_backward NULL

/* qdense: x (..., K) f32, packed (blocks, row_bytes) i8, kernel_scale (U)
 * f32, [bias (U) f32], [input_scale () f32 when static] -> (..., U) f32 */
typedef struct {
    int64_t has_bias, is_static, isa;
    int64_t N, K, U;
} qdense_attr;

static const maas_attr_field qdense_fields[] = {
    {"has_bias", 'l', offsetof(qdense_attr, has_bias)},
    {"static", 'l', offsetof(qdense_attr, is_static)},
    {"isa", 'l', offsetof(qdense_attr, isa)}, {NULL, 0, 0}};

static maas_status qdense_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    qdense_attr *a = ATTR(qdense_attr, nd);
    const maas_tensor *x = nd->in[0], *p = nd->in[1], *sc = nd->in[2];
    char s1[160], s2[160];
    int want = 3 + (a->has_bias != 0) + (a->is_static != 0);
    if (nd->nin != want)
        return maas_error(MAAS_ERR_VALUE, "qdense: expected %d inputs (x, packed kernel, kernel "
                          "scale%s%s), received %d", want, a->has_bias ? ", bias" : "",
                          a->is_static ? ", input scale" : "", nd->nin);
    if (a->isa < 0 || a->isa >= MAAS_QISA_COUNT)
        return maas_error(MAAS_ERR_VALUE, "qdense: unknown isa %lld", (long long)a->isa);
    if (x->dtype != MAAS_F32 || sc->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "qdense: x and the kernel scale must be float32, "
                          "received %s and %s", maas_dtype_name(x->dtype), maas_dtype_name(sc->dtype));
    if (p->dtype != MAAS_I8)
        return maas_error(MAAS_ERR_TYPE, "qdense: the packed kernel must be int8, received %s",
                          maas_dtype_name(p->dtype));
    for (int i = 3; i < nd->nin; i++)
        if (nd->in[i]->dtype != MAAS_F32)
            return maas_error(MAAS_ERR_TYPE, "qdense: input %d must be float32, received %s", i,
                              maas_dtype_name(nd->in[i]->dtype));
    if (x->ndim < 1 || sc->ndim != 1)
        return maas_error(MAAS_ERR_SHAPE, "qdense: input shape %s and kernel scale shape %s: "
                          "the input must be at least 1-D and the scale 1-D (units,)",
                          SHAPE(x, s1), SHAPE(sc, s2));
    int64_t K = x->shape[x->ndim - 1], U = sc->shape[0];
    if (K > MAAS_QGEMM_MAX_K)
        return maas_error(MAAS_ERR_VALUE, "qdense: at most %d input features, received %lld",
                          MAAS_QGEMM_MAX_K, (long long)K);
    if (p->ndim != 2 || p->shape[0] != maas_qgemm_blocks(U) || p->shape[1] != maas_qgemm_row_bytes(K))
        return maas_error(MAAS_ERR_SHAPE, "qdense: packed kernel shape %s does not fit input "
                          "shape %s and %lld units: expected (%lld, %lld) (pack the kernel with "
                          "maas.quantization.pack_kernel)", SHAPE(p, s1), SHAPE(x, s2),
                          (long long)U, (long long)maas_qgemm_blocks(U),
                          (long long)maas_qgemm_row_bytes(K));
    if (a->has_bias && !(nd->in[3]->ndim == 1 && nd->in[3]->shape[0] == U))
        return maas_error(MAAS_ERR_SHAPE, "qdense: bias shape %s does not match %lld units",
                          SHAPE(nd->in[3], s1), (long long)U);
    if (a->is_static && nd->in[nd->nin - 1]->size != 1)
        return maas_error(MAAS_ERR_SHAPE, "qdense: the input scale must hold one value, got shape %s",
                          SHAPE(nd->in[nd->nin - 1], s1));
    int64_t N = 1;
    for (int d = 0; d < x->ndim - 1; d++)
        N *= x->shape[d];
    a->N = N, a->K = K, a->U = U;
    nd->nograd = 2u | 4u | (a->is_static ? 1u << (nd->nin - 1) : 0u);
    spec_like(&outs[0], x);
    outs[0].shape[x->ndim - 1] = U;
    return MAAS_OK;
}

static maas_status qdense_forward(maas_node *nd)
{
    const qdense_attr *a = CATTR(qdense_attr, nd);
    float fixed = 0.f;
    if (a->is_static) {
        fixed = nd->in[nd->nin - 1]->data[0];
        if (!(fixed > 0.f) || !isfinite(fixed))
            return maas_error(MAAS_ERR_VALUE, "qdense: the input scale must be positive and "
                              "finite, received %g", (double)fixed);
    }
    return maas_qgemm_forward(nd->out[0]->data, nd->in[0]->data, nd->in[1]->ptr, nd->in[2]->data,
                              a->has_bias ? nd->in[3]->data : NULL, fixed, a->N, a->K, a->U,
                              (int)a->isa);
}

static maas_status qdense_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    const qdense_attr *a = CATTR(qdense_attr, nd);
    float *gb = a->has_bias ? GDATA(3) : NULL;
    if (!gin[0] && !gb)
        return MAAS_OK;
    return maas_qgemm_backward(GDATA(0), gb, gout[0]->data, nd->in[1]->ptr, nd->in[2]->data,
                               a->N, a->K, a->U);
}

MAAS_OPDEF(maas_opdef_qpack, "qpack", 1, 1, qpack_attr, 0, qpack_fields, qpack);
MAAS_OPDEF(maas_opdef_qdense, "qdense", 3, 5, qdense_attr, 0, qdense_fields, qdense);

/* -------------------------------------------------- sparse dense (pruned)
 * out (N,U) = x (N,K) @ W (K,U) (+ bias), W held as the CSR of W^T:
 * rowptr (U+1) int64, cols (nnz) int32 in [0, K), vals (nnz) float32.
 * Each output column is one thread's, summed in CSR order (deterministic).
 * For N > 1, x is transposed once so that each nonzero scales a contiguous
 * row of x^T into the output column's accumulator. Overwrites out. */
maas_status maas_spdense_forward(float *out, const float *x, const int64_t *rowptr,
                                 const int32_t *cols, const float *vals, const float *bias,
                                 int64_t N, int64_t K, int64_t U)
{
    if (rowptr[0] != 0)
        return maas_error(MAAS_ERR_VALUE, "spdense: rowptr must start at 0, received %lld",
                          (long long)rowptr[0]);
    for (int64_t j = 0; j < U; j++)
        if (rowptr[j + 1] < rowptr[j])
            return maas_error(MAAS_ERR_VALUE, "spdense: rowptr must not decrease (at %lld)",
                              (long long)j);
    for (int64_t p = 0; p < rowptr[U]; p++)
        if (cols[p] < 0 || cols[p] >= K)
            return maas_error(MAAS_ERR_VALUE, "spdense: column index %d out of range for %lld "
                              "input features", (int)cols[p], (long long)K);
    int nt = maas_get_num_threads();
    int par = nt > 1 && (double)rowptr[U] * (double)N > 2e5;
    if (N == 1) {
#pragma omp parallel for schedule(static) num_threads(nt) if (par)
        for (int64_t j = 0; j < U; j++) {
            /* four partial sums (then added in a fixed order): the adds
             * overlap instead of waiting on one another */
            float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
            int64_t p = rowptr[j], e = rowptr[j + 1];
            for (; p + 4 <= e; p += 4) {
                a0 += vals[p] * x[cols[p]];
                a1 += vals[p + 1] * x[cols[p + 1]];
                a2 += vals[p + 2] * x[cols[p + 2]];
                a3 += vals[p + 3] * x[cols[p + 3]];
            }
            for (; p < e; p++)
                a0 += vals[p] * x[cols[p]];
            float acc = (a0 + a1) + (a2 + a3);
            out[j] = bias ? acc + bias[j] : acc;
        }
        return MAAS_OK;
    }
    int64_t n = 0;
    if (maas_mul_size(N, K, &n))
        return maas_error(MAAS_ERR_NOMEM, "spdense: input size overflows");
    float *xt = malloc(sizeof(float) * (size_t)(n ? n : 1));
    int64_t nacc = 0;
    if (!xt || maas_mul_size(N, nt, &nacc)) {
        free(xt);
        return maas_error(MAAS_ERR_NOMEM, "spdense: out of memory for a (%lld, %lld) input",
                          (long long)N, (long long)K);
    }
    float *accs = malloc(sizeof(float) * (size_t)(nacc ? nacc : 1));
    if (!accs) {
        free(xt);
        return maas_error(MAAS_ERR_NOMEM, "spdense: out of memory");
    }
    for (int64_t i = 0; i < N; i++)
        for (int64_t k = 0; k < K; k++)
            xt[k * N + i] = x[i * K + k];
#pragma omp parallel num_threads(nt) if (par)
    {
        float *acc = accs + (int64_t)omp_get_thread_num() * N;
#pragma omp for schedule(static)
        for (int64_t j = 0; j < U; j++) {
            for (int64_t i = 0; i < N; i++)
                acc[i] = 0.f;
            for (int64_t p = rowptr[j]; p < rowptr[j + 1]; p++) {
                const float v = vals[p], *xk = xt + (int64_t)cols[p] * N;
                for (int64_t i = 0; i < N; i++)
                    acc[i] += v * xk[i];
            }
            for (int64_t i = 0; i < N; i++)
                out[i * U + j] = bias ? acc[i] + bias[j] : acc[i];
        }
    }
    free(xt);
    free(accs);
    return MAAS_OK;
}

typedef struct {
    int64_t has_bias;
    int64_t N, K, U;
} spdense_attr;

static const maas_attr_field spdense_fields[] = {
    {"has_bias", 'l', offsetof(spdense_attr, has_bias)}, {NULL, 0, 0}};

/* spdense: x (..., K) f32, rowptr (U+1) i64, cols (nnz) i32, vals (nnz)
 * f32, [bias (U) f32] -> (..., U) f32. Inference only (no gradient). */
static maas_status spdense_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    spdense_attr *a = ATTR(spdense_attr, nd);
    const maas_tensor *x = nd->in[0], *rp = nd->in[1], *ci = nd->in[2], *v = nd->in[3];
    char s1[160], s2[160];
    if (nd->nin != 4 + (a->has_bias != 0))
        return maas_error(MAAS_ERR_VALUE, "spdense: expected %d inputs, received %d",
                          4 + (a->has_bias != 0), nd->nin);
    if (x->dtype != MAAS_F32 || rp->dtype != MAAS_I64 || ci->dtype != MAAS_I32 ||
        v->dtype != MAAS_F32 || (a->has_bias && nd->in[4]->dtype != MAAS_F32))
        return maas_error(MAAS_ERR_TYPE, "spdense: expected x float32, rowptr int64, cols int32, "
                          "values float32 (and bias float32)");
    if (x->ndim < 1 || rp->ndim != 1 || rp->size < 1 || ci->ndim != 1 || v->ndim != 1 ||
        ci->size != v->size)
        return maas_error(MAAS_ERR_SHAPE, "spdense: shapes x %s and values %s: rowptr, cols and "
                          "values must be 1-D, cols and values of one length",
                          SHAPE(x, s1), SHAPE(v, s2));
    int64_t U = rp->size - 1;
    if (a->has_bias && !(nd->in[4]->ndim == 1 && nd->in[4]->shape[0] == U))
        return maas_error(MAAS_ERR_SHAPE, "spdense: bias shape %s does not match %lld units",
                          SHAPE(nd->in[4], s1), (long long)U);
    if (((const int64_t *)rp->ptr)[U] != v->size)
        return maas_error(MAAS_ERR_VALUE, "spdense: rowptr ends at %lld, the values hold %lld",
                          (long long)((const int64_t *)rp->ptr)[U], (long long)v->size);
    int64_t N = 1;
    for (int d = 0; d < x->ndim - 1; d++)
        N *= x->shape[d];
    a->N = N, a->K = x->shape[x->ndim - 1], a->U = U;
    nd->nograd = ~0u;
    spec_like(&outs[0], x);
    outs[0].shape[x->ndim - 1] = U;
    return MAAS_OK;
}

static maas_status spdense_forward(maas_node *nd)
{
    const spdense_attr *a = CATTR(spdense_attr, nd);
    return maas_spdense_forward(nd->out[0]->data, nd->in[0]->data, nd->in[1]->ptr, nd->in[2]->ptr,
                                nd->in[3]->data, a->has_bias ? nd->in[4]->data : NULL, a->N, a->K,
                                a->U);
}

#define spdense_backward NULL

MAAS_OPDEF(maas_opdef_spdense, "spdense", 4, 5, spdense_attr, 0, spdense_fields, spdense);
