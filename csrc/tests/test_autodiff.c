/* The tape and the plan, without Python: gradients of a recorded dense ->
 * relu -> mean-squared-error chain against hand-derived values, a tensor
 * used twice, an unrelated source, and a plan step against the same. */
#include "check.h"
#include <string.h>

static maas_tensor *filled(int ndim, const int64_t *shape, unsigned seed)
{
    maas_tensor *t = maas_tensor_new(ndim, shape);
    check_fill(t->data, (long)t->size, seed);
    return t;
}

int main(void)
{
    const int64_t N = 4, C = 3, U = 2;
    maas_tensor *x = filled(2, (int64_t[]){N, C}, 1);
    maas_tensor *w = filled(2, (int64_t[]){C, U}, 2);
    maas_tensor *b = filled(1, (int64_t[]){U}, 3);
    maas_tensor *y = filled(2, (int64_t[]){N, U}, 4);
    maas_tensor *other = filled(1, (int64_t[]){U}, 5);
    w->requires_grad = b->requires_grad = other->requires_grad = 1;

    maas_tape *tape = maas_tape_new();
    CHECK(tape != NULL);
    maas_tensor *h = maas_tensor_new(2, (int64_t[]){N, U});
    CHECK_OK(maas_dense_forward(h->data, x->data, w->data, b->data, N, C, U));
    maas_node n1 = {.backward = maas_grad_dense, .name = "dense", .ninputs = 3,
                    .in = {x, w, b}, .out = h, .i = {N, C, U}};
    CHECK_OK(maas_tape_record(tape, &n1));
    maas_tensor *r = maas_tensor_new_like(h);
    CHECK_OK(maas_unary_forward(MAAS_U_RELU, r->data, h->data, h->size, 0.0f));
    maas_node n2 = {.backward = maas_grad_unary, .name = "relu", .ninputs = 1, .in = {h},
                    .out = r, .i = {MAAS_U_RELU}};
    CHECK_OK(maas_tape_record(tape, &n2));
    /* r * r: the same tensor twice */
    maas_tensor *sq = maas_tensor_new_like(r);
    CHECK_OK(maas_binary_forward(MAAS_B_MUL, sq, r, r));
    maas_node n3 = {.backward = maas_grad_binary, .name = "mul", .ninputs = 2, .in = {r, r},
                    .out = sq, .i = {MAAS_B_MUL}};
    CHECK_OK(maas_tape_record(tape, &n3));
    CHECK(maas_tape_size(tape) == 3 && maas_tape_tracks(tape, sq) && !maas_tape_tracks(tape, x));

    maas_tensor *srcs[3] = {w, b, other}, *grads[3];
    CHECK_OK(maas_tape_gradient(tape, sq, 3, srcs, grads));
    CHECK(grads[2] == NULL); /* `other` was never used */
    /* d sum(relu(h)^2) / dh = 2 relu(h); dW = x^T g, db = sum_rows g */
    for (int64_t c = 0; c < C; c++)
        for (int64_t u = 0; u < U; u++) {
            double e = 0.0;
            for (int64_t n = 0; n < N; n++)
                e += x->data[n * C + c] * 2.0 * r->data[n * U + u];
            CHECK_CLOSE(grads[0]->data[c * U + u], e, 1e-5);
        }
    for (int64_t u = 0; u < U; u++) {
        double e = 0.0;
        for (int64_t n = 0; n < N; n++)
            e += 2.0 * r->data[n * U + u];
        CHECK_CLOSE(grads[1]->data[u], e, 1e-5);
    }
    maas_tensor_decref(grads[0]);
    maas_tensor_decref(grads[1]);
    maas_tape_free(tape);
    maas_tensor_decref(h);
    maas_tensor_decref(r);
    maas_tensor_decref(sq);

    /* a plan: dense -> mse with SGD(lr) moves w by -lr * dW of the mean loss */
    float w0[6];
    memcpy(w0, w->data, sizeof w0);
    maas_plan *plan = maas_plan_new(C);
    CHECK(plan != NULL);
    float reg[4] = {0, 0, 0, 0};
    int decay[2] = {0, 0};
    maas_tensor *none[3] = {NULL, NULL, NULL};
    CHECK_OK(maas_plan_add_dense(plan, w, b, 1, reg, none, none, decay));
    CHECK_OK(maas_plan_set_loss(plan, MAAS_L_MSE, 0));
    maas_optim_config cfg = {.kind = MAAS_OPT_SGD};
    CHECK_OK(maas_plan_set_optimizer(plan, &cfg));
    double loss = 0.0;
    float out[8];
    CHECK_OK(maas_dense_forward(out, x->data, w0, b->data, N, C, U));
    double expect = 0.0;
    for (int i = 0; i < N * U; i++)
        expect += (double)(out[i] - y->data[i]) * (out[i] - y->data[i]) / (double)(N * U);
    CHECK_OK(maas_plan_train_step(plan, x->data, y->data, NULL, N, 0.5f, 1, 0, 0, &loss));
    CHECK_CLOSE(loss, expect, 1e-5);
    for (int64_t c = 0; c < C; c++)
        for (int64_t u = 0; u < U; u++) {
            double g = 0.0;
            for (int64_t n = 0; n < N; n++)
                g += x->data[n * C + c] * 2.0 * (out[n * U + u] - y->data[n * U + u]) / (double)(N * U);
            CHECK_CLOSE(w->data[c * U + u], w0[c * U + u] - 0.5 * g, 1e-5);
        }
    float pred[8];
    CHECK_OK(maas_plan_predict(plan, x->data, N, 3, pred));
    CHECK(maas_plan_train_step(plan, x->data, y->data, NULL, 0, 0.5f, 2, 0, 0, &loss) == MAAS_ERR_VALUE);
    maas_plan_free(plan);

    /* a graph: out = concat(x @ w + b, x) - read twice, merged, then mse */
    plan = maas_plan_new(C);
    CHECK(plan != NULL);
    CHECK_OK(maas_plan_add_dense(plan, w, b, 1, reg, none, none, decay));
    int first = maas_plan_cursor(plan);
    CHECK_OK(maas_plan_add_merge(plan, MAAS_MERGE_CONCAT, first, -1));
    CHECK(maas_plan_out_features(plan) == U + C);
    CHECK(maas_plan_add_merge(plan, MAAS_MERGE_ADD, 0, -1) == MAAS_ERR_SHAPE);
    CHECK_OK(maas_plan_set_loss(plan, MAAS_L_MSE, 0));
    CHECK_OK(maas_plan_set_optimizer(plan, &cfg));
    float ycat[4 * 5] = {0}, pcat[4 * 5];
    CHECK_OK(maas_plan_predict(plan, x->data, N, 2, pcat));
    CHECK_OK(maas_dense_forward(out, x->data, w->data, b->data, N, C, U));
    for (int64_t row = 0; row < N; row++) {
        for (int64_t u = 0; u < U; u++)
            CHECK_CLOSE(pcat[row * (U + C) + u], out[row * U + u], 1e-6);
        for (int64_t c = 0; c < C; c++)
            CHECK_CLOSE(pcat[row * (U + C) + U + c], x->data[row * C + c], 1e-6);
    }
    CHECK_OK(maas_plan_train_step(plan, x->data, ycat, NULL, N, 0.1f, 1, 0, 0, &loss));
    CHECK(loss > 0.0);
    maas_plan_free(plan);

    maas_tensor_decref(x);
    maas_tensor_decref(w);
    maas_tensor_decref(b);
    maas_tensor_decref(y);
    maas_tensor_decref(other);
    return check_done("test_autodiff");
}
