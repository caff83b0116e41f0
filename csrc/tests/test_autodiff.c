/* The op table, the tape and the plan, without Python: a dense -> relu ->
 * x*x -> mean chain run through maas_op_run and recorded, its gradients
 * against hand-derived values (a tensor used twice, an unrelated source),
 * then the same nodes frozen into a plan: replayed forward, backward and
 * an SGD update give the tape's numbers, and bad builds are refused. */
#include "check.h"
#include <string.h>

static maas_tensor *filled(int ndim, const int64_t *shape, unsigned seed)
{
    maas_tensor *t = maas_tensor_new(ndim, shape);
    check_fill(t->data, (long)t->size, seed);
    return t;
}

/* Runs op over inputs with the given attribute block, records it, and
 * returns its output (a new reference). */
static maas_tensor *run(maas_tape *tape, int op, int nin, maas_tensor **in, const void *attr,
                        size_t size)
{
    maas_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = op;
    nd.nin = nin;
    for (int i = 0; i < nin; i++)
        nd.in[i] = in[i];
    memcpy(nd.attr, attr, size);
    if (maas_op_run(&nd) != MAAS_OK) {
        CHECK(0);
        return NULL;
    }
    CHECK_OK(maas_tape_record(tape, &nd));
    maas_tensor *out = nd.out[0];
    nd.out[0] = NULL;
    maas_node_release_outputs(&nd);
    return out;
}

int main(void)
{
    const int64_t N = 4, C = 3, U = 2;
    maas_tensor *x = filled(2, (int64_t[]){N, C}, 1);
    maas_tensor *w = filled(2, (int64_t[]){C, U}, 2);
    maas_tensor *b = filled(1, (int64_t[]){U}, 3);
    maas_tensor *other = filled(1, (int64_t[]){U}, 5);
    w->requires_grad = b->requires_grad = other->requires_grad = 1;

    maas_tape *tape = maas_tape_new();
    CHECK(tape != NULL);
    CHECK_OK(maas_tape_watch(tape, x));
    int64_t relu[2] = {MAAS_U_RELU, 0};
    int64_t mul = MAAS_B_MUL, mean[4] = {MAAS_R_MEAN, 0, 1, 0};
    maas_tensor *h = run(tape, MAAS_OP_DENSE, 3, (maas_tensor *[]){x, w, b}, "", 0);
    maas_tensor *r = run(tape, MAAS_OP_UNARY, 1, &h, relu, sizeof relu);
    maas_tensor *sq = run(tape, MAAS_OP_BINARY, 2, (maas_tensor *[]){r, r}, &mul, sizeof mul);
    maas_tensor *loss = run(tape, MAAS_OP_REDUCE, 1, &sq, mean, sizeof mean);
    CHECK(maas_tape_size(tape) == 4);
    CHECK(loss->ndim == 0 && loss->size == 1);

    /* d loss / d w[c][u] = sum_n x[n][c] * 2 r[n][u] [h > 0] / (N U) */
    maas_tensor *grads[3];
    CHECK_OK(maas_tape_gradient(tape, loss, 3, (maas_tensor *[]){w, b, other}, grads));
    CHECK(grads[0] && grads[1] && grads[2] == NULL);
    double expect_loss = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t u = 0; u < U; u++)
            expect_loss += (double)r->data[n * U + u] * r->data[n * U + u] / (double)(N * U);
    CHECK_CLOSE(loss->data[0], expect_loss, 1e-6);
    for (int64_t c = 0; c < C; c++)
        for (int64_t u = 0; u < U; u++) {
            double g = 0.0;
            for (int64_t n = 0; n < N; n++)
                if (h->data[n * U + u] > 0)
                    g += x->data[n * C + c] * 2.0 * r->data[n * U + u] / (double)(N * U);
            CHECK_CLOSE(grads[0]->data[c * U + u], g, 1e-5);
        }

    /* the same nodes as a plan: inputs x, params w and b */
    int64_t nn;
    const maas_node *nodes = maas_tape_nodes(tape, &nn);
    CHECK(nn == 4);
    maas_plan *plan;
    CHECK(maas_plan_build(&plan, nn, nodes, 1, &h, 1, &r, loss, 0, NULL) == MAAS_ERR_VALUE);
    CHECK(maas_plan_build(&plan, nn, nodes, 1, &x, 1, &sq, sq, 0, NULL) == MAAS_ERR_VALUE);
    CHECK_OK(maas_plan_build(&plan, nn, nodes, 1, &x, 1, &r, loss, 3,
                             (maas_tensor *[]){w, b, w}));
    CHECK(maas_plan_num_nodes(plan) == 4 && maas_plan_num_random(plan) == 0);
    CHECK_OK(maas_plan_forward(plan, NULL));
    CHECK_CLOSE(maas_plan_loss(plan)->data[0], expect_loss, 1e-7);
    CHECK_OK(maas_plan_backward(plan));
    maas_tensor *pg = maas_plan_grad(plan, 0);
    CHECK(pg && maas_plan_grad(plan, 2) == NULL); /* w named twice is one parameter */
    for (int64_t i = 0; pg && i < pg->size; i++)
        CHECK(pg->data[i] == grads[0]->data[i]);
    CHECK(maas_plan_update(plan, 0.5f, 1) == MAAS_ERR_STATE);
    maas_optim_config cfg = {.kind = MAAS_OPT_SGD};
    maas_tensor *none[6] = {NULL};
    int decay[2] = {0, 0};
    CHECK_OK(maas_plan_set_optimizer(plan, &cfg, none, decay));
    float w0 = w->data[0];
    CHECK_OK(maas_plan_update(plan, 0.5f, 1));
    CHECK_CLOSE(w->data[0], w0 - 0.5f * grads[0]->data[0], 1e-7);
    /* new data through the placeholder: forward recomputes every node */
    check_fill(x->data, (long)x->size, 9);
    CHECK_OK(maas_plan_forward(plan, NULL));
    for (int64_t n = 0; n < N; n++)
        for (int64_t u = 0; u < U; u++) {
            double v = b->data[u];
            for (int64_t c = 0; c < C; c++)
                v += (double)x->data[n * C + c] * w->data[c * U + u];
            CHECK_CLOSE(r->data[n * U + u], v > 0 ? v : 0.0, 1e-6);
        }
    maas_plan_free(plan);

    for (int i = 0; i < 2; i++)
        maas_tensor_decref(grads[i]);
    maas_tape_free(tape);
    maas_tensor *all[] = {x, w, b, other, h, r, sq, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        maas_tensor_decref(all[i]);
    return check_done("test_autodiff");
}
