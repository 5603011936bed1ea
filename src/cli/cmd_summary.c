// inception summary: the paper's Table 1 computed from a config.
#include <getopt.h>
#include <stdlib.h>

#include "classifier.h"
#include "cli.h"

int cmd_summary(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 'h') {
            printf("usage: inception summary CONFIG [--json]\n\n"
                   "Prints Table 1 of the paper for the network of CONFIG: per row the output size, depth, the\n"
                   "Inception columns, params (weights and biases, K = 1024) and ops (multiply-adds, M = 10^6),\n"
                   "and the totals of the inference network. --json writes {\"rows\": [...], \"totals\":\n"
                   "{\"params\", \"macs\"}, \"aux_totals\", \"notes\"} instead.\n");
            return 0;
        } else return cli_usage_error("summary", "unknown option");
    }
    if (optind != argc - 1) return cli_usage_error("summary", "expected one CONFIG file");
    Err e;
    NetConfig *cfg = xmalloc(sizeof *cfg);
    Net net;
    if (config_load(argv[optind], cfg, &e) || net_create(&net, cfg, &e)) {
        free(cfg);
        return cli_fail("summary", &e);
    }
    free(cfg);
    Summary *s = xmalloc(sizeof *s);
    net_summary(&net, s);
    int rc = 0;
    if (json) rc = summary_write_json(&net, s, stdout, &e) ? cli_fail("summary", &e) : 0;
    else summary_print(&net, s, stdout);
    free(s);
    net_free(&net);
    return rc;
}
