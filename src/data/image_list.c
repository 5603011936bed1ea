// Image lists ("name [index]" lines) and directory listings.
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int image_list_load(const char *path, ImageList *l, Err *e) {
    *l = (ImageList){0};
    char *data;
    size_t n;
    if (read_text_all(path, IMAGE_LIST_MAX_BYTES, &data, &n, e)) return -1;
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
        VEC_PUSH(l, ((ImageName){xstrdup(p), (int)id}));
    }
    free(data);
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const ImageName *)a)->name, ((const ImageName *)b)->name);
}

int image_list_from_dir(const char *dir, const char *suffix, ImageList *l, Err *e) {
    *l = (ImageList){0};
    DIR *d = opendir(dir);
    if (!d) return err_set(e, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t sl = strlen(suffix);
    for (struct dirent *de; (de = readdir(d));) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n <= sl || strcmp(de->d_name + n - sl, suffix) != 0) continue;
        char *s = xstrdup(de->d_name);
        s[n - sl] = '\0';
        VEC_PUSH(l, ((ImageName){s, 0}));
    }
    closedir(d);
    if (l->len) qsort(l->data, l->len, sizeof(ImageName), cmp_name);
    for (size_t i = 0; i < l->len; i++) l->data[i].id = (int)i + 1;
    if (l->len == 0) return err_set(e, "%s: no *%s files", dir, suffix);
    return 0;
}

void image_list_free(ImageList *l) {
    for (size_t i = 0; i < l->len; i++) free(l->data[i].name);
    free(l->data);
    *l = (ImageList){0};
}

void image_list_add(ImageList *l, const char *name, int id) { VEC_PUSH(l, ((ImageName){xstrdup(name), id})); }

int image_list_append(ImageList *l, const char *list, const char *root, const char *ext, Err *e) {
    ImageList in;
    if (image_list_load(list, &in, e)) return -1;
    for (size_t i = 0; i < in.len; i++) {
        size_t a = strlen(in.data[i].name), b = ext ? strlen(ext) : 0;
        char *name = xmalloc(a + b + 1);
        memcpy(name, in.data[i].name, a);
        memcpy(name + a, ext ? ext : "", b + 1);
        VEC_PUSH(l, ((ImageName){root ? path_join(root, name) : xstrdup(name), in.data[i].id}));
        free(name);
    }
    image_list_free(&in);
    return 0;
}
