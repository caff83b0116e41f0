/* The attention op through the op table: forward against a double
 * reference in both layouts with a broadcast keep mask and the causal flag,
 * backward against central differences of the forward, a fully masked row,
 * and the shape errors. Run under ASan/UBSan by `make asan`. */
#include "check.h"
#include "../opdef.h"
#include <stdlib.h>
#include <string.h>

enum { B = 2, H = 3, LQ = 4, LK = 5, D = 3, DV = 2 };

typedef struct {
    uint64_t seed, stream;
    double scale, rate;
    int64_t causal, layout, mode;
} given_attr; /* the given fields, in attn_attr's order */

/* element (b, h, i, d) of a tensor of sequence length L and width E */
static long at(int layout, int b, int h, int i, int d, int L, int E)
{
    return layout ? (((long)b * L + i) * H + h) * E + d : (((long)b * H + h) * L + i) * E + d;
}

static void reference(double *out, const float *q, const float *k, const float *v,
                      const unsigned char *keep, int causal, int layout)
{
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < LQ; i++) {
                double s[LK], mx = -INFINITY, sum = 0;
                int ok[LK];
                for (int j = 0; j < LK; j++) {
                    ok[j] = keep[(b * LQ + i) * LK + j] && (!causal || j <= i);
                    double acc = 0;
                    for (int d = 0; d < D; d++)
                        acc += (double)q[at(layout, b, h, i, d, LQ, D)] * k[at(layout, b, h, j, d, LK, D)];
                    s[j] = acc / sqrt((double)D);
                    if (ok[j] && s[j] > mx)
                        mx = s[j];
                }
                for (int j = 0; j < LK; j++) {
                    s[j] = ok[j] ? exp(s[j] - mx) : 0.0;
                    sum += s[j];
                }
                for (int e = 0; e < DV; e++) {
                    double acc = 0;
                    for (int j = 0; j < LK && sum > 0; j++)
                        acc += s[j] / sum * v[at(layout, b, h, j, e, LK, DV)];
                    out[at(layout, b, h, i, e, LQ, DV)] = acc;
                }
            }
}

static maas_tensor *t4(int layout, int L, int E, unsigned seed)
{
    int64_t shape[4] = {B, layout ? L : H, layout ? H : L, E};
    maas_tensor *t = maas_tensor_new(4, shape);
    check_fill(t->data, (long)t->size, seed);
    return t;
}

static void run_node(maas_node *nd, maas_tensor *q, maas_tensor *k, maas_tensor *v,
                     maas_tensor *mask, int causal, int layout)
{
    memset(nd, 0, sizeof *nd);
    nd->op = MAAS_OP_ATTENTION;
    nd->nin = 4;
    nd->in[0] = q;
    nd->in[1] = k;
    nd->in[2] = v;
    nd->in[3] = mask;
    given_attr a = {0, 0, 0.0, 0.0, causal, layout, 0};
    memcpy(nd->attr, &a, sizeof a);
    CHECK_OK(maas_op_run(nd));
}

static void test_forward_backward(int layout, int causal)
{
    maas_tensor *q = t4(layout, LQ, D, 1), *k = t4(layout, LK, D, 2), *v = t4(layout, LK, DV, 3);
    int64_t ms[4] = {B, 1, LQ, LK};
    maas_tensor *mask = maas_tensor_zeros_typed(MAAS_BOOL, 4, ms);
    unsigned char *keep = mask->ptr;
    for (int t = 0; t < B * LQ * LK; t++)
        keep[t] = (t * 7 + 3) % 5 != 0;
    memset(keep + (1 * LQ + 2) * LK, 0, LK); /* batch 1, query 2: nothing to attend to */
    maas_node nd;
    run_node(&nd, q, k, v, mask, causal, layout);
    double ref[B * H * LQ * DV];
    reference(ref, q->data, k->data, v->data, keep, causal, layout);
    for (long t = 0; t < nd.out[0]->size; t++)
        CHECK_CLOSE(nd.out[0]->data[t], ref[t], 1e-5);
    for (int h = 0; h < H; h++)
        for (int e = 0; e < DV; e++)
            CHECK(nd.out[0]->data[at(layout, 1, h, 2, e, LQ, DV)] == 0.0f);

    /* backward of sum(out * R) against central differences of the forward */
    maas_tensor *R = maas_tensor_new_like(nd.out[0]);
    check_fill(R->data, (long)R->size, 9);
    maas_tensor *g[3] = {maas_tensor_zeros_like(q), maas_tensor_zeros_like(k), maas_tensor_zeros_like(v)};
    const maas_tensor *gout[1] = {R};
    maas_tensor *gin[4] = {g[0], g[1], g[2], NULL};
    CHECK_OK(maas_op_get(MAAS_OP_ATTENTION)->backward(&nd, gout, gin));
    maas_tensor *ins[3] = {q, k, v};
    for (int w = 0; w < 3; w++)
        for (long t = 0; t < ins[w]->size; t++) {
            float keepv = ins[w]->data[t];
            double f[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                ins[w]->data[t] = keepv + (sgn ? -1e-3f : 1e-3f);
                double o[B * H * LQ * DV], acc = 0;
                reference(o, q->data, k->data, v->data, keep, causal, layout);
                for (long u = 0; u < R->size; u++)
                    acc += o[u] * R->data[u];
                f[sgn] = acc;
            }
            ins[w]->data[t] = keepv;
            CHECK_CLOSE(g[w]->data[t], (f[0] - f[1]) / 2e-3, 2e-3);
        }
    for (int w = 0; w < 3; w++)
        maas_tensor_decref(g[w]);
    maas_tensor_decref(R);
    maas_node_release_outputs(&nd);
    maas_tensor_decref(mask);
    maas_tensor_decref(q);
    maas_tensor_decref(k);
    maas_tensor_decref(v);
}

static void test_errors(void)
{
    maas_tensor *q = t4(0, LQ, D, 1), *k = t4(0, LK, D + 1, 2), *v = t4(0, LK, DV, 3);
    maas_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = MAAS_OP_ATTENTION;
    nd.nin = 3;
    nd.in[0] = q;
    nd.in[1] = k;
    nd.in[2] = v;
    CHECK(maas_op_run(&nd) == MAAS_ERR_SHAPE);
    CHECK(strstr(maas_last_error(), "do not fit") != NULL);
    int64_t bad[2] = {3, 7};
    maas_tensor *m = maas_tensor_zeros(2, bad);
    maas_tensor *k2 = t4(0, LK, D, 4); /* good shapes now, a mask that does not fit */
    nd.in[1] = k2;
    nd.in[3] = m;
    nd.nin = 4;
    CHECK(maas_op_run(&nd) == MAAS_ERR_SHAPE);
    CHECK(strstr(maas_last_error(), "does not broadcast") != NULL);
    maas_tensor_decref(m);
    maas_tensor_decref(k2);
    maas_tensor_decref(q);
    maas_tensor_decref(k);
    maas_tensor_decref(v);
}

int main(void)
{
    for (int layout = 0; layout < 2; layout++)
        for (int causal = 0; causal < 2; causal++)
            test_forward_backward(layout, causal);
    test_errors();
    return check_done("test_attention");
}
