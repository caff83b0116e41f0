/* status.c -- maas_status messages (thread-local), checked size arithmetic,
 * aligned allocation. */
#include "maas.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_msg[512];

maas_status maas_error(maas_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *maas_last_error(void) { return err_msg[0] ? err_msg : "unknown error"; }

void maas_clear_error(void) { err_msg[0] = '\0'; }

int maas_mul_size(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return -1;
    if (a != 0 && b > INT64_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}

int maas_shape_size(int ndim, const int64_t *shape, int64_t *out)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        if (maas_mul_size(n, shape[d], &n) != 0)
            return -1;
    *out = n;
    return 0;
}

float *maas_alloc_floats(int64_t n)
{
    int64_t bytes;
    /* cap well below SIZE_MAX and round up to the 64-byte alignment */
    if (n < 0 || maas_mul_size(n, (int64_t)sizeof(float), &bytes) != 0 ||
        bytes > (INT64_MAX >> 2)) {
        maas_error(MAAS_ERR_NOMEM, "cannot allocate %lld floats: size overflows",
                   (long long)n);
        return NULL;
    }
    size_t sz = (size_t)((bytes + 63) & ~(int64_t)63);
    if (sz == 0)
        sz = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, sz) != 0 || p == NULL) {
        maas_error(MAAS_ERR_NOMEM, "out of memory allocating %lld bytes",
                   (long long)sz);
        return NULL;
    }
    return (float *)p;
}

void maas_free(void *p) { free(p); }
