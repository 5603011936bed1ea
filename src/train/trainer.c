// A training run: the network of a config, a training set feeding a loader thread, SGD with momentum and the
// paper's schedule, auxiliary heads at 0.3, Polyak averaging, a validation pass each epoch, a CSV log, and
// checkpoints from which a killed run resumes exactly (batches, augmentation and dropout depend only on the seed
// and the step).
#include "train.h"

#include "detect.h"
#include "eval.h"
#include "proposals.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PIXEL_STD 57.5 // of 0..255 RGB over ImageNet (0.226 x 255, averaged over the channels)

// Whether parameter i is the weight of the first convolution (the one reading the input), or of a classifier
// (a fully connected layer without ReLU: the main one and the auxiliary heads' last).
static bool is_first_conv_weight(const Net *net, int i) {
    for (int k = 0; k < net->n_ops; k++)
        if (net->op[k].kind == OP_CONV && net->op[k].in.v == 0 && net->op[k].weight == i) return true;
    return false;
}

static bool is_classifier_weight(const Net *net, int i) {
    for (int k = 0; k < net->n_ops; k++)
        if (net->op[k].kind == OP_FC && !net->op[k].relu && net->op[k].weight == i) return true;
    return false;
}

int train_options_recipe(TrainOptions *o, const char *name) {
    o->pos_iou = 0.5;
    if (!strcmp(name, "paper")) {
        o->sgd = sgd_paper(0.01);
        o->pos_fraction = 0.25, o->hard_fraction = 0, o->jitter = 0, o->crop_area_min = 0.08;
        o->bbox_reg = false; // "we did not utilize bounding box regression due to lack of time"
        return 0;
    }
    if (!strcmp(name, "scratch")) {
        o->sgd = sgd_paper(0); // the rate follows the network: see recipe_lr
        o->sgd.schedule = SCHEDULE_COSINE, o->sgd.warmup_epochs = 1;
        o->pos_fraction = 0.25, o->hard_fraction = 0, o->jitter = 0, o->crop_area_min = 0.08;
        o->bbox_reg = true;
        return 0;
    }
    return -1;
}

TrainOptions train_options_default(void) {
    TrainOptions o = {.epochs = 1, .batch = 0, .context = 16, .aux_weight = 0.3f, .multibox_top = 200, .seed = 1,
                      .log_every = 10, .augment = true,
                      .bbox_lambda = BBOX_LAMBDA_DEFAULT};
    train_options_recipe(&o, "scratch");
    return o;
}

// ---------------------------------------------------------------------------------------------------------------
// the loader thread's work

typedef struct {
    Dataset *data;
    const NetConfig *cfg;
    BatchRecipe recipe;
} Loader;

static int produce_batch(void *ctx, long index, void *slot, Err *e) {
    Loader *l = ctx;
    return dataset_batch(l->data, l->cfg, &l->recipe, index, slot, e);
}

// ---------------------------------------------------------------------------------------------------------------
// validation

// Top-1/top-5 of the centre crop of every validation image (the `classify --crops 1` view).
static int validate_classify(Net *net, Dataset *val, int limit, bool quiet, ValResult *r, Err *e) {
    const NetConfig *cfg = net->cfg;
    int n = val->samples.n < limit || limit <= 0 ? val->samples.n : limit, batch = 32, C = cfg->classes;
    size_t per = (size_t)cfg->channels * cfg->input * cfg->input;
    float *x = xmalloc((size_t)batch * per * sizeof(float)), *probs = xmalloc((size_t)batch * C * sizeof(float));
    int *labels = xmalloc((size_t)batch * sizeof(int)), k = 0, rc = -1, top5[5];
    long hit1 = 0, hit5 = 0, seen = 0;
    Progress prog;
    progress_init(&prog, "validation", n, "img", quiet);
    for (int i = 0; i <= n; i++) {
        if (i < n) {
            Image im;
            Err de;
            if (image_load(val->samples.s[i].path, &im, &de)) {
                fprintf(stderr, "\nwarning: %s (skipped)\n", de.msg);
                continue;
            }
            float *crop;
            int m;
            int bad = classify_crops(cfg, &im, 1, &crop, &m, e);
            image_free(&im);
            if (bad) goto done;
            memcpy(x + (size_t)k * per, crop, per * sizeof(float));
            free(crop);
            labels[k++] = val->samples.s[i].label;
            progress_add(&prog, 1);
        }
        if (k == batch || (i == n && k > 0)) {
            if (net_predict(net, x, k, batch, probs, NULL, e)) goto done;
            for (int j = 0; j < k; j++) {
                classify_topk(probs + (size_t)j * C, C, C < 5 ? C : 5, top5);
                hit1 += top5[0] == labels[j];
                for (int q = 0; q < (C < 5 ? C : 5); q++) hit5 += top5[q] == labels[j];
            }
            seen += k;
            k = 0;
        }
    }
    progress_finish(&prog);
    *r = (ValResult){.top1 = seen ? (double)hit1 / seen : NAN, .top5 = seen ? (double)hit5 / seen : NAN,
                     .region_accuracy = NAN, .map = NAN, .recall = NAN, .n = (int)seen};
    rc = 0;
done:
    free(x), free(probs), free(labels);
    return rc;
}

// The balanced region set of images [0, n_img): their positive regions, thinned evenly to at most 2,000, and as
// many background regions drawn with a fixed seed (chance is 1/2 for one class).
static RegionVec balanced_regions(const Dataset *val, int n_img) {
    RegionVec set = {0};
    const RegionVec *pos = &val->regions.pos, *bg = &val->regions.bg;
    size_t eligible = 0;
    for (size_t i = 0; i < pos->len; i++) eligible += pos->data[i].image < n_img;
    size_t stride = eligible > 2000 ? (eligible + 1999) / 2000 : 1, seen = 0; // spread over all the images
    for (size_t i = 0; i < pos->len; i++)
        if (pos->data[i].image < n_img && seen++ % stride == 0) VEC_PUSH(&set, pos->data[i]);
    size_t n_pos = set.len;
    Rng rng;
    rng_seed(&rng, 0xba1a2ced);
    for (size_t t = 0; t < 50 * n_pos && set.len < 2 * n_pos && bg->len; t++) {
        const Region *g = &bg->data[rng_below(&rng, (uint32_t)bg->len)];
        if (g->image < n_img) VEC_PUSH(&set, *g);
    }
    return set;
}

// Validation image i (pixels im): its share of the balanced set scored (those classified right added to
// *correct), then its detections over all its proposals appended to *all. probs: scratch, grown as needed.
static int validate_image(Ensemble *en, const DatasetImage *vi, int i, const Image *im, const RegionVec *set,
                          float **probs, long *correct, DetectionVec *all, Err *e) {
    const int C = en->outputs;
    VEC(RegionRef) regs = {0};
    VEC(int) labels = {0};
    for (size_t t = 0; t < set->len; t++)
        if (set->data[t].image == i) {
            VEC_PUSH(&regs, ((RegionRef){im, set->data[t].box}));
            VEC_PUSH(&labels, set->data[t].label);
        }
    int n_set = (int)regs.len;
    for (int t = 0; t < vi->n_props; t++) VEC_PUSH(&regs, ((RegionRef){im, vi->props[t]}));
    *probs = xrealloc(*probs, (regs.len ? regs.len : 1) * (size_t)C * sizeof(float));
    int bad = ensemble_score(en, regs.data, (int)regs.len, *probs, NULL, NULL, e);
    if (!bad) {
        for (int t = 0; t < n_set; t++) {
            const float *pr = *probs + (size_t)t * C;
            int best = 0;
            for (int k = 1; k < C; k++) best = pr[k] > pr[best] ? k : best;
            *correct += best == labels.data[t];
        }
        detect_from_scores(en, i + 1, vi->props, NULL, *probs + (size_t)n_set * C, vi->n_props, all);
    }
    free(regs.data);
    free(labels.data);
    return bad;
}

// Region accuracy on a balanced set (balanced_regions), then detection mean AP over the validation images'
// proposals (VOC protocol, IoU 0.5).
static int validate_regions(Net *net, Dataset *val, int limit, int context, bool quiet, ValResult *r, Err *e) {
    int n_img = val->n_images < limit || limit <= 0 ? val->n_images : limit;
    RegionVec set = balanced_regions(val, n_img);
    DetectParams dp = detect_params_default();
    dp.context = context;
    dp.score_min = 0.001;
    Ensemble en;
    ensemble_of_net(&en, net, &val->classes, true, &dp);
    float *probs = NULL;
    DetectionVec all = {0};
    GroundTruth gt;
    gt_create(&gt, &val->classes, n_img);
    EvalResult er = {0};
    Image scratch = {0};
    int rc = -1;
    long correct = 0;
    Progress prog;
    progress_init(&prog, "validation", n_img, "img", quiet);
    for (int i = 0; i < n_img; i++) {
        const DatasetImage *vi = &val->images[i];
        gt_set_image(&gt, i, vi->name, vi->n_gt, vi->gt, vi->gt_label, vi->difficult, 0.5);
        Err de;
        const Image *im = vi->bad ? NULL : dataset_image(val, i, &scratch, &de);
        if (!im) continue;
        if (validate_image(&en, vi, i, im, &set, &probs, &correct, &all, e)) goto done;
        progress_add(&prog, 1);
    }
    progress_finish(&prog);
    Detections dets = {.d = all};
    if (eval_run(&gt, &dets, NULL, EVAL_VOC, &er, e)) goto done;
    *r = (ValResult){.top1 = NAN, .top5 = NAN, .region_accuracy = set.len ? (double)correct / (double)set.len : NAN,
                     .map = er.mean_ap, .recall = NAN, .n = (int)set.len};
    rc = 0;
done:
    eval_result_free(&er);
    gt_free(&gt);
    free(all.data);
    image_free(&scratch);
    free(probs);
    free(set.data);
    return rc;
}

// Recall at IoU 0.5 of the MultiBox network's best `top` boxes over the validation images' objects (difficult
// ones left out, as VOC does), each image seen whole.
static int validate_multibox(Net *net, Dataset *val, int limit, int top, bool quiet, ValResult *r, Err *e) {
    int n_img = val->n_images < limit || limit <= 0 ? val->n_images : limit;
    long hit = 0, total = 0;
    Image scratch = {0};
    Progress prog;
    progress_init(&prog, "validation", n_img, "img", quiet);
    for (int i = 0; i < n_img; i++) {
        const DatasetImage *vi = &val->images[i];
        Err de;
        const Image *im = vi->bad ? NULL : dataset_image(val, i, &scratch, &de);
        Proposals p = {0};
        if (im && multibox_propose(net, &im, 1, top, &p, e)) return image_free(&scratch), -1;
        for (int g = 0; g < vi->n_gt; g++) {
            if (vi->difficult && vi->difficult[g]) continue;
            double best = 0;
            for (int k = 0; k < p.n; k++) best = fmax(best, box_iou(p.box[k], vi->gt[g]));
            hit += best >= 0.5, total++;
        }
        proposals_free(&p);
        progress_add(&prog, 1);
    }
    progress_finish(&prog);
    image_free(&scratch);
    *r = (ValResult){.top1 = NAN, .top5 = NAN, .region_accuracy = NAN, .map = NAN,
                     .recall = total ? (double)hit / (double)total : NAN, .n = n_img};
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the log

static const char *LOG_HEADER = "epoch,step,lr,loss,val_top1,val_top5,val_map,images_per_s,seconds,val_recall\n";

static void csv_number(FILE *f, double x, const char *fmt) {
    if (isfinite(x)) fprintf(f, fmt, x);
}

static void log_row(FILE *f, double epoch, long step, double lr, double loss, const ValResult *v, double ips,
                    double seconds) {
    fprintf(f, "%.4f,%ld,%.6g,", epoch, step, lr);
    csv_number(f, loss, "%.6f");
    fputc(',', f);
    // val_top1 (a contract) is the accuracy of whichever kind of set: top-1, or the regions' accuracy
    csv_number(f, !v ? NAN : isfinite(v->top1) ? v->top1 : v->region_accuracy, "%.4f");
    fputc(',', f);
    csv_number(f, v ? v->top5 : NAN, "%.4f");
    fputc(',', f);
    csv_number(f, v ? v->map : NAN, "%.4f");
    fprintf(f, ",%.2f,%.1f,", ips, seconds);
    csv_number(f, v ? v->recall : NAN, "%.4f");
    fputc('\n', f);
    fflush(f);
}

// Opens DIR/log.csv for appending. A fresh run starts it anew; a resumed run keeps the rows up to the
// checkpoint's step (later ones describe progress that was lost) and rewrites the file atomically first.
static FILE *log_open(const char *path, bool resumed, long step, Err *e) {
    char *old = NULL;
    size_t n = 0;
    if (resumed && read_file_all(path, 1u << 30, &old, &n, NULL) == 0) {
        AtomicFile af;
        if (atomic_open(&af, path, e)) {
            free(old);
            return NULL;
        }
        fputs(LOG_HEADER, af.f);
        char *cursor = old;
        text_next_line(&cursor); // header
        for (char *line; (line = text_next_line(&cursor));) {
            const char *p = strchr(line, ',');
            long s;
            if (p && (p++, parse_long(&p, &s)) && s <= step) fprintf(af.f, "%s\n", line);
        }
        free(old);
        if (atomic_commit(&af, e)) return NULL;
        FILE *f = fopen(path, "a");
        if (!f) err_set(e, "%s: %s", path, strerror(errno));
        return f;
    }
    free(old);
    FILE *f = fopen(path, "w");
    if (!f) {
        err_set(e, "%s: %s", path, strerror(errno));
        return NULL;
    }
    fputs(LOG_HEADER, f);
    fflush(f);
    return f;
}

// ---------------------------------------------------------------------------------------------------------------
// the run

// The MultiBox loss of a batch: each image's boxes, as the loader left them after augmentation.
static double multibox_batch_loss(Net *net, const Batch *b) {
    MultiboxTruth t[4096];
    for (int i = 0; i < b->n && i < 4096; i++) t[i] = (MultiboxTruth){b->n_boxes[i], b->boxes + (size_t)i * BATCH_MAX_BOXES * 4};
    return net_loss_multibox(net, t, MULTIBOX_ALPHA, NULL);
}

typedef struct {
    const TrainOptions *o;
    const Cluster *c;
    char *ckpt_path, *model_path, *log_path, *plot_path;
    NetConfig cfg;
    Net net, eval_net;
    int batch;   // images a step: --batch, or 32 for classification and 128 for regions (R-CNN)
    int share_lo, share_n; // this process's images of each batch (all of them when alone)
    double comm_seconds;   // spent summing the gradients across processes
    Sgd sgd;
    ParamGroup *groups;
    int n_groups;
    Dataset train, val;
    bool has_val;
    FILE *log;
    BoxRegressor bbox; // region runs: fitted at the end, saved with the model (classes 0: none yet)
    BatchRecipe recipe;
    SgdConfig sched;   // --lr and the schedule, the run's length known
    long spe, total;   // steps a epoch, and in all
    Progress prog;
    double t0, lr, loss_sum; // the loss summed since the last log row
    int loss_n;
} Run;

// Weight decay on weights only, not biases (as bvlc_googlenet was trained; PyTorch's default decays both). The
// first convolution's weights learn at 1/s^2 of the rate, s being the spread of the network's input (pixel
// std x the config's scale): that is SGD on the weights of a network fed unit-variance inputs, written back in
// the config's own preprocessing. Caffe's (0..255 minus the mean, scale 1) otherwise makes the first layer's
// steps ~3,000 times too large, and training from scratch diverges at the paper's rates.
// Fixed parameters (a MultiBox head's priors, a BN convolution's bias) get no group at all: sgd_step steps and
// averages groups only, so they are neither moved, decayed nor drifted by the Polyak average's rounding; they stay
// bit for bit as loaded. Nor do BN's running statistics (net_forward_train moves them). BN's gamma, like the
// biases, is not decayed: it sets the scale that BN takes out of the weights.
static void make_groups(Run *r) {
    r->groups = xmalloc((size_t)(r->net.n_params ? r->net.n_params : 1) * sizeof(ParamGroup));
    r->n_groups = 0;
    double s = PIXEL_STD * r->net.cfg->scale;
    for (int i = 0; i < r->net.n_params; i++) {
        const Param *p = &r->net.param[i];
        if (p->fixed || p->stat) continue;
        size_t len = strlen(p->name);
        bool bias = (len >= 5 && !strcmp(p->name + len - 5, ".bias")) ||
                    (len >= 10 && !strcmp(p->name + len - 10, ".bn.weight"));
        float lr_mult = is_first_conv_weight(&r->net, i) ? (float)(1.0 / (s * s)) : 1.0f;
        r->groups[r->n_groups++] = (ParamGroup){p->offset, p->size, bias ? 0.0f : 1.0f, lr_mult};
    }
}

// The weights used for inference: the Polyak average when there is one, into the eval net. BN's running
// statistics are not averaged (no SGD group holds them): the live ones go with it.
static void set_eval_weights(Run *r) {
    memcpy(r->eval_net.params, r->sgd.average ? r->sgd.average : r->net.params, r->net.params_size * sizeof(float));
    for (int i = 0; i < r->net.n_params; i++) {
        const Param *p = &r->net.param[i];
        if (p->stat) memcpy(r->eval_net.params + p->offset, r->net.params + p->offset, p->size * sizeof(float));
    }
}

// The classes the model's outputs stand for, recorded in its weight file: the detection set's object classes
// (output 0 being background), or a class tree's folder names; a list of numeric labels records none.
static ModelClasses model_classes(const Dataset *d) {
    if (d->kind == DATASET_REGIONS) return (ModelClasses){d->classes, true};
    const SampleList *s = &d->samples;
    return (ModelClasses){{s->class_names ? s->n_classes : 0, s->class_names, s->class_names}, false};
}

static int save_model(Run *r, Err *e) {
    set_eval_weights(r);
    ModelClasses mc = model_classes(&r->train);
    NamedTensor t[2];
    MetaEntry m[2];
    WeightsExtra x;
    bbox_regress_extra(&r->bbox, t, m, &x);
    return weights_save(&r->eval_net, r->model_path, true, &mc, r->bbox.classes ? &x : NULL, e);
}

// R-CNN's box regressor, on the final inference weights (the ones saved), then the model again with it.
static int fit_box_regressor(Run *r, Err *e) {
    const TrainOptions *o = r->o;
    set_eval_weights(r);
    BboxFitOptions bo = {.lambda = o->bbox_lambda, .context = o->context, .seed = o->seed, .quiet = o->quiet};
    return bbox_fit(&r->eval_net, &r->train, &bo, &r->bbox, e) || save_model(r, e) ? -1 : 0;
}

static int save_checkpoint(Run *r, long step, Err *e) {
    CheckpointHeader h = {.fingerprint = checkpoint_fingerprint(&r->net), .step = step, .seed = r->o->seed,
                          .n = r->net.params_size, .has_average = r->sgd.average != NULL};
    return checkpoint_save(r->ckpt_path, &h, r->net.params, r->sgd.velocity, r->sgd.average, e);
}

static void print_validation(const Run *r, const ValResult *v, double epoch) {
    switch (r->val.kind) {
    case DATASET_CLASSIFY:
        fprintf(stderr, "\nepoch %.2f: validation top-1 %.4f, top-5 %.4f (%d images)\n", epoch, v->top1, v->top5, v->n);
        break;
    case DATASET_REGIONS:
        fprintf(stderr, "\nepoch %.2f: validation region accuracy %.4f, mAP %.4f (%d regions)\n", epoch,
                v->region_accuracy, v->map, v->n);
        break;
    case DATASET_BOXES:
        fprintf(stderr, "\nepoch %.2f: validation recall@0.5 of the best %d boxes %.4f (%d images)\n", epoch,
                r->o->multibox_top, v->recall, v->n);
        break;
    }
}

static int validate(Run *r, ValResult *v, Err *e) {
    set_eval_weights(r);
    const TrainOptions *o = r->o;
    switch (r->val.kind) {
    case DATASET_CLASSIFY: return validate_classify(&r->eval_net, &r->val, o->val_limit, o->quiet, v, e);
    case DATASET_REGIONS: return validate_regions(&r->eval_net, &r->val, o->val_limit, o->context, o->quiet, v, e);
    case DATASET_BOXES: return validate_multibox(&r->eval_net, &r->val, o->val_limit, o->multibox_top, o->quiet, v, e);
    }
    return err_set(e, "validation set of an unknown kind");
}

static int open_sets(Run *r, Err *e) {
    const TrainOptions *o = r->o;
    ProposalParams pp;
    proposals_params_default(&pp);
    char *train_cache = path_join(o->out, "proposals-train.json"), *val_cache = path_join(o->out, "proposals-val.json");
    DatasetOptions dopt = {.proposals = &pp, .proposals_file = o->proposals, .proposals_cache = train_cache,
                           .max_classes = o->classes, .pos_iou = o->pos_iou, .cache_budget = (size_t)2 << 30,
                           .boxes = o->multibox, .quiet = o->quiet};
    int rc = dataset_open(o->data, &dopt, &r->train, e);
    if (rc == 0 && o->multibox && r->train.kind != DATASET_BOXES)
        rc = err_set(e, "%s: MultiBox learns from a detection set (VOC layout), not a classification list", o->data);
    if (rc == 0 && r->train.kind == DATASET_REGIONS && r->train.classes.n + 1 != o->classes)
        rc = err_set(e, "%s: %d object classes: region training needs --classes %d (the classes and background)",
                     o->data, r->train.classes.n, r->train.classes.n + 1);
    if (rc == 0 && o->val) {
        dopt.proposals_file = o->val_proposals;
        dopt.proposals_cache = val_cache;
        dopt.classes = r->train.kind == DATASET_REGIONS ? &r->train.classes : NULL;
        dopt.cache_budget = (size_t)1 << 30;
        rc = dataset_open(o->val, &dopt, &r->val, e);
        if (rc == 0 && r->val.kind != r->train.kind)
            rc = err_set(e, "%s and %s: one is a classification set, the other a detection set", o->data, o->val);
        r->has_val = rc == 0;
    }
    free(train_cache);
    free(val_cache);
    return rc;
}

// Initial weights for training from scratch: He-normal for the layers followed by a ReLU (the variance of the
// activations stays put through the depth), N(0, 0.01^2) for the classifiers (the fully connected layers with
// no ReLU: the main one and the auxiliary heads' last), so that the first loss is about log(classes), and zero
// biases (batch normalisation: gamma 1, beta 0, running mean 0 and variance 1, net_reset_batchnorm). The first
// convolution also divides by the spread of its input, so that its outputs have unit variance
// whatever the config's preprocessing: with Caffe's (0..255 pixels minus the mean, scale 1) a plain He start
// has logits in the hundreds and diverges within a few steps. net_init_random's demo initialisation is not for
// training.
static void init_for_training(Net *net, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        float *d = net->params + p->offset;
        if (p->fixed) continue; // priors: as net_create or the weight file set them
        if (p->ndim == 1) {
            memset(d, 0, p->size * sizeof(float));
            continue;
        }
        double fan_in = (double)(p->size / (size_t)p->shape[0]);
        double sd = is_classifier_weight(net, i)   ? 0.01
                    : is_first_conv_weight(net, i) ? sqrt(1.0 / fan_in) / (PIXEL_STD * net->cfg->scale) // input not rectified
                                                   : sqrt(2.0 / fan_in);
        for (size_t j = 0; j < p->size; j++) d[j] = (float)(sd * rng_normal(&r));
    }
    net_reset_batchnorm(net);
}

// A MultiBox run's priors: from --priors, or k-means of the training set's boxes (normalised to each image);
// written to DIR/priors.json either way, and copied into the net (they travel in its weight files).
static int setup_priors(Run *r, Err *e) {
    const TrainOptions *o = r->o;
    MultiboxPriors pr = {0};
    int rc = 0;
    if (o->priors) {
        rc = multibox_priors_read(o->priors, &pr, e);
    } else {
        VEC(float) boxes = {0};
        for (int i = 0; i < r->train.n_images && !rc; i++) {
            DatasetImage *di = &r->train.images[i];
            int w = 0, h = 0;
            Err pe;
            if (image_probe_size(di->path, &w, &h, &pe)) continue; // refused or corrupt: training skips it too
            for (int g = 0; g < di->n_gt; g++) {
                float u[4];
                multibox_normalise(di->gt[g], w, h, u);
                for (int q = 0; q < 4; q++) VEC_PUSH(&boxes, fminf(fmaxf(u[q], 0), 1));
            }
        }
        rc = multibox_priors_fit(boxes.data, (int)(boxes.len / 4), r->net.multibox_k, o->seed, 300, true, &pr, NULL, e);
        free(boxes.data);
    }
    if (!rc && pr.k != r->net.multibox_k)
        rc = err_set(e, "%s: %d priors, but the head of %s predicts %d boxes (k=): make them agree%s",
                     o->priors ? o->priors : "the training boxes", pr.k, o->config, r->net.multibox_k,
                     o->priors ? "" : " (the training set has fewer distinct boxes than k)");
    char *path = path_join(o->out, "priors.json");
    if (!rc) rc = net_set_priors(&r->net, pr.box, pr.k, e) || multibox_priors_write(path, &pr, e) ? -1 : 0;
    free(path);
    multibox_priors_free(&pr);
    return rc;
}

static int setup_net(Run *r, Err *e) {
    const TrainOptions *o = r->o;
    if (config_load(o->config, &r->cfg, e)) return -1;
    if (o->classes > 0 && !o->multibox) config_set_classes(&r->cfg, o->classes);
    if (net_create(&r->net, &r->cfg, e) || net_create(&r->eval_net, &r->cfg, e)) return -1;
    if (!r->net.multibox_k != !o->multibox)
        return err_set(e, "%s: %s", o->config, o->multibox ? "--task multibox needs a config with a multibox head"
                                                              : "a MultiBox network: train it with --task multibox");
    if (o->threads > 0) r->net.threads = r->eval_net.threads = o->threads;
    init_for_training(&r->net, o->seed);
    if (o->multibox && setup_priors(r, e)) return -1;
    if (o->init && weights_load(&r->net, o->init, NULL, e)) return err_prefix(e, "--init");
    if (o->finetune) {
        int skipped;
        if (weights_load_finetune(&r->net, o->finetune, &skipped, e)) return err_prefix(e, "--finetune");
        if (!o->quiet)
            fprintf(stderr, "fine-tuning from %s: %d tensors of another shape (the classifiers) start afresh\n",
                    o->finetune, skipped);
    }
    if (net_plan(&r->eval_net, 32, false, false, e)) return -1;
    if (r->c->size > 1) net_set_share(&r->net, r->share_lo, r->batch, r->c);
    return net_train_begin(&r->net, r->share_n, e);
}

// ---------------------------------------------------------------------------------------------------------------
// processes sharing the batches (mpirun)

// Collective: whether every process got here fine (rc 0). When not, each returns -1, and one message is left to
// print: the first failing rank's own (prefixed with its rank when it is not 0); the others' e->msg is emptied.
static int agree(const Run *r, int rc, Err *e) {
    int first = cluster_first_failure(r->c, rc == 0);
    if (first < 0) return 0;
    if (first != r->c->rank) e->msg[0] = '\0';
    else if (r->c->rank > 0) err_prefix(e, "rank %d", r->c->rank);
    return -1;
}

// The shares' gradients summed (each is already its share of the whole batch's mean). Batch normalisation's
// running statistics need nothing: every process moved them with the whole batch's (net_set_share).
static void sum_across(Run *r) {
    if (r->c->size == 1) return;
    double t0 = now_seconds();
    cluster_sum_floats(r->c, r->net.grads, r->net.params_size);
    r->comm_seconds += now_seconds() - t0;
}

// The scratch recipe's rate when none is given: batch normalisation takes a rate ten times higher than a plain
// network trains at without diverging (results/training.md).
static double recipe_lr(const TrainOptions *o, const NetConfig *cfg) {
    return o->sgd.lr > 0 ? o->sgd.lr : cfg->batchnorm ? 0.1 : 0.01;
}

// The output paths, the sets (rank 0 first: a detection set's proposals are computed once and cached for the
// others), this process's share of each batch, the network and SGD.
static int run_open(Run *r, Err *e) {
    const TrainOptions *o = r->o;
    const bool lead = r->c->rank == 0;
    if (agree(r, make_dirs(o->out, e), e)) return -1;
    r->ckpt_path = path_join(o->out, "checkpoint.bin");
    r->model_path = path_join(o->out, "model.safetensors");
    r->log_path = path_join(o->out, "log.csv");
    r->plot_path = path_join(o->out, "curves.png");
    if (agree(r, lead ? open_sets(r, e) : 0, e) || agree(r, lead ? 0 : open_sets(r, e), e)) return -1;
    r->batch = o->batch > 0 ? o->batch : r->train.kind == DATASET_REGIONS ? 128 : 32;
    if (r->batch < r->c->size &&
        agree(r, err_set(e, "a batch of %d cannot be shared among %d processes", r->batch, r->c->size), e))
        return -1;
    r->share_lo = (int)((long)r->batch * r->c->rank / r->c->size);
    r->share_n = (int)((long)r->batch * (r->c->rank + 1) / r->c->size) - r->share_lo;
    if (agree(r, setup_net(r, e), e)) return -1;
    sgd_init(&r->sgd, r->net.params_size, r->net.params, &o->sgd);
    make_groups(r);
    return 0;
}

// From the checkpoint when asked and present (every process reads rank 0's); then the log. *step: the first step.
static int run_resume(Run *r, long *step, Err *e) {
    const TrainOptions *o = r->o;
    struct stat st;
    bool resumed = o->resume && stat(r->ckpt_path, &st) == 0;
    if (o->resume && !resumed && !o->quiet) // not an error (a first run may say --resume), but never silent
        fprintf(stderr, "--resume: no %s yet: starting afresh\n", r->ckpt_path);
    if (resumed) {
        CheckpointHeader h;
        int bad = checkpoint_load(r->ckpt_path, checkpoint_fingerprint(&r->net), r->net.params_size, &h,
                                  r->net.params, r->sgd.velocity, r->sgd.average, e);
        if (!bad && h.seed != o->seed)
            bad = err_set(e, "%s: made with --seed %llu; resume with the same seed", r->ckpt_path,
                          (unsigned long long)h.seed);
        if (agree(r, bad, e)) return -1;
        if (r->sgd.average && !h.has_average) // averaging switched on now: start it from the resumed weights
            memcpy(r->sgd.average, r->net.params, r->net.params_size * sizeof(float));
        *step = r->sgd.step = h.step;
        if (!o->quiet) fprintf(stderr, "resuming from %s at step %ld\n", r->ckpt_path, *step);
    }
    bool failed = r->c->rank == 0 && !(r->log = log_open(r->log_path, resumed, *step, e));
    return agree(r, failed ? -1 : 0, e);
}

// The batches (augmentation by the kind of set), the run's length and its schedule, said on stderr.
static void run_plan(Run *r) {
    const TrainOptions *o = r->o;
    r->recipe = (BatchRecipe){.seed = o->seed, .batch = r->batch, .share_lo = r->share_lo, .context = o->context,
                              .pos_fraction = o->pos_fraction, .hard_fraction = o->hard_fraction,
                              .jitter = o->jitter, .augment = o->augment ? augment_paper() : augment_none()};
    if (r->train.kind == DATASET_CLASSIFY && o->augment) r->recipe.augment.area_min = o->crop_area_min;
    if (r->train.kind == DATASET_REGIONS) r->recipe.augment = (Augment){.flip = o->augment};
    if (r->train.kind == DATASET_BOXES && o->augment) r->recipe.augment.area_min = 0.3; // crops that keep objects
    r->spe = dataset_steps_per_epoch(&r->train, &r->recipe);
    r->total = o->steps > 0 ? o->steps : (long)o->epochs * r->spe;
    r->sched = o->sgd;
    r->sched.lr = recipe_lr(o, &r->cfg);
    r->sched.epochs = (double)r->total / (double)r->spe; // a cosine spans the whole run
    if (o->quiet) return;
    if (!r->cfg.batchnorm && !o->init && !o->finetune && !o->multibox)
        fprintf(stderr, "note: %s has no batch normalisation: trained from scratch on a small set it may learn "
                        "little (results/training.md); its *-bn.cfg sibling or batchnorm = true learns\n",
                o->config);
    fprintf(stderr, "training %s on %s: %ld steps of %d (%ld a epoch), %d classes, learning rate %g\n", o->config,
            o->data, r->total, r->batch, r->spe, o->classes, r->sched.lr);
    if (r->c->size > 1) fprintf(stderr, "%d processes share each batch (%d images here)\n", r->c->size, r->share_n);
}

// One step: forward, loss, backward, the shares' gradients summed, SGD. *loss: the whole batch's.
static int train_step(Run *r, const Batch *b, long step, double *loss, Err *e) {
    const TrainOptions *o = r->o;
    r->lr = sgd_lr(&r->sched, (double)step / r->spe);
    Rng drop;
    rng_seed_at(&drop, o->seed, (uint64_t)step, 0xd20f); // dropout masks of this step
    int bad = !b || net_forward_train(&r->net, b->x, b->n, &drop, e) ? -1 : 0;
    if (agree(r, bad, e)) return -1;
    // this share's part of the batch's mean loss; summed over the shares, the batch's (one decision for all)
    *loss = o->multibox ? multibox_batch_loss(&r->net, b) : net_loss(&r->net, b->labels, o->aux_weight, NULL);
    cluster_sum_doubles(r->c, loss, 1);
    if (!isfinite(*loss)) {
        err_set(e, "step %ld: the loss is %s (learning rate %g too high?); stopped. The last good checkpoint "
                   "is kept: %s",
                step + 1, isnan(*loss) ? "NaN" : "infinite", r->lr, r->ckpt_path);
        if (r->c->rank > 0) e->msg[0] = '\0'; // every process stops here: rank 0 says why
        return -1;
    }
    if (agree(r, net_backward(&r->net, e), e)) return -1;
    sum_across(r);
    sgd_step(&r->sgd, &r->sched, r->lr, r->groups, r->n_groups, r->net.params, r->net.grads);
    return 0;
}

// After step `step`: progress, a log row every --log-every steps, and at the end of an epoch validation, the log
// row and the curves; checkpoint and model at the end of an epoch and every --checkpoint-every steps.
static int after_step(Run *r, long step, double loss, Err *e) {
    const TrainOptions *o = r->o;
    const bool lead = r->c->rank == 0;
    double epoch = (double)(step + 1) / r->spe;
    r->loss_sum += loss, r->loss_n++;
    progress_note(&r->prog, "epoch %.2f loss %.4f lr %.3g", epoch, loss, r->lr);
    progress_add(&r->prog, r->batch);
    double elapsed = now_seconds() - r->t0, ips = (double)r->prog.done / (elapsed > 0 ? elapsed : 1);
    bool epoch_end = (step + 1) % r->spe == 0 || step + 1 == r->total;
    if (lead && (step + 1) % o->log_every == 0 && !epoch_end) {
        log_row(r->log, epoch, step + 1, r->lr, r->loss_sum / r->loss_n, NULL, ips, elapsed);
        r->loss_sum = 0, r->loss_n = 0;
    }
    int bad = 0;
    if (lead && epoch_end) { // the others go on to the next step and wait for rank 0 there
        ValResult v = {.top1 = NAN, .top5 = NAN, .region_accuracy = NAN, .map = NAN, .recall = NAN};
        bad = r->has_val ? validate(r, &v, e) : 0;
        if (!bad) {
            log_row(r->log, epoch, step + 1, r->lr, r->loss_n ? r->loss_sum / r->loss_n : NAN, &v, ips,
                    now_seconds() - r->t0);
            r->loss_sum = 0, r->loss_n = 0;
            bad = train_plot_log(r->log_path, r->plot_path, o->data, e);
        }
        if (!bad && !o->quiet && r->has_val) print_validation(r, &v, epoch);
    }
    bool saving = epoch_end || (o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0);
    if (!bad && lead && saving) bad = save_checkpoint(r, step + 1, e) || save_model(r, e) ? -1 : 0;
    return (epoch_end || saving) && agree(r, bad, e) ? -1 : 0; // rank 0's validation and writing went well
}

// The steps from `first` to the end, the loader thread one batch ahead.
static int run_steps(Run *r, long first, Err *e) {
    Batch slots[2] = {{0}};
    for (int s = 0; s < 2; s++) batch_alloc(&slots[s], r->share_n, &r->cfg);
    Loader loader = {&r->train, &r->cfg, r->recipe};
    Prefetch pf;
    prefetch_start(&pf, produce_batch, &loader, &slots[0], &slots[1], first, r->total);
    progress_init(&r->prog, "train", (r->total - first) * r->batch, "img", r->o->quiet);
    r->t0 = now_seconds();
    int rc = 0;
    for (long step = first; step < r->total && !rc; step++) {
        double loss;
        rc = train_step(r, prefetch_get(&pf, step, e), step, &loss, e);
        if (!rc) prefetch_release(&pf, step), rc = after_step(r, step, loss, e);
    }
    if (!rc) progress_finish(&r->prog);
    if (!rc && !r->o->quiet && r->c->size > 1 && r->total > first)
        fprintf(stderr, "summing across %d processes: %.1f ms a step\n", r->c->size,
                1e3 * r->comm_seconds / (double)(r->total - first));
    prefetch_stop(&pf); // the loader is done with the training set, which the box regression reads next
    for (int s = 0; s < 2; s++) batch_free(&slots[s]);
    return rc;
}

static void run_free(Run *r) {
    if (r->log) fclose(r->log);
    dataset_free(&r->train);
    dataset_free(&r->val);
    sgd_free(&r->sgd);
    bbox_regress_free(&r->bbox);
    free(r->groups);
    net_free(&r->net);
    net_free(&r->eval_net);
    free(r->ckpt_path), free(r->model_path), free(r->log_path), free(r->plot_path);
}

int train_run(const TrainOptions *o, Err *e) {
    if (o->batch < 0 || o->epochs < 1 || (o->classes < 1 && !o->multibox))
        return err_set(e, "batch, epochs and classes must be positive");
    Cluster alone = {.rank = 0, .size = 1};
    Run r = {.o = o, .c = o->cluster ? o->cluster : &alone};
    const bool lead = r.c->rank == 0; // writes the log, checkpoints and the model
    long step = 0;
    int rc = run_open(&r, e) || run_resume(&r, &step, e) ? -1 : 0;
    if (!rc) run_plan(&r), rc = run_steps(&r, step, e);
    if (!rc && lead && r.train.kind == DATASET_REGIONS && o->bbox_reg) rc = fit_box_regressor(&r, e);
    if (!rc && lead && r.train.decode_failures)
        fprintf(stderr, "warning: %zu training images did not decode and were skipped\n", r.train.decode_failures);
    run_free(&r);
    return rc;
}
