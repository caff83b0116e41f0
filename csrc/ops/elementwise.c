/* elementwise.c -- broadcasting binary ops.
 *
 * maas_binary_forward(op, out, a, b)
 *     out = a (op) b with NumPy broadcasting; out already has the broadcast
 *     shape, a and b may have fewer dims. Overwrites out.
 * maas_binary_backward(op, ga, gb, gout, a, b, out)
 *     ACCUMULATES ga += reduce_to_a(gout * d out/d a), likewise gb; either
 *     may be NULL; comparisons have no gradient (nothing is written).
 *     An input with the output's full shape is updated elementwise (in
 *     parallel); a broadcast input is reduced in a fixed order that does
 *     not depend on the thread count.
 *
 * The shapes are first "coalesced": output dims of size 1 are dropped and
 * adjacent dims merged where both inputs' strides allow it, so same-shape
 * and scalar operands become one flat row and (4,3)+(3) becomes rows of 3.
 * Input strides are 0 along broadcast axes; the innermost stride is always
 * 0 or 1.
 */
#include "maas.h"

#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int nd;
    int64_t shape[MAAS_MAX_DIMS];
    int64_t sa[MAAS_MAX_DIMS];
    int64_t sb[MAAS_MAX_DIMS];
    int64_t size;
} bcast_plan;

static const char *const op_names[MAAS_B_COUNT] = {
    "add", "subtract", "multiply", "divide", "power", "maximum", "minimum",
    "less", "less_equal", "greater", "greater_equal", "equal", "not_equal"};

/* Strides of t over out's dims (0 on broadcast axes); error if t does not
 * broadcast to out's shape. */
static maas_status input_strides(const char *op, const maas_tensor *t,
                                 const maas_tensor *out, int64_t *st)
{
    if (t->ndim > out->ndim)
        goto bad;
    int64_t stride = 1;
    for (int d = out->ndim - 1; d >= 0; d--) {
        int td = d - (out->ndim - t->ndim);
        if (td < 0) {
            st[d] = 0;
            continue;
        }
        int64_t s = t->shape[td];
        if (s == 1) {
            st[d] = 0;
        } else if (s == out->shape[d]) {
            st[d] = stride;
            stride *= s;
        } else {
            goto bad;
        }
    }
    return MAAS_OK;
bad:;
    char s1[160], s2[160];
    return maas_error(MAAS_ERR_SHAPE, "%s: operand of shape %s does not broadcast "
                      "to the output shape %s", op,
                      maas_shape_str(t->ndim, t->shape, s1, sizeof s1),
                      maas_shape_str(out->ndim, out->shape, s2, sizeof s2));
}

static maas_status make_plan(const char *op, const maas_tensor *out,
                             const maas_tensor *a, const maas_tensor *b,
                             bcast_plan *p)
{
    int64_t sa[MAAS_MAX_DIMS], sb[MAAS_MAX_DIMS];
    maas_status st = input_strides(op, a, out, sa);
    if (st == MAAS_OK)
        st = input_strides(op, b, out, sb);
    if (st != MAAS_OK)
        return st;
    int nd = 0;
    for (int d = 0; d < out->ndim; d++) {
        int64_t s = out->shape[d];
        if (s == 1)
            continue;
        if (nd > 0 && p->sa[nd - 1] == sa[d] * s && p->sb[nd - 1] == sb[d] * s) {
            p->shape[nd - 1] *= s;
            p->sa[nd - 1] = sa[d];
            p->sb[nd - 1] = sb[d];
        } else {
            p->shape[nd] = s;
            p->sa[nd] = sa[d];
            p->sb[nd] = sb[d];
            nd++;
        }
    }
    if (nd == 0) {
        p->shape[0] = 1;
        p->sa[0] = p->sb[0] = 0;
        nd = 1;
    }
    p->nd = nd;
    p->size = out->size;
    return MAAS_OK;
}

/* ------------------------------------------------------------- forward */

#define FWD_ROW(EXPR)                                                     \
    do {                                                                  \
        if (sa && sb) {                                                   \
            _Pragma("omp simd")                                           \
            for (int64_t i = 0; i < L; i++) {                             \
                const float x = a[i], y = b[i];                           \
                o[i] = (EXPR);                                            \
            }                                                             \
        } else if (sb) {                                                  \
            const float x = a[0];                                         \
            _Pragma("omp simd")                                           \
            for (int64_t i = 0; i < L; i++) {                             \
                const float y = b[i];                                     \
                o[i] = (EXPR);                                            \
            }                                                             \
        } else if (sa) {                                                  \
            const float y = b[0];                                         \
            _Pragma("omp simd")                                           \
            for (int64_t i = 0; i < L; i++) {                             \
                const float x = a[i];                                     \
                o[i] = (EXPR);                                            \
            }                                                             \
        } else {                                                          \
            const float x = a[0], y = b[0];                               \
            const float v = (EXPR);                                       \
            for (int64_t i = 0; i < L; i++)                               \
                o[i] = v;                                                 \
        }                                                                 \
    } while (0)

/* One row segment: o[i] = a[i*sa] (op) b[i*sb], sa, sb in {0, 1}. */
static void fwd_row(maas_binary_op op, float *o, const float *a, int64_t sa,
                    const float *b, int64_t sb, int64_t L)
{
    switch (op) {
    case MAAS_B_ADD: FWD_ROW(x + y); break;
    case MAAS_B_SUB: FWD_ROW(x - y); break;
    case MAAS_B_MUL: FWD_ROW(x * y); break;
    case MAAS_B_DIV: FWD_ROW(x / y); break;
    case MAAS_B_POW:
        if (!sb && b[0] == 2.0f)
            FWD_ROW(((void)y, x * x));
        else
            FWD_ROW(powf(x, y));
        break;
    /* NaN propagates, as in NumPy / PyTorch */
    case MAAS_B_MAXIMUM: FWD_ROW((x > y || x != x) ? x : y); break;
    case MAAS_B_MINIMUM: FWD_ROW((x < y || x != x) ? x : y); break;
    case MAAS_B_LT: FWD_ROW(x < y ? 1.0f : 0.0f); break;
    case MAAS_B_LE: FWD_ROW(x <= y ? 1.0f : 0.0f); break;
    case MAAS_B_GT: FWD_ROW(x > y ? 1.0f : 0.0f); break;
    case MAAS_B_GE: FWD_ROW(x >= y ? 1.0f : 0.0f); break;
    case MAAS_B_EQ: FWD_ROW(x == y ? 1.0f : 0.0f); break;
    case MAAS_B_NE: FWD_ROW(x != y ? 1.0f : 0.0f); break;
    default: break;
    }
}

/* Multi-index walker over output elements [start, end) in row segments. */
typedef struct {
    int64_t idx[MAAS_MAX_DIMS];
    int64_t offa, offb;
} walker;

static void walker_init(walker *w, const bcast_plan *p, int64_t start)
{
    w->offa = w->offb = 0;
    for (int d = p->nd - 1; d >= 0; d--) {
        int64_t q = start % p->shape[d];
        start /= p->shape[d];
        w->idx[d] = q;
        w->offa += q * p->sa[d];
        w->offb += q * p->sb[d];
    }
}

/* Advances the walker by L along the last axis (never past its end). */
static void walker_step(walker *w, const bcast_plan *p, int64_t L)
{
    int d = p->nd - 1;
    w->idx[d] += L;
    w->offa += L * p->sa[d];
    w->offb += L * p->sb[d];
    while (d > 0 && w->idx[d] == p->shape[d]) {
        w->offa -= p->shape[d] * p->sa[d];
        w->offb -= p->shape[d] * p->sb[d];
        w->idx[d] = 0;
        d--;
        w->idx[d]++;
        w->offa += p->sa[d];
        w->offb += p->sb[d];
    }
}

static void fwd_range(maas_binary_op op, float *o, const float *a,
                      const float *b, const bcast_plan *p, int64_t start,
                      int64_t end)
{
    if (start >= end)
        return;
    walker w;
    walker_init(&w, p, start);
    const int last = p->nd - 1;
    for (int64_t i = start; i < end;) {
        int64_t L = p->shape[last] - w.idx[last];
        if (L > end - i)
            L = end - i;
        fwd_row(op, o + i, a + w.offa, p->sa[last], b + w.offb, p->sb[last], L);
        i += L;
        if (i < end)
            walker_step(&w, p, L);
    }
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

maas_status maas_binary_forward(maas_binary_op op, maas_tensor *out,
                                const maas_tensor *a, const maas_tensor *b)
{
    if ((unsigned)op >= (unsigned)MAAS_B_COUNT)
        return maas_error(MAAS_ERR_VALUE, "unknown binary op %d", (int)op);
    bcast_plan p;
    maas_status st = make_plan(op_names[op], out, a, b, &p);
    if (st != MAAS_OK)
        return st;
    if (p.size == 0)
        return MAAS_OK;
    const float *ad = a->data, *bd = b->data;
    float *od = out->data;
    if (p.size <= MAAS_PAR_THRESHOLD) {
        fwd_range(op, od, ad, bd, &p, 0, p.size);
        return MAAS_OK;
    }
    const int nthr = maas_get_num_threads();
#pragma omp parallel num_threads(nthr)
    {
        int64_t T = team_size(), t = thread_id();
        int64_t chunk = (p.size + T - 1) / T;
        int64_t s = t * chunk, e = s + chunk;
        if (s > p.size)
            s = p.size;
        if (e > p.size)
            e = p.size;
        fwd_range(op, od, ad, bd, &p, s, e);
    }
    return MAAS_OK;
}

/* ------------------------------------------------------------ backward */

/* Derivatives of out with respect to a (DA) and b (DB), in terms of the
 * operands x, y and (for pow) the forward output OUTV. */
#define OUTV (out ? out[i] : powf(x, y))

/* One row segment of a backward: gd is ga or gb at this row; sd is its
 * innermost stride (1: elementwise update, 0: the row sums into gd[0]). */
#define BWD_ROW(EXPR)                                                     \
    do {                                                                  \
        if (sd) {                                                         \
            if (sa && sb) {                                               \
                _Pragma("omp simd")                                       \
                for (int64_t i = 0; i < L; i++) {                         \
                    const float x = a[i], y = b[i];                       \
                    gd[i] += g[i] * (EXPR);                               \
                }                                                         \
            } else {                                                      \
                _Pragma("omp simd")                                       \
                for (int64_t i = 0; i < L; i++) {                         \
                    const float x = a[i * sa], y = b[i * sb];             \
                    gd[i] += g[i] * (EXPR);                               \
                }                                                         \
            }                                                             \
        } else {                                                          \
            double acc = 0.0;                                             \
            for (int64_t i = 0; i < L; i++) {                             \
                const float x = a[i * sa], y = b[i * sb];                 \
                acc += g[i] * (EXPR);                                     \
            }                                                             \
            gd[0] += (float)acc;                                          \
        }                                                                 \
    } while (0)

static void bwd_row(maas_binary_op op, int wrt_b, float *gd, int64_t sd,
                    const float *g, const float *a, int64_t sa,
                    const float *b, int64_t sb, const float *out, int64_t L)
{
    if (!wrt_b) {
        switch (op) {
        case MAAS_B_ADD: case MAAS_B_SUB: BWD_ROW(((void)x, (void)y, 1.0f)); break;
        case MAAS_B_MUL: BWD_ROW(((void)x, y)); break;
        case MAAS_B_DIV: BWD_ROW(((void)x, 1.0f / y)); break;
        case MAAS_B_POW: BWD_ROW(y == 0.0f ? 0.0f : y * powf(x, y - 1.0f)); break;
        case MAAS_B_MAXIMUM: BWD_ROW(x >= y ? 1.0f : 0.0f); break;
        case MAAS_B_MINIMUM: BWD_ROW(x <= y ? 1.0f : 0.0f); break;
        default: break;
        }
    } else {
        switch (op) {
        case MAAS_B_ADD: BWD_ROW(((void)x, (void)y, 1.0f)); break;
        case MAAS_B_SUB: BWD_ROW(((void)x, (void)y, -1.0f)); break;
        case MAAS_B_MUL: BWD_ROW(((void)y, x)); break;
        case MAAS_B_DIV: BWD_ROW(-(x / y) / y); break;
        case MAAS_B_POW: BWD_ROW(x > 0.0f ? OUTV * logf(x) : 0.0f); break;
        case MAAS_B_MAXIMUM: BWD_ROW(x >= y ? 0.0f : 1.0f); break;
        case MAAS_B_MINIMUM: BWD_ROW(x <= y ? 0.0f : 1.0f); break;
        default: break;
        }
    }
}

/* Backward over output elements [start, end) with every output column of
 * the last axis restricted to [c0, c1). Writes only gd elements reached
 * from those elements, in increasing output order. */
static void bwd_range(maas_binary_op op, int wrt_b, float *gd,
                      const float *g, const float *a, const float *b,
                      const float *out, const bcast_plan *p, int64_t start,
                      int64_t end, int64_t c0, int64_t c1)
{
    if (start >= end)
        return;
    walker w;
    walker_init(&w, p, start);
    const int last = p->nd - 1;
    const int64_t *sdv = wrt_b ? p->sb : p->sa;
    const int64_t sa = p->sa[last], sb = p->sb[last], sd = sdv[last];
    for (int64_t i = start; i < end;) {
        int64_t col = w.idx[last];
        int64_t L = p->shape[last] - col;
        if (L > end - i)
            L = end - i;
        int64_t lo = col > c0 ? col : c0, hi = col + L < c1 ? col + L : c1;
        if (lo < hi) {
            int64_t k = lo - col;
            int64_t offd = wrt_b ? w.offb : w.offa;
            bwd_row(op, wrt_b, gd + offd + k * sd, sd, g + i + k, a + w.offa + k * sa,
                    sa, b + w.offb + k * sb, sb, out ? out + i + k : NULL, hi - lo);
        }
        i += L;
        if (i < end)
            walker_step(&w, p, L);
    }
}

static maas_status bwd_one(maas_binary_op op, int wrt_b, float *gd,
                           int64_t gd_size, const float *g, const float *a,
                           const float *b, const float *out,
                           const bcast_plan *p)
{
    const int par = p->size > MAAS_PAR_THRESHOLD;
    if (!par) {
        bwd_range(op, wrt_b, gd, g, a, b, out, p, 0, p->size, 0, INT64_MAX);
        return MAAS_OK;
    }
    const int nthr = maas_get_num_threads();
    const int last = p->nd - 1;
    const int64_t sd = wrt_b ? p->sb[last] : p->sa[last];
    if (gd_size == p->size) {
        /* full shape: elementwise, split the output in contiguous ranges */
#pragma omp parallel num_threads(nthr)
        {
            int64_t T = team_size(), t = thread_id();
            int64_t chunk = (p->size + T - 1) / T;
            int64_t s = t * chunk, e = s + chunk;
            if (s > p->size)
                s = p->size;
            if (e > p->size)
                e = p->size;
            bwd_range(op, wrt_b, gd, g, a, b, out, p, s, e, 0, INT64_MAX);
        }
    } else if (sd != 0 && p->shape[last] >= 64) {
        /* The innermost axis is kept: each thread owns a band of columns
         * (so of gd elements) and walks every row in order, so each gd
         * element sums its terms in the same order whatever the split. */
        const int64_t ncol = p->shape[last];
#pragma omp parallel num_threads(nthr)
        {
            int64_t T = team_size(), t = thread_id();
            int64_t chunk = (ncol + T - 1) / T;
            chunk = (chunk + 15) & ~(int64_t)15;
            int64_t c0 = t * chunk, c1 = c0 + chunk;
            if (c0 > ncol)
                c0 = ncol;
            if (c1 > ncol)
                c1 = ncol;
            if (c0 < c1)
                bwd_range(op, wrt_b, gd, g, a, b, out, p, 0, p->size, c0, c1);
        }
    } else {
        bwd_range(op, wrt_b, gd, g, a, b, out, p, 0, p->size, 0, INT64_MAX);
    }
    return MAAS_OK;
}

maas_status maas_binary_backward(maas_binary_op op, maas_tensor *ga,
                                 maas_tensor *gb, const maas_tensor *gout,
                                 const maas_tensor *a, const maas_tensor *b,
                                 const maas_tensor *out)
{
    if ((unsigned)op >= (unsigned)MAAS_B_COUNT)
        return maas_error(MAAS_ERR_VALUE, "unknown binary op %d", (int)op);
    if (op >= MAAS_B_LT)
        return MAAS_OK; /* comparisons: no gradient */
    bcast_plan p;
    maas_status st = make_plan(op_names[op], gout, a, b, &p);
    if (st != MAAS_OK)
        return st;
    if ((ga && ga->size != a->size) || (gb && gb->size != b->size) ||
        (out && out->size != gout->size))
        return maas_error(MAAS_ERR_SHAPE, "%s backward: gradient shapes do not "
                          "match the operands", op_names[op]);
    if (p.size == 0)
        return MAAS_OK;
    const float *od = out ? out->data : NULL;
    if (ga)
        bwd_one(op, 0, ga->data, ga->size, gout->data, a->data, b->data, od, &p);
    if (gb)
        bwd_one(op, 1, gb->data, gb->size, gout->data, a->data, b->data, od, &p);
    return MAAS_OK;
}
