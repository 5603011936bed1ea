// Tests of the optimiser and the loader thread.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "train.h"

static void test_sgd_momentum_by_hand(void **state) {
    (void)state;
    SgdConfig c = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.5};
    float w[2] = {1.0f, 2.0f}, g[2] = {0.5f, -1.0f};
    ParamGroup groups[2] = {{0, 1, 1.0f, 1.0f}, {1, 1, 0.0f, 1.0f}}; // the second gets no weight decay
    Sgd s;
    sgd_init(&s, 2, w, &c);
    assert_null(s.average);
    sgd_step(&s, &c, c.lr, groups, 2, w, g);
    // w0: g = 0.5 + 0.5*1 = 1; v = 1; w = 1 - 0.1 = 0.9.   w1: g = -1; v = -1; w = 2.1
    assert_true(fabsf(w[0] - 0.9f) < 1e-7f && fabsf(w[1] - 2.1f) < 1e-7f);
    sgd_step(&s, &c, c.lr, groups, 2, w, g);
    // w0: g = 0.5 + 0.45 = 0.95; v = 0.9 + 0.95 = 1.85; w = 0.9 - 0.185 = 0.715.   w1: v = -1.9; w = 2.29
    assert_true(fabsf(w[0] - 0.715f) < 1e-6f && fabsf(w[1] - 2.29f) < 1e-6f);
    assert_int_equal(s.step, 2);
    sgd_free(&s);
    // lr_mult scales the group's step: half the rate, half the first move.
    float w2[1] = {1.0f}, g2[1] = {0.5f};
    ParamGroup half = {0, 1, 1.0f, 0.5f};
    sgd_init(&s, 1, w2, &c);
    sgd_step(&s, &c, c.lr, &half, 1, w2, g2);
    assert_true(fabsf(w2[0] - 0.95f) < 1e-7f); // g = 1 as above, step 0.1 x 0.5
    sgd_free(&s);
}

static void test_sgd_schedule(void **state) {
    (void)state;
    SgdConfig c = sgd_paper(0.01);
    assert_true(sgd_lr(&c, 0) == 0.01);
    assert_true(sgd_lr(&c, 7.99) == 0.01);
    assert_true(fabs(sgd_lr(&c, 8) - 0.0096) < 1e-15);
    assert_true(fabs(sgd_lr(&c, 17) - 0.01 * 0.96 * 0.96) < 1e-15);
    // Warm-up then cosine: lr/100 at the start, lr at the warm-up's end, half way down at the middle of what
    // follows, 0 at the end (and after it).
    SgdConfig k = {.lr = 0.1, .schedule = SCHEDULE_COSINE, .warmup_epochs = 2, .epochs = 10};
    assert_true(fabs(sgd_lr(&k, 0) - 0.001) < 1e-15);
    assert_true(fabs(sgd_lr(&k, 1) - 0.1 * (0.01 + 0.99 / 2)) < 1e-15);
    assert_true(fabs(sgd_lr(&k, 2) - 0.1) < 1e-15);
    assert_true(fabs(sgd_lr(&k, 6) - 0.05) < 1e-15);
    assert_true(sgd_lr(&k, 5) > sgd_lr(&k, 5.5) && sgd_lr(&k, 5.5) > sgd_lr(&k, 9));
    assert_true(fabs(sgd_lr(&k, 10)) < 1e-15 && fabs(sgd_lr(&k, 12)) < 1e-15);
    // The step schedule takes a warm-up too; the paper's recipe has none.
    c.warmup_epochs = 1;
    assert_true(fabs(sgd_lr(&c, 0.5) - 0.01 * (0.01 + 0.99 * 0.5)) < 1e-15 && sgd_lr(&c, 1) == 0.01);
    TrainOptions o = train_options_default();
    assert_int_equal(train_options_recipe(&o, "paper"), 0);
    assert_true(o.sgd.warmup_epochs == 0 && o.sgd.schedule == SCHEDULE_STEP && o.sgd.step_epochs == 8 &&
                o.sgd.step_factor == 0.96 && o.sgd.polyak == 0.999 && o.hard_fraction == 0 && o.jitter == 0 &&
                !o.bbox_reg);
    assert_true(train_options_default().bbox_reg && train_options_default().sgd.schedule == SCHEDULE_COSINE);
    assert_int_equal(train_options_recipe(&o, "nonsense"), -1);
}

static void test_polyak_average(void **state) {
    (void)state;
    // With a zero gradient and no decay the weights stay put, and so does their average; with a constant
    // gradient the average trails the weights.
    SgdConfig c = {.lr = 1.0, .momentum = 0, .polyak = 0.5};
    float w[1] = {0};
    float g[1] = {-1};
    ParamGroup all = {0, 1, 1, 1};
    Sgd s;
    sgd_init(&s, 1, w, &c);
    assert_non_null(s.average);
    for (int t = 0; t < 4; t++) sgd_step(&s, &c, c.lr, &all, 1, w, g);
    assert_true(w[0] == 4.0f);
    // decay min(0.5, (1+t)/(10+t)) = 2/11, 3/12, 4/13, 5/14 for t = 1..4: the average is below the weights
    double a = 0;
    for (int t = 1; t <= 4; t++) {
        double d = fmin(0.5, (1.0 + t) / (10.0 + t));
        a = d * a + (1 - d) * t;
    }
    assert_true(fabs(s.average[0] - a) < 1e-6);
    assert_true(s.average[0] < w[0]);
    sgd_free(&s);
}

// A producer that writes i into its slot, slowly, and fails at `fail_at`.
typedef struct {
    long fail_at;
    int produced;
} Ctx;

static int produce(void *ctx, long i, void *slot, Err *e) {
    Ctx *c = ctx;
    if (i == c->fail_at) return err_set(e, "cannot load batch %ld", i);
    usleep(1000);
    *(long *)slot = i * 10;
    __atomic_add_fetch(&c->produced, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void test_prefetch_order_and_errors(void **state) {
    (void)state;
    long a, b;
    Ctx ctx = {.fail_at = -1};
    Prefetch p;
    Err e;
    prefetch_start(&p, produce, &ctx, &a, &b, 3, 20);
    for (long i = 3; i < 20; i++) {
        long *slot = prefetch_get(&p, i, &e);
        assert_non_null(slot);
        assert_int_equal(*slot, i * 10);
        prefetch_release(&p, i);
    }
    prefetch_stop(&p);
    assert_int_equal(ctx.produced, 17);
    // A failure reaches the consumer at that batch, with the producer's message.
    ctx = (Ctx){.fail_at = 5};
    prefetch_start(&p, produce, &ctx, &a, &b, 0, 20);
    for (long i = 0; i < 5; i++) {
        assert_non_null(prefetch_get(&p, i, &e));
        prefetch_release(&p, i);
    }
    assert_null(prefetch_get(&p, 5, &e));
    assert_non_null(strstr(e.msg, "cannot load batch 5"));
    prefetch_stop(&p);
    // Stopping early joins cleanly.
    ctx = (Ctx){.fail_at = -1};
    prefetch_start(&p, produce, &ctx, &a, &b, 0, 1000);
    assert_non_null(prefetch_get(&p, 0, &e));
    prefetch_stop(&p);
    assert_true(ctx.produced <= 3);
}

static void test_regions(void **state) {
    (void)state;
    Box gt[2] = {{1, 1, 100, 100}, {201, 1, 300, 100}};
    int label[2] = {4, 7};
    Box props[4] = {
        {11, 1, 110, 100},  // IoU 0.818 with the first box: positive, class 4
        {151, 1, 250, 100}, // IoU 1/3 with the second: background
        {191, 1, 290, 100}, // IoU 0.818 with the second: positive, class 7
        {401, 1, 500, 100}, // nothing: background
    };
    RegionSet rs = {0};
    region_set_add_image(&rs, 3, gt, label, 2, props, 4, 0.5);
    assert_int_equal(rs.pos.len, 4); // two ground-truth boxes + two proposals
    assert_int_equal(rs.bg.len, 2);
    assert_int_equal(rs.pos.data[0].label, 5);
    assert_int_equal(rs.pos.data[2].label, 5);
    assert_int_equal(rs.pos.data[3].label, 8);
    assert_int_equal(rs.bg.data[0].label, 0);
    assert_int_equal(rs.bg.data[1].image, 3);
    Region out[128];
    Rng r;
    rng_seed(&r, 1);
    assert_true(region_set_sample(&rs, 32, 0, 96, &r, out));
    for (int i = 0; i < 128; i++) assert_true(i < 32 ? out[i].label > 0 : out[i].label == 0);
    // Hard background: the window with IoU 1/3, not the one that misses everything.
    assert_int_equal(rs.hard.len, 1);
    assert_true(rs.hard.data[0].box.x1 == 151 && fabsf(rs.hard.data[0].iou - 1.0f / 3) < 1e-6f);
    assert_true(region_set_sample(&rs, 32, 48, 48, &r, out));
    int far = 0;
    for (int i = 0; i < 128; i++) {
        assert_true(i < 32 ? out[i].label > 0 : out[i].label == 0);
        if (i >= 32 && i < 80) assert_true(out[i].box.x1 == 151);
        far += i >= 80 && out[i].box.x1 == 401;
    }
    assert_true(far > 10 && far < 38); // the rest from all the background: about half of 48 miss everything
    region_set_free(&rs);
    // An image without objects gives only background; an empty set cannot be sampled.
    region_set_add_image(&rs, 0, NULL, NULL, 0, props, 4, 0.5);
    assert_int_equal(rs.hard.len, 0);
    assert_true(region_set_sample(&rs, 32, 48, 48, &r, out)); // no hard background: drawn from the rest
    for (int i = 0; i < 128; i++) assert_int_equal(out[i].label, 0);
    assert_true(region_set_sample(&rs, 32, 0, 96, &r, out));
    for (int i = 0; i < 128; i++) assert_int_equal(out[i].label, 0);
    region_set_free(&rs);
    assert_false(region_set_sample(&rs, 32, 0, 96, &r, out));
}

// MultiBox's data: a detection set opened for boxes has no proposals; its batches hold every image once an
// epoch with its boxes normalised to the input, and the same index gives the same bytes.
static void test_box_batches(void **state) {
    (void)state;
    NetConfig cfg;
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    DatasetOptions o = {.boxes = true, .cache_budget = 1u << 26, .quiet = true};
    Dataset d;
    assert_int_equal(dataset_open("data/detset", &o, &d, &e), 0);
    assert_int_equal(d.kind, DATASET_BOXES);
    assert_int_equal(d.n_images, 4);
    BatchRecipe r = {.seed = 5, .batch = 2, .augment = augment_paper()};
    assert_int_equal(dataset_steps_per_epoch(&d, &r), 2);
    Batch a, b;
    batch_alloc(&a, 2, &cfg);
    batch_alloc(&b, 2, &cfg);
    int seen[4] = {0};
    for (long i = 0; i < 2; i++) {
        assert_int_equal(dataset_batch(&d, &cfg, &r, i, &a, &e), 0);
        assert_int_equal(dataset_batch(&d, &cfg, &r, i, &b, &e), 0);
        assert_memory_equal(a.x, b.x, 2 * 3 * 96 * 96 * sizeof(float));
        for (int t = 0; t < 2; t++) {
            seen[a.labels[t]]++;
            assert_int_equal(a.n_boxes[t], b.n_boxes[t]);
            for (int q = 0; q < 4 * a.n_boxes[t]; q++) {
                float v = a.boxes[(size_t)t * BATCH_MAX_BOXES * 4 + q];
                assert_true(v >= 0 && v <= 1 && v == b.boxes[(size_t)t * BATCH_MAX_BOXES * 4 + q]);
            }
        }
    }
    for (int k = 0; k < 4; k++) assert_int_equal(seen[k], 1); // an epoch: every image once
    batch_free(&a);
    batch_free(&b);
    dataset_free(&d);
}

// Region batches: jitter moves regions but keeps every label (and the draws, which come from their own stream);
// hard background changes which background is drawn, not the mix; the same index gives the same bytes.
static void test_region_batches_jitter_hard(void **state) {
    (void)state;
    NetConfig cfg;
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    ProposalParams pp;
    proposals_params_default(&pp);
    DatasetOptions o = {.proposals = &pp, .pos_iou = 0.5, .cache_budget = 1u << 26, .quiet = true};
    Dataset d;
    assert_int_equal(dataset_open("data/detset", &o, &d, &e), 0);
    assert_int_equal(d.kind, DATASET_REGIONS);
    assert_true(d.regions.hard.len > 0 && d.regions.hard.len < d.regions.bg.len);
    for (size_t i = 0; i < d.regions.hard.len; i++)
        assert_true(d.regions.hard.data[i].iou >= REGION_HARD_IOU && d.regions.hard.data[i].iou < 0.5f);
    BatchRecipe plain = {.seed = 3, .batch = 16, .context = 16, .pos_fraction = 0.25}, moved = plain, hard = plain;
    moved.jitter = 0.2, hard.hard_fraction = 0.5;
    Batch a, b, c;
    batch_alloc(&a, 16, &cfg), batch_alloc(&b, 16, &cfg), batch_alloc(&c, 16, &cfg);
    size_t per = 3 * 96 * 96;
    int differ = 0;
    for (long i = 0; i < 3; i++) {
        assert_int_equal(dataset_batch(&d, &cfg, &plain, i, &a, &e), 0);
        assert_int_equal(dataset_batch(&d, &cfg, &moved, i, &b, &e), 0);
        assert_memory_equal(a.labels, b.labels, 16 * sizeof(int));
        for (int t = 0; t < 16; t++) differ += memcmp(a.x + t * per, b.x + t * per, per * sizeof(float)) != 0;
        assert_int_equal(dataset_batch(&d, &cfg, &moved, i, &c, &e), 0);
        assert_memory_equal(b.x, c.x, 16 * per * sizeof(float));
        assert_int_equal(dataset_batch(&d, &cfg, &hard, i, &c, &e), 0);
        for (int t = 0; t < 16; t++) assert_true(t < 4 ? c.labels[t] > 0 : c.labels[t] == 0);
    }
    assert_true(differ > 24); // most of the 48 regions moved
    batch_free(&a), batch_free(&b), batch_free(&c);
    dataset_free(&d);
}

// Shares of a batch (processes training together) are exactly those images of the whole batch: regions (with
// jitter and flips, whose streams run through the whole batch) and boxes (per-image streams), for shares of 5 and
// 11 of 16, over three batches.
static void test_batch_shares(void **state) {
    (void)state;
    NetConfig cfg;
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    ProposalParams pp;
    proposals_params_default(&pp);
    for (int boxes = 0; boxes < 2; boxes++) {
        DatasetOptions o = {.proposals = &pp, .pos_iou = 0.5, .cache_budget = 1u << 26, .quiet = true, .boxes = boxes};
        Dataset d;
        assert_int_equal(dataset_open("data/detset", &o, &d, &e), 0);
        int B = boxes ? 4 : 16, lo = boxes ? 1 : 5;
        BatchRecipe whole = {.seed = 3, .batch = B, .context = 16, .pos_fraction = 0.25, .jitter = 0.2,
                             .augment = boxes ? augment_paper() : (Augment){.flip = true}};
        BatchRecipe first = whole, second = whole;
        second.share_lo = lo;
        Batch a, b, c;
        batch_alloc(&a, B, &cfg), batch_alloc(&b, lo, &cfg), batch_alloc(&c, B - lo, &cfg);
        size_t per = 3 * 96 * 96;
        for (long i = 0; i < 3; i++) {
            assert_int_equal(dataset_batch(&d, &cfg, &whole, i, &a, &e), 0);
            assert_int_equal(dataset_batch(&d, &cfg, &first, i, &b, &e), 0);
            assert_int_equal(dataset_batch(&d, &cfg, &second, i, &c, &e), 0);
            assert_memory_equal(a.x, b.x, (size_t)lo * per * sizeof(float));
            assert_memory_equal(a.x + lo * per, c.x, (size_t)(B - lo) * per * sizeof(float));
            assert_memory_equal(a.labels, b.labels, (size_t)lo * sizeof(int));
            assert_memory_equal(a.labels + lo, c.labels, (size_t)(B - lo) * sizeof(int));
        }
        batch_free(&a), batch_free(&b), batch_free(&c);
        dataset_free(&d);
    }
}

// A 'path label' list whose label is not a whole number is a classification list with a bad line (named), not a
// list of image names without their Annotations directory; a list of bare paths says what a classification list
// needs.
static void test_list_labels_refused(void **state) {
    (void)state;
    DatasetOptions o = {.max_classes = 2, .quiet = true};
    Dataset d;
    Err e;
    char *bad = test_tmpfile(".txt", "a.jpg 1.5\na.jpg 0\n"), *bare = test_tmpfile(".txt", "a.jpg\n");
    assert_int_equal(dataset_open(bad, &o, &d, &e), -1);
    if (!strstr(e.msg, ":1: expected 'path label'")) fail_msg("%s", e.msg);
    assert_int_equal(dataset_open(bare, &o, &d, &e), -1);
    assert_non_null(strstr(e.msg, "a classification list has a label after each path"));
    unlink(bad), unlink(bare);
    free(bad), free(bare);
}

// ILSVRC's layout (ImageSets/DET/SET.txt, Annotations/DET/SET, Data/DET/SET) opens for MultiBox too; a box
// reaching outside its image is clipped and counted, one entirely outside dropped.
static void test_ilsvrc_layout_boxes(void **state) {
    (void)state;
    char *root = test_tmpdir(), path[1024];
    Err e;
    const char *dirs[] = {"ImageSets/DET", "Annotations/DET/val", "Data/DET/val"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        assert_int_equal(make_dirs(path, &e), 0);
    }
    static const char *xml =
        "<annotation><filename>a</filename><size><width>650</width><height>417</height></size>"
        "<object><name>n02508021</name><bndbox><xmin>81</xmin><ymin>88</ymin><xmax>700</xmax><ymax>408</ymax>"
        "</bndbox></object><object><name>n02508021</name><bndbox><xmin>660</xmin><ymin>1</ymin><xmax>690</xmax>"
        "<ymax>30</ymax></bndbox></object></annotation>";
    snprintf(path, sizeof path, "%s/Annotations/DET/val/a.xml", root);
    assert_int_equal(write_file_atomic(path, xml, strlen(xml), &e), 0);
    size_t n;
    char *jpg = test_slurp("../data/raccoon/JPEGImages/raccoon-1.jpg", &n);
    snprintf(path, sizeof path, "%s/Data/DET/val/a.JPEG", root);
    assert_int_equal(write_file_atomic(path, jpg, n, &e), 0);
    free(jpg);
    // a second image without objects: allowed (all its predictions are negatives)
    static const char *empty = "<annotation><filename>b</filename><size><width>650</width><height>417</height>"
                               "</size></annotation>";
    snprintf(path, sizeof path, "%s/Annotations/DET/val/b.xml", root);
    assert_int_equal(write_file_atomic(path, empty, strlen(empty), &e), 0);
    jpg = test_slurp("../data/raccoon/JPEGImages/raccoon-1.jpg", &n);
    snprintf(path, sizeof path, "%s/Data/DET/val/b.JPEG", root);
    assert_int_equal(write_file_atomic(path, jpg, n, &e), 0);
    free(jpg);
    snprintf(path, sizeof path, "%s/ImageSets/DET/val.txt", root);
    assert_int_equal(write_file_atomic(path, "a 1\nb 2\n", 8, &e), 0);
    DatasetOptions o = {.boxes = true, .cache_budget = 1u << 26, .quiet = true};
    Dataset d;
    int rc = dataset_open(path, &o, &d, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(d.kind, DATASET_BOXES);
    assert_int_equal(d.n_images, 2);
    assert_int_equal(d.images[1].n_gt, 0);
    assert_non_null(strstr(d.images[0].path, "Data/DET/val/a.JPEG"));
    assert_int_equal(d.images[0].n_gt, 1);
    assert_true(d.images[0].gt[0].x2 == 650 && d.images[0].gt[0].x1 == 81);
    assert_int_equal(d.boxes_clipped, 2);
    assert_int_equal(d.boxes_dropped, 1);
    NetConfig cfg; // a batch of both: the empty image has no boxes
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    BatchRecipe r = {.seed = 1, .batch = 2, .augment = augment_none()};
    Batch b;
    batch_alloc(&b, 2, &cfg);
    assert_int_equal(dataset_batch(&d, &cfg, &r, 0, &b, &e), 0);
    assert_int_equal(b.n_boxes[b.labels[0] == 1 ? 0 : 1], 0);
    assert_int_equal(b.n_boxes[b.labels[0] == 1 ? 1 : 0], 1);
    batch_free(&b);
    dataset_free(&d);
    test_rmtree(root);
    free(root);
}

static void test_checkpoint_roundtrip_and_refusals(void **state) {
    (void)state;
    enum { N = 1000 };
    float p[N], v[N], a[N], p2[N], v2[N], a2[N];
    for (int i = 0; i < N; i++) p[i] = (float)i * 0.5f, v[i] = -(float)i, a[i] = (float)i / 3.0f;
    char path[] = "/tmp/inception_ckpt_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    Err e;
    CheckpointHeader h = {.fingerprint = 0x1234, .step = 77, .seed = 5, .n = N, .has_average = true}, got;
    assert_int_equal(checkpoint_save(path, &h, p, v, a, &e), 0);
    assert_int_equal(checkpoint_load(path, 0x1234, N, &got, p2, v2, a2, &e), 0);
    assert_int_equal(got.step, 77);
    assert_int_equal(got.seed, 5);
    assert_true(got.has_average);
    assert_memory_equal(p, p2, sizeof p);
    assert_memory_equal(v, v2, sizeof v);
    assert_memory_equal(a, a2, sizeof a);
    // another network
    assert_int_equal(checkpoint_load(path, 0x9999, N, &got, p2, v2, a2, &e), -1);
    assert_non_null(strstr(e.msg, "another network"));
    assert_int_equal(checkpoint_load(path, 0x1234, N + 1, &got, p2, v2, a2, &e), -1);
    // a flipped byte, then a truncation
    char *data;
    size_t n;
    assert_int_equal(read_file_all(path, 1 << 20, &data, &n, &e), 0);
    data[100] ^= 1;
    assert_int_equal(write_file_atomic(path, data, n, &e), 0);
    assert_int_equal(checkpoint_load(path, 0x1234, N, &got, p2, v2, a2, &e), -1);
    assert_non_null(strstr(e.msg, "corrupt"));
    data[100] ^= 1;
    assert_int_equal(write_file_atomic(path, data, n - 10, &e), 0);
    assert_int_equal(checkpoint_load(path, 0x1234, N, &got, p2, v2, a2, &e), -1);
    assert_non_null(strstr(e.msg, "truncated"));
    assert_int_equal(write_file_atomic(path, "hello", 5, &e), 0);
    assert_int_equal(checkpoint_load(path, 0x1234, N, &got, p2, v2, a2, &e), -1);
    assert_non_null(strstr(e.msg, "not an inception checkpoint"));
    free(data);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_momentum_by_hand),
        cmocka_unit_test(test_sgd_schedule),
        cmocka_unit_test(test_polyak_average),
        cmocka_unit_test(test_prefetch_order_and_errors),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_box_batches),
        cmocka_unit_test(test_region_batches_jitter_hard),
        cmocka_unit_test(test_batch_shares),
        cmocka_unit_test(test_list_labels_refused),
        cmocka_unit_test(test_ilsvrc_layout_boxes),
        cmocka_unit_test(test_checkpoint_roundtrip_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
