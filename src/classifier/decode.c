// Decoding a protobuf file (ONNX, Caffe) within a memory budget. protobuf-c's allocations while decoding are
// counted: an entry can take far more memory decoded than on disk (an empty ONNX initializer is 2 bytes in the
// file, a few hundred once decoded, so 20 MB of them asked for 1.9 GB; a repeated field's count is only known
// once decoded). A model decodes to about its own size; the budget allows four times that and 64 MiB more, so an
// absurd file is refused at a bounded cost instead of asking for gigabytes.
#include <stdlib.h>

#include "layers.h"

static void *budget_alloc(void *data, size_t size) {
    PbBudget *b = data;
    if (size > b->budget - b->used) {
        b->exceeded = true;
        return NULL;
    }
    b->used += size;
    return malloc(size);
}

static void budget_free(void *data, void *p) {
    (void)data;
    free(p);
}

void *pb_decode_file(const char *path, size_t max_bytes, const char *what, PbUnpack unpack, PbBudget *b, Err *e) {
    char *buf;
    size_t n;
    if (read_file_all(path, max_bytes, &buf, &n, e)) return NULL;
    *b = (PbBudget){.budget = ((size_t)64 << 20) + 4 * n};
    b->alloc = (ProtobufCAllocator){.alloc = budget_alloc, .free = budget_free, .allocator_data = b};
    void *msg = unpack(&b->alloc, n, (const uint8_t *)buf);
    free(buf);
    if (!msg && b->exceeded)
        err_set(e, "%s: decoding it needs more than %zu MiB for a %zu-byte file (a model decodes to about its own "
                   "size): refused", path, b->budget >> 20, n);
    else if (!msg)
        err_set(e, "%s: not %s (the protobuf does not decode)", path, what);
    return msg;
}
