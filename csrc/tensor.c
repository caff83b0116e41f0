/* tensor.c -- maas_tensor: typed (maas_dtype), C-contiguous, N-d, reference counted.
 * A tensor owns its buffer, wraps external memory (released through a
 * callback), or is a view on a base tensor. */
#include "maas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    size_t size;
    const char *name;
} dtypes[MAAS_DTYPE_COUNT] = {
    [MAAS_F32] = {4, "float32"}, [MAAS_I32] = {4, "int32"}, [MAAS_I64] = {8, "int64"},
    [MAAS_I8] = {1, "int8"},     [MAAS_U8] = {1, "uint8"},  [MAAS_BOOL] = {1, "bool"},
};

size_t maas_dtype_size(maas_dtype dt)
{
    return (unsigned)dt < MAAS_DTYPE_COUNT ? dtypes[dt].size : 0;
}

const char *maas_dtype_name(maas_dtype dt)
{
    return (unsigned)dt < MAAS_DTYPE_COUNT ? dtypes[dt].name : "?";
}

static maas_tensor *tensor_header(maas_dtype dt, int ndim, const int64_t *shape)
{
    if ((unsigned)dt >= MAAS_DTYPE_COUNT) {
        maas_error(MAAS_ERR_TYPE, "unknown dtype code %d", (int)dt);
        return NULL;
    }
    if (ndim < 0 || ndim > MAAS_MAX_DIMS) {
        maas_error(MAAS_ERR_VALUE, "tensors have 0 to %d dimensions, got %d",
                   MAAS_MAX_DIMS, ndim);
        return NULL;
    }
    int64_t size;
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0) {
            maas_error(MAAS_ERR_VALUE, "negative dimension %lld in a shape",
                       (long long)shape[d]);
            return NULL;
        }
    if (maas_shape_size(ndim, shape, &size) != 0) {
        maas_error(MAAS_ERR_NOMEM, "tensor size overflows");
        return NULL;
    }
    maas_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        maas_error(MAAS_ERR_NOMEM, "out of memory allocating a tensor");
        return NULL;
    }
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->size = size;
    t->refcount = 1;
    return t;
}

/* Number of floats (the allocation unit) that hold n elements of dt. */
static int64_t float_units(maas_dtype dt, int64_t n)
{
    int64_t bytes;
    if (maas_mul_size(n, (int64_t)maas_dtype_size(dt), &bytes) != 0)
        return -1;
    return (bytes + 3) / 4;
}

maas_tensor *maas_tensor_new_typed(maas_dtype dt, int ndim, const int64_t *shape)
{
    maas_tensor *t = tensor_header(dt, ndim, shape);
    if (!t)
        return NULL;
    int64_t units = float_units(dt, t->size);
    if (units < 0) {
        free(t);
        maas_error(MAAS_ERR_NOMEM, "tensor size overflows");
        return NULL;
    }
    t->ptr = maas_alloc_floats(units);
    if (!t->ptr) {
        free(t);
        return NULL;
    }
    return t;
}

maas_tensor *maas_tensor_zeros_typed(maas_dtype dt, int ndim, const int64_t *shape)
{
    maas_tensor *t = maas_tensor_new_typed(dt, ndim, shape);
    if (t)
        memset(t->ptr, 0, (size_t)t->size * maas_dtype_size(dt));
    return t;
}

maas_tensor *maas_tensor_new(int ndim, const int64_t *shape)
{
    return maas_tensor_new_typed(MAAS_F32, ndim, shape);
}

maas_tensor *maas_tensor_zeros(int ndim, const int64_t *shape)
{
    return maas_tensor_zeros_typed(MAAS_F32, ndim, shape);
}

maas_tensor *maas_tensor_new_like(const maas_tensor *t)
{
    return maas_tensor_new_typed(t->dtype, t->ndim, t->shape);
}

maas_tensor *maas_tensor_zeros_like(const maas_tensor *t)
{
    return maas_tensor_zeros_typed(t->dtype, t->ndim, t->shape);
}

maas_tensor *maas_tensor_wrap_typed(void *data, maas_dtype dt, int ndim,
                                    const int64_t *shape, void *owner,
                                    void (*release)(void *))
{
    maas_tensor *t = tensor_header(dt, ndim, shape);
    if (!t)
        return NULL;
    t->ptr = data;
    t->owner = owner;
    t->release = release;
    return t;
}

maas_tensor *maas_tensor_wrap(float *data, int ndim, const int64_t *shape,
                              void *owner, void (*release)(void *))
{
    return maas_tensor_wrap_typed(data, MAAS_F32, ndim, shape, owner, release);
}

maas_tensor *maas_tensor_view(maas_tensor *base, int64_t offset, int ndim,
                              const int64_t *shape)
{
    maas_tensor *t = tensor_header(base->dtype, ndim, shape);
    if (!t)
        return NULL;
    if (offset < 0 || offset > base->size || t->size > base->size - offset) {
        free(t);
        maas_error(MAAS_ERR_VALUE, "view out of bounds of its base tensor");
        return NULL;
    }
    t->ptr = (char *)base->ptr + offset * (int64_t)maas_dtype_size(base->dtype);
    t->base = base;
    maas_tensor_incref(base);
    return t;
}

void maas_tensor_incref(maas_tensor *t)
{
    if (t)
        t->refcount++;
}

void maas_tensor_decref(maas_tensor *t)
{
    while (t && --t->refcount == 0) {
        maas_tensor *base = t->base;
        if (base)
            ; /* memory belongs to base */
        else if (t->release)
            t->release(t->owner);
        else
            maas_free(t->data);
        free(t);
        t = base; /* drop the view's reference on its base */
    }
}

int maas_same_shape(const maas_tensor *a, const maas_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

const char *maas_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t used = 0;
    if (n == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, n - used, "(");
    for (int d = 0; d < ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "",
                                 (long long)shape[d]);
    if (used < n)
        snprintf(buf + used, n - used, ndim == 1 ? ",)" : ")");
    return buf;
}

maas_status maas_broadcast_shape(const char *op, int an, const int64_t *as,
                                 int bn, const int64_t *bs, int *on, int64_t *os)
{
    int n = an > bn ? an : bn;
    for (int i = 0; i < n; i++) {
        int ai = an - n + i, bi = bn - n + i;
        int64_t da = ai >= 0 ? as[ai] : 1, db = bi >= 0 ? bs[bi] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[160], sb[160];
            return maas_error(MAAS_ERR_SHAPE,
                              "%s: operands could not be broadcast together with "
                              "shapes %s and %s",
                              op, maas_shape_str(an, as, sa, sizeof sa),
                              maas_shape_str(bn, bs, sb, sizeof sb));
        }
        os[i] = da == 1 ? db : da;
    }
    *on = n;
    return MAAS_OK;
}
