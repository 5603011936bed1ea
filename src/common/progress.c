// A one-line progress report on stderr, redrawn in place at most four times a second.
#include "common.h"

static void progress_print(Progress *p, bool final) {
    double t = now_seconds();
    double elapsed = t - p->t_start;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0.0;
    char eta[32] = "";
    if (!final && p->total > 0 && rate > 0) {
        long s = (long)((double)(p->total - p->done) / rate + 0.5);
        snprintf(eta, sizeof eta, "  ETA %ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    } else if (final) {
        long s = (long)(elapsed + 0.5);
        snprintf(eta, sizeof eta, "  in %ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    }
    const char *sep = p->note[0] ? "  " : "";
    if (p->total > 0)
        fprintf(stderr, "\r%s %lld/%lld %5.1f%%  %.1f %s/s%s%s%s\033[K", p->label, (long long)p->done,
                (long long)p->total, 100.0 * (double)p->done / (double)p->total, rate, p->unit, sep, p->note, eta);
    else
        fprintf(stderr, "\r%s %lld  %.1f %s/s%s%s%s\033[K", p->label, (long long)p->done, rate, p->unit, sep, p->note,
                eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
    p->t_last = t;
    p->printed = true;
}

void progress_init(Progress *p, const char *label, int64_t total, const char *unit, bool quiet) {
    *p = (Progress){.label = label, .total = total, .unit = unit ? unit : "it", .quiet = quiet};
    p->t_start = p->t_last = now_seconds();
}

void progress_add(Progress *p, int64_t n) {
    p->done += n;
    if (p->quiet) return;
    if (now_seconds() - p->t_last >= 0.25) progress_print(p, false);
}

void progress_note(Progress *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->note, sizeof p->note, fmt, ap);
    va_end(ap);
}

// The closing line appears only when the work lasted long enough to have shown progress at all.
void progress_finish(Progress *p) {
    if (!p->quiet && p->printed) progress_print(p, true);
}
