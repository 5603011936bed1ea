// Training checkpoints: one binary file holding everything a resumed run needs, so that a run killed at any
// moment continues from its last checkpoint exactly as if it had not stopped.
//
//   offset  size        field
//   0       8           magic "INCKPT01"
//   8       4           version (little-endian u32)
//   12      4           flags: bit 0 = has the Polyak average
//   16      8           fingerprint of the network
//   24      8           step
//   32      8           seed
//   40      8           n, the number of parameters
//   48      4n          parameters (float32 LE)
//   ...     4n          momentum buffer
//   ...     4n          Polyak average (if flagged)
//   end-8   8           FNV-1a 64 of every byte before it
#include "train.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "INCKPT01"
#define HEADER_BYTES 48

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL

uint64_t checkpoint_fingerprint(const Net *net) {
    uint64_t h = FNV_OFFSET;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        h = fnv1a(h, p->name, strlen(p->name) + 1);
        h = fnv1a(h, &p->ndim, sizeof p->ndim);
        h = fnv1a(h, p->shape, sizeof p->shape[0] * (size_t)p->ndim);
    }
    return h;
}

static void put_u32(unsigned char *b, uint32_t v) {
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *b) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | b[i];
    return v;
}
static uint64_t get_u64(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

// Writes n floats and folds them into the checksum. The project only builds on little-endian machines (x86-64,
// arm64), where the in-memory floats are already the file's layout.
static bool write_floats(FILE *f, const float *x, uint64_t n, uint64_t *sum) {
    *sum = fnv1a(*sum, x, (size_t)n * sizeof(float));
    return fwrite(x, sizeof(float), (size_t)n, f) == (size_t)n;
}

int checkpoint_save(const char *path, const CheckpointHeader *h, const float *params, const float *velocity,
                    const float *average, Err *e) {
    unsigned char head[HEADER_BYTES];
    memcpy(head, MAGIC, 8);
    put_u32(head + 8, CHECKPOINT_VERSION);
    put_u32(head + 12, average ? 1u : 0u);
    put_u64(head + 16, h->fingerprint);
    put_u64(head + 24, (uint64_t)h->step);
    put_u64(head + 32, h->seed);
    put_u64(head + 40, h->n);
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    uint64_t sum = fnv1a(FNV_OFFSET, head, sizeof head);
    bool ok = fwrite(head, 1, sizeof head, af.f) == sizeof head && write_floats(af.f, params, h->n, &sum) &&
              write_floats(af.f, velocity, h->n, &sum) && (!average || write_floats(af.f, average, h->n, &sum));
    unsigned char tail[8];
    put_u64(tail, sum);
    ok = ok && fwrite(tail, 1, 8, af.f) == 8;
    if (!ok) {
        err_set(e, "%s: write failed: %s", path, strerror(errno));
        atomic_abort(&af);
        return -1;
    }
    return atomic_commit(&af, e);
}

int checkpoint_load(const char *path, uint64_t fingerprint, uint64_t n, CheckpointHeader *h, float *params,
                    float *velocity, float *average, Err *e) {
    char *buf;
    size_t size;
    if (read_file_all(path, (size_t)64 << 30, &buf, &size, e)) return -1;
    const unsigned char *b = (const unsigned char *)buf;
    int rc = -1;
    if (size < HEADER_BYTES + 8 || memcmp(b, MAGIC, 8) != 0) {
        err_set(e, "%s: not an inception checkpoint", path);
        goto done;
    }
    uint32_t version = get_u32(b + 8), flags = get_u32(b + 12);
    if (version != CHECKPOINT_VERSION) {
        err_set(e, "%s: checkpoint version %u; this build reads version %d", path, version, CHECKPOINT_VERSION);
        goto done;
    }
    *h = (CheckpointHeader){.fingerprint = get_u64(b + 16), .step = (int64_t)get_u64(b + 24),
                            .seed = get_u64(b + 32), .n = get_u64(b + 40), .has_average = flags & 1u};
    if (h->fingerprint != fingerprint || h->n != n) {
        err_set(e, "%s: the checkpoint belongs to another network (%llu parameters; this config has %llu, or a "
                   "different layout or number of classes)",
                path, (unsigned long long)h->n, (unsigned long long)n);
        goto done;
    }
    uint64_t arrays = h->has_average ? 3 : 2;
    if ((size - HEADER_BYTES - 8) / sizeof(float) != arrays * n || (size - HEADER_BYTES - 8) % sizeof(float)) {
        err_set(e, "%s: %zu bytes, expected %llu: truncated or padded", path, size,
                (unsigned long long)(HEADER_BYTES + 8 + arrays * n * sizeof(float)));
        goto done;
    }
    if (fnv1a(FNV_OFFSET, b, size - 8) != get_u64(b + size - 8)) {
        err_set(e, "%s: checksum mismatch: the checkpoint is corrupt", path);
        goto done;
    }
    const unsigned char *data = b + HEADER_BYTES;
    memcpy(params, data, n * sizeof(float));
    memcpy(velocity, data + n * sizeof(float), n * sizeof(float));
    if (average && h->has_average) memcpy(average, data + 2 * n * sizeof(float), n * sizeof(float));
    rc = 0;
done:
    free(buf);
    return rc;
}
