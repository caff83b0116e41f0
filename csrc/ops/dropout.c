/* ops/dropout.c -- a counter-based RNG, dropout and random fills.
 *
 * maas_rng_u64(seed, stream, index) is a pure function: a keyed SplitMix64
 * counter. The key is derived from (seed, stream) through two rounds of the
 * SplitMix64 finaliser, and the result is the finaliser of (key + index *
 * golden) mixed once more with a second key, so neighbouring indices,
 * neighbouring streams and neighbouring seeds give uncorrelated values.
 * Because every element depends only on (seed, stream, index), results are
 * identical for any thread count or call order.
 *
 * maas_dropout_forward  OVERWRITES out and mask (out == x is allowed).
 * maas_dropout_backward ACCUMULATES gx += gout * mask.
 * maas_rng_fill_*       OVERWRITE out. Normal values use Box-Muller on the
 *                       index pair (2j, 2j+1): out[2j] = r cos t,
 *                       out[2j+1] = r sin t.
 * OpenMP above MAAS_PAR_THRESHOLD elements. */
#include "maas.h"

#include <math.h>

#define GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z;
}

typedef struct {
    uint64_t k1, k2;
} rng_key;

static inline rng_key make_key(uint64_t seed, uint64_t stream)
{
    rng_key k;
    uint64_t a = mix64(seed ^ 0x6A09E667F3BCC909ULL);
    k.k1 = mix64(a + (stream + 1) * GOLDEN);
    k.k2 = mix64(k.k1 ^ 0xBB67AE8584CAA73BULL);
    return k;
}

static inline uint64_t keyed_u64(rng_key k, uint64_t index)
{
    return mix64(mix64(k.k1 + (index + 1) * GOLDEN) ^ k.k2);
}

/* 24 random bits -> [0, 1) exactly representable in float */
static inline float bits_to_uniform(uint64_t r)
{
    return (float)(r >> 40) * (1.0f / 16777216.0f);
}

uint64_t maas_rng_u64(uint64_t seed, uint64_t stream, uint64_t index)
{
    return keyed_u64(make_key(seed, stream), index);
}

float maas_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return bits_to_uniform(maas_rng_u64(seed, stream, index));
}

maas_status maas_dropout_forward(float *out, float *mask, const float *x,
                                 int64_t n, float rate, uint64_t seed,
                                 uint64_t stream)
{
    if (!(rate >= 0.0f && rate < 1.0f))
        return maas_error(MAAS_ERR_VALUE,
                          "dropout: rate must be in [0, 1), got %g", (double)rate);
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "dropout: negative size %lld",
                          (long long)n);
    if (n == 0)
        return MAAS_OK;
    if (!out || !mask || !x)
        return maas_error(MAAS_ERR_VALUE, "dropout: NULL buffer");
    const int nt = maas_get_num_threads();
    float *restrict mk = mask;
    if (rate == 0.0f) {
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
        for (int64_t i = 0; i < n; i++) {
            mk[i] = 1.0f;
            out[i] = x[i];
        }
        return MAAS_OK;
    }
    const rng_key k = make_key(seed, stream);
    const float scale = 1.0f / (1.0f - rate);
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++) {
        float m = bits_to_uniform(keyed_u64(k, (uint64_t)i)) >= rate ? scale : 0.0f;
        mk[i] = m;
        out[i] = x[i] * m;
    }
    return MAAS_OK;
}

maas_status maas_dropout_backward(float *gx, const float *gout,
                                  const float *mask, int64_t n)
{
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "dropout_backward: negative size %lld",
                          (long long)n);
    if (!gx || n == 0)
        return MAAS_OK;
    if (!gout || !mask)
        return maas_error(MAAS_ERR_VALUE, "dropout_backward: NULL buffer");
    float *restrict g = gx;
    const float *restrict go = gout, *restrict mk = mask;
    const int nt = maas_get_num_threads();
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++)
        g[i] += go[i] * mk[i];
    return MAAS_OK;
}

maas_status maas_rng_fill_uniform(float *out, int64_t n, float lo, float hi,
                                  uint64_t seed, uint64_t stream)
{
    if (!(isfinite(lo) && isfinite(hi) && lo <= hi))
        return maas_error(MAAS_ERR_VALUE,
                          "random uniform: need finite lo <= hi, got [%g, %g)",
                          (double)lo, (double)hi);
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "random uniform: negative size %lld",
                          (long long)n);
    if (n == 0)
        return MAAS_OK;
    if (!out)
        return maas_error(MAAS_ERR_VALUE, "random uniform: NULL buffer");
    const rng_key k = make_key(seed, stream);
    const float span = hi - lo;
    /* the largest float below hi: rounding may not reach hi itself */
    const float top = lo < hi ? nextafterf(hi, lo) : lo;
    float *restrict o = out;
    const int nt = maas_get_num_threads();
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++) {
        float v = lo + span * bits_to_uniform(keyed_u64(k, (uint64_t)i));
        o[i] = v < top ? v : top;
    }
    return MAAS_OK;
}

maas_status maas_rng_fill_normal(float *out, int64_t n, float mean, float std,
                                 uint64_t seed, uint64_t stream)
{
    if (!(isfinite(mean) && isfinite(std) && std >= 0.0f))
        return maas_error(MAAS_ERR_VALUE,
                          "random normal: need finite mean and std >= 0, got "
                          "mean %g, std %g", (double)mean, (double)std);
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "random normal: negative size %lld",
                          (long long)n);
    if (n == 0)
        return MAAS_OK;
    if (!out)
        return maas_error(MAAS_ERR_VALUE, "random normal: NULL buffer");
    const rng_key k = make_key(seed, stream);
    const int64_t pairs = (n + 1) / 2;
    const double two_pi = 6.283185307179586476925286766559;
    float *restrict o = out;
    const int nt = maas_get_num_threads();
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t j = 0; j < pairs; j++) {
        /* u1 in (0, 1] with 53 bits so the log is finite; u2 in [0, 1) */
        double u1 = (double)((keyed_u64(k, (uint64_t)(2 * j)) >> 11) + 1) *
                    (1.0 / 9007199254740992.0);
        double u2 = (double)(keyed_u64(k, (uint64_t)(2 * j + 1)) >> 11) *
                    (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1)), t = two_pi * u2;
        o[2 * j] = (float)(mean + std * r * cos(t));
        if (2 * j + 1 < n)
            o[2 * j + 1] = (float)(mean + std * r * sin(t));
    }
    return MAAS_OK;
}
