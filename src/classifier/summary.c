// Table 1 of the paper, computed from a config: per row the output size, depth, the Inception columns, params
// (weights and biases) and ops (multiply-adds of the convolutions and fully connected layers for one image).
// For the paper's own network the printed table sets the paper's params/ops beside ours and says in notes where
// a paper figure does not follow from the architecture. The paper counts K = 1024 params and M = 10^6 ops.
#include "classifier.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

// Table 1's params and ops columns, by our row names: (params in K = 1024, ops in M = 10^6).
static const struct {
    const char *name;
    double params_k, ops_m;
    int h, c; // output size of the row, to recognise the paper's network (224 input, width 1)
} PAPER[] = {
    {"conv1", 2.7, 34, 112, 64},           {"conv2", 112, 360, 56, 192},
    {"inception_3a", 159, 128, 28, 256},   {"inception_3b", 380, 304, 28, 480},
    {"inception_4a", 364, 73, 14, 512},    {"inception_4b", 437, 88, 14, 512},
    {"inception_4c", 463, 100, 14, 512},   {"inception_4d", 580, 119, 14, 528},
    {"inception_4e", 840, 170, 14, 832},   {"inception_5a", 1072, 54, 7, 832},
    {"inception_5b", 1388, 71, 7, 1024},   {"classifier", 1000, 1, 1, 1000},
};
#define N_PAPER (sizeof PAPER / sizeof PAPER[0])

static int paper_row(const SummaryRow *r) {
    for (size_t i = 0; i < N_PAPER; i++)
        if (!strcmp(PAPER[i].name, r->name) && PAPER[i].h == r->out_h && PAPER[i].c == r->out_c) return (int)i;
    return -1;
}

// Whether our figure agrees with the paper's to the paper's own precision: within one unit of its last digit
// (the paper rounds some figures and truncates others).
static bool agrees(double ours, double paper) {
    double unit = paper == floor(paper) ? 1.0 : 0.1;
    return fabs(ours - paper) <= unit + 1e-9;
}

static bool params_agree(const SummaryRow *r, int p) {
    return agrees((double)r->params / 1024.0, PAPER[p].params_k) || agrees((double)r->weights / 1024.0, PAPER[p].params_k);
}

static bool ops_agree(const SummaryRow *r, int p) {
    return agrees((double)r->macs / 1e6, PAPER[p].ops_m);
}

// One note for a row of the paper's network whose figures do not follow from its layers; false if they do.
static bool paper_note(const SummaryRow *r, char *buf, size_t n) {
    int p = paper_row(r);
    if (p < 0 || (params_agree(r, p) && ops_agree(r, p))) return false;
    double pk = (double)r->params / 1024.0, wk = (double)r->weights / 1024.0, om = (double)r->macs / 1e6;
    int k = snprintf(buf, n, "%s: ", r->name);
    if (!params_agree(r, p))
        k += snprintf(buf + k, n - (size_t)k, "the paper gives %gK params, its layers have %.1fK (%.1fK without biases)",
                      PAPER[p].params_k, pk, wk);
    else
        k += snprintf(buf + k, n - (size_t)k, "params agree (%gK)", PAPER[p].params_k);
    if (!ops_agree(r, p))
        k += snprintf(buf + k, n - (size_t)k, "; the paper gives %gM ops, its layers have %.1fM", PAPER[p].ops_m, om);
    else
        k += snprintf(buf + k, n - (size_t)k, "; ops agree (%.1fM vs %gM)", om, PAPER[p].ops_m);
    // Is the paper's ops column its own params figure times the output area?
    double implied = PAPER[p].params_k * 1024.0 * r->out_h * r->out_w / 1e6;
    if (!params_agree(r, p) && !ops_agree(r, p) && fabs(implied - PAPER[p].ops_m) <= 0.05 * PAPER[p].ops_m)
        k += snprintf(buf + k, n - (size_t)k, " (the paper's ops = its params x %dx%d: the two paper figures agree "
                      "with each other, not with the layers)", r->out_h, r->out_w);
    else if (!params_agree(r, p) && ops_agree(r, p))
        k += snprintf(buf + k, n - (size_t)k, " (so the paper's params figure is the one that is off)");
    return true;
}

void net_summary(const Net *net, Summary *s) {
    *s = (Summary){0};
    const NetConfig *cfg = net->cfg;
    for (int li = 0; li < cfg->n_layers; li++) {
        const LayerSpec *L = &cfg->layers[li];
        SummaryRow *r = &s->row[s->n_rows++];
        *r = (SummaryRow){.aux = L->kind == LAYER_AUX};
        snprintf(r->name, sizeof r->name, "%s", L->name);
        switch (L->kind) {
        case LAYER_CONV:
            snprintf(r->type, sizeof r->type, "convolution");
            r->depth = L->n3x3r ? 2 : 1;
            if (L->n3x3r) r->n3x3r = L->n3x3r, r->n3x3 = L->out;
            break;
        case LAYER_MAXPOOL: snprintf(r->type, sizeof r->type, "max pool"); break;
        case LAYER_AVGPOOL: snprintf(r->type, sizeof r->type, "avg pool"); break;
        case LAYER_LRN: snprintf(r->type, sizeof r->type, "local resp. norm"); break;
        case LAYER_INCEPTION: {
            char tag[8] = "";
            const char *u = strrchr(L->name, '_');
            snprintf(tag, sizeof tag, "%s", u ? u + 1 : L->name);
            snprintf(r->type, sizeof r->type, "inception (%s)", tag);
            r->depth = 2;
            r->n1x1 = L->n1x1, r->n3x3r = L->n3x3r, r->n3x3 = L->n3x3;
            r->n5x5r = L->n5x5r, r->n5x5 = L->n5x5, r->npool = L->npool;
            break;
        }
        case LAYER_AUX: snprintf(r->type, sizeof r->type, "auxiliary head"); r->depth = 3; break;
        case LAYER_DROPOUT: snprintf(r->type, sizeof r->type, "dropout (%.0f%%)", 100.0 * L->p); break;
        case LAYER_FC: snprintf(r->type, sizeof r->type, "linear"); r->depth = 1; break;
        case LAYER_SOFTMAX: snprintf(r->type, sizeof r->type, "softmax"); break;
        case LAYER_MULTIBOX:
            snprintf(r->type, sizeof r->type, "multibox (K=%d)", L->multibox_k);
            r->depth = 1;
            break;
        }
        if (L->kind == LAYER_CONV || L->kind == LAYER_MAXPOOL || L->kind == LAYER_AVGPOOL)
            snprintf(r->patch, sizeof r->patch, "%dx%d/%d", L->k, L->k, L->stride);
        int v = net_find_value(net, L->name);
        r->out_c = net->value[v].c, r->out_h = net->value[v].h, r->out_w = net->value[v].w;
        for (int i = 0; i < net->n_params; i++)
            // priors and BN's running statistics are data, and a BN convolution's bias is unused: not learned
            if (net->param[i].layer == li && !net->param[i].fixed && !net->param[i].stat) {
                r->params += (long long)net->param[i].size;
                if (net->param[i].ndim > 1) r->weights += (long long)net->param[i].size;
            }
        for (int i = 0; i < net->n_ops; i++) {
            const Op *op = &net->op[i];
            if (op->layer != li || (op->kind != OP_CONV && op->kind != OP_FC)) continue;
            const Value *out = &net->value[op->out.v];
            long long taps = op->kind == OP_FC ? 1 : (long long)op->k * op->k;
            r->macs += (long long)(op->out.c + op->out2.c) * op->in.c * taps * out->h * out->w;
        }
        if (r->aux) s->aux_params += r->params, s->aux_macs += r->macs;
        else s->params += r->params, s->macs += r->macs;
    }
}

void summary_print(const Net *net, const Summary *s, FILE *f) {
    const NetConfig *cfg = net->cfg;
    char outputs[48];
    if (net->multibox_k) snprintf(outputs, sizeof outputs, "a multibox head of %d boxes", net->multibox_k);
    else snprintf(outputs, sizeof outputs, "%d classes", cfg->classes);
    fprintf(f, "%s: input %dx%dx%d, width x%g, %s\n\n", cfg->path, cfg->input, cfg->input, cfg->channels,
            cfg->width, outputs);
    fprintf(f, "%-18s %-14s %-7s %-14s %5s %5s %6s %5s %6s %5s %5s %10s %9s  %s\n", "type", "name", "patch",
            "output size", "depth", "#1x1", "#3x3r", "#3x3", "#5x5r", "#5x5", "pool", "params", "ops", "paper");
    bool notes = false;
    for (int i = 0; i < s->n_rows; i++) {
        const SummaryRow *r = &s->row[i];
        char size[32], cols[6][8], params[16] = "", ops[16] = "", paper[48] = "";
        snprintf(size, sizeof size, "%dx%dx%d", r->out_h, r->out_w, r->out_c);
        const int vals[6] = {r->n1x1, r->n3x3r, r->n3x3, r->n5x5r, r->n5x5, r->npool};
        for (int k = 0; k < 6; k++) snprintf(cols[k], sizeof cols[k], "%s", "");
        for (int k = 0; k < 6; k++)
            if (vals[k]) snprintf(cols[k], sizeof cols[k], "%d", vals[k]);
        if (r->params) snprintf(params, sizeof params, "%.1fK", (double)r->params / 1024.0);
        if (r->macs) snprintf(ops, sizeof ops, "%.1fM", (double)r->macs / 1e6);
        int p = paper_row(r);
        if (p >= 0) {
            bool ok = params_agree(r, p) && ops_agree(r, p);
            snprintf(paper, sizeof paper, "%gK %gM%s", PAPER[p].params_k, PAPER[p].ops_m, ok ? "" : "  (*)");
            notes |= !ok;
        }
        fprintf(f, "%-18s %-14s %-7s %-14s %5d %5s %6s %5s %6s %5s %5s %10s %9s  %s\n", r->type, r->name, r->patch,
                size, r->depth, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], params, ops, paper);
    }
    fprintf(f, "\ninference network (no auxiliary heads): %lld params (%.1fK), %.3f G multiply-adds per image\n",
            s->params, (double)s->params / 1024.0, (double)s->macs / 1e9);
    fprintf(f, "auxiliary heads (training only): %lld params, %.1f M multiply-adds per image\n", s->aux_params,
            (double)s->aux_macs / 1e6);
    fprintf(f, "params count weights and biases (K = 1024); ops are multiply-adds of convolutions and fully "
               "connected layers (M = 10^6)\n");
    if (cfg->batchnorm)
        fprintf(f, "batch normalisation: each convolution's bias is replaced by BN's gamma and beta (counted as params;\n"
                   "its running mean and variance are stored with the weights, not counted); inference folds BN into\n"
                   "the convolution, so the ops are the same\n");
    if (net->multibox_k)
        fprintf(f, "multibox head: %d outputs an image (%d boxes' 4 offsets from their priors, then their %d logits);\n"
                   "its %d x 4 priors are stored with the weights but not trained, and not counted as params\n",
                5 * net->multibox_k, net->multibox_k, net->multibox_k, net->multibox_k);
    if (notes) {
        fprintf(f, "\nnotes: (*) where the paper's figures do not follow from the architecture it describes:\n");
        char note[512];
        for (int i = 0; i < s->n_rows; i++)
            if (paper_note(&s->row[i], note, sizeof note)) fprintf(f, "  %s\n", note);
    }
}

int summary_write_json(const Net *net, const Summary *s, FILE *f, Err *e) {
    json_t *root = json_object(), *rows = json_array(), *notes = json_array();
    for (int i = 0; i < s->n_rows; i++) {
        const SummaryRow *r = &s->row[i];
        json_t *o = json_object();
        json_object_set_new(o, "type", json_string(r->type));
        json_object_set_new(o, "name", json_string(r->name));
        if (r->patch[0]) json_object_set_new(o, "patch", json_string(r->patch));
        json_object_set_new(o, "output", json_pack("[iii]", r->out_h, r->out_w, r->out_c));
        json_object_set_new(o, "depth", json_integer(r->depth));
        const char *keys[6] = {"1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj"};
        const int vals[6] = {r->n1x1, r->n3x3r, r->n3x3, r->n5x5r, r->n5x5, r->npool};
        for (int k = 0; k < 6; k++)
            if (vals[k]) json_object_set_new(o, keys[k], json_integer(vals[k]));
        json_object_set_new(o, "params", json_integer(r->params));
        json_object_set_new(o, "macs", json_integer(r->macs));
        json_object_set_new(o, "aux", json_boolean(r->aux));
        int p = paper_row(r);
        if (p >= 0) {
            json_object_set_new(o, "paper_params_k", json_real(PAPER[p].params_k));
            json_object_set_new(o, "paper_ops_m", json_real(PAPER[p].ops_m));
            char note[512];
            if (paper_note(r, note, sizeof note)) json_array_append_new(notes, json_string(note));
        }
        json_array_append_new(rows, o);
    }
    json_object_set_new(root, "config", json_string(net->cfg->path));
    if (net->multibox_k) json_object_set_new(root, "multibox_k", json_integer(net->multibox_k));
    if (net->cfg->batchnorm) json_object_set_new(root, "batchnorm", json_true());
    json_object_set_new(root, "rows", rows);
    json_object_set_new(root, "totals", json_pack("{sIsI}", "params", (json_int_t)s->params, "macs", (json_int_t)s->macs));
    json_object_set_new(root, "aux_totals",
                        json_pack("{sIsI}", "params", (json_int_t)s->aux_params, "macs", (json_int_t)s->aux_macs));
    json_object_set_new(root, "notes", notes);
    int rc = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) ? err_set(e, "cannot write JSON") : 0;
    fputc('\n', f);
    json_decref(root);
    return rc;
}
