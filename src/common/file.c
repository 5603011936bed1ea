// File helpers: atomic writes (temp file + fsync + rename), whole-file reads, path joins, a monotonic clock.
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

// Temporaries are named TARGET.tmp.PID.XXXXXX, so that one left by a writer that died (kill -9) is recognisable:
// the next write of the same target removes those whose writer is gone and that have not changed for this long.
// (The age guards against a pid that this process cannot see, in another pid namespace sharing the directory.)
#define ATOMIC_STALE_SECONDS 60

// Whether a directory entry is a temporary of the target `base` whose writer process no longer exists.
static bool stale_temp_name(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) return false;
    const char *digits = name + n + 5;
    char *end;
    long pid = *digits >= '0' && *digits <= '9' ? strtol(digits, &end, 10) : 0;
    if (pid <= 0 || pid == (long)getpid() || *end != '.' || strlen(end + 1) != 6) return false;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH; // EPERM: alive, another user's
}

// One directory read a write: about 0.6 us an entry, under 1% of `detect --overlays` over 20,000 images.
static void remove_stale_temps(const char *path) {
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *dir = path_dirname(path);
    DIR *d = opendir(dir);
    time_t now = time(NULL);
    for (struct dirent *de; d && (de = readdir(d));) {
        if (!stale_temp_name(de->d_name, base)) continue;
        char *p = path_join(dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime > ATOMIC_STALE_SECONDS) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    free(dir);
}

// "-", or an existing target that is not a regular file (/dev/null, /dev/full, a FIFO), is written straight
// through: a temporary renamed over a device would replace the device node with a file.
static int atomic_open_direct(AtomicFile *af, const char *path, Err *e) {
    bool to_stdout = strcmp(path, "-") == 0;
    if (to_stdout) {
        af->f = stdout;
    } else {
        int fd = open(path, O_WRONLY | O_NOCTTY);
        if (fd < 0) return err_set(e, "%s: cannot open for writing: %s", path, strerror(errno));
        af->f = fdopen(fd, "wb");
        if (!af->f) {
            err_set(e, "%s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    af->path = xstrdup(to_stdout ? "standard output" : path);
    return 0;
}

int atomic_open(AtomicFile *af, const char *path, Err *e) {
    *af = (AtomicFile){0};
    if (strcmp(path, "-") == 0) return atomic_open_direct(af, path, e);
    struct stat st;
    bool exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) return err_set(e, "%s: is a directory", path);
    if (exists && !S_ISREG(st.st_mode)) return atomic_open_direct(af, path, e);
    remove_stale_temps(path);
    size_t n = strlen(path) + 48;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%ld.XXXXXX", path, (long)getpid());
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

int atomic_open_journal(AtomicFile *af, const char *path, const char *journal, bool append, Err *e) {
    *af = (AtomicFile){0};
    af->f = fopen(journal, append ? "ab" : "wb");
    if (!af->f) return err_set(e, "%s: cannot open for writing: %s", journal, strerror(errno));
    af->path = xstrdup(path);
    af->tmp_path = xstrdup(journal);
    return 0;
}

static void atomic_free(AtomicFile *af) {
    free(af->path);
    free(af->tmp_path);
    *af = (AtomicFile){0};
}

// Closes the stream unless it is standard output, which the rest of the program still uses.
static int atomic_close(AtomicFile *af) {
    FILE *f = af->f;
    af->f = NULL;
    return f == stdout ? 0 : fclose(f);
}

void atomic_abort(AtomicFile *af) {
    if (af->f) atomic_close(af);
    if (af->tmp_path) unlink(af->tmp_path);
    atomic_free(af);
}

void atomic_keep(AtomicFile *af) {
    if (af->f) atomic_close(af);
    atomic_free(af);
}

int atomic_commit(AtomicFile *af, Err *e) {
    // A temporary is synced before the rename; a device or a pipe has nothing to sync (fsync fails on them).
    int bad = ferror(af->f) || fflush(af->f) != 0 || (af->tmp_path && fsync(fileno(af->f)) != 0);
    int saved = errno ? errno : EIO;
    if (atomic_close(af) != 0 && !bad) bad = 1, saved = errno;
    if (!bad && af->tmp_path && rename(af->tmp_path, af->path) != 0) bad = 1, saved = errno;
    if (bad) {
        err_set(e, "%s: write failed: %s", af->path, strerror(saved));
        if (af->tmp_path) unlink(af->tmp_path);
        atomic_free(af);
        return -1;
    }
    // Make the rename itself durable.
    char *dir = af->tmp_path ? path_dirname(af->path) : NULL;
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY) : -1;
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

char *text_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
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
