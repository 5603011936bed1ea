// Protobuf text format (Caffe's .prototxt), read into any message protobuf-c generated: fields are found by name
// in the message's descriptor, so the schema is the .proto subset itself and nothing is written twice. Fields the
// subset does not have are skipped, values and blocks alike, as the binary decoder skips unknown fields. The
// grammar: `name: value`, `name { ... }` (or `name: { ... }`, `<...>`), `name: [v, v]`, '#' comments; values are
// numbers, enum names, true/false, or quoted strings with C escapes. Memory is counted against a budget of 64 MiB
// and four times the file, so that a file of absurd repeated counts is refused before it asks for more.
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

typedef struct {
    const char *path;
    const char *p;   // cursor
    int line;
    size_t used, budget;
    char tok[1024];  // the current token (a string's text unescaped)
    bool quoted;     // tok was a quoted string
    Err *e;
} Txt;

static int txt_error(Txt *t, const char *what) {
    return err_set(t->e, "%s:%d: %s", t->path, t->line, what);
}

static void *txt_alloc(Txt *t, size_t n) {
    if (n > t->budget - t->used) return NULL;
    t->used += n;
    return xcalloc(1, n ? n : 1);
}

static void skip_space(Txt *t) {
    for (;;) {
        while (isspace((unsigned char)*t->p)) t->line += *t->p++ == '\n';
        if (*t->p != '#') return;
        while (*t->p && *t->p != '\n') t->p++;
    }
}

// The next token into t->tok: a punctuation character, a quoted string (adjacent ones joined), or a word.
static int next_token(Txt *t) {
    skip_space(t);
    t->quoted = false;
    size_t n = 0;
    if (!*t->p) return t->tok[0] = '\0', 0;
    if (strchr("{}<>:[],;", *t->p)) return t->tok[0] = *t->p++, t->tok[1] = '\0', 0;
    if (*t->p == '"' || *t->p == '\'') {
        t->quoted = true;
        while (*t->p == '"' || *t->p == '\'') {
            char q = *t->p++;
            while (*t->p && *t->p != q && *t->p != '\n') {
                char c = *t->p++;
                if (c == '\\' && *t->p) {
                    c = *t->p++;
                    c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
                }
                if (n + 1 >= sizeof t->tok) return txt_error(t, "a string longer than 1023 bytes");
                t->tok[n++] = c;
            }
            if (*t->p != q) return txt_error(t, "a string without its closing quote");
            t->p++;
            skip_space(t);
        }
        return t->tok[n] = '\0', 0;
    }
    while (*t->p && !isspace((unsigned char)*t->p) && !strchr("{}<>:[],;#\"'", *t->p)) {
        if (n + 1 >= sizeof t->tok) return txt_error(t, "a word longer than 1023 bytes");
        t->tok[n++] = *t->p++;
    }
    return t->tok[n] = '\0', 0;
}

static size_t elem_size(ProtobufCType type) {
    switch (type) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    default: return 4;
    }
}

// Where the next value of field f goes: its slot (a repeated field grows by one), with `has_` set.
static void *field_slot(Txt *t, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
    char *base = (char *)m;
    size_t size = elem_size(f->type);
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t *count = (size_t *)(base + f->quantifier_offset);
        void **array = (void **)(base + f->offset);
        if (size > t->budget - t->used) return NULL;
        t->used += size;
        *array = xrealloc(*array, (*count + 1) * size);
        char *slot = (char *)*array + (*count)++ * size;
        memset(slot, 0, size);
        return slot;
    }
    bool scalar = f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && scalar) *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    return base + f->offset;
}

// A scalar value (t->tok) into slot.
static int set_scalar(Txt *t, const ProtobufCFieldDescriptor *f, void *slot) {
    const char *s = t->tok;
    char *end;
    errno = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        char *old = *(char **)slot;
        if (old && old != (const char *)f->default_value) free(old);
        char *copy = txt_alloc(t, strlen(s) + 1);
        if (!copy) return txt_error(t, "the file needs more memory than its size allows: refused");
        memcpy(copy, s, strlen(s) + 1);
        *(char **)slot = copy;
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "1")) *(protobuf_c_boolean *)slot = 1;
        else if (!strcmp(s, "false") || !strcmp(s, "0")) *(protobuf_c_boolean *)slot = 0;
        else return txt_error(t, "a boolean (true or false) expected");
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, s);
        long n = strtol(s, &end, 10);
        if (!v && (*end || end == s)) return txt_error(t, "an unknown enum value");
        *(int *)slot = v ? v->value : (int)n;
        return 0;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d = !strcmp(s, "inf") ? INFINITY : !strcmp(s, "-inf") ? -INFINITY : strtod(s, &end);
        if (strcmp(s, "inf") && strcmp(s, "-inf") && (end == s || (*end && strcmp(end, "f"))))
            return txt_error(t, "a number expected");
        if (f->type == PROTOBUF_C_TYPE_FLOAT) *(float *)slot = (float)d;
        else *(double *)slot = d;
        return 0;
    }
    default: {
        long long v = strtoll(s, &end, 0);
        if (end == s || *end || errno) return txt_error(t, "an integer expected");
        if (elem_size(f->type) == 8) *(int64_t *)slot = v;
        else if (v < INT32_MIN || v > (long long)UINT32_MAX) return txt_error(t, "an integer out of range");
        else *(int32_t *)slot = (int32_t)v;
        return 0;
    }
    }
}

static int parse_fields(Txt *t, ProtobufCMessage *m, const char *close, int depth);

// A value or block of a field the subset does not have.
static int skip_value(Txt *t, int depth) {
    if (depth > 64) return txt_error(t, "blocks nested too deep");
    if (!strcmp(t->tok, "{") || !strcmp(t->tok, "<")) return parse_fields(t, NULL, !strcmp(t->tok, "{") ? "}" : ">", depth + 1);
    if (!strcmp(t->tok, "[")) {
        do {
            if (next_token(t) || next_token(t)) return -1;
        } while (!strcmp(t->tok, ","));
        return strcmp(t->tok, "]") ? txt_error(t, "a list without its closing ']'") : 0;
    }
    return t->tok[0] && !t->quoted && strchr("}>:,", t->tok[0]) && !t->tok[1] ? txt_error(t, "a value expected") : 0;
}

// One value (t->tok is its first token) of field f of m (m NULL: skipped).
static int parse_value(Txt *t, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, int depth) {
    if (!m || !f) return skip_value(t, depth);
    bool block = !strcmp(t->tok, "{") || !strcmp(t->tok, "<");
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (!block) return txt_error(t, "a '{' block expected");
        const ProtobufCMessageDescriptor *d = f->descriptor;
        ProtobufCMessage **slot = field_slot(t, m, f);
        if (!slot) return txt_error(t, "the file needs more memory than its size allows: refused");
        if (!*slot) {
            if (!(*slot = txt_alloc(t, d->sizeof_message)))
                return txt_error(t, "the file needs more memory than its size allows: refused");
            d->message_init(*slot);
        }
        return parse_fields(t, *slot, !strcmp(t->tok, "{") ? "}" : ">", depth + 1);
    }
    if (block) return txt_error(t, "a value expected, not a block");
    if (!strcmp(t->tok, "[")) { // a list of values
        for (;;) {
            if (next_token(t)) return -1;
            if (!strcmp(t->tok, "]")) return 0;
            void *slot = field_slot(t, m, f);
            if (!slot) return txt_error(t, "the file needs more memory than its size allows: refused");
            if (set_scalar(t, f, slot) || next_token(t)) return -1;
            if (!strcmp(t->tok, "]")) return 0;
            if (strcmp(t->tok, ",")) return txt_error(t, "',' or ']' expected in a list");
        }
    }
    void *slot = field_slot(t, m, f);
    if (!slot) return txt_error(t, "the file needs more memory than its size allows: refused");
    return set_scalar(t, f, slot);
}

// `name [:] value` entries until `close` ("" at the end of the file).
static int parse_fields(Txt *t, ProtobufCMessage *m, const char *close, int depth) {
    if (depth > 64) return txt_error(t, "blocks nested too deep");
    for (;;) {
        if (next_token(t)) return -1;
        if (!strcmp(t->tok, close)) return 0;
        if (!t->tok[0]) return txt_error(t, "the file ends inside a block");
        if (t->quoted || !(isalpha((unsigned char)t->tok[0]) || t->tok[0] == '_'))
            return txt_error(t, "a field name expected");
        const ProtobufCFieldDescriptor *f = m ? protobuf_c_message_descriptor_get_field_by_name(m->descriptor, t->tok) : NULL;
        if (next_token(t)) return -1;
        if (!strcmp(t->tok, ":") && next_token(t)) return -1;
        if (parse_value(t, m, f, depth)) return -1;
        skip_space(t);
        if (*t->p == ',' || *t->p == ';') t->p++;
    }
}

void *prototxt_parse(const char *path, const ProtobufCMessageDescriptor *d, size_t max_bytes, Err *e) {
    char *text;
    size_t n;
    if (read_text_all(path, max_bytes, &text, &n, e)) return NULL;
    Txt t = {.path = path, .p = text, .line = 1, .budget = ((size_t)64 << 20) + 4 * n, .e = e};
    ProtobufCMessage *m = xcalloc(1, d->sizeof_message);
    d->message_init(m);
    int rc = parse_fields(&t, m, "", 0);
    free(text);
    if (rc) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}
