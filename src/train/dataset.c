// Training and validation sets, and the batches made from them. A batch depends only on the run's seed and its
// index (rng_seed_at), so a resumed run sees exactly the batches the uninterrupted one would have, and the loader
// thread's timing changes nothing.
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

// ---------------------------------------------------------------------------------------------------------------
// detection sets (data.h's DetLayout: VOC's or ILSVRC's)

// Boxes reaching outside their image (by the annotation's <size>) are clipped to it, and boxes left empty dropped;
// both counted. For MultiBox, whose targets are the boxes themselves.
static void clip_boxes(DatasetImage *im, const Annotation *a, Dataset *d) {
    if (a->width <= 0 || a->height <= 0) return;
    int m = 0;
    for (int j = 0; j < im->n_gt; j++) {
        Box b = im->gt[j], c = box_clip(b, a->width, a->height);
        bool clipped = memcmp(&b, &c, sizeof b) != 0;
        d->boxes_clipped += clipped;
        if (c.x2 < c.x1 || c.y2 < c.y1) {
            d->boxes_dropped++;
            continue;
        }
        im->gt[m] = c, im->gt_label[m] = im->gt_label[j], im->difficult[m] = im->difficult[j], m++;
    }
    im->n_gt = m;
}

static int load_annotations(Dataset *d, const DetLayout *lay, const ImageList *list, const DatasetOptions *o, Err *e) {
    int n_images = d->n_images = (int)list->len;
    d->images = xcalloc(list->len ? list->len : 1, sizeof(DatasetImage));
    Annotation *ann = xcalloc(list->len ? list->len : 1, sizeof(Annotation));
    const char *ann_dir = lay->ann_dir;
    int rc = -1;
    for (int i = 0; i < n_images; i++) {
        const char *name = list->data[i].name;
        char *path = annotation_xml_path(ann_dir, name);
        int bad = annotation_load(path, &ann[i], e);
        free(path);
        if (bad) goto done;
        DatasetImage *im = &d->images[i];
        im->name = xstrdup(name);
        im->path = annotation_image_path(lay->img_dir, name, ann[i].filename);
        if (!im->path) {
            err_set(e, "%s: no image file for '%s'", lay->img_dir, name);
            goto done;
        }
    }
    if (o->classes) {
        d->classes = (ClassMap){0};
        char **names = xmalloc((size_t)(o->classes->n ? o->classes->n : 1) * sizeof(char *));
        for (int k = 0; k < o->classes->n; k++) names[k] = o->classes->name[k];
        class_map_from_names(&d->classes, names, o->classes->n);
        free(names);
    } else {
        class_map_from_annotations(&d->classes, ann, n_images);
        if (d->classes.n == 0) {
            err_set(e, "%s: the annotations contain no objects", d->source);
            goto done;
        }
    }
    for (int i = 0; i < n_images; i++) {
        DatasetImage *im = &d->images[i];
        im->n_gt = ann[i].n_objects;
        im->gt = xcalloc((size_t)(im->n_gt ? im->n_gt : 1), sizeof(Box));
        im->gt_label = xcalloc((size_t)(im->n_gt ? im->n_gt : 1), sizeof(int));
        im->difficult = xcalloc((size_t)(im->n_gt ? im->n_gt : 1), 1);
        for (int j = 0; j < im->n_gt; j++) {
            const AnnObject *ob = &ann[i].objects[j];
            im->gt[j] = ob->box;
            im->difficult[j] = ob->difficult;
            im->gt_label[j] = class_map_find(&d->classes, ob->name);
            if (im->gt_label[j] < 0) {
                err_set(e, "%s/%s.xml:%d: class '%s' is not among the training set's classes", ann_dir, im->name,
                        ob->line, ob->name);
                goto done;
            }
        }
        if (o->boxes) clip_boxes(im, &ann[i], d);
    }
    if (o->boxes && !o->quiet && (d->boxes_clipped || d->boxes_dropped))
        fprintf(stderr, "%s: %zu boxes clipped to their image, %zu empty after clipping (dropped)\n", d->source,
                d->boxes_clipped, d->boxes_dropped);
    rc = 0;
done:
    for (int i = 0; i < n_images; i++) annotation_free(&ann[i]);
    free(ann);
    return rc;
}

static const char *base_of(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

// Proposals from a file: each image of the set must be there (matched by file name).
static int proposals_from_file(Dataset *d, const char *path, Err *e) {
    ProposalsSet set = {0};
    if (proposals_json_read(path, &set, e)) return -1;
    int rc = 0;
    for (int i = 0; i < d->n_images && rc == 0; i++) {
        DatasetImage *im = &d->images[i];
        int found = -1;
        for (int k = 0; k < (int)set.len && found < 0; k++)
            if (!strcmp(base_of(set.data[k].file), base_of(im->path))) found = k;
        if (found < 0) {
            rc = err_set(e, "%s: no proposals for %s", path, im->path);
            break;
        }
        im->n_props = set.data[found].p.n;
        im->props = xmalloc((size_t)(im->n_props ? im->n_props : 1) * sizeof(Box));
        memcpy(im->props, set.data[found].p.box, (size_t)im->n_props * sizeof(Box));
    }
    proposals_set_free(&set);
    return rc;
}

// Computes every image's proposals (progress on stderr) and saves them to `cache` when given.
static int proposals_compute_all(Dataset *d, const DatasetOptions *o, Err *e) {
    ProposalsWriter w;
    char setting[256];
    proposals_params_describe(o->proposals, setting, sizeof setting);
    if (o->proposals_cache) {
        // A journal that a killed run left is this cache's own, not a user's work: computed again from the start.
        char *journal = xmalloc(strlen(o->proposals_cache) + 16);
        sprintf(journal, "%s.partial", o->proposals_cache);
        unlink(journal);
        free(journal);
        if (proposals_json_open(&w, o->proposals_cache, setting, false, e)) return -1;
    }
    Progress prog;
    progress_init(&prog, "proposals", d->n_images, "img", o->quiet);
    for (int i = 0; i < d->n_images; i++) {
        DatasetImage *im = &d->images[i];
        Image img;
        Err de;
        Proposals p = {0};
        if (image_load(im->path, &img, &de)) {
            fprintf(stderr, "\nwarning: %s (image skipped)\n", de.msg);
            im->bad = true;
            d->decode_failures++;
        } else {
            int rc = proposals_compute(&img, o->proposals, &p, e);
            int w_ = img.w, h_ = img.h;
            image_free(&img);
            if (rc || (o->proposals_cache && proposals_json_add(&w, im->path, w_, h_, &p, e))) {
                proposals_free(&p);
                if (o->proposals_cache) proposals_json_abort(&w);
                return -1;
            }
            im->n_props = p.n;
            im->props = p.box;
            p.box = NULL;
        }
        progress_add(&prog, 1);
    }
    progress_finish(&prog);
    return o->proposals_cache ? proposals_json_commit(&w, e) : 0;
}

static int open_detection_set(Dataset *d, const DetLayout *lay, const ImageList *list, const DatasetOptions *o,
                              Err *e) {
    d->kind = o->boxes ? DATASET_BOXES : DATASET_REGIONS;
    if (load_annotations(d, lay, list, o, e)) return -1;
    if (o->boxes) { // MultiBox learns the boxes themselves: no proposals
        d->cache = xcalloc((size_t)(d->n_images ? d->n_images : 1), sizeof(Image));
        if (d->n_images == 0) return err_set(e, "%s: no images", d->source);
        return 0;
    }
    int rc;
    d->pos_iou = o->pos_iou > 0 ? o->pos_iou : 0.5;
    if (o->proposals_file) rc = proposals_from_file(d, o->proposals_file, e);
    else if (o->proposals_cache && path_is_file(o->proposals_cache)) rc = proposals_from_file(d, o->proposals_cache, e);
    else rc = proposals_compute_all(d, o, e);
    if (rc) return -1;
    for (int i = 0; i < d->n_images; i++) {
        const DatasetImage *im = &d->images[i];
        if (!im->bad)
            region_set_add_image(&d->regions, i, im->gt, im->gt_label, im->n_gt, im->props, im->n_props, d->pos_iou);
    }
    if (d->regions.pos.len + d->regions.bg.len == 0) return err_set(e, "%s: no usable regions", d->source);
    d->cache = xcalloc((size_t)(d->n_images ? d->n_images : 1), sizeof(Image));
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// opening

// ROOT/ImageSets/DET/SET.txt with ROOT/Annotations/DET/SET beside it.
static bool is_ilsvrc_list(const char *spec) {
    DetLayout lay = det_layout_of_list(spec);
    bool yes = strstr(lay.ann_dir, "Annotations/DET/") && path_is_dir(lay.ann_dir);
    det_layout_free(&lay);
    return yes;
}

// A list whose lines end in an integer label is a classification list; otherwise it names images of a VOC-style
// detection set.
static bool looks_labelled(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return true; // let sample_list_load report it
    char line[4096];
    bool labelled = true;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || !*p) continue;
        size_t n = strlen(p);
        while (n && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t')) p[--n] = '\0';
        char *last = strrchr(p, ' ');
        char *tab = strrchr(p, '\t');
        if (tab > last) last = tab;
        if (!last) {
            labelled = false;
        } else { // any number: a label that is not a whole one is then reported by the sample list's loader
            char *end;
            strtod(last + 1, &end);
            labelled = *end == '\0' && end != last + 1;
        }
        break;
    }
    fclose(f);
    return labelled;
}

int dataset_open(const char *spec, const DatasetOptions *o, Dataset *d, Err *e) {
    *d = (Dataset){0};
    d->source = xstrdup(spec);
    d->cache_budget = o->cache_budget;
    d->perm_epoch = -1;
    int rc = -1;
    if (path_is_dir(spec)) {
        char *ann = path_join(spec, "Annotations");
        if (path_is_dir(ann)) {
            ImageList list;
            if (image_list_from_dir(ann, ".xml", &list, e) == 0) {
                DetLayout lay = det_layout_voc(spec);
                rc = open_detection_set(d, &lay, &list, o, e);
                det_layout_free(&lay);
                image_list_free(&list);
            }
        } else {
            d->kind = DATASET_CLASSIFY;
            rc = sample_list_from_tree(spec, &d->samples, e);
            if (rc == 0 && d->samples.n_classes > o->max_classes)
                rc = err_set(e, "%s: %d class folders, but the network has %d classes", spec, d->samples.n_classes,
                             o->max_classes);
        }
        free(ann);
    } else if (looks_labelled(spec) && !is_ilsvrc_list(spec)) { // ILSVRC's "name index" lines look labelled
        d->kind = DATASET_CLASSIFY;
        rc = sample_list_load(spec, o->max_classes, &d->samples, e);
    } else {
        // ROOT/ImageSets/Main/LIST.txt (VOC) or ROOT/ImageSets/DET/SET.txt (ILSVRC): the root is three levels up.
        DetLayout lay = det_layout_of_list(spec);
        ImageList list;
        if (!path_is_dir(lay.ann_dir))
            rc = err_set(e, "%s: a list of image names, but %s is not a directory (expected the VOC layout "
                            "ROOT/ImageSets/Main/LIST.txt with ROOT/Annotations and ROOT/JPEGImages, or ILSVRC's "
                            "ROOT/ImageSets/DET/SET.txt with ROOT/Annotations/DET/SET and ROOT/Data/DET/SET; a "
                            "classification list has a label after each path: 'path label')",
                         spec, lay.ann_dir);
        else if (image_list_load(spec, &list, e) == 0) {
            rc = open_detection_set(d, &lay, &list, o, e);
            image_list_free(&list);
        }
        det_layout_free(&lay);
    }
    if (rc) dataset_free(d);
    return rc;
}

void dataset_free(Dataset *d) {
    sample_list_free(&d->samples);
    for (int i = 0; i < d->n_images; i++) {
        DatasetImage *im = &d->images[i];
        free(im->name), free(im->path), free(im->gt), free(im->gt_label), free(im->difficult), free(im->props);
        if (d->cache) image_free(&d->cache[i]);
    }
    free(d->images);
    free(d->cache);
    class_map_free(&d->classes);
    region_set_free(&d->regions);
    free(d->perm);
    free(d->bad_sample);
    free(d->source);
    *d = (Dataset){0};
}

const Image *dataset_image(Dataset *d, int i, Image *scratch, Err *e) {
    if (d->cache[i].px) return &d->cache[i];
    DatasetImage *im = &d->images[i];
    if (im->bad) {
        err_set(e, "%s: does not decode", im->path);
        return NULL;
    }
    Image img;
    if (image_load(im->path, &img, e)) {
        im->bad = true;
        d->decode_failures++;
        return NULL;
    }
    size_t bytes = (size_t)img.w * img.h * img.c * sizeof(float);
    if (d->cache_bytes + bytes <= d->cache_budget) {
        d->cache[i] = img;
        d->cache_bytes += bytes;
        return &d->cache[i];
    }
    image_free(scratch);
    *scratch = img;
    return scratch;
}

// ---------------------------------------------------------------------------------------------------------------
// batches

void batch_alloc(Batch *b, int n, const NetConfig *cfg) {
    *b = (Batch){.n = n, .c = cfg->channels, .size = cfg->input};
    b->x = xmalloc((size_t)n * cfg->channels * cfg->input * cfg->input * sizeof(float));
    b->labels = xmalloc((size_t)n * sizeof(int));
    b->n_boxes = xcalloc((size_t)n, sizeof(int));
    b->boxes = xmalloc((size_t)n * BATCH_MAX_BOXES * 4 * sizeof(float));
}

void batch_free(Batch *b) {
    free(b->x);
    free(b->labels);
    free(b->n_boxes);
    free(b->boxes);
    *b = (Batch){0};
}

long dataset_steps_per_epoch(const Dataset *d, const BatchRecipe *r) {
    double items = d->kind == DATASET_CLASSIFY ? (double)d->samples.n
                   : d->kind == DATASET_BOXES  ? (double)d->n_images
                                               : (double)d->regions.pos.len;
    double per_batch = d->kind == DATASET_REGIONS ? fmax(1.0, round(r->batch * r->pos_fraction)) : r->batch;
    long steps = (long)ceil(items / per_batch);
    return steps > 0 ? steps : 1;
}

// The order of the n items (samples or images) in an epoch: a seeded Fisher-Yates shuffle, kept in d->perm.
static void epoch_order(Dataset *d, const BatchRecipe *r, long epoch, int n) {
    if (d->perm_epoch == epoch) return;
    if (!d->perm) d->perm = xmalloc((size_t)(n ? n : 1) * sizeof(uint32_t)), d->bad_sample = xcalloc((size_t)(n ? n : 1), 1);
    for (int i = 0; i < n; i++) d->perm[i] = (uint32_t)i;
    Rng rng;
    rng_seed_at(&rng, r->seed, 0x5eed0e9c, (uint64_t)epoch);
    for (int i = n - 1; i > 0; i--) {
        uint32_t j = rng_below(&rng, (uint32_t)i + 1), t = d->perm[i];
        d->perm[i] = d->perm[j], d->perm[j] = t;
    }
    d->perm_epoch = epoch;
}

// Mirrors a (c, s, s) tensor left to right.
static void flip_tensor(float *x, int c, int s) {
    for (int k = 0; k < c; k++)
        for (int y = 0; y < s; y++) {
            float *row = x + ((size_t)k * s + y) * s;
            for (int a = 0, b = s - 1; a < b; a++, b--) {
                float t = row[a];
                row[a] = row[b], row[b] = t;
            }
        }
}

static int classify_batch(Dataset *d, const NetConfig *cfg, const BatchRecipe *r, long index, Batch *b, Err *e) {
    long spe = dataset_steps_per_epoch(d, r), epoch = index / spe, within = index % spe;
    int n = d->samples.n;
    epoch_order(d, r, epoch, n);
    size_t per = (size_t)cfg->channels * cfg->input * cfg->input;
    for (int i = 0; i < b->n; i++) {
        const int t = r->share_lo + i; // the image's place in the whole batch
        Rng rng;
        rng_seed_at(&rng, r->seed, (uint64_t)index, (uint64_t)t);
        Image img, aug;
        Err de;
        // An image that does not decode is skipped for the next one in this epoch's order (warned and counted
        // once).
        long pos = within * r->batch + t;
        for (int tries = 0;; tries++, pos++) {
            if (tries == n) return err_set(e, "%s: no image of the set decodes", d->source);
            uint32_t k = d->perm[pos % n];
            if (d->bad_sample[k]) continue;
            if (image_load(d->samples.s[k].path, &img, &de) == 0) {
                b->labels[i] = d->samples.s[k].label;
                break;
            }
            d->bad_sample[k] = 1;
            d->decode_failures++;
            fprintf(stderr, "\nwarning: %s (skipped)\n", de.msg);
        }
        int rc = augment_image(&img, &r->augment, cfg->input, cfg->input, &rng, &aug, e);
        image_free(&img);
        if (rc) return -1;
        classify_preprocess(cfg, &aug, b->x + (size_t)i * per);
        image_free(&aug);
    }
    return 0;
}

// The label a box would get in image i (regions.c's rule).
static int region_label(const Dataset *d, int i, Box b) {
    const DatasetImage *im = &d->images[i];
    int k;
    double best = region_best_overlap(b, im->gt, im->n_gt, &k);
    return k >= 0 && best >= d->pos_iou ? im->gt_label[k] + 1 : 0;
}

// Scale and aspect jitter: the region's centre moved by up to `j` of its size and each side scaled by a factor
// in [e^-j, e^j], inside the image; kept only when its label stays the same, so that the batch's mix holds.
static Box region_jitter(const Dataset *d, const Region *r, const Image *im, double j, Rng *rng) {
    double w = r->box.x2 - r->box.x1 + 1, h = r->box.y2 - r->box.y1 + 1;
    double cx = r->box.x1 + w / 2 + j * w * (2 * rng_uniform(rng) - 1);
    double cy = r->box.y1 + h / 2 + j * h * (2 * rng_uniform(rng) - 1);
    w *= exp(j * (2 * rng_uniform(rng) - 1)), h *= exp(j * (2 * rng_uniform(rng) - 1));
    Box b = box_clip((Box){cx - w / 2, cy - h / 2, cx + w / 2 - 1, cy + h / 2 - 1}, im->w, im->h);
    bool ok = b.x2 - b.x1 >= 1 && b.y2 - b.y1 >= 1 && region_label(d, r->image, b) == r->label;
    return ok ? b : r->box;
}

static int regions_batch(Dataset *d, const NetConfig *cfg, const BatchRecipe *r, long index, Batch *b, Err *e) {
    Rng rng, jit;
    rng_seed_at(&rng, r->seed, (uint64_t)index, 0x7e610115);
    rng_seed_at(&jit, r->seed, (uint64_t)index, 0x717e5); // apart, so that jitter 0 draws what it always drew
    const int B = r->batch, lo = r->share_lo; // the whole batch; this process warps regions lo .. lo + b->n - 1
    int n_pos = (int)lround(B * r->pos_fraction), n_hard = (int)lround((B - n_pos) * r->hard_fraction);
    Region *regs = xmalloc((size_t)B * sizeof(Region));
    size_t per = (size_t)cfg->channels * cfg->input * cfg->input;
    Image scratch = {0};
    int rc = -1;
    region_set_sample(&d->regions, n_pos, n_hard, B - n_pos - n_hard, &rng, regs);
    // The regions before this process's share draw from the same streams: they are drawn (their images decoded,
    // from the cache mostly), not warped, so that each share is what one process would have made of it.
    for (int t = 0; t < lo + b->n; t++) {
        const Image *img = NULL;
        Err de;
        // Regions of an image that does not decode are replaced by fresh draws of the same kind.
        for (int tries = 0; !(img = dataset_image(d, regs[t].image, &scratch, &de)); tries++) {
            if (tries > 1000) {
                err_set(e, "%s: the images do not decode (%s)", d->source, de.msg);
                goto done;
            }
            Region again[1];
            bool pos = regs[t].label > 0;
            region_set_sample(&d->regions, pos ? 1 : 0, 0, pos ? 0 : 1, &rng, again);
            regs[t] = again[0];
        }
        Box box = r->jitter > 0 ? region_jitter(d, &regs[t], img, r->jitter, &jit) : regs[t].box;
        bool flip = r->augment.flip && rng_below(&rng, 2);
        if (t < lo) continue;
        float *x = b->x + (size_t)(t - lo) * per;
        if (classify_warp_region(cfg, img, box, r->context, x, e)) goto done;
        if (flip) flip_tensor(x, cfg->channels, cfg->input);
        b->labels[t - lo] = regs[t].label;
    }
    rc = 0;
done:
    image_free(&scratch);
    free(regs);
    return rc;
}

// Images in this epoch's order, each augmented with its boxes; one that does not decode gives way to the next.
static int boxes_batch(Dataset *d, const NetConfig *cfg, const BatchRecipe *r, long index, Batch *b, Err *e) {
    long spe = dataset_steps_per_epoch(d, r), within = index % spe;
    int n = d->n_images;
    epoch_order(d, r, index / spe, n);
    size_t per = (size_t)cfg->channels * cfg->input * cfg->input;
    Image scratch = {0};
    int rc = 0;
    for (int i = 0; i < b->n && !rc; i++) {
        const int t = r->share_lo + i; // the image's place in the whole batch
        Rng rng;
        rng_seed_at(&rng, r->seed, (uint64_t)index, (uint64_t)t);
        const Image *img = NULL;
        uint32_t k = 0;
        Err de = {""};
        for (long pos = within * r->batch + t, tries = 0; !img; pos++, tries++) {
            if (tries == n) return image_free(&scratch), err_set(e, "%s: no image of the set decodes (%s)", d->source, de.msg);
            k = d->perm[pos % n];
            img = d->images[k].bad ? NULL : dataset_image(d, (int)k, &scratch, &de);
        }
        const DatasetImage *di = &d->images[k];
        Image aug;
        rc = augment_with_boxes(img, &r->augment, cfg->input, cfg->input, di->gt, di->n_gt, &rng, &aug,
                                b->boxes + (size_t)i * BATCH_MAX_BOXES * 4, BATCH_MAX_BOXES, &b->n_boxes[i], e);
        if (rc) break;
        classify_preprocess(cfg, &aug, b->x + (size_t)i * per);
        b->labels[i] = (int)k; // the image, for messages and tests
        image_free(&aug);
    }
    image_free(&scratch);
    return rc;
}

int dataset_batch(Dataset *d, const NetConfig *cfg, const BatchRecipe *r, long index, Batch *b, Err *e) {
    switch (d->kind) {
    case DATASET_CLASSIFY: return classify_batch(d, cfg, r, index, b, e);
    case DATASET_REGIONS: return regions_batch(d, cfg, r, index, b, e);
    case DATASET_BOXES: return boxes_batch(d, cfg, r, index, b, e);
    }
    return err_set(e, "dataset of an unknown kind");
}
