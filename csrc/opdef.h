/* opdef.h -- what an op table entry's glue needs (internal to the core).
 *
 * The table (optable.c) holds a pointer per op id. An op family may define
 * its entries beside its kernels (csrc/ops/<family>.c): include this
 * header, write the attribute struct, its field list, infer/forward/
 * backward, then
 *     MAAS_OPDEF(maas_opdef_conv2d, "conv2d", 2, 3, conv2d_attr, 0, conv2d_fields, conv2d);
 * declare it below and add `[MAAS_OP_CONV2D] = &maas_opdef_conv2d` to the
 * table. */
#ifndef MAAS_OPDEF_H
#define MAAS_OPDEF_H

#include "maas.h"

#include <stddef.h>
#include <string.h>

#define SHAPE(t, buf) maas_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)
#define ATTR(type, nd) ((type *)(void *)(nd)->attr)
#define CATTR(type, nd) ((const type *)(const void *)(nd)->attr)
#define GDATA(k) (gin[k] ? gin[k]->data : NULL)

static inline maas_status need_f32(const maas_node *nd, int i, const char *name)
{
    if (nd->in[i]->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "%s: expected a float32 tensor, received %s (cast it "
                          "with maas.ops.cast(x, \"float32\"))",
                          name, maas_dtype_name(nd->in[i]->dtype));
    return MAAS_OK;
}

static inline maas_status all_f32(const maas_node *nd, const char *name)
{
    for (int i = 0; i < nd->nin; i++) {
        maas_status s = need_f32(nd, i, name);
        if (s != MAAS_OK)
            return s;
    }
    return MAAS_OK;
}

static inline void spec_like(maas_tensor_spec *o, const maas_tensor *t)
{
    o->dtype = t->dtype;
    o->ndim = t->ndim;
    memcpy(o->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
}

static inline maas_status normalize_axis(int64_t axis, int ndim, const char *op, int64_t *out)
{
    int n = ndim ? ndim : 1;
    if (axis < -n || axis >= n)
        return maas_error(MAAS_ERR_VALUE, "%s: axis %lld is out of bounds for a tensor of %d dimensions",
                          op, (long long)axis, ndim);
    *out = axis < 0 ? axis + n : axis;
    return MAAS_OK;
}

/* (outer, n, inner) of t around `axis`. */
static inline void split_axis(const maas_tensor *t, int64_t axis, int64_t *outer, int64_t *n,
                       int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int64_t d = 0; d < axis; d++)
        *outer *= t->shape[d];
    *n = t->ndim ? t->shape[axis] : 1;
    for (int64_t d = axis + 1; d < t->ndim; d++)
        *inner *= t->shape[d];
}

/* An entry named var: f##_infer, f##_forward, f##_backward (NULL-able
 * via `#define f_backward NULL`). */
#define MAAS_OPDEF(var, nm, lo, hi, attr, fl, flds, f)                                   \
    const maas_op_def var = {nm, lo, hi, sizeof(attr), fl, flds, f##_infer, f##_forward,   \
                             f##_backward, 0}
#define MAAS_OPDEF_STATE(var, nm, lo, hi, attr, fl, flds, f, state)                     \
    const maas_op_def var = {nm, lo, hi, sizeof(attr), fl, flds, f##_infer, f##_forward,   \
                             f##_backward, state}

/* Entries defined outside optable.c (one line per op, in id order). */
extern const maas_op_def maas_opdef_conv2d, maas_opdef_conv2d_transpose; double maas_conv_work(const maas_node *nd);
extern const maas_op_def maas_opdef_layernorm;
extern const maas_op_def maas_opdef_batchnorm;
extern const maas_op_def maas_opdef_groupnorm;
extern const maas_op_def maas_opdef_pool2d;
extern const maas_op_def maas_opdef_pad2d;
extern const maas_op_def maas_opdef_resize2d;
extern const maas_op_def maas_opdef_permute;
extern const maas_op_def maas_opdef_transform2d;
extern const maas_op_def maas_opdef_embedding;
extern const maas_op_def maas_opdef_rnn;
extern const maas_op_def maas_opdef_attention, maas_opdef_attention_dropout; double maas_attention_work(const maas_node *nd);
extern const maas_op_def maas_opdef_qpack, maas_opdef_qdense, maas_opdef_spdense;
extern const maas_op_def maas_opdef_qconv2d, maas_opdef_qembedding; double maas_qconv_work(const maas_node *nd);

#endif
