/* sum / mean / max / min over the middle axis: forward against a double
 * reference, backward against central differences, first-arg-max rule,
 * n == 0, accumulation, threaded paths and thread-count independence. */
#include "check.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static double ref_red(int op, const double *v, long n)
{
    double s = 0, m = v[0];
    for (long k = 0; k < n; k++) {
        s += v[k];
        if (op == MAAS_R_MAX && v[k] > m) m = v[k];
        if (op == MAAS_R_MIN && v[k] < m) m = v[k];
    }
    return op == MAAS_R_SUM ? s : op == MAAS_R_MEAN ? s / (double)n : m;
}

static void check_reduce(int op, long outer, long n, long inner, unsigned seed, int fd)
{
    long tot = outer * n * inner, no = outer * inner;
    float *x = malloc(sizeof(float) * (size_t)(tot + 1));
    float *y = malloc(sizeof(float) * (size_t)(no + 1));
    float *g = malloc(sizeof(float) * (size_t)(no + 1));
    float *gx = malloc(sizeof(float) * (size_t)(tot + 1));
    double *row = malloc(sizeof(double) * (size_t)(n + 1));
    check_fill(x, tot, seed);
    check_fill(g, no, seed + 3);
    for (long i = 0; i < tot; i++) gx[i] = 0.125f;
    CHECK_OK(maas_reduce_forward((maas_reduce_op)op, y, x, outer, n, inner));
    CHECK_OK(maas_reduce_backward((maas_reduce_op)op, gx, g, x, y, outer, n, inner));
    /* piecewise linear: a tiny step is exact away from ties */
    const double h = (op == MAAS_R_MAX || op == MAAS_R_MIN) ? 1e-7 : 1e-4;
    int bad = 0;
    for (long o = 0; o < outer; o++)
        for (long j = 0; j < inner; j++) {
            for (long k = 0; k < n; k++) row[k] = x[(o * n + k) * inner + j];
            int before = check_failures;
            CHECK_CLOSE(y[o * inner + j], ref_red(op, row, n), 1e-5);
            for (long k = 0; fd && k < n; k++) {
                double xk = row[k];
                row[k] = xk + h; double fp = ref_red(op, row, n);
                row[k] = xk - h; double fm = ref_red(op, row, n);
                row[k] = xk;
                CHECK_CLOSE(gx[(o * n + k) * inner + j],
                            0.125 + g[o * inner + j] * (fp - fm) / (2 * h), 1e-3);
            }
            if (check_failures != before && bad++ < 3)
                fprintf(stderr, "  reduce op %d (%ld,%ld,%ld) at %ld,%ld\n", op,
                        outer, n, inner, o, j);
        }
    free(x); free(y); free(g); free(gx); free(row);
}

static void check_deterministic(long outer, long n, long inner)
{
    long tot = outer * n * inner;
    float *x = malloc(sizeof(float) * (size_t)tot);
    float *y1 = malloc(sizeof(float) * (size_t)(outer * inner));
    float *y3 = malloc(sizeof(float) * (size_t)(outer * inner));
    check_fill(x, tot, 77);
    for (int op = MAAS_R_SUM; op <= MAAS_R_MEAN; op++) {
        maas_set_num_threads(1);
        CHECK_OK(maas_reduce_forward((maas_reduce_op)op, y1, x, outer, n, inner));
        maas_set_num_threads(3);
        CHECK_OK(maas_reduce_forward((maas_reduce_op)op, y3, x, outer, n, inner));
        CHECK(memcmp(y1, y3, sizeof(float) * (size_t)(outer * inner)) == 0);
    }
    free(x); free(y1); free(y3);
}

int main(void)
{
    maas_set_num_threads(3);
    for (int op = 0; op <= MAAS_R_MIN; op++) {
        unsigned s = 10u * (unsigned)op;
        check_reduce(op, 3, 5, 1, s + 1, 1);
        check_reduce(op, 2, 4, 3, s + 2, 1);
        check_reduce(op, 1, 1, 1, s + 3, 1);
        check_reduce(op, 1, 7, 1, s + 4, 1);
        check_reduce(op, 0, 4, 2, s + 5, 1);
        check_reduce(op, 3, 6, 0, s + 6, 1);
        check_reduce(op, 2, 9, 300, s + 7, 1);     /* several column tiles */
        check_reduce(op, 400, 100, 1, s + 8, 0);    /* threaded rows */
        check_reduce(op, 4, 50, 300, s + 9, 0);     /* threaded tiles */
        check_reduce(op, 1, 100000, 1, s + 10, 0);  /* one long row */
        check_reduce(op, 2, 50000, 1, s + 11, 0);   /* few long rows, blocked */
    }
    check_deterministic(1, 100000, 1);
    check_deterministic(2, 50000, 1);
    check_deterministic(400, 100, 1);
    check_deterministic(4, 50, 300);

    /* n == 0 */
    {
        float out[6], x[1] = {0};
        for (int i = 0; i < 6; i++) out[i] = 9;
        CHECK_OK(maas_reduce_forward(MAAS_R_SUM, out, x, 2, 0, 3));
        CHECK(out[0] == 0 && out[5] == 0);
        CHECK_OK(maas_reduce_forward(MAAS_R_MEAN, out, x, 2, 0, 3));
        CHECK(isnan(out[0]) && isnan(out[5]));
        CHECK(maas_reduce_forward(MAAS_R_MAX, out, x, 2, 0, 3) == MAAS_ERR_VALUE);
        CHECK(maas_reduce_forward(MAAS_R_MIN, out, x, 2, 0, 3) == MAAS_ERR_VALUE);
        CHECK_OK(maas_reduce_backward(MAAS_R_MEAN, out, x, x, out, 2, 0, 3));
        CHECK(maas_reduce_forward((maas_reduce_op)9, out, x, 1, 1, 1) == MAAS_ERR_VALUE);
    }
    /* ties: only the first arg-max / arg-min gets the gradient */
    for (int inner = 1; inner <= 2; inner++) {
        float xv[5] = {1, 3, 3, -2, -2}, x[10], out[2], g[2] = {1, 2}, gx[10] = {0};
        for (int k = 0; k < 5; k++)
            for (int j = 0; j < inner; j++) x[k * inner + j] = xv[k];
        CHECK_OK(maas_reduce_forward(MAAS_R_MAX, out, x, 1, 5, inner));
        CHECK(out[0] == 3);
        CHECK_OK(maas_reduce_backward(MAAS_R_MAX, gx, g, x, out, 1, 5, inner));
        CHECK(gx[1 * inner] == 1 && gx[2 * inner] == 0);
        CHECK_OK(maas_reduce_forward(MAAS_R_MIN, out, x, 1, 5, inner));
        CHECK(out[0] == -2);
        CHECK_OK(maas_reduce_backward(MAAS_R_MIN, gx, g, x, out, 1, 5, inner));
        CHECK(gx[3 * inner] == 1 && gx[4 * inner] == 0 && gx[0] == 0);
        if (inner == 2)
            CHECK(gx[1 * inner + 1] == 2 && gx[3 * inner + 1] == 2);
    }
    /* NaN propagates through max */
    {
        float x[3] = {1, NAN, 2}, out[1];
        CHECK_OK(maas_reduce_forward(MAAS_R_MAX, out, x, 1, 3, 1));
        CHECK(isnan(out[0]));
    }
    return check_done("test_reduce");
}
