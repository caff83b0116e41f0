/* The embedding and rnn ops through the op table, without Python: rows
 * gathered and scatter-added back, the mask output, an out-of-range index
 * refused before any read; one LSTM and one GRU step against hand-written
 * double-precision formulas (Keras's gate orders), a masked step carrying
 * its state, and the backward's input gradient against central
 * differences. */
#include "check.h"
#include <string.h>

static double sig(double v) { return 1.0 / (1.0 + exp(-v)); }

static maas_status run(maas_node *nd, int op, int nin, maas_tensor **in, const void *attr,
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

static void test_embedding(void)
{
    maas_tensor *table = maas_tensor_new(2, (int64_t[]){4, 2});
    for (int i = 0; i < 8; i++)
        table->data[i] = (float)i;
    maas_tensor *idx = maas_tensor_new_typed(MAAS_I32, 2, (int64_t[]){1, 3});
    int32_t *ix = (int32_t *)idx->ptr;
    ix[0] = 3, ix[1] = 0, ix[2] = 3;
    int64_t mask_zero = 1;
    maas_node nd;
    CHECK_OK(run(&nd, MAAS_OP_EMBEDDING, 2, (maas_tensor *[]){table, idx}, &mask_zero, sizeof mask_zero));
    CHECK(nd.nout == 2 && nd.out[0]->ndim == 3 && nd.out[0]->shape[2] == 2);
    CHECK(nd.out[0]->data[0] == 6.0f && nd.out[0]->data[1] == 7.0f && nd.out[0]->data[2] == 0.0f);
    CHECK(nd.out[1]->data[0] == 1.0f && nd.out[1]->data[1] == 0.0f && nd.out[1]->data[2] == 1.0f);
    maas_tensor *gout = maas_tensor_new(3, (int64_t[]){1, 3, 2});
    for (int i = 0; i < 6; i++)
        gout->data[i] = 1.0f + (float)i;
    maas_tensor *gt = maas_tensor_zeros(2, (int64_t[]){4, 2});
    const maas_op_def *def = maas_op_get(MAAS_OP_EMBEDDING);
    CHECK_OK(def->backward(&nd, (const maas_tensor *const[]){gout, NULL}, (maas_tensor *const[]){gt, NULL}));
    CHECK(gt->data[6] == 1.0f + 5.0f && gt->data[7] == 2.0f + 6.0f); /* row 3 twice */
    CHECK(gt->data[0] == 3.0f && gt->data[1] == 4.0f && gt->data[2] == 0.0f);
    maas_node_release_outputs(&nd);
    ix[1] = 4; /* out of range */
    maas_status s = run(&nd, MAAS_OP_EMBEDDING, 2, (maas_tensor *[]){table, idx}, &mask_zero, sizeof mask_zero);
    CHECK(s == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "index 4") && strstr(maas_last_error(), "input_dim=4"));
    CHECK(nd.out[0] == NULL);
    maas_tensor_decref(gout);
    maas_tensor_decref(gt);
    maas_tensor_decref(idx);
    maas_tensor_decref(table);
}

/* attribute block: cell, act (tanh), ract (sigmoid), retseq, back, zero,
 * has_bias, has_mask, has_h0, has_c0, has_rdrop, unreverse */
static void attrs(int64_t *a, int64_t cell, int64_t has_mask, int64_t has_h0, int64_t has_c0)
{
    int64_t v[12] = {cell, 1, 2, 1, 0, 0, 1, has_mask, has_h0, has_c0, 0, 0};
    memcpy(a, v, sizeof v);
}

static void test_lstm_step_and_mask(void)
{
    const int64_t F = 2, U = 3;
    maas_tensor *x = maas_tensor_new(3, (int64_t[]){1, 2, F});
    maas_tensor *W = maas_tensor_new(2, (int64_t[]){F, 4 * U});
    maas_tensor *R = maas_tensor_new(2, (int64_t[]){U, 4 * U});
    maas_tensor *b = maas_tensor_new(1, (int64_t[]){4 * U});
    maas_tensor *m = maas_tensor_new(2, (int64_t[]){1, 2});
    maas_tensor *h0 = maas_tensor_new(2, (int64_t[]){1, U});
    maas_tensor *c0 = maas_tensor_new(2, (int64_t[]){1, U});
    check_fill(x->data, x->size, 1);
    check_fill(W->data, W->size, 2);
    check_fill(R->data, R->size, 3);
    check_fill(b->data, b->size, 4);
    check_fill(h0->data, h0->size, 5);
    check_fill(c0->data, c0->size, 6);
    m->data[0] = 1.0f, m->data[1] = 0.0f; /* the second step is padding */
    int64_t a[12];
    attrs(a, 1, 1, 1, 1);
    maas_node nd;
    CHECK_OK(run(&nd, MAAS_OP_RNN, 7, (maas_tensor *[]){x, W, R, b, m, h0, c0}, a, sizeof a));
    CHECK(nd.nout == 3);
    for (int64_t j = 0; j < U; j++) {
        double z[4];
        for (int g = 0; g < 4; g++) {
            int64_t col = g * U + j;
            z[g] = b->data[col];
            for (int64_t f = 0; f < F; f++)
                z[g] += (double)x->data[f] * W->data[f * 4 * U + col];
            for (int64_t k = 0; k < U; k++)
                z[g] += (double)h0->data[k] * R->data[k * 4 * U + col];
        }
        double c = sig(z[1]) * c0->data[j] + sig(z[0]) * tanh(z[2]);
        double h = sig(z[3]) * tanh(c);
        CHECK_CLOSE(nd.out[0]->data[j], h, 1e-5);     /* step 0 output */
        CHECK_CLOSE(nd.out[0]->data[U + j], h, 1e-5); /* masked step repeats it */
        CHECK_CLOSE(nd.out[1]->data[j], h, 1e-5);
        CHECK_CLOSE(nd.out[2]->data[j], c, 1e-5);
    }
    maas_node_release_outputs(&nd);

    /* d sum(out) / dx against central differences (loss in double) */
    attrs(a, 1, 0, 0, 0);
    CHECK_OK(run(&nd, MAAS_OP_RNN, 4, (maas_tensor *[]){x, W, R, b}, a, sizeof a));
    maas_tensor *gout = maas_tensor_new(3, (int64_t[]){1, 2, U});
    for (int64_t i = 0; i < gout->size; i++)
        gout->data[i] = 1.0f;
    maas_tensor *gx = maas_tensor_zeros(3, (int64_t[]){1, 2, F});
    const maas_op_def *def = maas_op_get(MAAS_OP_RNN);
    CHECK_OK(def->backward(&nd, (const maas_tensor *const[]){gout, NULL, NULL},
                           (maas_tensor *const[]){gx, NULL, NULL, NULL}));
    maas_node_release_outputs(&nd);
    for (int64_t i = 0; i < x->size; i++) {
        double v[2];
        float keep = x->data[i];
        for (int sgn = 0; sgn < 2; sgn++) {
            x->data[i] = keep + (sgn ? -1e-2f : 1e-2f);
            CHECK_OK(run(&nd, MAAS_OP_RNN, 4, (maas_tensor *[]){x, W, R, b}, a, sizeof a));
            v[sgn] = 0.0;
            for (int64_t k = 0; k < nd.out[0]->size; k++)
                v[sgn] += nd.out[0]->data[k];
            maas_node_release_outputs(&nd);
        }
        x->data[i] = keep;
        CHECK_CLOSE(gx->data[i], (v[0] - v[1]) / 2e-2, 2e-3);
    }
    /* a shape error names the op and the shapes */
    maas_tensor *bad = maas_tensor_new(2, (int64_t[]){U + 1, 4 * U});
    CHECK(run(&nd, MAAS_OP_RNN, 4, (maas_tensor *[]){x, W, bad, b}, a, sizeof a) == MAAS_ERR_SHAPE);
    CHECK(strstr(maas_last_error(), "lstm: the kernel must have shape (2, 16)") != NULL);
    maas_tensor_decref(bad);
    maas_tensor_decref(gout);
    maas_tensor_decref(gx);
    maas_tensor *all[] = {x, W, R, b, m, h0, c0};
    for (int i = 0; i < 7; i++)
        maas_tensor_decref(all[i]);
}

static void test_gru_step(void)
{
    const int64_t F = 2, U = 2;
    maas_tensor *x = maas_tensor_new(3, (int64_t[]){1, 1, F});
    maas_tensor *W = maas_tensor_new(2, (int64_t[]){F, 3 * U});
    maas_tensor *R = maas_tensor_new(2, (int64_t[]){U, 3 * U});
    maas_tensor *b = maas_tensor_new(2, (int64_t[]){2, 3 * U});
    maas_tensor *h0 = maas_tensor_new(2, (int64_t[]){1, U});
    check_fill(x->data, x->size, 7);
    check_fill(W->data, W->size, 8);
    check_fill(R->data, R->size, 9);
    check_fill(b->data, b->size, 10);
    check_fill(h0->data, h0->size, 11);
    int64_t a[12];
    attrs(a, 2, 0, 1, 0);
    maas_node nd;
    CHECK_OK(run(&nd, MAAS_OP_RNN, 5, (maas_tensor *[]){x, W, R, b, h0}, a, sizeof a));
    for (int64_t j = 0; j < U; j++) {
        double xz[3], in[3];
        for (int g = 0; g < 3; g++) {
            int64_t col = g * U + j;
            xz[g] = b->data[col];
            in[g] = b->data[3 * U + col];
            for (int64_t f = 0; f < F; f++)
                xz[g] += (double)x->data[f] * W->data[f * 3 * U + col];
            for (int64_t k = 0; k < U; k++)
                in[g] += (double)h0->data[k] * R->data[k * 3 * U + col];
        }
        double z = sig(xz[0] + in[0]), r = sig(xz[1] + in[1]);
        double hh = tanh(xz[2] + r * in[2]);
        CHECK_CLOSE(nd.out[1]->data[j], z * h0->data[j] + (1 - z) * hh, 1e-5);
    }
    maas_node_release_outputs(&nd);
    maas_tensor *all[] = {x, W, R, b, h0};
    for (int i = 0; i < 5; i++)
        maas_tensor_decref(all[i]);
}

/* GRU with reset_before (Keras's reset_after=False): hh = tanh(xh + (r h) R_h)
 * with one (3U) bias; and the projected mode (x W given, no kernel input)
 * giving the same bits as the op's own projection. */
static void test_gru_reset_before_and_projected(void)
{
    const int64_t F = 3, U = 2, G = 3;
    maas_tensor *x = maas_tensor_new(3, (int64_t[]){1, 1, F});
    maas_tensor *W = maas_tensor_new(2, (int64_t[]){F, G * U});
    maas_tensor *R = maas_tensor_new(2, (int64_t[]){U, G * U});
    maas_tensor *b = maas_tensor_new(1, (int64_t[]){G * U});
    maas_tensor *h0 = maas_tensor_new(2, (int64_t[]){1, U});
    check_fill(x->data, x->size, 12);
    check_fill(W->data, W->size, 13);
    check_fill(R->data, R->size, 14);
    check_fill(b->data, b->size, 15);
    check_fill(h0->data, h0->size, 16);
    int64_t a[14];
    attrs(a, 2, 0, 1, 0);
    a[12] = 1; /* reset_before */
    a[13] = 0;
    maas_node nd;
    CHECK_OK(run(&nd, MAAS_OP_RNN, 5, (maas_tensor *[]){x, W, R, b, h0}, a, sizeof a));
    double hh;
    for (int64_t j = 0; j < U; j++) {
        double xzj[3], z, rk[2];
        for (int g = 0; g < 3; g++) {
            xzj[g] = b->data[g * U + j];
            for (int64_t f = 0; f < F; f++)
                xzj[g] += (double)x->data[f] * W->data[f * G * U + g * U + j];
        }
        double az = xzj[0];
        for (int64_t k = 0; k < U; k++)
            az += (double)h0->data[k] * R->data[k * G * U + j];
        z = sig(az);
        for (int64_t k = 0; k < U; k++) { /* r of unit k, applied to h_k */
            double ar = b->data[U + k];
            for (int64_t f = 0; f < F; f++)
                ar += (double)x->data[f] * W->data[f * G * U + U + k];
            for (int64_t q = 0; q < U; q++)
                ar += (double)h0->data[q] * R->data[q * G * U + U + k];
            rk[k] = sig(ar);
        }
        double ah = xzj[2];
        for (int64_t k = 0; k < U; k++)
            ah += rk[k] * h0->data[k] * R->data[k * G * U + 2 * U + j];
        hh = tanh(ah);
        CHECK_CLOSE(nd.out[1]->data[j], z * h0->data[j] + (1 - z) * hh, 1e-5);
    }
    float want[2] = {nd.out[1]->data[0], nd.out[1]->data[1]};
    maas_node_release_outputs(&nd);
    /* projected: x W computed outside, the bias still added by the op */
    maas_tensor *p = maas_tensor_zeros(3, (int64_t[]){1, 1, G * U});
    for (int64_t c = 0; c < G * U; c++)
        for (int64_t f = 0; f < F; f++)
            p->data[c] += x->data[f] * W->data[f * G * U + c];
    a[13] = 1;
    CHECK_OK(run(&nd, MAAS_OP_RNN, 4, (maas_tensor *[]){p, R, b, h0}, a, sizeof a));
    CHECK_CLOSE(nd.out[1]->data[0], want[0], 1e-6);
    CHECK_CLOSE(nd.out[1]->data[1], want[1], 1e-6);
    maas_node_release_outputs(&nd);
    /* a projected input of the wrong width is refused */
    maas_tensor *bad = maas_tensor_zeros(3, (int64_t[]){1, 1, F});
    CHECK(run(&nd, MAAS_OP_RNN, 4, (maas_tensor *[]){bad, R, b, h0}, a, sizeof a) == MAAS_ERR_SHAPE);
    CHECK(strstr(maas_last_error(), "projected input") != NULL);
    maas_tensor *all[] = {x, W, R, b, h0, p, bad};
    for (int i = 0; i < 7; i++)
        maas_tensor_decref(all[i]);
}

int main(void)
{
    test_embedding();
    test_lstm_step_and_mask();
    test_gru_step();
    test_gru_reset_before_and_projected();
    return check_done("test_rnn");
}
