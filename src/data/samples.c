// Labelled samples for classification training: a "path label" list, or a folder-per-class tree.
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef VEC(Sample) SampleVec;

// Hands the grown samples to l (which keeps no capacity); false when there are none.
static bool samples_take(SampleList *l, SampleVec *v) {
    l->s = v->data;
    l->n = (int)v->len;
    return v->len > 0;
}

int sample_list_load(const char *path, int max_classes, SampleList *l, Err *e) {
    *l = (SampleList){0};
    char *data;
    size_t size;
    if (read_text_all(path, 1u << 30, &data, &size, e)) return -1;
    SampleVec v = {0};
    char *dir = path_dirname(path), *cursor = data;
    int line_no = 0, rc = -1;
    for (char *line; (line = text_next_line(&cursor));) {
        line_no++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        // The label is the last field, so paths may contain spaces.
        char *end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
        char *sep = end;
        while (sep > p && sep[-1] != ' ' && sep[-1] != '\t') sep--;
        char *label_s = sep, *num_end;
        while (sep > p && (sep[-1] == ' ' || sep[-1] == '\t')) *--sep = '\0';
        long label = strtol(label_s, &num_end, 10);
        if (sep == p || label_s == end || *num_end || label < 0 || label >= max_classes) {
            err_set(e, "%s:%d: expected 'path label' with a label in 0..%d", path, line_no, max_classes - 1);
            goto done;
        }
        VEC_PUSH(&v, ((Sample){path_join(dir, p), (int)label}));
        if (label + 1 > l->n_classes) l->n_classes = (int)label + 1;
    }
    rc = 0;
done:
    if (!samples_take(l, &v) && !rc) rc = err_set(e, "%s: no samples", path);
    free(dir);
    free(data);
    if (rc) sample_list_free(l);
    return rc;
}

static bool is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return false;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png") ||
           !strcasecmp(dot, ".bmp");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Sorted names in dir for which keep(dir, name) holds.
static int list_dir(const char *dir, bool (*keep)(const char *dir, const char *name), char ***out, int *n,
                    Err *e) {
    DIR *d = opendir(dir);
    if (!d) return err_set(e, "%s: cannot open directory: %s", dir, strerror(errno));
    VEC(char *) v = {0};
    for (struct dirent *de; (de = readdir(d));)
        if (de->d_name[0] != '.' && keep(dir, de->d_name)) VEC_PUSH(&v, xstrdup(de->d_name));
    closedir(d);
    if (v.len) qsort(v.data, v.len, sizeof(char *), cmp_str);
    *out = v.data;
    *n = (int)v.len;
    return 0;
}

static bool keep_dir(const char *dir, const char *name) {
    char *p = path_join(dir, name);
    struct stat st;
    bool ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    free(p);
    return ok;
}

static bool keep_image(const char *dir, const char *name) {
    (void)dir;
    return is_image_name(name);
}

int sample_list_from_tree(const char *root, SampleList *l, Err *e) {
    *l = (SampleList){0};
    char **classes;
    int n_classes;
    if (list_dir(root, keep_dir, &classes, &n_classes, e)) return -1;
    if (n_classes == 0) {
        free(classes);
        return err_set(e, "%s: no class sub-directories", root);
    }
    l->n_classes = n_classes;
    l->class_names = classes;
    SampleVec v = {0};
    for (int c = 0; c < n_classes; c++) {
        char *dir = path_join(root, classes[c]), **files;
        int n_files;
        int rc = list_dir(dir, keep_image, &files, &n_files, e);
        for (int i = 0; i < (rc ? 0 : n_files); i++) {
            VEC_PUSH(&v, ((Sample){path_join(dir, files[i]), c}));
            free(files[i]);
        }
        if (!rc) free(files);
        free(dir);
        if (rc) {
            samples_take(l, &v);
            sample_list_free(l);
            return -1;
        }
    }
    if (!samples_take(l, &v)) {
        sample_list_free(l);
        return err_set(e, "%s: no images in the class sub-directories", root);
    }
    return 0;
}

void sample_list_free(SampleList *l) {
    for (int i = 0; i < l->n; i++) free(l->s[i].path);
    free(l->s);
    if (l->class_names)
        for (int c = 0; c < l->n_classes; c++) free(l->class_names[c]);
    free(l->class_names);
    *l = (SampleList){0};
}
