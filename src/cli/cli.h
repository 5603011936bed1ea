// The subcommands of the `inception` tool. Each parses its own flags (getopt_long), prints its --help, and
// returns the process exit status: 0 on success, 1 on a failure (message on stderr), 2 on a usage error.
#ifndef INCEPTION_CLI_H
#define INCEPTION_CLI_H

#include "common.h"

int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_proposals(int argc, char **argv);
int cmd_multibox(int argc, char **argv);
int cmd_summary(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_detect(int argc, char **argv);

// Prints "inception <cmd>: <message>" on stderr and returns 1.
int cli_fail(const char *cmd, const Err *e);
// Prints a usage error and the hint to run --help; returns 2.
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Parses a whole-string integer/double argument; false (after printing a usage error) when it is not one.
bool cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
bool cli_parse_double(const char *cmd, const char *flag, const char *s, double *out);
// A number in [lo, hi] ("FLAG must be in [lo, hi]" otherwise).
bool cli_parse_number(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out);
// In a getopt_long switch: optarg into dst (an lvalue of any arithmetic type), or the command returns 2 after the
// usage error. Every command's numeric flags go through these.
#define CLI_INT(cmd, flag, lo, hi, dst)                                                                            \
    do {                                                                                                           \
        long v_;                                                                                                   \
        if (!cli_parse_int(cmd, flag, optarg, lo, hi, &v_)) return 2;                                              \
        dst = v_;                                                                                                  \
    } while (0)
#define CLI_NUMBER(cmd, flag, lo, hi, dst)                                                                         \
    do {                                                                                                           \
        double x_;                                                                                                 \
        if (!cli_parse_number(cmd, flag, optarg, lo, hi, &x_)) return 2;                                           \
        dst = x_;                                                                                                  \
    } while (0)
// --shard I/N: 0 <= I < N. False (after printing a usage error) when it is not that.
bool cli_parse_shard(const char *cmd, const char *s, long *i, long *n);
// Output paths "-" are standard output (atomic_open). *report is where the command prints its own results:
// stdout, or stderr when one of the n outputs (NULL: not given) takes stdout. False (after printing a usage
// error) when more than one does.
bool cli_report_stream(const char *cmd, const char *const *outputs, int n, FILE **report);

#endif
