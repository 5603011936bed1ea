// File helpers: atomic writes (temp file + fsync + rename), whole-file reads, path joins, a monotonic clock.
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    size_t n = (size_t)(slash - path);
    char *d = xmalloc(n + 1);
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

// The real path of a path whose last component need not exist: realpath of its directory, then its base name
// (a base name of "." or "..", or none, takes realpath of the whole). NULL when that fails.
static char *real_path_of(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) return realpath(path, NULL);
    char *dir = path_dirname(path);
    char *real_dir = realpath(dir, NULL);
    free(dir);
    if (!real_dir) return NULL;
    char *p = path_join(real_dir, base);
    free(real_dir);
    return p;
}

char *path_relative(const char *from_dir, const char *to_path) {
    char *from = realpath(from_dir, NULL), *to = real_path_of(to_path);
    if (!from || !to) {
        free(from);
        free(to);
        return NULL;
    }
    // The longest common prefix of whole components: both are absolute, without "." or ".." or doubled slashes.
    size_t common = 0;
    for (size_t i = 0;; i++) {
        bool end_from = from[i] == '\0' || from[i] == '/', end_to = to[i] == '\0' || to[i] == '/';
        if (end_from && end_to) common = i;
        if (from[i] != to[i] || from[i] == '\0') break;
    }
    size_t ups = 0;
    for (const char *c = from + common; *c; c++) ups += *c == '/';
    if (common == 0 && strcmp(from, "/") == 0) ups = 0; // from the root
    const char *rest = to + common;
    while (*rest == '/') rest++;
    char *p = xmalloc(3 * ups + strlen(rest) + 2);
    size_t k = 0;
    for (size_t u = 0; u < ups; u++, k += 3) memcpy(p + k, "../", 3);
    strcpy(p + k, rest);
    k += strlen(rest);
    if (k == 0) strcpy(p, ".");
    else if (p[k - 1] == '/') p[k - 1] = '\0'; // "../" alone: to is an ancestor of from
    free(from);
    free(to);
    return p;
}

int make_dirs(const char *path, Err *e) {
    char *p = xstrdup(path);
    int rc = 0;
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0') continue;
        char saved = *c;
        *c = '\0';
        struct stat st;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) rc = err_set(e, "%s: cannot create directory: %s", p, strerror(errno));
        else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) rc = err_set(e, "%s: exists and is not a directory", p);
        *c = saved;
        if (rc || saved == '\0') break;
    }
    free(p);
    return rc;
}

char *path_join(const char *dir, const char *rel) {
    if (rel[0] == '/' || !dir || !dir[0]) return xstrdup(rel);
    size_t a = strlen(dir), b = strlen(rel);
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, rel, b + 1);
    return p;
}

int atomic_open(AtomicFile *af, const char *path, Err *e) {
    *af = (AtomicFile){0};
    size_t n = strlen(path);
    char *tmp = xmalloc(n + 16);
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        err_set(e, "%s: cannot create output file: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    fchmod(fd, 0644); // mkstemp makes 0600; outputs are ordinary files
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        err_set(e, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    af->path = xstrdup(path);
    af->tmp_path = tmp;
    return 0;
}

static void atomic_free(AtomicFile *af) {
    free(af->path);
    free(af->tmp_path);
    *af = (AtomicFile){0};
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    atomic_free(af);
}

int atomic_commit(AtomicFile *af, Err *e) {
    int bad = ferror(af->f) || fflush(af->f) != 0 || fsync(fileno(af->f)) != 0;
    int saved = errno;
    if (fclose(af->f) != 0 && !bad) bad = 1, saved = errno;
    af->f = NULL;
    if (!bad && rename(af->tmp_path, af->path) != 0) bad = 1, saved = errno;
    if (bad) {
        err_set(e, "%s: write failed: %s", af->path, strerror(saved));
        unlink(af->tmp_path);
        atomic_free(af);
        return -1;
    }
    // Make the rename itself durable.
    char *dir = path_dirname(af->path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    atomic_free(af);
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t n, Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    if (n && fwrite(data, 1, n, af.f) != n) {
        err_set(e, "%s: write failed: %s", path, strerror(errno));
        atomic_abort(&af);
        return -1;
    }
    return atomic_commit(&af, e);
}

int read_file_all(const char *path, size_t max_bytes, char **data, size_t *n, Err *e) {
    *data = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return err_set(e, "%s: file is %lld bytes, over the limit of %zu", path, (long long)st.st_size, max_bytes);
    }
    size_t size = (size_t)st.st_size;
    char *buf = xmalloc(size + 1);
    size_t got = fread(buf, 1, size, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || got != size) {
        free(buf);
        return err_set(e, "%s: read failed (%zu of %zu bytes)", path, got, size);
    }
    buf[size] = '\0';
    *data = buf;
    *n = size;
    return 0;
}

char *text_next_line(char **cursor) {
    char *line = *cursor;
    if (!line || !*line) return NULL;
    char *nl = strchr(line, '\n');
    if (nl) {
        *nl = '\0';
        *cursor = nl + 1;
    } else {
        *cursor = line + strlen(line);
    }
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r') line[n - 1] = '\0';
    return line;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool path_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int read_text_all(const char *path, size_t max_bytes, char **data, size_t *n, Err *e) {
    if (read_file_all(path, max_bytes, data, n, e)) return -1;
    const char *nul = memchr(*data, '\0', *n);
    if (!nul) return 0;
    size_t at = (size_t)(nul - *data), line = 1;
    for (size_t i = 0; i < at; i++) line += (*data)[i] == '\n';
    free(*data);
    *data = NULL;
    return err_set(e, "%s:%zu: a NUL byte (at byte %zu): not a text file", path, line, at);
}
