/* optable.c -- the op table: one entry per op, naming its attributes,
 * inferring its output shapes and dtypes, and calling its forward and
 * backward kernels. The tape, the plan and the binding dispatch through
 * maas_op_get() and know no op by hand ("How to add an op": maas.h). */
#include "opdef.h"

#include <stddef.h>
#include <string.h>

/* ---------------------------------------------------------------- unary */

typedef struct {
    int64_t op;
    double alpha;
} unary_attr;

static const maas_attr_field unary_fields[] = {
    {"op", 'l', offsetof(unary_attr, op)}, {"alpha", 'd', offsetof(unary_attr, alpha)}, {NULL, 0, 0}};

static maas_status unary_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    unary_attr *a = ATTR(unary_attr, nd);
    if (a->op < 0 || a->op >= MAAS_U_COUNT)
        return maas_error(MAAS_ERR_VALUE, "unary: unknown op %lld", (long long)a->op);
    maas_status s = need_f32(nd, 0, "unary");
    if (s == MAAS_OK)
        spec_like(&outs[0], nd->in[0]);
    return s;
}

static maas_status unary_forward(maas_node *nd)
{
    const unary_attr *a = CATTR(unary_attr, nd);
    return maas_unary_forward((maas_unary_op)a->op, nd->out[0]->data, nd->in[0]->data,
                              nd->in[0]->size, (float)a->alpha);
}

static maas_status unary_backward(const maas_node *nd, const maas_tensor *const *gout,
                                  maas_tensor *const *gin)
{
    const unary_attr *a = CATTR(unary_attr, nd);
    return maas_unary_backward((maas_unary_op)a->op, gin[0]->data, gout[0]->data,
                               nd->in[0]->data, nd->out[0]->data, gout[0]->size, (float)a->alpha);
}

/* --------------------------------------------------------------- binary */

typedef struct {
    int64_t op;
} binary_attr;

static const maas_attr_field binary_fields[] = {{"op", 'l', offsetof(binary_attr, op)}, {NULL, 0, 0}};

static const char *binary_names[] = {"add", "subtract", "multiply", "divide", "power",
                                     "maximum", "minimum", "less", "less_equal",
                                     "greater", "greater_equal", "equal", "not_equal"};

static maas_status binary_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    binary_attr *a = ATTR(binary_attr, nd);
    if (a->op < 0 || a->op >= MAAS_B_COUNT)
        return maas_error(MAAS_ERR_VALUE, "binary: unknown op %lld", (long long)a->op);
    maas_status s = all_f32(nd, binary_names[a->op]);
    if (s != MAAS_OK)
        return s;
    if (a->op >= MAAS_B_LT)
        nd->nograd = 3u; /* comparisons have no gradient */
    outs[0].dtype = MAAS_F32;
    return maas_broadcast_shape(binary_names[a->op], nd->in[0]->ndim, nd->in[0]->shape,
                                nd->in[1]->ndim, nd->in[1]->shape, &outs[0].ndim, outs[0].shape);
}

static maas_status binary_forward(maas_node *nd)
{
    return maas_binary_forward((maas_binary_op)CATTR(binary_attr, nd)->op, nd->out[0],
                               nd->in[0], nd->in[1]);
}

static maas_status binary_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    return maas_binary_backward((maas_binary_op)CATTR(binary_attr, nd)->op, gin[0], gin[1],
                                gout[0], nd->in[0], nd->in[1], nd->out[0]);
}

/* -------------------------------------------------------------- softmax */

typedef struct {
    int64_t axis, log;
    int64_t outer, n, inner;
} softmax_attr;

static const maas_attr_field softmax_fields[] = {
    {"axis", 'l', offsetof(softmax_attr, axis)}, {"log", 'l', offsetof(softmax_attr, log)}, {NULL, 0, 0}};

static maas_status softmax_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    softmax_attr *a = ATTR(softmax_attr, nd);
    const char *name = a->log ? "log_softmax" : "softmax";
    int64_t ax = 0;
    maas_status s = need_f32(nd, 0, name);
    if (s == MAAS_OK)
        s = normalize_axis(a->axis, nd->in[0]->ndim, name, &ax);
    if (s != MAAS_OK)
        return s;
    split_axis(nd->in[0], ax, &a->outer, &a->n, &a->inner);
    spec_like(&outs[0], nd->in[0]);
    return MAAS_OK;
}

static maas_status softmax_forward(maas_node *nd)
{
    const softmax_attr *a = CATTR(softmax_attr, nd);
    return maas_softmax_forward(nd->out[0]->data, nd->in[0]->data, a->outer, a->n, a->inner,
                                (int)a->log);
}

static maas_status softmax_backward(const maas_node *nd, const maas_tensor *const *gout,
                                    maas_tensor *const *gin)
{
    const softmax_attr *a = CATTR(softmax_attr, nd);
    return maas_softmax_backward(gin[0]->data, gout[0]->data, nd->out[0]->data, a->outer, a->n,
                                 a->inner, (int)a->log);
}

/* --------------------------------------------------------------- reduce */

typedef struct {
    int64_t op, axis, all, keepdims; /* all != 0: over every element */
    int64_t outer, n, inner;
} reduce_attr;

static const maas_attr_field reduce_fields[] = {
    {"op", 'l', offsetof(reduce_attr, op)},     {"axis", 'l', offsetof(reduce_attr, axis)},
    {"all", 'l', offsetof(reduce_attr, all)},   {"keepdims", 'l', offsetof(reduce_attr, keepdims)},
    {NULL, 0, 0}};

static const char *reduce_names[] = {"sum", "mean", "max", "min"};

static maas_status reduce_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    reduce_attr *a = ATTR(reduce_attr, nd);
    if (a->op < 0 || a->op > MAAS_R_MIN)
        return maas_error(MAAS_ERR_VALUE, "reduce: unknown op %lld", (long long)a->op);
    const maas_tensor *x = nd->in[0];
    maas_status s = need_f32(nd, 0, reduce_names[a->op]);
    if (s != MAAS_OK)
        return s;
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = 0;
    if (a->all) {
        a->outer = a->inner = 1;
        a->n = x->size;
        if (a->keepdims)
            for (int d = 0; d < x->ndim; d++)
                outs[0].shape[outs[0].ndim++] = 1;
        return MAAS_OK;
    }
    int64_t ax = 0;
    if ((s = normalize_axis(a->axis, x->ndim, reduce_names[a->op], &ax)) != MAAS_OK)
        return s;
    a->axis = ax;
    split_axis(x, ax, &a->outer, &a->n, &a->inner);
    for (int d = 0; d < x->ndim; d++)
        if (d != ax)
            outs[0].shape[outs[0].ndim++] = x->shape[d];
        else if (a->keepdims)
            outs[0].shape[outs[0].ndim++] = 1;
    return MAAS_OK;
}

static maas_status reduce_forward(maas_node *nd)
{
    const reduce_attr *a = CATTR(reduce_attr, nd);
    return maas_reduce_forward((maas_reduce_op)a->op, nd->out[0]->data, nd->in[0]->data,
                               a->outer, a->n, a->inner);
}

static maas_status reduce_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    const reduce_attr *a = CATTR(reduce_attr, nd);
    return maas_reduce_backward((maas_reduce_op)a->op, gin[0]->data, gout[0]->data,
                                nd->in[0]->data, nd->out[0]->data, a->outer, a->n, a->inner);
}

/* --------------------------------------------------------------- matmul */

typedef struct {
    int64_t ta, tb;
    int64_t batch, M, N, K;
} matmul_attr;

static const maas_attr_field matmul_fields[] = {
    {"transpose_a", 'l', offsetof(matmul_attr, ta)},
    {"transpose_b", 'l', offsetof(matmul_attr, tb)}, {NULL, 0, 0}};

static maas_status matmul_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    matmul_attr *at = ATTR(matmul_attr, nd);
    const maas_tensor *a = nd->in[0], *b = nd->in[1];
    char sa[160], sb[160];
    maas_status s = all_f32(nd, "matmul");
    if (s != MAAS_OK)
        return s;
    if (a->ndim < 2 || b->ndim < 2)
        return maas_error(MAAS_ERR_SHAPE, "matmul: operands need 2 or more dimensions here, got shapes %s and %s",
                          SHAPE(a, sa), SHAPE(b, sb));
    int an = a->ndim, bn = b->ndim, ta = at->ta != 0, tb = at->tb != 0;
    int64_t M = ta ? a->shape[an - 1] : a->shape[an - 2];
    int64_t Ka = ta ? a->shape[an - 2] : a->shape[an - 1];
    int64_t Kb = tb ? b->shape[bn - 1] : b->shape[bn - 2];
    int64_t N = tb ? b->shape[bn - 2] : b->shape[bn - 1];
    if (Ka != Kb)
        return maas_error(MAAS_ERR_SHAPE,
                          "matmul: shapes %s and %s not aligned: %lld (dim %d) != %lld (dim %d)",
                          SHAPE(a, sa), SHAPE(b, sb), (long long)Ka, ta ? an - 2 : an - 1,
                          (long long)Kb, tb ? bn - 1 : bn - 2);
    int64_t batch = 1;
    maas_tensor_spec *o = &outs[0];
    o->dtype = MAAS_F32;
    if (bn == 2 && an > 2 && !ta) {
        /* (..., M, K) @ (K, N): fold the leading dims into M */
        for (int d = 0; d < an - 2; d++)
            M *= a->shape[d];
        o->ndim = an;
        memcpy(o->shape, a->shape, sizeof(int64_t) * (size_t)an);
    } else if (an == bn) {
        for (int d = 0; d < an - 2; d++) {
            if (a->shape[d] != b->shape[d])
                return maas_error(MAAS_ERR_SHAPE,
                                  "matmul: batch dimensions of shapes %s and %s do not match",
                                  SHAPE(a, sa), SHAPE(b, sb));
            batch *= a->shape[d];
            o->shape[d] = a->shape[d];
        }
        o->ndim = an;
        o->shape[an - 2] = ta ? a->shape[an - 1] : a->shape[an - 2];
    } else {
        return maas_error(MAAS_ERR_SHAPE,
                          "matmul: cannot batch shapes %s and %s: give both the same batch "
                          "dimensions, or make the second 2-D",
                          SHAPE(a, sa), SHAPE(b, sb));
    }
    o->shape[o->ndim - 1] = N;
    at->batch = batch;
    at->M = M;
    at->N = N;
    at->K = Ka;
    return MAAS_OK;
}

static maas_status matmul_forward(maas_node *nd)
{
    const matmul_attr *a = CATTR(matmul_attr, nd);
    return maas_matmul_forward(nd->out[0]->data, nd->in[0]->data, nd->in[1]->data, a->batch,
                               a->M, a->N, a->K, (int)a->ta, (int)a->tb);
}

static maas_status matmul_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    const matmul_attr *a = CATTR(matmul_attr, nd);
    return maas_matmul_backward(GDATA(0), GDATA(1), gout[0]->data, nd->in[0]->data,
                                nd->in[1]->data, a->batch, a->M, a->N, a->K, (int)a->ta,
                                (int)a->tb);
}

/* ---------------------------------------------------------------- dense */

typedef struct {
    int64_t N, C, U;
} dense_attr;

static const maas_attr_field no_fields[] = {{NULL, 0, 0}};

static maas_status dense_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    dense_attr *a = ATTR(dense_attr, nd);
    const maas_tensor *x = nd->in[0], *w = nd->in[1];
    char sx[160], sw[160];
    maas_status s = all_f32(nd, "dense");
    if (s != MAAS_OK)
        return s;
    if (w->ndim != 2 || x->ndim < 1)
        return maas_error(MAAS_ERR_SHAPE, "dense: input shape %s and kernel shape %s: the kernel must be 2-D (in, units) and the input at least 1-D",
                          SHAPE(x, sx), SHAPE(w, sw));
    if (x->shape[x->ndim - 1] != w->shape[0])
        return maas_error(MAAS_ERR_SHAPE,
                          "dense: input shape %s and kernel shape %s not aligned: %lld (dim %d) != %lld (dim 0)",
                          SHAPE(x, sx), SHAPE(w, sw), (long long)x->shape[x->ndim - 1],
                          x->ndim - 1, (long long)w->shape[0]);
    int64_t C = w->shape[0], U = w->shape[1];
    if (nd->nin == 3 && !(nd->in[2]->ndim == 1 && nd->in[2]->shape[0] == U))
        return maas_error(MAAS_ERR_SHAPE, "dense: bias shape %s does not match %lld units",
                          SHAPE(nd->in[2], sx), (long long)U);
    int64_t N = 1;
    for (int d = 0; d < x->ndim - 1; d++)
        N *= x->shape[d];
    a->N = N;
    a->C = C;
    a->U = U;
    spec_like(&outs[0], x);
    outs[0].shape[x->ndim - 1] = U;
    return MAAS_OK;
}

static maas_status dense_forward(maas_node *nd)
{
    const dense_attr *a = CATTR(dense_attr, nd);
    return maas_dense_forward(nd->out[0]->data, nd->in[0]->data, nd->in[1]->data,
                              nd->nin == 3 ? nd->in[2]->data : NULL, a->N, a->C, a->U);
}

static maas_status dense_backward(const maas_node *nd, const maas_tensor *const *gout,
                                  maas_tensor *const *gin)
{
    const dense_attr *a = CATTR(dense_attr, nd);
    return maas_dense_backward(GDATA(0), GDATA(1), nd->nin == 3 ? GDATA(2) : NULL,
                               gout[0]->data, nd->in[0]->data, nd->in[1]->data, a->N, a->C, a->U);
}

/* ----------------------------------------------------------------- view */

typedef struct {
    int64_t sub;    /* 0: a reshape (same element count); 1: a part from offset */
    int64_t offset;
    int64_t ndim, shape[MAAS_MAX_DIMS]; /* one dim may be -1 (inferred) */
} view_attr;

static const maas_attr_field view_fields[] = {
    {"sub", 'l', offsetof(view_attr, sub)}, {"offset", 'l', offsetof(view_attr, offset)},
    {"shape", 'S', offsetof(view_attr, ndim)}, {NULL, 0, 0}};

static maas_status view_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    view_attr *a = ATTR(view_attr, nd);
    const maas_tensor *x = nd->in[0];
    char sa[160], sb[160];
    if (a->ndim < 0 || a->ndim > MAAS_MAX_DIMS)
        return maas_error(MAAS_ERR_VALUE, "reshape: at most %d dimensions", MAAS_MAX_DIMS);
    int64_t known = 1;
    int infer = -1;
    for (int d = 0; d < a->ndim; d++) {
        int64_t v = a->shape[d];
        if (v == -1 && infer < 0)
            infer = d;
        else if (v < 0)
            return maas_error(MAAS_ERR_VALUE, "reshape: invalid dimension %lld", (long long)v);
        else if (maas_mul_size(known, v, &known) != 0)
            return maas_error(MAAS_ERR_VALUE, "reshape: shape too large");
    }
    int64_t avail = x->size - a->offset;
    if (a->offset < 0 || avail < 0)
        return maas_error(MAAS_ERR_VALUE, "view: offset %lld is outside a tensor of %lld elements",
                          (long long)a->offset, (long long)x->size);
    if (infer >= 0)
        a->shape[infer] = known ? avail / known : 0;
    int64_t total;
    int bad = maas_shape_size((int)a->ndim, a->shape, &total) != 0 || (infer >= 0 && known == 0);
    if (!bad && !a->sub && (a->offset != 0 || total != x->size))
        bad = 1;
    if (bad)
        return maas_error(MAAS_ERR_SHAPE, "reshape: cannot reshape a tensor of shape %s (%lld elements) into shape %s",
                          SHAPE(x, sa), (long long)x->size,
                          maas_shape_str((int)a->ndim, a->shape, sb, sizeof sb));
    if (total > avail)
        return maas_error(MAAS_ERR_SHAPE, "view: %lld elements from offset %lld do not fit in shape %s",
                          (long long)total, (long long)a->offset, SHAPE(x, sa));
    outs[0].dtype = x->dtype;
    outs[0].ndim = (int)a->ndim;
    memcpy(outs[0].shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    outs[0].view_offset = a->offset;
    if (x->dtype != MAAS_F32)
        nd->nograd = 1u;
    return MAAS_OK;
}

static maas_status view_forward(maas_node *nd) { return MAAS_OK; }

static maas_status view_backward(const maas_node *nd, const maas_tensor *const *gout,
                                 maas_tensor *const *gin)
{
    return maas_accumulate(gin[0]->data + CATTR(view_attr, nd)->offset, gout[0]->data,
                           gout[0]->size);
}

/* ----------------------------------------------------------------- rows */

typedef struct {
    int64_t start, step, count;
    int64_t row;
} rows_attr;

static const maas_attr_field rows_fields[] = {
    {"start", 'l', offsetof(rows_attr, start)}, {"step", 'l', offsetof(rows_attr, step)},
    {"count", 'l', offsetof(rows_attr, count)}, {NULL, 0, 0}};

static maas_status rows_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    rows_attr *a = ATTR(rows_attr, nd);
    const maas_tensor *x = nd->in[0];
    maas_status s = need_f32(nd, 0, "slice");
    if (s != MAAS_OK)
        return s;
    if (x->ndim < 1)
        return maas_error(MAAS_ERR_VALUE, "a 0-d tensor cannot be indexed");
    int64_t len = x->shape[0], last = a->start + (a->count - 1) * a->step;
    if (a->count < 0 || (a->count > 0 && (a->start < 0 || a->start >= len || last < 0 || last >= len)))
        return maas_error(MAAS_ERR_VALUE, "slice: rows %lld + k * %lld (%lld of them) are outside "
                          "an axis of size %lld", (long long)a->start, (long long)a->step,
                          (long long)a->count, (long long)len);
    a->row = len ? x->size / len : 0;
    spec_like(&outs[0], x);
    outs[0].shape[0] = a->count;
    return MAAS_OK;
}

static maas_status rows_forward(maas_node *nd)
{
    const rows_attr *a = CATTR(rows_attr, nd);
    return maas_gather_rows(nd->out[0]->data, nd->in[0]->data, a->start, a->step, a->count, a->row);
}

static maas_status rows_backward(const maas_node *nd, const maas_tensor *const *gout,
                                 maas_tensor *const *gin)
{
    const rows_attr *a = CATTR(rows_attr, nd);
    return maas_scatter_add_rows(gin[0]->data, gout[0]->data, a->start, a->step, a->count, a->row);
}

/* ----------------------------------------------------------------- take */

typedef struct {
    int64_t row;
} take_attr;

static maas_status take_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const maas_tensor *x = nd->in[0], *idx = nd->in[1];
    maas_status s = need_f32(nd, 0, "take");
    if (s != MAAS_OK)
        return s;
    if (idx->dtype != MAAS_I64 || idx->ndim != 1)
        return maas_error(MAAS_ERR_TYPE, "take: indices must be a 1-D int64 tensor, received %s with %d dimensions",
                          maas_dtype_name(idx->dtype), idx->ndim);
    if (x->ndim < 1)
        return maas_error(MAAS_ERR_VALUE, "a 0-d tensor cannot be indexed");
    ATTR(take_attr, nd)->row = x->shape[0] ? x->size / x->shape[0] : 0;
    nd->nograd = 2u;
    spec_like(&outs[0], x);
    outs[0].shape[0] = idx->size;
    return MAAS_OK;
}

static maas_status take_forward(maas_node *nd)
{
    const maas_tensor *x = nd->in[0], *idx = nd->in[1];
    const int64_t *ix = (const int64_t *)idx->ptr, row = CATTR(take_attr, nd)->row;
    for (int64_t r = 0; r < idx->size; r++)
        if (ix[r] < 0 || ix[r] >= x->shape[0])
            return maas_error(MAAS_ERR_VALUE, "index %lld is out of bounds for axis 0 with size %lld",
                              (long long)ix[r], (long long)x->shape[0]);
    for (int64_t r = 0; r < idx->size; r++)
        memcpy(nd->out[0]->data + r * row, x->data + ix[r] * row, (size_t)row * sizeof(float));
    return MAAS_OK;
}

static maas_status take_backward(const maas_node *nd, const maas_tensor *const *gout,
                                 maas_tensor *const *gin)
{
    const maas_tensor *idx = nd->in[1];
    const int64_t *ix = (const int64_t *)idx->ptr, row = CATTR(take_attr, nd)->row;
    /* serially, in index order: a row picked twice gets both parts */
    for (int64_t r = 0; r < idx->size; r++) {
        float *d = gin[0]->data + ix[r] * row;
        const float *s = gout[0]->data + r * row;
        for (int64_t i = 0; i < row; i++)
            d[i] += s[i];
    }
    return MAAS_OK;
}

/* ------------------------------------------------------------ transpose */

typedef struct {
    int64_t batch, rows, cols;
} transpose_attr;

static maas_status transpose_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    transpose_attr *a = ATTR(transpose_attr, nd);
    const maas_tensor *x = nd->in[0];
    maas_status s = need_f32(nd, 0, "transpose");
    if (s != MAAS_OK)
        return s;
    if (x->ndim < 2)
        return maas_error(MAAS_ERR_VALUE, "transpose: needs at least 2 dimensions, got %d", x->ndim);
    a->rows = x->shape[x->ndim - 2];
    a->cols = x->shape[x->ndim - 1];
    a->batch = (a->rows && a->cols) ? x->size / (a->rows * a->cols) : 0;
    spec_like(&outs[0], x);
    outs[0].shape[x->ndim - 2] = a->cols;
    outs[0].shape[x->ndim - 1] = a->rows;
    return MAAS_OK;
}

static maas_status transpose_forward(maas_node *nd)
{
    const transpose_attr *a = CATTR(transpose_attr, nd);
    return maas_transpose2d(nd->out[0]->data, nd->in[0]->data, a->batch, a->rows, a->cols);
}

static maas_status transpose_backward(const maas_node *nd, const maas_tensor *const *gout,
                                      maas_tensor *const *gin)
{
    /* gout is (batch, cols, rows): transpose it back, then accumulate */
    const transpose_attr *a = CATTR(transpose_attr, nd);
    maas_tensor *tmp = maas_tensor_new_like(gin[0]);
    if (!tmp)
        return MAAS_ERR_NOMEM;
    maas_status s = maas_transpose2d(tmp->data, gout[0]->data, a->batch, a->cols, a->rows);
    if (s == MAAS_OK)
        s = maas_accumulate(gin[0]->data, tmp->data, tmp->size);
    maas_tensor_decref(tmp);
    return s;
}

/* --------------------------------------------------------------- concat */

typedef struct {
    int64_t axis;
    int64_t outer, inner;
} concat_attr;

static const maas_attr_field concat_fields[] = {{"axis", 'l', offsetof(concat_attr, axis)},
                                                {NULL, 0, 0}};

static maas_status concat_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    concat_attr *a = ATTR(concat_attr, nd);
    const maas_tensor *x0 = nd->in[0];
    int64_t ax = 0, n0, total = 0;
    maas_status s = all_f32(nd, "concatenate");
    if (s == MAAS_OK)
        s = normalize_axis(a->axis, x0->ndim, "concatenate", &ax);
    if (s != MAAS_OK)
        return s;
    a->axis = ax;
    split_axis(x0, ax, &a->outer, &n0, &a->inner);
    for (int j = 0; j < nd->nin; j++) {
        const maas_tensor *xj = nd->in[j];
        int ok = xj->ndim == x0->ndim && x0->ndim > 0;
        for (int d = 0; ok && d < x0->ndim; d++)
            ok = d == ax || xj->shape[d] == x0->shape[d];
        if (!ok) {
            char s0[160], sj[160];
            return maas_error(MAAS_ERR_SHAPE, "concatenate: shapes %s and %s differ outside axis %lld",
                              SHAPE(x0, s0), SHAPE(xj, sj), (long long)ax);
        }
        total += xj->shape[ax];
    }
    spec_like(&outs[0], x0);
    outs[0].shape[ax] = total;
    return MAAS_OK;
}

static maas_status concat_forward(maas_node *nd)
{
    const concat_attr *a = CATTR(concat_attr, nd);
    const float *xs[MAAS_OP_MAX_IN];
    int64_t ns[MAAS_OP_MAX_IN];
    for (int j = 0; j < nd->nin; j++) {
        xs[j] = nd->in[j]->data;
        ns[j] = nd->in[j]->shape[a->axis];
    }
    return maas_concat_forward(nd->out[0]->data, xs, ns, nd->nin, a->outer, a->inner);
}

static maas_status concat_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    const concat_attr *a = CATTR(concat_attr, nd);
    float *gxs[MAAS_OP_MAX_IN];
    int64_t ns[MAAS_OP_MAX_IN];
    for (int j = 0; j < nd->nin; j++) {
        gxs[j] = GDATA(j);
        ns[j] = nd->in[j]->shape[a->axis];
    }
    return maas_concat_backward(gxs, gout[0]->data, ns, nd->nin, a->outer, a->inner);
}

/* ----------------------------------------------------------------- loss */

typedef struct {
    int64_t op, from_logits;
    int64_t N, C;
} loss_attr;

static const maas_attr_field loss_fields[] = {
    {"op", 'l', offsetof(loss_attr, op)}, {"from_logits", 'l', offsetof(loss_attr, from_logits)},
    {NULL, 0, 0}};

static const char *loss_names[] = {"mean_squared_error", "mean_absolute_error",
                                   "binary_crossentropy", "categorical_crossentropy",
                                   "sparse_categorical_crossentropy", "hinge"};

/* Shapes equal once trailing 1-dims are dropped from both. */
static int same_up_to_trailing_ones(const maas_tensor *a, const maas_tensor *b)
{
    int an = a->ndim, bn = b->ndim;
    while (an > 0 && a->shape[an - 1] == 1)
        an--;
    while (bn > 0 && b->shape[bn - 1] == 1)
        bn--;
    if (an != bn)
        return 0;
    for (int d = 0; d < an; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

/* Inputs: y_pred, y_true (no gradient flows to y_true). */
static maas_status loss_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    loss_attr *a = ATTR(loss_attr, nd);
    if (a->op < 0 || a->op >= MAAS_L_COUNT)
        return maas_error(MAAS_ERR_VALUE, "loss: unknown op %lld", (long long)a->op);
    const char *name = loss_names[a->op];
    const maas_tensor *p = nd->in[0], *t = nd->in[1];
    char st_[160], sp[160];
    maas_status s = need_f32(nd, 0, name);
    if (s != MAAS_OK)
        return s;
    /* labels: float32, or for SCCE an integer tensor read as it is */
    int int_labels = t->dtype == MAAS_I32 || t->dtype == MAAS_I64 || t->dtype == MAAS_I8 ||
                     t->dtype == MAAS_U8;
    if (t->dtype != MAAS_F32 && !(a->op == MAAS_L_SCCE && int_labels))
        return maas_error(MAAS_ERR_TYPE, "%s: y_true must be %s, received %s", name,
                          a->op == MAAS_L_SCCE ? "an integer or float32 tensor" : "float32",
                          maas_dtype_name(t->dtype));
    if (p->ndim < 1)
        return maas_error(MAAS_ERR_SHAPE, "%s: y_pred must have at least 1 dimension, got shape %s",
                          name, SHAPE(p, sp));
    int64_t C = p->shape[p->ndim - 1], N = 1;
    for (int d = 0; d < p->ndim - 1; d++)
        N *= p->shape[d];
    if (a->op == MAAS_L_SCCE) {
        int ok = t->size == N;
        int tn = t->ndim;
        if (ok && tn == p->ndim && t->shape[tn - 1] == 1)
            tn--;
        ok = ok && tn == p->ndim - 1;
        for (int d = 0; ok && d < tn; d++)
            ok = t->shape[d] == p->shape[d];
        if (!ok)
            return maas_error(MAAS_ERR_SHAPE,
                              "sparse_categorical_crossentropy: y_true shape %s does not fit y_pred "
                              "shape %s: expected integer labels of shape %s (or with a trailing 1); "
                              "for one-hot labels use categorical_crossentropy",
                              SHAPE(t, st_), SHAPE(p, sp),
                              maas_shape_str(p->ndim - 1, p->shape, st_ + 80, 80));
    } else if (!same_up_to_trailing_ones(t, p)) {
        return maas_error(MAAS_ERR_SHAPE, "%s: y_true shape %s does not match y_pred shape %s%s",
                          name, SHAPE(t, st_), SHAPE(p, sp),
                          a->op == MAAS_L_CCE ? " (for integer labels use sparse_categorical_crossentropy)" : "");
    }
    a->N = N;
    a->C = C;
    nd->nograd = 2u;
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = p->ndim - 1;
    memcpy(outs[0].shape, p->shape, sizeof(int64_t) * (size_t)(p->ndim - 1));
    return MAAS_OK;
}

static maas_status loss_forward(maas_node *nd)
{
    const loss_attr *a = CATTR(loss_attr, nd);
    const maas_tensor *t = nd->in[1];
    if (t->dtype != MAAS_F32)
        return maas_scce_forward_typed(nd->out[0]->data, t->ptr, t->dtype, nd->in[0]->data, a->N,
                                       a->C, (int)a->from_logits);
    return maas_loss_forward((maas_loss_op)a->op, nd->out[0]->data, nd->in[1]->data,
                             nd->in[0]->data, a->N, a->C, (int)a->from_logits);
}

static maas_status loss_backward(const maas_node *nd, const maas_tensor *const *gout,
                                 maas_tensor *const *gin)
{
    const loss_attr *a = CATTR(loss_attr, nd);
    const maas_tensor *t = nd->in[1];
    if (t->dtype != MAAS_F32)
        return maas_scce_backward_typed(gin[0]->data, gout[0]->data, t->ptr, t->dtype,
                                        nd->in[0]->data, a->N, a->C, (int)a->from_logits);
    return maas_loss_backward((maas_loss_op)a->op, gin[0]->data, gout[0]->data, nd->in[1]->data,
                              nd->in[0]->data, a->N, a->C, (int)a->from_logits);
}

/* -------------------------------------------------------------- dropout */

typedef struct {
    uint64_t seed, stream; /* MAAS_OPF_RANDOM: first */
    double rate;
} dropout_attr;

static const maas_attr_field dropout_fields[] = {
    {"seed", 'u', offsetof(dropout_attr, seed)}, {"stream", 'u', offsetof(dropout_attr, stream)},
    {"rate", 'd', offsetof(dropout_attr, rate)}, {NULL, 0, 0}};

static maas_status dropout_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const dropout_attr *a = CATTR(dropout_attr, nd);
    maas_status s = need_f32(nd, 0, "dropout");
    if (s != MAAS_OK)
        return s;
    if (!(a->rate >= 0.0 && a->rate < 1.0))
        return maas_error(MAAS_ERR_VALUE, "dropout: rate must be in [0, 1), received rate=%g", a->rate);
    spec_like(&outs[0], nd->in[0]);
    spec_like(&saved[0], nd->in[0]); /* the mask */
    nd->nsaved = 1;
    return MAAS_OK;
}

static maas_status dropout_forward(maas_node *nd)
{
    const dropout_attr *a = CATTR(dropout_attr, nd);
    return maas_dropout_forward(nd->out[0]->data, nd->saved[0]->data, nd->in[0]->data,
                                nd->in[0]->size, (float)a->rate, a->seed, a->stream);
}

static maas_status dropout_backward(const maas_node *nd, const maas_tensor *const *gout,
                                    maas_tensor *const *gin)
{
    return maas_dropout_backward(gin[0]->data, gout[0]->data, nd->saved[0]->data, gout[0]->size);
}

/* ----------------------------------------------------------------- cast */

typedef struct {
    int64_t dtype; /* the maas_dtype to convert to */
} cast_attr;

static const maas_attr_field cast_fields[] = {{"dtype", 'l', offsetof(cast_attr, dtype)},
                                              {NULL, 0, 0}};

static maas_status cast_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    int64_t dt = CATTR(cast_attr, nd)->dtype;
    if (dt < 0 || dt >= MAAS_DTYPE_COUNT)
        return maas_error(MAAS_ERR_TYPE, "cast: unknown dtype code %lld", (long long)dt);
    spec_like(&outs[0], nd->in[0]);
    outs[0].dtype = (maas_dtype)dt;
    /* only float32 -> float32 carries a gradient (as in Keras) */
    if (!(dt == MAAS_F32 && nd->in[0]->dtype == MAAS_F32))
        nd->nograd = 1u;
    return MAAS_OK;
}

static maas_status cast_forward(maas_node *nd)
{
    return maas_cast(nd->out[0]->ptr, nd->out[0]->dtype, nd->in[0]->ptr, nd->in[0]->dtype,
                     nd->in[0]->size);
}

static maas_status cast_backward(const maas_node *nd, const maas_tensor *const *gout,
                                 maas_tensor *const *gin)
{
    return maas_accumulate(gin[0]->data, gout[0]->data, gout[0]->size);
}

/* --------------------------------------------------------------- random */

typedef struct {
    uint64_t seed, stream; /* MAAS_OPF_RANDOM: first */
    int64_t kind;          /* 0 uniform [a, b), 1 normal (mean a, std b) */
    double a, b;
    int64_t ndim, shape[MAAS_MAX_DIMS];
} random_attr;

static const maas_attr_field random_fields[] = {
    {"seed", 'u', offsetof(random_attr, seed)}, {"stream", 'u', offsetof(random_attr, stream)},
    {"kind", 'l', offsetof(random_attr, kind)},  {"a", 'd', offsetof(random_attr, a)},
    {"b", 'd', offsetof(random_attr, b)},        {"shape", 'S', offsetof(random_attr, ndim)},
    {NULL, 0, 0}};

static maas_status random_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const random_attr *a = CATTR(random_attr, nd);
    if (a->kind != 0 && a->kind != 1)
        return maas_error(MAAS_ERR_VALUE, "random: unknown kind %lld", (long long)a->kind);
    if (a->ndim < 0 || a->ndim > MAAS_MAX_DIMS)
        return maas_error(MAAS_ERR_VALUE, "random: at most %d dimensions", MAAS_MAX_DIMS);
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] < 0)
            return maas_error(MAAS_ERR_VALUE, "random: negative dimension %lld", (long long)a->shape[d]);
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = (int)a->ndim;
    memcpy(outs[0].shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    return MAAS_OK;
}

static maas_status random_forward(maas_node *nd)
{
    const random_attr *a = CATTR(random_attr, nd);
    maas_tensor *o = nd->out[0];
    return a->kind ? maas_rng_fill_normal(o->data, o->size, (float)a->a, (float)a->b, a->seed, a->stream)
                   : maas_rng_fill_uniform(o->data, o->size, (float)a->a, (float)a->b, a->seed, a->stream);
}

#define random_backward NULL

/* ---------------------------------------------------------------- table */

static MAAS_OPDEF(def_unary, "unary", 1, 1, unary_attr, 0, unary_fields, unary);
static MAAS_OPDEF(def_binary, "binary", 2, 2, binary_attr, 0, binary_fields, binary);
static MAAS_OPDEF(def_softmax, "softmax", 1, 1, softmax_attr, 0, softmax_fields, softmax);
static MAAS_OPDEF(def_reduce, "reduce", 1, 1, reduce_attr, 0, reduce_fields, reduce);
static MAAS_OPDEF(def_matmul, "matmul", 2, 2, matmul_attr, 0, matmul_fields, matmul);
static MAAS_OPDEF(def_dense, "dense", 2, 3, dense_attr, 0, no_fields, dense);
static MAAS_OPDEF(def_view, "view", 1, 1, view_attr, MAAS_OPF_VIEW, view_fields, view);
static MAAS_OPDEF(def_rows, "rows", 1, 1, rows_attr, 0, rows_fields, rows);
static MAAS_OPDEF(def_take, "take", 2, 2, take_attr, 0, no_fields, take);
static MAAS_OPDEF(def_transpose, "transpose", 1, 1, transpose_attr, 0, no_fields, transpose);
static MAAS_OPDEF(def_concat, "concatenate", 1, MAAS_OP_MAX_IN, concat_attr, 0, concat_fields, concat);
static MAAS_OPDEF(def_loss, "loss", 2, 2, loss_attr, 0, loss_fields, loss);
static MAAS_OPDEF(def_dropout, "dropout", 1, 1, dropout_attr, MAAS_OPF_RANDOM, dropout_fields, dropout);
static MAAS_OPDEF(def_random, "random", 0, 0, random_attr, MAAS_OPF_RANDOM, random_fields, random);
static MAAS_OPDEF(def_cast, "cast", 1, 1, cast_attr, 0, cast_fields, cast);

static const maas_op_def *const table[MAAS_OP_COUNT] = {
    [MAAS_OP_UNARY] = &def_unary,
    [MAAS_OP_BINARY] = &def_binary,
    [MAAS_OP_SOFTMAX] = &def_softmax,
    [MAAS_OP_REDUCE] = &def_reduce,
    [MAAS_OP_MATMUL] = &def_matmul,
    [MAAS_OP_DENSE] = &def_dense,
    [MAAS_OP_VIEW] = &def_view,
    [MAAS_OP_ROWS] = &def_rows,
    [MAAS_OP_TAKE] = &def_take,
    [MAAS_OP_TRANSPOSE] = &def_transpose,
    [MAAS_OP_CONCAT] = &def_concat,
    [MAAS_OP_LOSS] = &def_loss,
    [MAAS_OP_DROPOUT] = &def_dropout,
    [MAAS_OP_RANDOM] = &def_random,
    [MAAS_OP_CAST] = &def_cast,
    [MAAS_OP_CONV2D] = &maas_opdef_conv2d, [MAAS_OP_CONV2D_TRANSPOSE] = &maas_opdef_conv2d_transpose,
    [MAAS_OP_LAYERNORM] = &maas_opdef_layernorm,
    [MAAS_OP_BATCHNORM] = &maas_opdef_batchnorm,
    [MAAS_OP_GROUPNORM] = &maas_opdef_groupnorm,
    [MAAS_OP_POOL2D] = &maas_opdef_pool2d,
    [MAAS_OP_PAD2D] = &maas_opdef_pad2d,
    [MAAS_OP_RESIZE2D] = &maas_opdef_resize2d,
    [MAAS_OP_PERMUTE] = &maas_opdef_permute,
    [MAAS_OP_TRANSFORM2D] = &maas_opdef_transform2d,
    [MAAS_OP_EMBEDDING] = &maas_opdef_embedding,
    [MAAS_OP_RNN] = &maas_opdef_rnn,
    [MAAS_OP_ATTENTION] = &maas_opdef_attention, [MAAS_OP_ATTENTION_DROPOUT] = &maas_opdef_attention_dropout,
    [MAAS_OP_QPACK] = &maas_opdef_qpack, [MAAS_OP_QDENSE] = &maas_opdef_qdense,
    [MAAS_OP_SPDENSE] = &maas_opdef_spdense,
    [MAAS_OP_QCONV2D] = &maas_opdef_qconv2d, [MAAS_OP_QEMBEDDING] = &maas_opdef_qembedding,
};

const maas_op_def *maas_op_get(int op)
{
    return op >= 0 && op < MAAS_OP_COUNT ? table[op] : NULL;
}

/* ------------------------------------------------------------- executor */

void maas_node_release_outputs(maas_node *nd)
{
    for (int k = 0; k < nd->nout; k++) {
        maas_tensor_decref(nd->out[k]);
        nd->out[k] = NULL;
    }
    for (int k = 0; k < nd->nsaved; k++) {
        maas_tensor_decref(nd->saved[k]);
        nd->saved[k] = NULL;
    }
}

static maas_tensor *make(const maas_tensor_spec *sp)
{
    return maas_tensor_new_typed(sp->dtype, sp->ndim, sp->shape);
}

maas_status maas_op_setup(maas_node *nd)
{
    const maas_op_def *def = maas_op_get(nd->op);
    if (!def)
        return maas_error(MAAS_ERR_VALUE, "unknown op id %d", nd->op);
    if (nd->nin < def->min_in || nd->nin > def->max_in)
        return maas_error(MAAS_ERR_VALUE, "%s: takes %d to %d inputs, got %d", def->name,
                          def->min_in, def->max_in, nd->nin);
    for (int i = 0; i < nd->nin; i++)
        if (!nd->in[i])
            return maas_error(MAAS_ERR_STATE, "%s: input %d is missing", def->name, i);
    maas_tensor_spec outs[MAAS_OP_MAX_OUT], saved[MAAS_OP_MAX_SAVED];
    memset(outs, 0, sizeof outs);
    memset(saved, 0, sizeof saved);
    nd->nout = 1;
    nd->nsaved = 0;
    nd->nograd = 0;
    memset(nd->out, 0, sizeof nd->out);
    memset(nd->saved, 0, sizeof nd->saved);
    maas_status s = def->infer(nd, outs, saved);
    if (s != MAAS_OK) {
        nd->nout = nd->nsaved = 0;
        return s;
    }
    nd->nograd |= def->state_in;
    for (int k = 0; k < nd->nout; k++) {
        if ((def->flags & MAAS_OPF_VIEW) && k == 0)
            nd->out[0] = maas_tensor_view(nd->in[0], outs[0].view_offset, outs[0].ndim, outs[0].shape);
        else
            nd->out[k] = make(&outs[k]);
        if (!nd->out[k])
            goto fail;
    }
    for (int k = 0; k < nd->nsaved; k++)
        if (!(nd->saved[k] = make(&saved[k])))
            goto fail;
    return MAAS_OK;
fail:
    maas_node_release_outputs(nd);
    nd->nout = nd->nsaved = 0;
    return MAAS_ERR_NOMEM;
}

maas_status maas_op_forward(maas_node *nd)
{
    return table[nd->op]->forward(nd);
}

maas_status maas_op_run(maas_node *nd)
{
    maas_status s = maas_op_setup(nd);
    if (s == MAAS_OK && (s = maas_op_forward(nd)) != MAAS_OK)
        maas_node_release_outputs(nd);
    return s;
}

double maas_op_work(const maas_node *nd)
{
    double w = 0.0;
    if (nd->op == MAAS_OP_CONV2D || nd->op == MAAS_OP_CONV2D_TRANSPOSE) return maas_conv_work(nd);
    if (nd->op == MAAS_OP_MATMUL) {
        const matmul_attr *a = CATTR(matmul_attr, nd);
        return (double)a->batch * (double)a->M * (double)a->N * (double)a->K;
    }
    if (nd->op == MAAS_OP_DENSE) {
        const dense_attr *a = CATTR(dense_attr, nd);
        return (double)a->N * (double)a->C * (double)a->U;
    }
    if (nd->op == MAAS_OP_ATTENTION || nd->op == MAAS_OP_ATTENTION_DROPOUT)
        return maas_attention_work(nd);
    if (nd->op == MAAS_OP_QCONV2D) return maas_qconv_work(nd);
    for (int i = 0; i < nd->nin; i++)
        w += (double)nd->in[i]->size;
    for (int k = 0; k < nd->nout; k++)
        w += (double)nd->out[k]->size;
    return w;
}
