// Image lists ("name [index]" lines) and directory listings.
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>


static void list_push(ImageList *l, size_t *cap, char *name, int id) {
    if ((size_t)l->n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        l->names = xrealloc(l->names, *cap * sizeof(char *));
        l->ids = xrealloc(l->ids, *cap * sizeof(int));
    }
    l->names[l->n] = name;
    l->ids[l->n] = id;
    l->n++;
}

int image_list_load(const char *path, ImageList *l, Err *e) {
    *l = (ImageList){0};
    char *data;
    size_t n;
    if (read_text_all(path, IMAGE_LIST_MAX_BYTES, &data, &n, e)) return -1;
    size_t cap = 0;
    int line_no = 0, position = 0;
    char *cursor = data;
    for (char *line; (line = text_next_line(&cursor));) {
        line_no++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char *name_end = p;
        while (*name_end && *name_end != ' ' && *name_end != '\t') name_end++;
        char *rest = name_end;
        if (*rest) *rest++ = '\0';
        while (*rest == ' ' || *rest == '\t') rest++;
        position++;
        long id = position;
        if (*rest) {
            char *end;
            long v = strtol(rest, &end, 10);
            while (*end == ' ' || *end == '\t') end++;
            if (*end || v <= 0 || v > IMAGE_ID_MAX) {
                err_set(e, "%s:%d: expected 'name [index]' with an index in 1..%d, got '%s %s'", path, line_no,
                        IMAGE_ID_MAX, p, rest);
                free(data);
                image_list_free(l);
                return -1;
            }
            id = v;
        }
        list_push(l, &cap, xstrdup(p), (int)id);
    }
    free(data);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int image_list_from_dir(const char *dir, const char *suffix, ImageList *l, Err *e) {
    *l = (ImageList){0};
    DIR *d = opendir(dir);
    if (!d) return err_set(e, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t cap = 0, sl = strlen(suffix);
    VEC(char *) names = {0};
    for (struct dirent *de; (de = readdir(d));) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n <= sl || strcmp(de->d_name + n - sl, suffix) != 0) continue;
        char *s = xstrdup(de->d_name);
        s[n - sl] = '\0';
        VEC_PUSH(&names, s);
    }
    closedir(d);
    if (names.len) qsort(names.data, names.len, sizeof(char *), cmp_str);
    for (size_t i = 0; i < names.len; i++) list_push(l, &cap, names.data[i], (int)i + 1);
    free(names.data);
    if (l->n == 0) return err_set(e, "%s: no *%s files", dir, suffix);
    return 0;
}

void image_list_free(ImageList *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->ids);
    *l = (ImageList){0};
}

// ImageList does not keep its capacity: each entry added here grows the arrays by one (realloc amortises it).
static void list_add_owned(ImageList *l, char *name, int id) {
    l->names = xrealloc(l->names, ((size_t)l->n + 1) * sizeof(char *));
    l->ids = xrealloc(l->ids, ((size_t)l->n + 1) * sizeof(int));
    l->names[l->n] = name;
    l->ids[l->n++] = id;
}

void image_list_add(ImageList *l, const char *name, int id) { list_add_owned(l, xstrdup(name), id); }

int image_list_append(ImageList *l, const char *list, const char *root, const char *ext, Err *e) {
    ImageList in;
    if (image_list_load(list, &in, e)) return -1;
    for (int i = 0; i < in.n; i++) {
        size_t a = strlen(in.names[i]), b = ext ? strlen(ext) : 0;
        char *name = xmalloc(a + b + 1);
        memcpy(name, in.names[i], a);
        memcpy(name + a, ext ? ext : "", b + 1);
        list_add_owned(l, root ? path_join(root, name) : xstrdup(name), in.ids[i]);
        free(name);
    }
    image_list_free(&in);
    return 0;
}
