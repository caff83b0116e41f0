/* ops/cast.c -- maas_cast: converts n elements between any two maas dtypes.
 *
 *   out[i] = (odt) x[i]        OVERWRITES out; no gradient here (the binding
 *                              records float32 -> float32 as the identity).
 *
 * The rules are NumPy's astype where NumPy defines them:
 *   float -> int   truncation toward zero; NaN -> 0 and out-of-range values
 *                  (+-inf too) saturate at the target's limits (NumPy leaves
 *                  those undefined and warns; C would be undefined behaviour)
 *   int -> int     modulo 2^bits of the target (two's complement)
 *   int -> float   round to nearest even (int64 beyond 2^24 loses digits)
 *   x -> bool      x != 0 (NaN is true); bool -> x: 0 or 1 (any nonzero
 *                  byte counts as true)
 * Elements are independent, so the OpenMP split (above MAAS_PAR_THRESHOLD
 * elements) gives results independent of the thread count. */
#include "maas.h"

#include <stdint.h>
#include <string.h>

static inline int64_t f_to_i64(float v)
{
    if (v != v)
        return 0;
    if (v >= 9223372036854775808.0f)
        return INT64_MAX;
    if (v < -9223372036854775808.0f)
        return INT64_MIN;
    return (int64_t)v;
}

static inline int32_t f_to_i32(float v)
{
    if (v != v)
        return 0;
    if (v >= 2147483648.0f)
        return INT32_MAX;
    if (v < -2147483648.0f)
        return INT32_MIN;
    return (int32_t)v;
}

static inline int8_t f_to_i8(float v)
{
    if (v != v)
        return 0;
    if (v >= 128.0f)
        return INT8_MAX;
    if (v <= -129.0f)
        return INT8_MIN;
    return (int8_t)v;
}

static inline uint8_t f_to_u8(float v)
{
    if (v != v)
        return 0;
    if (v >= 256.0f)
        return UINT8_MAX;
    if (v <= -1.0f)
        return 0;
    return (uint8_t)v;
}

/* integer -> integer, modulo 2^bits (through the unsigned type of the
 * target's width, then GCC's/Clang's two's complement reinterpretation) */
#define WRAP_I64(v) ((int64_t)(uint64_t)(int64_t)(v))
#define WRAP_I32(v) ((int32_t)(uint32_t)(int64_t)(v))
#define WRAP_I8(v) ((int8_t)(uint8_t)(int64_t)(v))
#define WRAP_U8(v) ((uint8_t)(int64_t)(v))

#define LOOP(OT, IT, EXPR)                                                      \
    do {                                                                        \
        OT *restrict o_ = out;                                                  \
        const IT *restrict x_ = x;                                              \
        _Pragma("omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)") \
        for (int64_t i = 0; i < n; i++) {                                       \
            const IT v = x_[i];                                                 \
            o_[i] = (OT)(EXPR);                                                 \
        }                                                                       \
    } while (0)

/* One source type IT (read as v) into every target dtype. FROM_FLOAT says
 * whether IT is float (saturating conversions) or an integer (wrapping). */
#define FROM(IT, FROM_FLOAT, IS_BOOL)                                           \
    switch (odt) {                                                              \
    case MAAS_F32:                                                              \
        LOOP(float, IT, IS_BOOL ? (float)(v != 0) : (float)v);                  \
        break;                                                                  \
    case MAAS_I32:                                                              \
        LOOP(int32_t, IT, IS_BOOL ? (int32_t)(v != 0)                           \
                          : FROM_FLOAT ? f_to_i32((float)v) : WRAP_I32(v));     \
        break;                                                                  \
    case MAAS_I64:                                                              \
        LOOP(int64_t, IT, IS_BOOL ? (int64_t)(v != 0)                           \
                          : FROM_FLOAT ? f_to_i64((float)v) : WRAP_I64(v));     \
        break;                                                                  \
    case MAAS_I8:                                                               \
        LOOP(int8_t, IT, IS_BOOL ? (int8_t)(v != 0)                             \
                         : FROM_FLOAT ? f_to_i8((float)v) : WRAP_I8(v));        \
        break;                                                                  \
    case MAAS_U8:                                                               \
        LOOP(uint8_t, IT, IS_BOOL ? (uint8_t)(v != 0)                           \
                          : FROM_FLOAT ? f_to_u8((float)v) : WRAP_U8(v));       \
        break;                                                                  \
    case MAAS_BOOL:                                                             \
        LOOP(uint8_t, IT, v != 0);                                              \
        break;                                                                  \
    default:                                                                    \
        break;                                                                  \
    }

maas_status maas_cast(void *out, maas_dtype odt, const void *x, maas_dtype xdt, int64_t n)
{
    if ((unsigned)odt >= MAAS_DTYPE_COUNT || (unsigned)xdt >= MAAS_DTYPE_COUNT)
        return maas_error(MAAS_ERR_TYPE, "cast: unknown dtype code %d",
                          (unsigned)odt >= MAAS_DTYPE_COUNT ? (int)odt : (int)xdt);
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "cast: negative size %lld", (long long)n);
    if (n == 0)
        return MAAS_OK;
    if (!out || !x)
        return maas_error(MAAS_ERR_VALUE, "cast: NULL buffer");
    if (odt == xdt && odt != MAAS_BOOL) {
        if (out != x)
            memcpy(out, x, (size_t)n * maas_dtype_size(odt));
        return MAAS_OK;
    }
    const int nt = maas_get_num_threads();
    switch (xdt) {
    case MAAS_F32: FROM(float, 1, 0) break;
    case MAAS_I32: FROM(int32_t, 0, 0) break;
    case MAAS_I64: FROM(int64_t, 0, 0) break;
    case MAAS_I8: FROM(int8_t, 0, 0) break;
    case MAAS_U8: FROM(uint8_t, 0, 0) break;
    case MAAS_BOOL: FROM(uint8_t, 0, 1) break;
    default: break;
    }
    return MAAS_OK;
}
