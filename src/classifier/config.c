// The config format of configs/*.cfg: a [net] section of `key = value` lines and a [layers] section with one
// row per row of the paper's Table 1. Strict: unknown keys, repeated keys, malformed numbers and values out of
// range are refused with "file:line: ..." messages. Shapes (whether each layer fits its input) are checked when
// the net is compiled (net_create), where the sizes are known.
//
// [net] keys: input, channels, width, classes, channel_order (rgb | bgr), mean, scale, and batchnorm (true |
// false, default false): with it every convolution (conv rows and their reduce, every Inception branch with its
// 1x1 reduces and pool projection, the auxiliary heads' 1x1) is convolution -> batch normalisation per output
// channel -> ReLU, its bias unused (fixed at 0), as Inception-v2 does; the fully connected layers and a MultiBox
// head are not normalised. Inference folds BN into the convolution (net_forward).
#include "classifier.h"

#include <ctype.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS 16
#define MAX_LINE 1024

typedef struct {
    const char *file;
    int line;
    Err *e;
} Where;

__attribute__((format(printf, 2, 3))) static int fail(Where *w, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(w->e, "%s:%d: %s", w->file, w->line, msg);
}

// A whole value: one number and nothing after it.
static bool whole_long(const char *s, long *out) { return parse_long(&s, out) && parse_at_end(s); }

static bool whole_double(const char *s, double *out) {
    return parse_double(&s, out) && parse_at_end(s) && isfinite(*out);
}

static int get_int(Where *w, const char *key, const char *s, long lo, long hi, int *out) {
    long v;
    char range[64];
    snprintf(range, sizeof range, "an integer in [%ld, %ld]", lo, hi);
    if (!whole_long(s, &v) || v < lo || v > hi) return fail(w, "%s expects %s", key, range);
    *out = (int)v;
    return 0;
}

static int get_float(Where *w, const char *key, const char *s, double lo, double hi, float *out) {
    double v;
    char range[64];
    snprintf(range, sizeof range, "a number in [%g, %g]", lo, hi);
    if (!whole_double(s, &v) || v < lo || v > hi) return fail(w, "%s expects %s", key, range);
    *out = (float)v;
    return 0;
}

// "KxK/S": a square patch and its stride.
static int get_patch(Where *w, const char *key, const char *s, int *k, int *stride) {
    int a, b, c, n = 0;
    if (sscanf(s, "%dx%d/%d%n", &a, &b, &c, &n) != 3 || s[n] || a != b || a < 1 || a > 64 || c < 1 || c > 64)
        return fail(w, "%s expects a square patch KxK/S with K, S in [1, 64], got '%s'", key, s);
    *k = a, *stride = c;
    return 0;
}

// A channel count as written in the file, scaled by the width multiplier.
static int get_channels(Where *w, const NetConfig *cfg, const char *key, const char *s, int *out) {
    if (!strcmp(s, "classes")) {
        *out = cfg->classes;
        return 0;
    }
    int v = 0;
    if (get_int(w, key, s, 1, CONFIG_MAX_CHANNELS, &v)) return -1;
    long scaled = lround(v * cfg->width);
    if (scaled < 1) scaled = 1;
    if (scaled > CONFIG_MAX_CHANNELS) return fail(w, "%s: %s channels times the width is too many", key, s);
    *out = (int)scaled;
    return 0;
}

static const struct {
    const char *name;
    LayerKind kind;
} KINDS[] = {
    {"conv", LAYER_CONV},       {"maxpool", LAYER_MAXPOOL}, {"avgpool", LAYER_AVGPOOL},
    {"lrn", LAYER_LRN},         {"inception", LAYER_INCEPTION}, {"aux", LAYER_AUX},
    {"dropout", LAYER_DROPOUT}, {"fc", LAYER_FC},           {"softmax", LAYER_SOFTMAX},
    {"multibox", LAYER_MULTIBOX},
};

static bool valid_name(const char *s) {
    if (!*s || strlen(s) >= CONFIG_NAME_MAX - 24) return false; // room for "/5x5_reduce.weight"
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return false;
    return true;
}

// The row's type and name: kind set, name checked and unique.
static int layer_head(Where *w, NetConfig *cfg, LayerSpec *L, char **tok, int nt) {
    int kind = -1;
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++)
        if (!strcmp(tok[0], KINDS[i].name)) kind = (int)i;
    if (kind < 0)
        return fail(w, "unknown layer type '%s' (conv, maxpool, avgpool, lrn, inception, aux, dropout, fc, "
                       "softmax, multibox)", tok[0]);
    L->kind = KINDS[kind].kind;
    if (nt < 2) return fail(w, "%s row needs a name", tok[0]);
    if (!valid_name(tok[1])) return fail(w, "bad layer name '%s' (letters, digits, _ - .; at most 23 characters)", tok[1]);
    for (int i = 0; i < cfg->n_layers; i++)
        if (!strcmp(cfg->layers[i].name, tok[1])) return fail(w, "layer name '%s' used twice", tok[1]);
    snprintf(L->name, sizeof L->name, "%s", tok[1]);
    return 0;
}

// An inception row: Table 1's six columns.
static int inception_columns(Where *w, NetConfig *cfg, LayerSpec *L, char **tok, int nt) {
    if (nt != 8) return fail(w, "inception %s needs six numbers: #1x1 #3x3reduce #3x3 #5x5reduce #5x5 poolproj", L->name);
    int *cols[6] = {&L->n1x1, &L->n3x3r, &L->n3x3, &L->n5x5r, &L->n5x5, &L->npool};
    static const char *const col_names[6] = {"#1x1", "#3x3 reduce", "#3x3", "#5x5 reduce", "#5x5", "pool proj"};
    for (int i = 0; i < 6; i++)
        if (get_channels(w, cfg, col_names[i], tok[2 + i], cols[i])) return -1;
    return 0;
}

// One key=value of a row; 1 when the layer's kind has no such key.
static int layer_key(Where *w, NetConfig *cfg, LayerSpec *L, const char *key, const char *val) {
#define KEY(k, parse) if (!strcmp(key, k)) return parse
    switch (L->kind) {
    case LAYER_CONV:
        KEY("pad", get_int(w, key, val, 0, 63, &L->pad));
        KEY("out", get_channels(w, cfg, key, val, &L->out));
        KEY("reduce", get_channels(w, cfg, key, val, &L->n3x3r));
        break;
    case LAYER_MAXPOOL:
    case LAYER_AVGPOOL: KEY("pad", get_int(w, key, val, 0, 63, &L->pad)); break;
    case LAYER_LRN:
        KEY("size", get_int(w, key, val, 1, 31, &L->lrn_size));
        KEY("alpha", get_float(w, key, val, 0, 1e3, &L->alpha));
        KEY("beta", get_float(w, key, val, 0, 10, &L->beta));
        KEY("k", get_float(w, key, val, 1e-6, 1e3, &L->lrn_k));
        break;
    case LAYER_AUX:
        KEY("pool", get_patch(w, key, val, &L->aux_k, &L->aux_stride));
        KEY("conv", get_channels(w, cfg, key, val, &L->aux_conv));
        KEY("fc", get_channels(w, cfg, key, val, &L->aux_fc));
        KEY("dropout", get_float(w, key, val, 0, 0.999, &L->aux_p));
        break;
    case LAYER_DROPOUT: KEY("p", get_float(w, key, val, 0, 0.999, &L->p)); break;
    case LAYER_FC:
        KEY("out", (L->out_is_classes = !strcmp(val, "classes"), get_channels(w, cfg, key, val, &L->out)));
        break;
    case LAYER_MULTIBOX: KEY("k", get_int(w, key, val, 1, MULTIBOX_MAX_K, &L->multibox_k)); break;
    default: break;
    }
#undef KEY
    return 1;
}

static bool seen_key(char seen[][32], int n_seen, const char *key) {
    for (int j = 0; j < n_seen; j++)
        if (!strcmp(seen[j], key)) return true;
    return false;
}

// The row's key=value tokens from tok[first], each once, then what each kind requires.
static int layer_keys(Where *w, NetConfig *cfg, LayerSpec *L, char **tok, int first, int nt) {
    char seen[MAX_TOKENS][32];
    int n_seen = 0;
    for (int i = first; i < nt; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq || eq == tok[i] || !eq[1]) return fail(w, "expected key=value, got '%s'", tok[i]);
        *eq = '\0';
        if (seen_key(seen, n_seen, tok[i])) return fail(w, "key '%s' given twice", tok[i]);
        snprintf(seen[n_seen++], sizeof seen[0], "%s", tok[i]);
        int rc = layer_key(w, cfg, L, tok[i], eq + 1);
        if (rc > 0) return fail(w, "unknown key '%s' for a %s layer", tok[i], tok[0]);
        if (rc) return -1;
    }
    if ((L->kind == LAYER_CONV || L->kind == LAYER_FC) && !seen_key(seen, n_seen, "out"))
        return fail(w, "%s %s needs out=N", tok[0], L->name);
    if (L->kind == LAYER_DROPOUT && !seen_key(seen, n_seen, "p")) return fail(w, "dropout %s needs p=P", L->name);
    if (L->kind == LAYER_MULTIBOX && !L->multibox_k) return fail(w, "multibox %s needs k=K (the boxes)", L->name);
    if (L->kind == LAYER_AUX && (!seen_key(seen, n_seen, "pool") || !L->aux_conv || !L->aux_fc))
        return fail(w, "aux %s needs pool=KxK/S conv=N fc=N (and optionally dropout=P)", L->name);
    return 0;
}

// One row of the table: its type, name, patch size (conv and pools) and key=value settings, or an inception row.
static int parse_layer(Where *w, NetConfig *cfg, char **tok, int nt) {
    if (cfg->n_layers == CONFIG_MAX_LAYERS) return fail(w, "more than %d layers", CONFIG_MAX_LAYERS);
    LayerSpec *L = &cfg->layers[cfg->n_layers];
    *L = (LayerSpec){.line = w->line, .stride = 1, .lrn_size = 5, .alpha = 1e-4f, .beta = 0.75f, .lrn_k = 1.0f};
    if (layer_head(w, cfg, L, tok, nt)) return -1;
    if (L->kind == LAYER_INCEPTION) {
        if (inception_columns(w, cfg, L, tok, nt)) return -1;
        cfg->n_layers++;
        return 0;
    }
    bool patched = L->kind == LAYER_CONV || L->kind == LAYER_MAXPOOL || L->kind == LAYER_AVGPOOL;
    if (patched) {
        if (nt < 3 || strchr(tok[2], '=')) return fail(w, "%s %s needs a patch size KxK/S", tok[0], L->name);
        if (get_patch(w, "patch", tok[2], &L->k, &L->stride)) return -1;
    }
    if (layer_keys(w, cfg, L, tok, patched ? 3 : 2, nt)) return -1;
    if (patched && L->pad >= L->k) return fail(w, "%s %s: padding must be smaller than the patch", tok[0], L->name);
    if (L->kind == LAYER_LRN && L->lrn_size % 2 == 0) return fail(w, "lrn %s: size must be odd", L->name);
    cfg->n_layers++;
    return 0;
}

static int parse_net_key(Where *w, NetConfig *cfg, char *key, char *val, unsigned *seen) {
    static const char *const keys[] = {"input", "channels", "width",    "classes",
                                       "channel_order", "mean", "scale", "batchnorm"};
    int k = -1;
    for (int i = 0; i < 8; i++)
        if (!strcmp(key, keys[i])) k = i;
    if (k < 0)
        return fail(w, "unknown key '%s' in [net] (input, channels, width, classes, channel_order, mean, scale, "
                       "batchnorm)", key);
    if (*seen & (1u << k)) return fail(w, "key '%s' given twice", key);
    *seen |= 1u << k;
    switch (k) {
    case 0: return get_int(w, key, val, 1, CONFIG_MAX_INPUT, &cfg->input);
    case 1: return get_int(w, key, val, 1, 3, &cfg->channels);
    case 2: {
        double v;
        if (!whole_double(val, &v) || v <= 0 || v > 16) return fail(w, "width expects a number in (0, 16], got '%s'", val);
        cfg->width = v;
        return 0;
    }
    case 3: return get_int(w, key, val, 1, CONFIG_MAX_CLASSES, &cfg->classes);
    case 4:
        if (!strcmp(val, "rgb")) cfg->order = CHANNELS_RGB;
        else if (!strcmp(val, "bgr")) cfg->order = CHANNELS_BGR;
        else return fail(w, "channel_order expects rgb or bgr, got '%s'", val);
        return 0;
    case 5: {
        char *tok[4];
        int n = 0;
        for (char *t = strtok(val, " \t"); t; t = strtok(NULL, " \t"))
            if (n < 4) tok[n++] = t;
            else n = 5;
        if (n < 1 || n > 3) return fail(w, "mean expects one to three numbers");
        for (int i = 0; i < n; i++)
            if (get_float(w, "mean", tok[i], -1e4, 1e4, &cfg->mean[i])) return -1;
        for (int i = n; i < 3; i++) cfg->mean[i] = cfg->mean[n - 1];
        return 0;
    }
    case 7:
        if (!strcmp(val, "true")) cfg->batchnorm = true;
        else if (!strcmp(val, "false")) cfg->batchnorm = false;
        else return fail(w, "batchnorm expects true or false, got '%s'", val);
        return 0;
    default: return get_float(w, key, val, 1e-6, 1e6, &cfg->scale);
    }
}

int config_parse(const char *text, const char *name, NetConfig *cfg, Err *e) {
    *cfg = (NetConfig){.channels = 3, .width = 1.0, .scale = 1.0f, .order = CHANNELS_RGB};
    snprintf(cfg->path, sizeof cfg->path, "%s", name);
    Where w = {.file = name, .e = e};
    enum { NONE, NET, LAYERS } section = NONE;
    unsigned seen = 0;
    bool had_net = false, had_layers = false;
    const char *p = text;
    char line[MAX_LINE + 2];
    while (*p) {
        w.line++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > MAX_LINE) return fail(&w, "line longer than %d characters", MAX_LINE);
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (nl ? 1 : 0);
        for (char *c = line; *c; c++)
            if (*c == '#') *c = '\0';
            else if ((unsigned char)*c < 32 && *c != '\t' && *c != '\r') return fail(&w, "control character in line");
        char *s = text_trim(line);
        if (!*s) continue;
        if (*s == '[') {
            if (!strcmp(s, "[net]") && !had_net) section = NET, had_net = true;
            else if (!strcmp(s, "[layers]") && !had_layers && had_net) {
                if (!(seen & 8u)) return fail(&w, "[net] needs classes = N before [layers]");
                section = LAYERS, had_layers = true;
            }
            else return fail(&w, "unexpected section %s (expected [net] once, then [layers] once)", s);
            continue;
        }
        if (section == NONE) return fail(&w, "expected [net] before '%s'", s);
        if (section == NET) {
            char *eq = strchr(s, '=');
            if (!eq) return fail(&w, "expected key = value, got '%s'", s);
            *eq = '\0';
            char *key = text_trim(s), *val = text_trim(eq + 1);
            if (!*val) return fail(&w, "key '%s' has no value", key);
            if (parse_net_key(&w, cfg, key, val, &seen)) return -1;
            continue;
        }
        char *tok[MAX_TOKENS];
        int nt = 0;
        for (char *t = strtok(s, " \t\r"); t; t = strtok(NULL, " \t\r")) {
            if (nt == MAX_TOKENS) return fail(&w, "too many fields");
            tok[nt++] = t;
        }
        if (parse_layer(&w, cfg, tok, nt)) return -1;
    }
    w.line = 0;
    if (!(seen & 1u)) return err_set(e, "%s: [net] needs input = N", name);
    if (!(seen & 8u)) return err_set(e, "%s: [net] needs classes = N", name);
    if (cfg->channels != 3 && cfg->channels != 1 && cfg->order == CHANNELS_BGR)
        return err_set(e, "%s: channel_order bgr needs 3 channels", name);
    if (cfg->n_layers == 0) return err_set(e, "%s: no layers (a [layers] section with one row per layer)", name);
    return 0;
}

int config_load(const char *path, NetConfig *cfg, Err *e) {
    char *text;
    size_t n;
    if (read_file_all(path, 1 << 20, &text, &n, e)) return -1;
    if (strlen(text) != n) {
        free(text);
        return err_set(e, "%s: not a text file (NUL byte)", path);
    }
    int rc = config_parse(text, path, cfg, e);
    free(text);
    return rc;
}

void config_set_classes(NetConfig *cfg, int classes) {
    cfg->classes = classes;
    for (int i = 0; i < cfg->n_layers; i++)
        if (cfg->layers[i].out_is_classes) cfg->layers[i].out = classes;
}
