/* check.h -- a tiny assertion harness for the C core's tests. */
#ifndef MAAS_CHECK_H
#define MAAS_CHECK_H
#include <math.h>
#include <stdio.h>
#include "../maas.h"

extern int check_failures;
#define CHECK(cond) do { if (!(cond)) { check_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_OK(expr) do { maas_status s_ = (expr); if (s_ != MAAS_OK) { check_failures++; \
    fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, (int)s_, \
            maas_last_error()); } } while (0)
#define CHECK_CLOSE(a, b, tol) do { double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (tol) * (1.0 + fabs(b_)))) { check_failures++; \
    fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g\n", __FILE__, __LINE__, #a, a_, b_); } } while (0)
/* Ends main(): prints a summary and returns the exit status. */
int check_done(const char *name);
/* Deterministic test data in [-1, 1). */
void check_fill(float *x, long n, unsigned seed);
#endif
