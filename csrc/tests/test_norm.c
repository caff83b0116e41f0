/* The normalization, pooling and resampling ops through the op table,
 * without Python: batch normalization's in-place moving statistics
 * (state_in: never a gradient), layer normalization's rows, max pooling's
 * saved argmax and its backward, padding's adjoint, and the error paths
 * (bad groups, a window larger than a valid input). The attribute blocks
 * below repeat the leading (given) fields of the ops' own structs. */
#include "check.h"
#include <string.h>

typedef struct {
    int64_t training;
    double momentum, epsilon;
    int64_t has_gamma, has_beta, axis;
} bn_attr;

typedef struct {
    int64_t axis, naxes;
    double epsilon;
    int64_t has_gamma, has_beta, rms;
} ln_attr;

typedef struct {
    int64_t groups;
    double epsilon;
    int64_t has_gamma, has_beta;
} gn_attr;

typedef struct {
    int64_t kind, ph, pw, sh, sw, same;
} pool_attr;

typedef struct {
    int64_t top, bottom, left, right;
} pad_attr;

static maas_status setup_run(maas_node *nd, int op, int nin, maas_tensor **in, const void *attr,
                             size_t size)
{
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->nin = nin;
    for (int i = 0; i < nin; i++)
        nd->in[i] = in[i];
    memcpy(nd->attr, attr, size);
    return maas_op_run(nd);
}

static void test_batchnorm(void)
{
    const int64_t xs[2] = {4, 2}, cs[1] = {2};
    maas_tensor *x = maas_tensor_new(2, xs), *mm = maas_tensor_zeros(1, cs),
                *mv = maas_tensor_new(1, cs);
    const float vals[8] = {1, 10, 2, 20, 3, 30, 6, 60};
    memcpy(x->data, vals, sizeof vals);
    mv->data[0] = mv->data[1] = 1.0f;
    bn_attr a = {1, 0.9, 1e-3, 0, 0, -1};
    maas_tensor *in[3] = {x, mm, mv};
    maas_node nd;
    CHECK_OK(setup_run(&nd, MAAS_OP_BATCHNORM, 3, in, &a, sizeof a));
    /* batch mean (3, 30), biased variance (3.5, 350) */
    CHECK_CLOSE(mm->data[0], 0.1 * 3.0, 1e-6);
    CHECK_CLOSE(mm->data[1], 0.1 * 30.0, 1e-6);
    CHECK_CLOSE(mv->data[0], 0.9 + 0.1 * 3.5, 1e-6);
    CHECK_CLOSE(mv->data[1], 0.9 + 0.1 * 350.0, 1e-6);
    CHECK_CLOSE(nd.out[0]->data[0], (1.0 - 3.0) / sqrt(3.5 + 1e-3), 1e-5);
    CHECK((nd.nograd & 6u) == 6u); /* the moving statistics never get a gradient */
    /* backward: sum of outputs has zero gradient through batch statistics */
    maas_tensor *g = maas_tensor_new(2, xs), *gx = maas_tensor_zeros(2, xs);
    for (int i = 0; i < 8; i++)
        g->data[i] = 1.0f;
    const maas_tensor *gout[1] = {g};
    maas_tensor *gin[3] = {gx, NULL, NULL};
    CHECK_OK(maas_op_get(MAAS_OP_BATCHNORM)->backward(&nd, gout, gin));
    for (int i = 0; i < 8; i++)
        CHECK_CLOSE(gx->data[i], 0.0, 1e-5);
    maas_node_release_outputs(&nd);
    /* inference leaves the statistics alone */
    float before = mm->data[0];
    a.training = 0;
    CHECK_OK(setup_run(&nd, MAAS_OP_BATCHNORM, 3, in, &a, sizeof a));
    CHECK(mm->data[0] == before);
    maas_node_release_outputs(&nd);
    /* a channel count that does not match */
    const int64_t bad[1] = {3};
    maas_tensor *mm3 = maas_tensor_zeros(1, bad);
    in[1] = mm3;
    CHECK(setup_run(&nd, MAAS_OP_BATCHNORM, 3, in, &a, sizeof a) == MAAS_ERR_SHAPE);
    CHECK(strstr(maas_last_error(), "moving_mean of shape (3,)") != NULL);
    maas_tensor_decref(mm3);
    maas_tensor_decref(g);
    maas_tensor_decref(gx);
    maas_tensor_decref(x);
    maas_tensor_decref(mm);
    maas_tensor_decref(mv);
}

static void test_layer_and_group_norm(void)
{
    const int64_t xs[2] = {2, 4};
    maas_tensor *x = maas_tensor_new(2, xs);
    const float vals[8] = {1, 2, 3, 4, -5, 5, -5, 5};
    memcpy(x->data, vals, sizeof vals);
    ln_attr a = {-1, 1, 1e-12, 0, 0, 0};
    maas_node nd;
    CHECK_OK(setup_run(&nd, MAAS_OP_LAYERNORM, 1, &x, &a, sizeof a));
    CHECK_CLOSE(nd.out[0]->data[0], -1.5 / sqrt(1.25), 1e-6);
    CHECK_CLOSE(nd.out[0]->data[5], 1.0, 1e-6);
    CHECK_CLOSE(nd.saved[0]->data[0], 2.5, 1e-7); /* the mean, saved */
    maas_node_release_outputs(&nd);
    gn_attr g = {3, 1e-3, 0, 0};
    CHECK(setup_run(&nd, MAAS_OP_GROUPNORM, 1, &x, &g, sizeof g) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "groups=3") != NULL);
    maas_tensor_decref(x);
}

static void test_pool_and_pad(void)
{
    const int64_t xs[4] = {1, 3, 3, 1};
    maas_tensor *x = maas_tensor_new(4, xs);
    for (int i = 0; i < 9; i++)
        x->data[i] = (float)((i * 5) % 9); /* 0 5 1 / 6 2 7 / 3 8 4 */
    pool_attr a = {0, 2, 2, 1, 1, 0};
    maas_node nd;
    CHECK_OK(setup_run(&nd, MAAS_OP_POOL2D, 1, &x, &a, sizeof a));
    CHECK(nd.out[0]->shape[1] == 2 && nd.out[0]->shape[2] == 2);
    CHECK(nd.out[0]->data[0] == 6.0f && nd.out[0]->data[3] == 8.0f);
    const int32_t *am = (const int32_t *)nd.saved[0]->ptr;
    CHECK(am[0] == 3 && am[1] == 5 && am[2] == 7 && am[3] == 7);
    maas_tensor *g = maas_tensor_new(4, nd.out[0]->shape), *gx = maas_tensor_zeros(4, xs);
    for (int i = 0; i < 4; i++)
        g->data[i] = 1.0f;
    const maas_tensor *gout[1] = {g};
    maas_tensor *gin[1] = {gx};
    CHECK_OK(maas_op_get(MAAS_OP_POOL2D)->backward(&nd, gout, gin));
    CHECK(gx->data[3] == 1.0f && gx->data[5] == 1.0f && gx->data[7] == 2.0f && gx->data[0] == 0.0f);
    maas_node_release_outputs(&nd);
    a.ph = a.pw = 4;
    CHECK(setup_run(&nd, MAAS_OP_POOL2D, 1, &x, &a, sizeof a) == MAAS_ERR_SHAPE);
    a.same = 1;
    CHECK_OK(setup_run(&nd, MAAS_OP_POOL2D, 1, &x, &a, sizeof a));
    CHECK(nd.out[0]->data[0] == 8.0f);
    maas_node_release_outputs(&nd);
    /* pad then crop back: the identity; the backward of a pad is a crop */
    pad_attr p = {1, 2, 0, 1};
    CHECK_OK(setup_run(&nd, MAAS_OP_PAD2D, 1, &x, &p, sizeof p));
    CHECK(nd.out[0]->shape[1] == 6 && nd.out[0]->shape[2] == 4);
    maas_tensor *padded = nd.out[0];
    nd.out[0] = NULL;
    maas_node_release_outputs(&nd);
    pad_attr c = {-1, -2, 0, -1};
    CHECK_OK(setup_run(&nd, MAAS_OP_PAD2D, 1, &padded, &c, sizeof c));
    CHECK(memcmp(nd.out[0]->data, x->data, 9 * sizeof(float)) == 0);
    maas_node_release_outputs(&nd);
    maas_tensor_decref(padded);
    maas_tensor_decref(g);
    maas_tensor_decref(gx);
    maas_tensor_decref(x);
}

int main(void)
{
    test_batchnorm();
    test_layer_and_group_norm();
    test_pool_and_pad();
    return check_done("test_norm");
}
