#include "check.h"

int check_failures = 0;

int check_done(const char *name)
{
    if (check_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

void check_fill(float *x, long n, unsigned seed)
{
    unsigned long s = seed * 2654435761UL + 1;
    for (long i = 0; i < n; i++) {
        s = s * 6364136223846793005UL + 1442695040888963407UL;
        x[i] = (float)((double)(s >> 40) / (double)(1UL << 24) * 2.0 - 1.0);
    }
}
