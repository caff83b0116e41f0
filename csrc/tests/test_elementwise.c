/* Broadcasting binary ops: forward against a double reference, backward
 * against central differences (max/min and comparisons analytically),
 * accumulation into existing gradients, sizes 0 / 1, scalars, the threaded
 * paths and thread-count independence of broadcast reductions. */
#include "check.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static double ref_f(int op, double x, double y)
{
    switch (op) {
    case MAAS_B_ADD: return x + y;
    case MAAS_B_SUB: return x - y;
    case MAAS_B_MUL: return x * y;
    case MAAS_B_DIV: return x / y;
    case MAAS_B_POW: return pow(x, y);
    case MAAS_B_MAXIMUM: return x >= y ? x : y;
    case MAAS_B_MINIMUM: return x <= y ? x : y;
    case MAAS_B_LT: return x < y;
    case MAAS_B_LE: return x <= y;
    case MAAS_B_GT: return x > y;
    case MAAS_B_GE: return x >= y;
    case MAAS_B_EQ: return x == y;
    case MAAS_B_NE: return x != y;
    }
    return NAN;
}

/* offset into t of output multi-index idx (NumPy broadcasting) */
static long bcast_off(const maas_tensor *t, int on, const int64_t *idx)
{
    long off = 0;
    for (int d = 0; d < t->ndim; d++) {
        int od = on - t->ndim + d;
        long i = t->shape[d] == 1 ? 0 : (long)idx[od];
        off = off * t->shape[d] + i;
    }
    return off;
}

static maas_tensor *mk(int nd, const int64_t *shape, unsigned seed, int kind)
{
    maas_tensor *t = maas_tensor_new(nd, shape);
    check_fill(t->data, t->size, seed);
    for (int64_t i = 0; i < t->size; i++) {
        float v = t->data[i];
        if (kind == 1) /* positive, for pow's base */
            t->data[i] = 0.5f + (v + 1.0f);
        else if (kind == 2) /* away from zero, for divisors */
            t->data[i] = (v < 0 ? -1.0f : 1.0f) * (0.5f + fabsf(v));
    }
    return t;
}

static void check_case(int op, int an, const int64_t *as, int bn,
                       const int64_t *bs, unsigned seed)
{
    int on;
    int64_t os[MAAS_MAX_DIMS];
    CHECK_OK(maas_broadcast_shape("t", an, as, bn, bs, &on, os));
    maas_tensor *a = mk(an, as, seed, op == MAAS_B_POW ? 1 : 0);
    maas_tensor *b = mk(bn, bs, seed + 1000, op == MAAS_B_DIV ? 2 : 0);
    if (op == MAAS_B_POW)
        for (int64_t i = 0; i < b->size; i++) b->data[i] *= 2.0f;
    if (op >= MAAS_B_LT && op <= MAAS_B_NE && b->size > 2)
        b->data[1] = a->data[0]; /* some ties for the comparisons */
    maas_tensor *out = maas_tensor_new(on, os);
    maas_tensor *g = mk(on, os, seed + 2000, 0);
    maas_tensor *ga = maas_tensor_new(an, as), *gb = maas_tensor_new(bn, bs);
    for (int64_t i = 0; i < ga->size; i++) ga->data[i] = 0.25f;
    for (int64_t i = 0; i < gb->size; i++) gb->data[i] = -0.75f;
    CHECK_OK(maas_binary_forward((maas_binary_op)op, out, a, b));
    CHECK_OK(maas_binary_backward((maas_binary_op)op, ga, gb, g, a, b, out));

    double *ea = calloc((size_t)a->size + 1, sizeof(double));
    double *eb = calloc((size_t)b->size + 1, sizeof(double));
    int64_t idx[MAAS_MAX_DIMS] = {0};
    int bad = 0;
    for (int64_t i = 0; i < out->size; i++) {
        int64_t r = i;
        for (int d = on - 1; d >= 0; d--) { idx[d] = r % os[d]; r /= os[d]; }
        long ia = bcast_off(a, on, idx), ib = bcast_off(b, on, idx);
        double x = a->data[ia], y = b->data[ib], gg = g->data[i], h = 1e-4;
        int before = check_failures;
        CHECK_CLOSE(out->data[i], ref_f(op, x, y), 1e-5);
        if (check_failures != before && bad++ < 3)
            fprintf(stderr, "  op %d out[%ld]\n", op, (long)i);
        if (op == MAAS_B_MAXIMUM) {
            ea[ia] += x >= y ? gg : 0; eb[ib] += x >= y ? 0 : gg;
        } else if (op == MAAS_B_MINIMUM) {
            ea[ia] += x <= y ? gg : 0; eb[ib] += x <= y ? 0 : gg;
        } else if (op < MAAS_B_LT) {
            ea[ia] += gg * (ref_f(op, x + h, y) - ref_f(op, x - h, y)) / (2 * h);
            eb[ib] += gg * (ref_f(op, x, y + h) - ref_f(op, x, y - h)) / (2 * h);
        }
    }
    for (int64_t i = 0; i < a->size; i++) {
        int before = check_failures;
        CHECK_CLOSE(ga->data[i], 0.25 + ea[i], 1e-3);
        if (check_failures != before && bad++ < 6)
            fprintf(stderr, "  op %d ga[%ld]\n", op, (long)i);
    }
    for (int64_t i = 0; i < b->size; i++) {
        int before = check_failures;
        CHECK_CLOSE(gb->data[i], -0.75 + eb[i], 1e-3);
        if (check_failures != before && bad++ < 9)
            fprintf(stderr, "  op %d gb[%ld]\n", op, (long)i);
    }
    /* one gradient only: the other stays NULL */
    for (int64_t i = 0; i < gb->size; i++) gb->data[i] = 0.0f;
    CHECK_OK(maas_binary_backward((maas_binary_op)op, NULL, gb, g, a, b, out));
    for (int64_t i = 0; i < b->size; i++)
        CHECK_CLOSE(gb->data[i], eb[i], 1e-3);
    free(ea); free(eb);
    maas_tensor_decref(a); maas_tensor_decref(b); maas_tensor_decref(out);
    maas_tensor_decref(g); maas_tensor_decref(ga); maas_tensor_decref(gb);
}

#define S(...) (int64_t[]){__VA_ARGS__}

/* Broadcast gradients are bit-identical for 1 and 3 threads. */
static void check_deterministic(int an, const int64_t *as, int bn, const int64_t *bs)
{
    int on;
    int64_t os[MAAS_MAX_DIMS];
    CHECK_OK(maas_broadcast_shape("t", an, as, bn, bs, &on, os));
    maas_tensor *a = mk(an, as, 5, 0), *b = mk(bn, bs, 6, 0);
    maas_tensor *out = maas_tensor_new(on, os), *g = mk(on, os, 7, 0);
    maas_tensor *ga[2], *gb[2];
    CHECK_OK(maas_binary_forward(MAAS_B_MUL, out, a, b));
    for (int k = 0; k < 2; k++) {
        maas_set_num_threads(k ? 3 : 1);
        ga[k] = maas_tensor_zeros(an, as);
        gb[k] = maas_tensor_zeros(bn, bs);
        CHECK_OK(maas_binary_backward(MAAS_B_MUL, ga[k], gb[k], g, a, b, out));
    }
    CHECK(memcmp(ga[0]->data, ga[1]->data, sizeof(float) * (size_t)a->size) == 0);
    CHECK(memcmp(gb[0]->data, gb[1]->data, sizeof(float) * (size_t)b->size) == 0);
    for (int k = 0; k < 2; k++) { maas_tensor_decref(ga[k]); maas_tensor_decref(gb[k]); }
    maas_tensor_decref(a); maas_tensor_decref(b); maas_tensor_decref(out);
    maas_tensor_decref(g);
    maas_set_num_threads(3);
}

int main(void)
{
    maas_set_num_threads(3);
    for (int op = 0; op < MAAS_B_COUNT; op++) {
        unsigned s = 10u * (unsigned)op;
        check_case(op, 2, S(4, 3), 2, S(4, 3), s + 1);
        check_case(op, 2, S(4, 3), 1, S(3), s + 2);
        check_case(op, 1, S(3), 2, S(4, 3), s + 3);
        check_case(op, 2, S(4, 1), 2, S(1, 5), s + 4);
        check_case(op, 3, S(2, 1, 3), 2, S(4, 1), s + 5);
        check_case(op, 0, S(0), 2, S(3, 4), s + 6);        /* 0-d scalar */
        check_case(op, 2, S(3, 4), 1, S(1), s + 7);        /* size-1 operand */
        check_case(op, 1, S(1), 1, S(1), s + 8);
        check_case(op, 0, S(0), 0, S(0), s + 9);
        check_case(op, 2, S(0, 3), 1, S(3), s + 10);      /* size 0 */
        check_case(op, 3, S(2, 3, 1), 3, S(1, 3, 4), s + 11);
        check_case(op, 4, S(2, 1, 3, 1), 3, S(4, 1, 1), s + 12);
        check_case(op, 4, S(2, 1, 3, 5), 3, S(4, 1, 5), s + 13);
    }
    /* threaded paths: same shape, bias-like, column-like, scalar, 3-d */
    int big_ops[] = {MAAS_B_ADD, MAAS_B_MUL, MAAS_B_DIV, MAAS_B_POW, MAAS_B_MAXIMUM,
                     MAAS_B_GT};
    for (unsigned k = 0; k < sizeof big_ops / sizeof big_ops[0]; k++) {
        int op = big_ops[k];
        check_case(op, 2, S(300, 200), 2, S(300, 200), 100 + k);
        check_case(op, 2, S(300, 200), 1, S(200), 110 + k);
        check_case(op, 2, S(300, 200), 2, S(300, 1), 120 + k);
        check_case(op, 0, S(0), 2, S(300, 200), 130 + k);
        check_case(op, 3, S(40, 30, 50), 3, S(40, 1, 50), 140 + k);
    }
    check_deterministic(2, S(300, 200), 1, S(200));
    check_deterministic(2, S(300, 200), 2, S(300, 1));
    check_deterministic(3, S(40, 30, 50), 3, S(1, 30, 1));
    check_deterministic(0, S(0), 1, S(70000));

    /* pow's exponent gradient only where the base is positive */
    {
        maas_tensor *a = maas_tensor_new(1, S(3)), *b = maas_tensor_new(1, S(3));
        maas_tensor *o = maas_tensor_new(1, S(3)), *g = maas_tensor_new(1, S(3));
        maas_tensor *ga = maas_tensor_zeros(1, S(3)), *gb = maas_tensor_zeros(1, S(3));
        float av[3] = {-1, 0, 2}, bv[3] = {2, 2, 2};
        memcpy(a->data, av, sizeof av); memcpy(b->data, bv, sizeof bv);
        for (int i = 0; i < 3; i++) g->data[i] = 1;
        CHECK_OK(maas_binary_forward(MAAS_B_POW, o, a, b));
        CHECK_OK(maas_binary_backward(MAAS_B_POW, ga, gb, g, a, b, o));
        CHECK(gb->data[0] == 0 && gb->data[1] == 0);
        CHECK_CLOSE(gb->data[2], 4 * log(2.0), 1e-6);
        CHECK_CLOSE(ga->data[0], -2, 1e-6);
        CHECK(ga->data[1] == 0);
        /* maximum ties go to a, minimum ties to a */
        for (int i = 0; i < 3; i++) { ga->data[i] = gb->data[i] = 0; b->data[i] = av[i]; }
        CHECK_OK(maas_binary_backward(MAAS_B_MAXIMUM, ga, gb, g, a, b, o));
        CHECK_OK(maas_binary_backward(MAAS_B_MINIMUM, ga, gb, g, a, b, o));
        CHECK(ga->data[0] == 2 && gb->data[0] == 0);
        maas_tensor_decref(a); maas_tensor_decref(b); maas_tensor_decref(o);
        maas_tensor_decref(g); maas_tensor_decref(ga); maas_tensor_decref(gb);
    }
    /* shape errors and unknown ops */
    {
        maas_tensor *a = maas_tensor_new(1, S(3)), *b = maas_tensor_new(1, S(4));
        maas_tensor *o = maas_tensor_new(1, S(3));
        CHECK(maas_binary_forward(MAAS_B_ADD, o, a, b) == MAAS_ERR_SHAPE);
        CHECK(maas_binary_forward((maas_binary_op)42, o, a, a) == MAAS_ERR_VALUE);
        CHECK(maas_binary_backward(MAAS_B_ADD, a, b, o, a, a, o) == MAAS_ERR_SHAPE);
        maas_tensor_decref(a); maas_tensor_decref(b); maas_tensor_decref(o);
    }
    return check_done("test_elementwise");
}
