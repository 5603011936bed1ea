// Checked allocation. Running out of memory is not something the program can recover from sensibly, so it
// stops with the allocation site; sizes that come from input are validated before they get here.
#include "common.h"

#include <stdlib.h>
#include <string.h>

static void alloc_fail(size_t n, const char *file, int line) {
    fprintf(stderr, "fatal: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) alloc_fail(n, file, line);
    return p;
}

void *xcalloc_at(size_t count, size_t size, const char *file, int line) {
    size_t n;
    if (!size_mul_ok(count, size, &n)) alloc_fail((size_t)-1, file, line);
    void *p = calloc(n ? count : 1, n ? size : 1);
    if (!p) alloc_fail(n, file, line);
    return p;
}

void *xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) alloc_fail(n, file, line);
    return q;
}

char *xstrdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc_at(n, file, line);
    memcpy(d, s, n);
    return d;
}

bool size_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
