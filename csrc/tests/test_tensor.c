/* The tensor struct: allocation, views, refcounts, broadcasting shapes,
 * overflow checks. */
#include "check.h"
#include <stdint.h>
#include <string.h>

static int released = 0;
static void on_release(void *owner) { released += owner != NULL; }

int main(void)
{
    int64_t shape[2] = {3, 4};
    maas_tensor *t = maas_tensor_zeros(2, shape);
    CHECK(t && t->size == 12 && t->data[11] == 0.0f);
    maas_tensor *v = maas_tensor_view(t, 4, 1, (int64_t[]){4});
    CHECK(v && v->data == t->data + 4 && t->refcount == 2);
    maas_tensor_decref(t);
    v->data[0] = 5.0f; /* base still alive through the view */
    maas_tensor_decref(v);

    float buf[6];
    maas_tensor *w = maas_tensor_wrap(buf, 2, (int64_t[]){2, 3}, buf, on_release);
    maas_tensor_decref(w);
    CHECK(released == 1);

    int64_t huge[3] = {INT64_MAX / 2, 4, 4};
    CHECK(maas_tensor_new(3, huge) == NULL);
    CHECK(maas_tensor_view(t = maas_tensor_new(1, (int64_t[]){2}), 1, 1, (int64_t[]){2}) == NULL);
    maas_tensor_decref(t);

    int on; int64_t os[MAAS_MAX_DIMS];
    CHECK_OK(maas_broadcast_shape("add", 2, (int64_t[]){5, 1}, 1, (int64_t[]){3}, &on, os));
    CHECK(on == 2 && os[0] == 5 && os[1] == 3);
    CHECK(maas_broadcast_shape("add", 1, (int64_t[]){2}, 1, (int64_t[]){3}, &on, os) == MAAS_ERR_SHAPE);

    /* typed tensors: sizes, zeroing, views in elements of their dtype */
    maas_tensor *l = maas_tensor_zeros_typed(MAAS_I64, 2, (int64_t[]){2, 3});
    CHECK(l && l->dtype == MAAS_I64 && l->size == 6 && ((int64_t *)l->ptr)[5] == 0);
    maas_tensor *lv = maas_tensor_view(l, 3, 1, (int64_t[]){3});
    CHECK(lv && lv->dtype == MAAS_I64 && (int64_t *)lv->ptr == (int64_t *)l->ptr + 3);
    maas_tensor *lc = maas_tensor_new_like(lv);
    CHECK(lc && lc->dtype == MAAS_I64 && lc->size == 3);
    maas_tensor_decref(lc);
    maas_tensor_decref(lv);
    maas_tensor_decref(l);
    maas_tensor *bt = maas_tensor_new_typed(MAAS_BOOL, 1, (int64_t[]){5});
    CHECK(bt && maas_dtype_size(bt->dtype) == 1);
    maas_tensor_decref(bt);
    CHECK(maas_tensor_new_typed((maas_dtype)MAAS_DTYPE_COUNT, 0, NULL) == NULL);
    CHECK(maas_dtype_size(MAAS_I8) == 1 && maas_dtype_size(MAAS_I32) == 4 && maas_dtype_size(MAAS_I64) == 8);
    CHECK(strcmp(maas_dtype_name(MAAS_U8), "uint8") == 0 && strcmp(maas_dtype_name((maas_dtype)42), "?") == 0);

    maas_tensor *e = maas_tensor_zeros(1, (int64_t[]){0});
    CHECK(e && e->size == 0);
    maas_tensor_decref(e);
    return check_done("test_tensor");
}
