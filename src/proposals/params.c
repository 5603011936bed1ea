// The diversification of Selective Search: which colour spaces, segmentation scales and similarity combinations
// run, and the settings read from configs/*.cfg.
#include "proposals.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *SS_COLOUR_NAMES[SS_COLOUR_COUNT] = {"hsv", "lab", "rgi", "h", "i"};

void proposals_params_default(ProposalParams *p) {
    *p = (ProposalParams){.k_scale = 2.0, .sigma = 0.8, .max_side = 500, .min_box = 20, .seed = 1};
    proposals_params_mode(p, "fast", NULL);
}

int proposals_params_mode(ProposalParams *p, const char *mode, Err *e) {
    const unsigned ctsf = SS_SIM_COLOUR | SS_SIM_TEXTURE | SS_SIM_SIZE | SS_SIM_FILL;
    const unsigned tsf = SS_SIM_TEXTURE | SS_SIM_SIZE | SS_SIM_FILL;
    if (!strcmp(mode, "fast")) { // R-CNN's selective_search_boxes(fast_mode = true)
        p->n_colours = 2, p->colours[0] = SS_HSV, p->colours[1] = SS_LAB;
        p->n_ks = 2, p->ks[0] = 50, p->ks[1] = 100;
        p->n_sims = 2, p->sims[0] = ctsf, p->sims[1] = tsf;
        return 0;
    }
    if (!strcmp(mode, "quality")) { // Uijlings et al. Table 5, "Quality"
        p->n_colours = 5;
        for (int i = 0; i < 5; i++) p->colours[i] = (SsColourSpace)i;
        p->n_ks = 4, p->ks[0] = 50, p->ks[1] = 100, p->ks[2] = 150, p->ks[3] = 300;
        p->n_sims = 4, p->sims[0] = ctsf, p->sims[1] = tsf, p->sims[2] = SS_SIM_FILL, p->sims[3] = SS_SIM_SIZE;
        return 0;
    }
    return err_set(e, "unknown mode '%s' (expected fast or quality)", mode);
}

int proposals_params_strategies(const ProposalParams *p) { return p->n_colours * p->n_ks * p->n_sims; }

void proposals_params_describe(const ProposalParams *p, char *buf, size_t n) {
    size_t at = 0;
#define PUT(...)                                                                                                \
    do {                                                                                                        \
        int m_ = snprintf(buf + at, at < n ? n - at : 0, __VA_ARGS__);                                          \
        if (m_ > 0) at += (size_t)m_;                                                                           \
    } while (0)
    PUT("colours=");
    for (int i = 0; i < p->n_colours; i++) PUT("%s%s", i ? "," : "", SS_COLOUR_NAMES[p->colours[i]]);
    PUT(" k=");
    for (int i = 0; i < p->n_ks; i++) PUT("%s%g", i ? "," : "", p->ks[i] * p->k_scale);
    PUT(" sims=");
    for (int i = 0; i < p->n_sims; i++) {
        unsigned s = p->sims[i];
        PUT("%s%s%s%s%s", i ? "," : "", s & SS_SIM_COLOUR ? "C" : "", s & SS_SIM_TEXTURE ? "T" : "",
            s & SS_SIM_SIZE ? "S" : "", s & SS_SIM_FILL ? "F" : "");
    }
    PUT(" k_scale=%g sigma=%g max_side=%d min_box=%d max_boxes=%d seed=%llu", p->k_scale, p->sigma, p->max_side,
        p->min_box, p->max_boxes, (unsigned long long)p->seed);
#undef PUT
}

static int parse_num(const char *path, int line, const char *key, const char *v, double lo, double hi, double *out,
                     Err *e) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= lo && x <= hi))
        return err_set(e, "%s:%d: %s expects a number in [%g, %g], got '%s'", path, line, key, lo, hi, v);
    *out = x;
    return 0;
}

int proposals_params_load(ProposalParams *p, const char *path, Err *e) {
    char *text;
    size_t n;
    if (read_file_all(path, 1 << 20, &text, &n, e)) return -1;
    ProposalParams q = *p;
    int line = 0, rc = 0;
    char *cursor = text;
    for (char *s; !rc && (s = text_next_line(&cursor));) {
        line++;
        char *hash = strchr(s, '#');
        if (hash) *hash = '\0';
        s = text_trim(s);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = err_set(e, "%s:%d: expected 'key = value', got '%s'", path, line, s);
            break;
        }
        *eq = '\0';
        char *key = text_trim(s), *val = text_trim(eq + 1);
        double x = 0;
        if (!strcmp(key, "mode")) {
            if (proposals_params_mode(&q, val, e)) rc = err_prefix(e, "%s:%d", path, line);
        } else if (!strcmp(key, "k_scale")) {
            if (!(rc = parse_num(path, line, key, val, 1e-3, 1e3, &x, e))) q.k_scale = x;
        } else if (!strcmp(key, "sigma")) {
            if (!(rc = parse_num(path, line, key, val, 0, 10, &x, e))) q.sigma = x;
        } else if (!strcmp(key, "max_side")) {
            if (!(rc = parse_num(path, line, key, val, 0, IMAGE_MAX_SIDE, &x, e))) q.max_side = (int)x;
        } else if (!strcmp(key, "min_box")) {
            if (!(rc = parse_num(path, line, key, val, 0, IMAGE_MAX_SIDE, &x, e))) q.min_box = (int)x;
        } else if (!strcmp(key, "max_boxes")) {
            if (!(rc = parse_num(path, line, key, val, 0, 1e9, &x, e))) q.max_boxes = (int)x;
        } else if (!strcmp(key, "seed")) {
            if (!(rc = parse_num(path, line, key, val, 0, 9007199254740992.0, &x, e))) q.seed = (uint64_t)x;
        } else {
            rc = err_set(e, "%s:%d: unknown key '%s' (expected mode, k_scale, sigma, max_side, min_box, max_boxes, "
                            "seed)", path, line, key);
        }
        if (!rc && floor(x) != x && (strcmp(key, "k_scale") && strcmp(key, "sigma")))
            rc = err_set(e, "%s:%d: %s expects an integer, got '%s'", path, line, key, val);
    }
    free(text);
    if (!rc) *p = q;
    return rc;
}
