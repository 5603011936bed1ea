// inception: the command-line tool. Dispatches to one subcommand per stage of the detector.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    bool parallel; // runs under `mpirun -n N` (the others refuse N > 1 rather than do the same work N times)
} Command;

static const Command COMMANDS[] = {
    {"detect", cmd_detect, "detect objects in images: proposals, an ensemble of networks, NMS; JSON, overlays, viewer", true},
    {"eval", cmd_eval, "mean average precision of detections against ILSVRC DET / VOC ground truth", false},
    {"proposals", cmd_proposals, "Selective Search region proposals (JSON), and their recall against ground truth", true},
    {"multibox", cmd_multibox, "MultiBox proposals: k-means priors from a training set's boxes (priors)", false},
    {"classify", cmd_classify, "top-5 classes of images with the paper's 1/10/144-crop test-time scheme", false},
    {"forward", cmd_forward, "run the network on a .npy tensor (logits or any layer's output)", false},
    {"import", cmd_import, "import pretrained GoogLeNet weights from ONNX or Caffe into safetensors", false},
    {"export", cmd_export, "export a network's weights as an ONNX model (ONNX Runtime, OpenCV DNN, ...)", false},
    {"train", cmd_train, "train an Inception network (classification, or regions for detection) with the paper's recipe", true},
    {"summary", cmd_summary, "Table 1 of the paper (output sizes, params, multiply-adds) for a network config", false},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f, "usage: inception <command> [options]\n\n"
               "GoogLeNet detection (Szegedy et al., 2014): proposals, Inception networks, evaluation.\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nRun 'inception <command> --help' for the options of a command.\n");
}

int cli_fail(const char *cmd, const Err *e) {
    fprintf(stderr, "inception %s: %s\n", cmd, e->msg);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    fprintf(stderr, "inception %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'inception %s --help'.\n", cmd);
    return 2;
}

bool cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        cli_usage_error(cmd, "%s expects an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_double(const char *cmd, const char *flag, const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || v != v) {
        cli_usage_error(cmd, "%s expects a number, got '%s'", flag, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_number(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out) {
    if (!cli_parse_double(cmd, flag, s, out)) return false;
    if (*out >= lo && *out <= hi) return true;
    cli_usage_error(cmd, "%s must be in [%g, %g]", flag, lo, hi);
    return false;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], COMMANDS[i].name)) continue;
        int n = cluster_launch_size();
        if (n > 1 && !COMMANDS[i].parallel) {
            fprintf(stderr, "inception %s: started as one of %d processes (mpirun -n %d), but %s runs as one "
                            "process: start it alone (only detect, proposals and train share work under mpirun)\n",
                    argv[1], n, n, argv[1]);
            return 2;
        }
        return COMMANDS[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "inception: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

bool cli_parse_shard(const char *cmd, const char *s, long *i, long *n) {
    const char *slash = strchr(s, '/');
    char *end1 = NULL, *end2 = NULL;
    long a = slash ? strtol(s, &end1, 10) : -1, b = slash ? strtol(slash + 1, &end2, 10) : 0;
    if (!slash || end1 != slash || *end2 || b < 1 || a < 0 || a >= b) {
        cli_usage_error(cmd, "--shard expects I/N with 0 <= I < N, got '%s'", s);
        return false;
    }
    *i = a, *n = b;
    return true;
}

bool cli_report_stream(const char *cmd, const char *const *outputs, int n, FILE **report) {
    int dashes = 0;
    for (int i = 0; i < n; i++) dashes += outputs[i] && !strcmp(outputs[i], "-");
    if (dashes > 1) {
        cli_usage_error(cmd, "only one output can be '-' (standard output)");
        return false;
    }
    *report = dashes ? stderr : stdout;
    return true;
}
