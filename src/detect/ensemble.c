// Ensemble files: which networks score the regions, what their outputs mean, and how detections are made.
//
//   # models/raccoon/ensemble.cfg          ('#' starts a comment; paths are relative to this file)
//   [detector]
//   classes = raccoon                      # the object classes in output order, comma-separated; or
//   # class_map = map_det.txt              # the devkit's map_det.txt or meta_det.mat (ILSVRC: names, WNIDs, DET_IDs)
//   background = true                      # output 0 is background (R-CNN-style region training)
//   context = 16                           # pixels of context around a region at the network's input size
//   nms = 0.3                              # per-class non-maximum suppression IoU
//   score_min = 0.01                       # drop detections below this score
//   max_per_image = 100                    # keep the best N per image after suppression (0: all)
//   batch = 64                             # regions a forward pass
//   cascade = 0                            # > 0: the cascade's background threshold (see detect.h); 0: off
//   bbox_reg = true                        # apply the members' box regressors, where their weight files carry one
//                                          # (inception train fits them; default true; detect --no-bbox-reg: off)
//   proposals = ../../configs/proposals-detector.cfg   # Selective Search's setting (default: that one)
//   multibox_config = ../../configs/multibox-tiny.cfg  # a MultiBox network whose best boxes join Selective
//   multibox_weights = multibox.safetensors            # Search's (paper Sec. 8); both or neither
//   multibox_top = 200                     # how many of its boxes (default 200, the paper's)
//
//   [member]                               # one section per network, in any number (1..64)
//   config = ../../configs/googlenet-tiny.cfg
//   weights = member-1.safetensors
//   weight = 1                             # its share of the average (default 1; normalised over members)
//
// A member's config may differ from the others' (input size, width), but every member has the ensemble's number
// of outputs, and the classes its weight file records (inception train writes them) must be the ensemble's. A box
// regressor in a member's weight file (bbox.weight, bbox.bias) must read that member's features.
#include "detect.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

DetectParams detect_params_default(void) {
    return (DetectParams){.context = 16, .batch = 64, .score_min = 0.01, .nms_iou = 0.3, .max_per_image = 100,
                          .cascade = 0, .bbox_reg = true};
}

// Where a value came from, for messages.
typedef struct {
    const char *path;
    int line;
} Where;

static int number(Where w, const char *key, const char *v, double lo, double hi, bool integer, double *out, Err *e) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= lo && x <= hi) || (integer && floor(x) != x))
        return err_set(e, "%s:%d: %s expects %s in [%g, %g], got '%s'", w.path, w.line, key,
                       integer ? "an integer" : "a number", lo, hi, v);
    *out = x;
    return 0;
}

static int boolean(Where w, const char *key, const char *v, bool *out, Err *e) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) return *out = true, 0;
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) return *out = false, 0;
    return err_set(e, "%s:%d: %s expects true or false, got '%s'", w.path, w.line, key, v);
}

// "a, b, c" -> a class map whose names and WNIDs are the entries, in order.
static int class_list(Where w, char *v, ClassMap *m, Err *e) {
    VEC(char *) names = {0};
    for (char *tok = strtok(v, ","); tok; tok = strtok(NULL, ",")) VEC_PUSH(&names, xstrdup(text_trim(tok)));
    int rc = 0;
    for (size_t i = 0; i < names.len && !rc; i++) {
        if (!*names.data[i]) rc = err_set(e, "%s:%d: classes: empty class name", w.path, w.line);
        for (size_t j = 0; j < i && !rc; j++)
            if (!strcmp(names.data[i], names.data[j]))
                rc = err_set(e, "%s:%d: classes: '%s' is listed twice", w.path, w.line, names.data[i]);
    }
    if (!rc && names.len == 0) rc = err_set(e, "%s:%d: classes: no class names", w.path, w.line);
    if (rc) {
        for (size_t i = 0; i < names.len; i++) free(names.data[i]);
        free(names.data);
        return -1;
    }
    *m = (ClassMap){(int)names.len, xcalloc(names.len, sizeof(char *)), names.data};
    for (int k = 0; k < m->n; k++) m->wnid[k] = xstrdup(m->name[k]);
    return 0;
}

typedef struct {
    Ensemble *en;
    char *dir;             // the ensemble file's directory
    bool has_classes, has_background;
    int member_line[ENSEMBLE_MAX_MEMBERS];
} Parser;

static int detector_key(Parser *ps, Where w, const char *key, char *val, Err *e) {
    Ensemble *en = ps->en;
    DetectParams *p = &en->params;
    double x;
    if (!strcmp(key, "classes") || !strcmp(key, "class_map")) {
        if (ps->has_classes) return err_set(e, "%s:%d: the classes are given twice", w.path, w.line);
        ps->has_classes = true;
        if (!strcmp(key, "classes")) return class_list(w, val, &en->classes, e);
        char *path = path_join(ps->dir, val);
        int rc = class_map_load(path, &en->classes, e);
        free(path);
        return rc ? err_prefix(e, "%s:%d: class_map", w.path, w.line) : 0;
    }
    if (!strcmp(key, "background")) return ps->has_background = true, boolean(w, key, val, &en->background, e);
    if (!strcmp(key, "context")) return number(w, key, val, 0, 1000, true, &x, e) ? -1 : (p->context = (int)x, 0);
    if (!strcmp(key, "nms")) return number(w, key, val, 0, 1, false, &p->nms_iou, e);
    if (!strcmp(key, "score_min"))
        return number(w, key, val, 0, 1, false, &x, e) ? -1 : (p->score_min = x, 0);
    if (!strcmp(key, "max_per_image"))
        return number(w, key, val, 0, 1e9, true, &x, e) ? -1 : (p->max_per_image = (int)x, 0);
    if (!strcmp(key, "batch")) return number(w, key, val, 1, 4096, true, &x, e) ? -1 : (p->batch = (int)x, 0);
    if (!strcmp(key, "cascade")) return number(w, key, val, 0, 1, false, &p->cascade, e);
    if (!strcmp(key, "bbox_reg")) return boolean(w, key, val, &p->bbox_reg, e);
    if (!strcmp(key, "multibox_config") || !strcmp(key, "multibox_weights")) {
        char **dst = key[9] == 'c' ? &en->multibox_config : &en->multibox_weights;
        if (*dst) return err_set(e, "%s:%d: %s is given twice", w.path, w.line, key);
        *dst = path_join(ps->dir, val);
        return 0;
    }
    if (!strcmp(key, "multibox_top"))
        return number(w, key, val, 1, MULTIBOX_MAX_K, true, &x, e) ? -1 : (en->multibox_top = (int)x, 0);
    if (!strcmp(key, "proposals")) {
        char *path = path_join(ps->dir, val);
        int rc = proposals_params_load(&en->proposals, path, e);
        free(path);
        return rc ? err_prefix(e, "%s:%d: proposals", w.path, w.line) : 0;
    }
    return err_set(e, "%s:%d: unknown key '%s' in [detector] (classes, class_map, background, context, nms, "
                      "score_min, max_per_image, batch, cascade, bbox_reg, proposals, multibox_config, "
                      "multibox_weights, multibox_top)", w.path, w.line, key);
}

static int member_key(Parser *ps, Where w, const char *key, const char *val, Err *e) {
    Member *m = &ps->en->member[ps->en->n_members - 1];
    if (!strcmp(key, "config") || !strcmp(key, "weights")) {
        char **dst = key[0] == 'c' ? &m->config : &m->weights;
        if (*dst) return err_set(e, "%s:%d: %s is given twice for this member", w.path, w.line, key);
        *dst = path_join(ps->dir, val);
        return 0;
    }
    if (!strcmp(key, "weight")) {
        double x;
        if (number(w, key, val, 0, 1e6, false, &x, e)) return -1;
        m->weight = (float)x;
        return 0;
    }
    return err_set(e, "%s:%d: unknown key '%s' in [member] (config, weights, weight)", w.path, w.line, key);
}

// One line of the file: a section header or a key = value of the current section.
static int parse_line(Parser *ps, Where w, char *s, int *section, Err *e) {
    if (*s == '[') {
        if (!strcmp(s, "[detector]")) return *section = 1, 0;
        if (strcmp(s, "[member]"))
            return err_set(e, "%s:%d: unknown section '%s' ([detector] or [member])", w.path, w.line, s);
        if (ps->en->n_members == ENSEMBLE_MAX_MEMBERS)
            return err_set(e, "%s:%d: more than %d members", w.path, w.line, ENSEMBLE_MAX_MEMBERS);
        ps->member_line[ps->en->n_members] = w.line;
        ps->en->member[ps->en->n_members++] = (Member){.weight = 1};
        return *section = 2, 0;
    }
    char *eq = strchr(s, '=');
    if (!eq) return err_set(e, "%s:%d: expected 'key = value' or a [section], got '%s'", w.path, w.line, s);
    *eq = '\0';
    char *key = text_trim(s), *val = text_trim(eq + 1);
    if (!*val) return err_set(e, "%s:%d: %s has no value", w.path, w.line, key);
    if (*section == 0) return err_set(e, "%s:%d: '%s' before any [detector] or [member] section", w.path, w.line, key);
    return *section == 1 ? detector_key(ps, w, key, val, e) : member_key(ps, w, key, val, e);
}

static int parse_file(Parser *ps, Err *e) {
    Ensemble *en = ps->en;
    char *text;
    size_t n;
    if (read_file_all(en->path, 1 << 20, &text, &n, e)) return -1;
    int rc = 0, section = 0;
    Where w = {en->path, 0};
    char *cursor = text;
    for (char *s; !rc && (s = text_next_line(&cursor));) {
        w.line++;
        char *hash = strchr(s, '#');
        if (hash) *hash = '\0';
        s = text_trim(s);
        if (*s) rc = parse_line(ps, w, s, &section, e);
    }
    free(text);
    if (rc) return -1;
    if (!ps->has_classes) return err_set(e, "%s: no classes (classes = a, b, ... or class_map = FILE)", en->path);
    if (!ps->has_background) return err_set(e, "%s: say whether output 0 is background (background = true|false)", en->path);
    if (en->n_members == 0) return err_set(e, "%s: no [member] sections", en->path);
    if (!en->multibox_config != !en->multibox_weights)
        return err_set(e, "%s: MultiBox needs both multibox_config and multibox_weights", en->path);
    for (int i = 0; i < en->n_members; i++)
        if (!en->member[i].config || !en->member[i].weights)
            return err_set(e, "%s:%d: this member needs both config and weights", en->path, ps->member_line[i]);
    return 0;
}

// The classes a member's weight file records must be the ensemble's, in order.
static int check_member_classes(const Ensemble *en, const Member *m, int line, Err *e) {
    ModelClasses mc;
    if (weights_read_classes(m->weights, &mc, e)) return -1;
    int rc = 0;
    if (mc.classes.n > 0) {
        if (mc.background != en->background)
            rc = err_set(e, "%s:%d: %s was trained %s a background class; the ensemble says background = %s",
                         en->path, line, m->weights, mc.background ? "with" : "without",
                         en->background ? "true" : "false");
        else if (mc.classes.n != en->classes.n)
            rc = err_set(e, "%s:%d: %s records %d classes; the ensemble has %d", en->path, line, m->weights,
                         mc.classes.n, en->classes.n);
        for (int k = 0; !rc && k < mc.classes.n; k++)
            if (strcmp(mc.classes.wnid[k], en->classes.wnid[k]) && strcmp(mc.classes.name[k], en->classes.name[k]))
                rc = err_set(e, "%s:%d: %s's class %d is '%s'; the ensemble's is '%s'", en->path, line, m->weights,
                             k + 1, mc.classes.name[k], en->classes.name[k]);
    }
    model_classes_free(&mc);
    return rc;
}

static bool same_view(const NetConfig *a, const NetConfig *b) {
    return a->input == b->input && a->channels == b->channels && a->order == b->order && a->scale == b->scale &&
           !memcmp(a->mean, b->mean, sizeof a->mean);
}

static int load_member(Ensemble *en, int i, int line, int threads, Err *e) {
    Member *m = &en->member[i];
    NetConfig *cfg = xmalloc(sizeof *cfg); // 18 KB: not on the stack
    int rc = config_load(m->config, cfg, e);
    m->net = xcalloc(1, sizeof(Net));
    if (!rc) {
        config_set_classes(cfg, en->outputs);
        rc = net_create(m->net, cfg, e);
    }
    free(cfg);
    if (!rc && m->net->multibox_k)
        rc = err_set(e, "%s: a MultiBox network (boxes, not class scores) cannot score regions", m->config);
    if (rc) return err_prefix(e, "%s:%d", en->path, line);
    if (threads > 0) m->net->threads = threads;
    if (check_member_classes(en, m, line, e) || weights_load(m->net, m->weights, NULL, e) ||
        bbox_regress_load(m->weights, m->net, en->classes.n, &m->bbox, e))
        return err_prefix(e, "%s:%d", en->path, line);
    m->view = en->n_views;
    for (int v = 0; v < en->n_views; v++)
        if (same_view(en->view[v].cfg, m->net->cfg)) m->view = v;
    if (m->view == en->n_views) en->view[en->n_views++] = (EnsembleView){m->net->cfg, en->params.context};
    return 0;
}

static void normalise_weights(Ensemble *en) {
    double sum = 0;
    for (int i = 0; i < en->n_members; i++) sum += en->member[i].weight;
    for (int i = 0; i < en->n_members; i++)
        en->member[i].weight = sum > 0 ? (float)(en->member[i].weight / sum) : 1.0f / (float)en->n_members;
}

int ensemble_load(const char *path, int threads, Ensemble *en, Err *e) {
    *en = (Ensemble){.path = xstrdup(path), .params = detect_params_default(), .multibox_top = 200};
    proposals_params_default(&en->proposals);
    Parser ps = {.en = en, .dir = path_dirname(path)};
    int rc = parse_file(&ps, e);
    if (!rc) {
        en->outputs = en->classes.n + en->background;
        for (int i = 0; i < en->n_members && !rc; i++) rc = load_member(en, i, ps.member_line[i], threads, e);
    }
    if (!rc && en->multibox_config) {
        en->multibox = xcalloc(1, sizeof(Net));
        rc = multibox_load(en->multibox_config, en->multibox_weights, threads, en->multibox, e);
        if (rc) free(en->multibox), en->multibox = NULL, err_prefix(e, "%s: multibox", en->path);
    }
    for (int i = 0; i < en->n_views; i++) en->view[i].context = en->params.context;
    normalise_weights(en);
    proposals_params_describe(&en->proposals, en->proposals_desc, sizeof en->proposals_desc);
    free(ps.dir);
    if (rc) ensemble_free(en);
    return rc;
}

void ensemble_of_net(Ensemble *en, Net *net, const ClassMap *classes, bool background, const DetectParams *p) {
    *en = (Ensemble){.n_members = 1, .n_views = 1, .classes = *classes, .background = background,
                     .outputs = net->cfg->classes, .params = *p, .borrowed = true};
    en->member[0] = (Member){.weight = 1, .view = 0, .net = net};
    en->view[0] = (EnsembleView){net->cfg, p->context};
    proposals_params_default(&en->proposals);
}

int ensemble_set_precision(Ensemble *en, Precision p, Err *e) {
    for (int i = 0; i < en->n_members; i++)
        if (net_set_precision(en->member[i].net, p, e)) return -1;
    if (en->multibox && net_set_precision(en->multibox, p, e)) return -1;
    en->precision = p;
    return 0;
}

void ensemble_free(Ensemble *en) {
    if (en->borrowed) { // ensemble_of_net: nothing is owned
        *en = (Ensemble){0};
        return;
    }
    for (int i = 0; i < en->n_members; i++) {
        free(en->member[i].config);
        free(en->member[i].weights);
        if (en->member[i].net) net_free(en->member[i].net);
        free(en->member[i].net);
        bbox_regress_free(&en->member[i].bbox);
    }
    if (en->multibox) net_free(en->multibox);
    free(en->multibox);
    free(en->multibox_config);
    free(en->multibox_weights);
    class_map_free(&en->classes);
    free(en->path);
    *en = (Ensemble){0};
}

bool ensemble_regresses(const Ensemble *en) {
    bool any = false;
    for (int i = 0; i < en->n_members; i++) any = any || en->member[i].bbox.classes > 0;
    return en->params.bbox_reg && any;
}

json_t *ensemble_setting_json(const Ensemble *en) {
    json_t *members = json_array();
    for (int i = 0; i < en->n_members; i++)
        json_array_append_new(members, json_pack("{sssssfsb}", "config", en->member[i].config, "weights",
                                                 en->member[i].weights, "weight", (double)en->member[i].weight,
                                                 "bbox", en->member[i].bbox.classes > 0));
    const DetectParams *p = &en->params;
    json_t *mb = en->multibox ? json_pack("{sssssi}", "config", en->multibox_config, "weights", en->multibox_weights,
                                          "top", en->multibox_top)
                              : json_null();
    return json_pack("{sssssoso sbsisfsfsisfsbss}", "ensemble", en->path ? en->path : "", "proposals",
                     en->proposals_desc, "multibox", mb, "members", members, "background", en->background,
                     "context", p->context, "nms", p->nms_iou, "score_min", p->score_min, "max_per_image",
                     p->max_per_image, "cascade", p->cascade, "bbox_reg", ensemble_regresses(en), "precision",
                     en->precision == PRECISION_BF16 ? "bf16" : "fp32");
}
