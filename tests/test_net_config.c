// Tests of the network config and of Table 1: the parser's strictness (file:line errors, impossible shapes), the
// summary rows of configs/googlenet.cfg pinned and re-derived from the Table 1 columns, and the memory planner.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "classifier.h"

#define NET_HEADER "[net]\ninput = 64\nclasses = 10\n[layers]\n"

// Parses text expected to fail; checks the message contains `want`.
static void expect_error(const char *text, const char *want) {
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e = {{0}};
    int rc = config_parse(text, "t.cfg", cfg, &e);
    Net net;
    if (rc == 0) {
        rc = net_create(&net, cfg, &e);
        if (rc == 0) net_free(&net);
    }
    if (rc == 0 || !strstr(e.msg, want)) fail_msg("expected an error containing '%s', got rc %d '%s'", want, rc, e.msg);
    free(cfg);
}

static void test_config_errors(void **state) {
    (void)state;
    expect_error("input = 3\n", "t.cfg:1: expected [net]");
    expect_error("[net]\ninput = 64\nclasses = 10\nwidht = 2\n", "t.cfg:4: unknown key 'widht'");
    expect_error("[net]\ninput = 64\ninput = 32\n", "t.cfg:3: key 'input' given twice");
    expect_error("[net]\ninput = -3\n", "t.cfg:2: input expects an integer");
    expect_error("[net]\ninput = 64\n[layers]\n", "t.cfg:3: [net] needs classes");
    expect_error(NET_HEADER "conv c1 7x7/2 out=8 pad=3\nconvv c2 3x3/1 out=8\n", "t.cfg:6: unknown layer type 'convv'");
    expect_error(NET_HEADER "conv c1 7x7/2 out=8 colour=3\n", "t.cfg:5: unknown key 'colour' for a conv layer");
    expect_error(NET_HEADER "conv c1 7x5/2 out=8\n", "t.cfg:5: patch expects a square patch");
    expect_error(NET_HEADER "conv c1 7x7/2 pad=3\n", "t.cfg:5: conv c1 needs out=N");
    expect_error(NET_HEADER "conv c1 3x3/1 out=8\nconv c1 3x3/1 out=8\n", "t.cfg:6: layer name 'c1' used twice");
    expect_error(NET_HEADER "inception i3 1 2 3 4 5\n", "t.cfg:5: inception i3 needs six numbers");
    expect_error(NET_HEADER "inception i3 1 2 3 4 5 x\n", "t.cfg:5: pool proj expects an integer");
    expect_error(NET_HEADER "lrn n1 size=4\n", "t.cfg:5: lrn n1: size must be odd");
    expect_error(NET_HEADER "dropout d p=1.5\n", "t.cfg:5: p expects a number in [0, 0.999]");
    expect_error(NET_HEADER "conv c1 3x3/1 pad=3 out=8\n", "t.cfg:5: conv c1: padding must be smaller");
    expect_error(NET_HEADER "conv c1 3x3/1 out=8\n", "the network needs a final fully connected layer");
    expect_error(NET_HEADER "fc f out=7\n", "the last fully connected layer has 7 outputs, but classes = 10");
    expect_error(NET_HEADER "fc f out=classes\nconv c 1x1/1 out=3\n", "t.cfg:6: c: a spatial layer cannot follow");
    expect_error(NET_HEADER "fc f out=classes\nsoftmax p\ndropout d p=0.5\n", "t.cfg:7: d: nothing may follow");
}

// Shapes that cannot work are refused when the net is compiled, naming the layer and line.
static void test_impossible_shapes(void **state) {
    (void)state;
    expect_error(NET_HEADER "conv c1 7x7/2 pad=3 out=8\nmaxpool p1 3x3/2\nmaxpool p2 3x3/2\nmaxpool p3 3x3/2\n"
                            "maxpool p4 3x3/2\nmaxpool p5 3x3/2\nfc f out=classes\n",
                 "t.cfg:10: p5: a 3x3/2 pooling (pad 0) does not fit its 2x2 input");
    expect_error("[net]\ninput = 4\nclasses = 10\n[layers]\nconv c1 7x7/1 out=8\nfc f out=classes\n",
                 "t.cfg:5: c1: a 7x7/1 convolution (pad 0) does not fit its 4x4 input");
    expect_error("[net]\ninput = 16\nclasses = 10\n[layers]\ninception i 4 4 4 4 4 4\naux a pool=5x5/3 conv=4 fc=8\n"
                 "maxpool p 3x3/2\nmaxpool q 3x3/2\naux b pool=5x5/3 conv=4 fc=8\nfc f out=classes\n",
                 "t.cfg:9: b: a 5x5/3 average pooling (pad 0) does not fit its 4x4 input");
    // The real configs compile, and a config file that does not exist names itself.
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", cfg, &e), 0);
    assert_int_equal(config_load("nonexistent.cfg", cfg, &e), -1);
    assert_non_null(strstr(e.msg, "nonexistent.cfg"));
    free(cfg);
}

// Table 1 as computed, row by row: output size, depth, params (weights + biases), multiply-adds per image.
static const struct {
    const char *name;
    int h, w, c, depth, aux;
    long long params, macs;
} ROWS[] = {
    {"conv1", 112, 112, 64, 1, 0, 9472LL, 118013952LL},
    {"pool1", 56, 56, 64, 0, 0, 0LL, 0LL},
    {"norm1", 56, 56, 64, 0, 0, 0LL, 0LL},
    {"conv2", 56, 56, 192, 2, 0, 114944LL, 359661568LL},
    {"norm2", 56, 56, 192, 0, 0, 0LL, 0LL},
    {"pool2", 28, 28, 192, 0, 0, 0LL, 0LL},
    {"inception_3a", 28, 28, 256, 2, 0, 163696LL, 128049152LL},
    {"inception_3b", 28, 28, 480, 2, 0, 388736LL, 304267264LL},
    {"pool3", 14, 14, 480, 0, 0, 0LL, 0LL},
    {"inception_4a", 14, 14, 512, 2, 0, 376176LL, 73608192LL},
    {"loss1", 1, 1, 1000, 3, 1, 3188840LL, 4169728LL},
    {"inception_4b", 14, 14, 512, 2, 0, 449160LL, 87908352LL},
    {"inception_4c", 14, 14, 512, 2, 0, 510104LL, 99850240LL},
    {"inception_4d", 14, 14, 528, 2, 0, 605376LL, 118515712LL},
    {"loss2", 1, 1, 1000, 3, 1, 3190888LL, 4202496LL},
    {"inception_4e", 14, 14, 832, 2, 0, 868352LL, 169996288LL},
    {"pool4", 7, 7, 832, 0, 0, 0LL, 0LL},
    {"inception_5a", 7, 7, 832, 2, 0, 1043456LL, 51079168LL},
    {"inception_5b", 7, 7, 1024, 2, 0, 1444080LL, 70697984LL},
    {"pool5", 1, 1, 1024, 0, 0, 0LL, 0LL},
    {"drop5", 1, 1, 1024, 0, 0, 0LL, 0LL},
    {"classifier", 1, 1, 1000, 1, 0, 1025000LL, 1024000LL},
    {"prob", 1, 1, 1000, 0, 0, 0LL, 0LL},
};

static void test_table1(void **state) {
    (void)state;
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    Net net;
    assert_int_equal(config_load("../configs/googlenet.cfg", cfg, &e), 0);
    assert_int_equal(net_create(&net, cfg, &e), 0);
    Summary *s = malloc(sizeof *s);
    net_summary(&net, s);
    assert_int_equal(s->n_rows, (int)(sizeof ROWS / sizeof ROWS[0]));
    for (int i = 0; i < s->n_rows; i++) {
        const SummaryRow *r = &s->row[i];
        assert_string_equal(r->name, ROWS[i].name);
        assert_int_equal(r->out_h, ROWS[i].h);
        assert_int_equal(r->out_w, ROWS[i].w);
        assert_int_equal(r->out_c, ROWS[i].c);
        assert_int_equal(r->depth, ROWS[i].depth);
        assert_int_equal(r->aux, ROWS[i].aux);
        assert_true(r->params == ROWS[i].params);
        assert_true(r->macs == ROWS[i].macs);
        // Inception rows re-derived from the Table 1 columns: the module's weights are
        // cin x (#1x1 + #3x3r + #5x5r + pool proj) + #3x3r x 9 x #3x3 + #5x5r x 25 x #5x5, every weight is used
        // once per output pixel, and each convolution has a bias per output channel.
        if (!strncmp(r->name, "inception", 9)) {
            int cin = i > 0 ? s->row[i - 1].out_c : 0;
            if (s->row[i - 1].aux) cin = s->row[i - 2].out_c;
            long long w = (long long)cin * (r->n1x1 + r->n3x3r + r->n5x5r + r->npool) + (long long)r->n3x3r * 9 * r->n3x3 +
                          (long long)r->n5x5r * 25 * r->n5x5;
            long long b = r->n1x1 + r->n3x3r + r->n3x3 + r->n5x5r + r->n5x5 + r->npool;
            assert_true(r->params == w + b);
            assert_true(r->macs == w * r->out_h * r->out_w);
            assert_int_equal(r->out_c, r->n1x1 + r->n3x3 + r->n5x5 + r->npool);
        }
    }
    // The inference network of the anchors: 6,998,552 parameters, 1.583 G multiply-adds at 224x224.
    assert_true(s->params == 6998552LL);
    assert_true(s->macs == 1582671872LL);
    // The JSON has the contract's fields.
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(summary_write_json(&net, s, f, &e), 0);
    fclose(f);
    assert_non_null(strstr(buf, "\"rows\""));
    assert_non_null(strstr(buf, "\"totals\": {\n    \"params\": 6998552,\n    \"macs\": 1582671872"));
    assert_non_null(strstr(buf, "inception_5a: the paper gives 1072K params"));
    free(buf);
    free(s);
    net_free(&net);
    free(cfg);
}

// The width multiplier scales every channel count but the classes; tiny is 1/16 of GoogLeNet.
static void test_width(void **state) {
    (void)state;
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", cfg, &e), 0);
    assert_int_equal(cfg->input, 96);
    assert_int_equal(cfg->classes, 10);
    assert_int_equal(cfg->layers[0].out, 4); // 64 / 16
    const LayerSpec *l3a = &cfg->layers[6];
    assert_string_equal(l3a->name, "inception_3a");
    assert_int_equal(l3a->n1x1, 4);
    assert_int_equal(l3a->n5x5r, 1);  // 16 / 16
    assert_int_equal(cfg->layers[21].out, 10); // out=classes, not scaled
    assert_int_equal(cfg->order, CHANNELS_BGR);
    assert_true(cfg->mean[0] == 104.0f && cfg->mean[2] == 123.0f);
    free(cfg);
}

// Planning: without keep_all, values share memory and the arena is far smaller; outputs survive either way.
static void test_plan(void **state) {
    (void)state;
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    Net net;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", cfg, &e), 0);
    assert_int_equal(net_create(&net, cfg, &e), 0);
    assert_int_equal(net_plan(&net, 4, true, true, &e), 0);
    size_t all = net.acts_size;
    for (int v = 0; v < net.n_values; v++) assert_true(net_value_kept(&net, v));
    assert_int_equal(net_plan(&net, 4, false, false, &e), 0);
    assert_true(net.acts_size * 2 < all); // 2.5x for tiny, 4.7x for GoogLeNet
    assert_true(net_value_kept(&net, net.logits));
    assert_true(net_value_kept(&net, net_find_value(&net, "prob")));
    assert_false(net_value_kept(&net, net_find_value(&net, "conv1")));
    assert_false(net_value_kept(&net, net_find_value(&net, "loss1")));
    float out[40];
    assert_int_equal(net_read(&net, "conv1", out, &e), -1);
    assert_non_null(strstr(e.msg, "not kept"));
    assert_int_equal(net_read(&net, "nosuchlayer", out, &e), -1);
    assert_non_null(strstr(e.msg, "no layer or value named 'nosuchlayer'"));
    // Values alive at the same time never overlap.
    for (int a = 0; a < net.n_values; a++)
        for (int b = a + 1; b < net.n_values; b++) {
            const Value *x = &net.value[a], *y = &net.value[b];
            if (x->aux || y->aux) continue;
            int xl = x->kept ? net.n_ops : x->last, yl = y->kept ? net.n_ops : y->last;
            if (x->first > yl || y->first > xl) continue;
            size_t xs = (size_t)x->c * x->h * x->w * 4, ys = (size_t)y->c * y->h * y->w * 4;
            assert_true(x->offset + xs <= y->offset || y->offset + ys <= x->offset);
        }
    assert_int_equal(net_plan(&net, 0, false, false, &e), -1);
    net_free(&net);
    free(cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors), cmocka_unit_test(test_impossible_shapes), cmocka_unit_test(test_table1),
        cmocka_unit_test(test_width),         cmocka_unit_test(test_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
