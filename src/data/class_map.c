// Class maps: the devkit's map_det.txt or meta_det.mat, or a sorted list of VOC-style names.
#include "data.h"

#include <matio.h>
#include <stdlib.h>
#include <string.h>


static void map_alloc(ClassMap *m, int n) {
    m->n = n;
    m->wnid = xcalloc((size_t)n, sizeof(char *));
    m->name = xcalloc((size_t)n, sizeof(char *));
}

typedef struct {
    const char *wnid;
    int id;
} IdWnid;

static int cmp_wnid(const void *a, const void *b) {
    return strcmp(((const IdWnid *)a)->wnid, ((const IdWnid *)b)->wnid);
}

// Every id 1..n present, and no WNID twice (a detection of one would count for two classes).
static int check_complete(const char *path, ClassMap *m, Err *e) {
    for (int k = 0; k < m->n; k++)
        if (!m->wnid[k]) return err_set(e, "%s: class ids do not run 1..%d (id %d is missing)", path, m->n, k + 1);
    IdWnid *order = xmalloc((size_t)m->n * sizeof(IdWnid));
    int rc = 0;
    for (int k = 0; k < m->n; k++) order[k] = (IdWnid){m->wnid[k], k + 1};
    qsort(order, (size_t)m->n, sizeof(IdWnid), cmp_wnid);
    for (int k = 1; k < m->n && !rc; k++)
        if (!strcmp(order[k - 1].wnid, order[k].wnid))
            rc = err_set(e, "%s: WNID %s is given to two classes (ids %d and %d)", path, order[k].wnid,
                         order[k - 1].id < order[k].id ? order[k - 1].id : order[k].id,
                         order[k - 1].id < order[k].id ? order[k].id : order[k - 1].id);
    free(order);
    return rc;
}

typedef struct {
    char *wnid, *name;
    long id;
    int line;
} MapRow;

size_t mat_numel(const matvar_t *v) {
    if (v->rank <= 0 || !v->dims) return 0; // an empty cell ([] in MATLAB) has no dimensions at all
    size_t n = 1;
    for (int d = 0; d < v->rank; d++) n *= v->dims[d];
    return n;
}

bool mat_number(const matvar_t *v, size_t i, double *out) {
    if (!v->data || v->isComplex || v->class_type == MAT_C_CHAR || v->class_type == MAT_C_CELL ||
        v->class_type == MAT_C_STRUCT || v->class_type == MAT_C_SPARSE || i >= mat_numel(v))
        return false;
    if (v->data_size <= 0 || (i + 1) * (size_t)v->data_size > v->nbytes) return false;
    const void *d = v->data;
    switch (v->data_type) {
    case MAT_T_DOUBLE: *out = ((const double *)d)[i]; return true;
    case MAT_T_SINGLE: *out = ((const float *)d)[i]; return true;
    case MAT_T_INT64: *out = (double)((const int64_t *)d)[i]; return true;
    case MAT_T_UINT64: *out = (double)((const uint64_t *)d)[i]; return true;
    case MAT_T_INT32: *out = ((const int32_t *)d)[i]; return true;
    case MAT_T_UINT32: *out = ((const uint32_t *)d)[i]; return true;
    case MAT_T_INT16: *out = ((const int16_t *)d)[i]; return true;
    case MAT_T_UINT16: *out = ((const uint16_t *)d)[i]; return true;
    case MAT_T_INT8: *out = ((const int8_t *)d)[i]; return true;
    case MAT_T_UINT8: *out = ((const uint8_t *)d)[i]; return true;
    default: return false;
    }
}

static int load_txt(const char *path, ClassMap *m, Err *e) {
    char *data;
    size_t size;
    if (read_text_all(path, 64u << 20, &data, &size, e)) return -1;
    VEC(MapRow) rows = {0};
    char *cursor = data;
    int line_no = 0, rc = -1;
    long max_id = 0;
    for (char *line; (line = text_next_line(&cursor));) {
        line_no++;
        char *save, *wnid = strtok_r(line, " \t", &save);
        if (!wnid) continue; // blank
        char *id_s = strtok_r(NULL, " \t", &save), *name = strtok_r(NULL, "", &save);
        char *end = NULL;
        long id = id_s ? strtol(id_s, &end, 10) : 0;
        if (!id_s || *end || id < 1 || id > CLASS_MAP_MAX || !name) {
            err_set(e, "%s:%d: expected 'WNID ID name' with a positive ID", path, line_no);
            goto done;
        }
        while (*name == ' ' || *name == '\t') name++;
        if (!*name) {
            err_set(e, "%s:%d: class %ld has an empty name", path, line_no, id);
            goto done;
        }
        MapRow r = {wnid, name, id, line_no};
        VEC_PUSH(&rows, r);
        if (id > max_id) max_id = id;
    }
    if (!rows.len) {
        err_set(e, "%s: no classes", path);
        goto done;
    }
    map_alloc(m, (int)max_id);
    for (size_t i = 0; i < rows.len; i++) {
        int k = (int)rows.data[i].id - 1;
        if (m->wnid[k]) {
            err_set(e, "%s:%d: class id %d appears twice", path, rows.data[i].line, k + 1);
            goto done;
        }
        m->wnid[k] = xstrdup(rows.data[i].wnid);
        m->name[k] = xstrdup(rows.data[i].name);
    }
    rc = check_complete(path, m, e);
done:
    free(rows.data);
    free(data);
    return rc;
}

// A MATLAB char array as a C string (ASCII; wider code units are narrowed).
static char *mat_string(matvar_t *v) {
    if (!v || v->class_type != MAT_C_CHAR || !v->data) return NULL;
    size_t n = v->nbytes / (v->data_size ? (size_t)v->data_size : 1);
    char *s = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned c = v->data_size == 2 ? ((const uint16_t *)v->data)[i] : ((const uint8_t *)v->data)[i];
        s[i] = c < 128 ? (char)c : '?';
    }
    s[n] = '\0';
    return s;
}

static double mat_scalar(matvar_t *v, bool *ok) {
    double x = 0;
    *ok = v && mat_number(v, 0, &x);
    return x;
}

static int load_mat(const char *path, ClassMap *m, Err *e) {
    if (mat_check(path, e)) return -1;
    mat_t *mat = Mat_Open(path, MAT_ACC_RDONLY);
    if (!mat) return err_set(e, "%s: not a readable MATLAB file", path);
    int rc = -1;
    matvar_t *syn = Mat_VarRead(mat, "synsets");
    if (!syn || syn->class_type != MAT_C_STRUCT) {
        err_set(e, "%s: no 'synsets' struct array", path);
        goto done;
    }
    size_t count = mat_numel(syn);
    if (count == 0 || count > CLASS_MAP_MAX) {
        err_set(e, "%s: 'synsets' has %zu entries", path, count);
        goto done;
    }
    // meta_det.mat also lists the WordNet parents of the classes (ids above the leaf count, no DET
    // submission id of their own); the classes are the entries whose id is at most the number of leaves.
    int n = 0;
    for (size_t i = 0; i < count; i++) {
        bool ok;
        mat_scalar(Mat_VarGetStructFieldByName(syn, "ILSVRC2015_DET_ID", i), &ok);
        if (!ok) mat_scalar(Mat_VarGetStructFieldByName(syn, "ILSVRC2014_DET_ID", i), &ok);
        if (!ok) {
            err_set(e, "%s: synsets(%zu) has no numeric ILSVRC2015_DET_ID", path, i + 1);
            goto done;
        }
        matvar_t *children = Mat_VarGetStructFieldByName(syn, "num_children", i);
        bool leaf_ok;
        double nc = mat_scalar(children, &leaf_ok);
        if (!children || (leaf_ok && nc == 0)) n++;
    }
    map_alloc(m, n);
    for (size_t i = 0; i < count; i++) {
        bool ok;
        double id = mat_scalar(Mat_VarGetStructFieldByName(syn, "ILSVRC2015_DET_ID", i), &ok);
        if (!ok) id = mat_scalar(Mat_VarGetStructFieldByName(syn, "ILSVRC2014_DET_ID", i), &ok);
        if (!(id >= 1 && id <= n)) continue; // parents, and NaN (refused below as a missing class)
        if (id != (int)id) {
            err_set(e, "%s: synsets(%zu) has a DET id %g that is not a whole number", path, i + 1, id);
            goto done;
        }
        int k = (int)id - 1;
        if (m->wnid[k]) {
            err_set(e, "%s: class id %d appears twice", path, k + 1);
            goto done;
        }
        m->wnid[k] = mat_string(Mat_VarGetStructFieldByName(syn, "WNID", i));
        m->name[k] = mat_string(Mat_VarGetStructFieldByName(syn, "name", i));
        if (!m->wnid[k] || !m->name[k]) {
            err_set(e, "%s: synsets(%zu) lacks a WNID or name string", path, i + 1);
            goto done;
        }
    }
    rc = check_complete(path, m, e);
done:
    Mat_VarFree(syn);
    Mat_Close(mat);
    return rc;
}

int class_map_load(const char *path, ClassMap *m, Err *e) {
    *m = (ClassMap){0};
    size_t n = strlen(path);
    int rc = (n > 4 && !strcmp(path + n - 4, ".mat")) ? load_mat(path, m, e) : load_txt(path, m, e);
    if (rc) class_map_free(m);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void class_map_from_names(ClassMap *m, char **names, int n) {
    char **sorted = xmalloc((size_t)(n ? n : 1) * sizeof(char *));
    if (n > 0) { // names may be NULL when there are none (an empty list, annotations without objects)
        memcpy(sorted, names, (size_t)n * sizeof(char *));
        qsort(sorted, (size_t)n, sizeof(char *), cmp_str);
    }
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || strcmp(sorted[u - 1], sorted[i]) != 0) sorted[u++] = sorted[i];
    map_alloc(m, u);
    for (int k = 0; k < u; k++) m->wnid[k] = xstrdup(sorted[k]), m->name[k] = xstrdup(sorted[k]);
    free(sorted);
}

void class_map_from_annotations(ClassMap *m, const Annotation *ann, int n) {
    VEC(char *) names = {0};
    for (int i = 0; i < n; i++)
        for (int j = 0; j < ann[i].n_objects; j++) VEC_PUSH(&names, ann[i].objects[j].name);
    class_map_from_names(m, names.data, (int)names.len);
    free(names.data);
}

int class_map_find(const ClassMap *m, const char *key) {
    for (int k = 0; k < m->n; k++)
        if (!strcmp(m->wnid[k], key) || !strcmp(m->name[k], key)) return k;
    return -1;
}

void class_map_free(ClassMap *m) {
    for (int k = 0; k < m->n; k++) free(m->wnid[k]), free(m->name[k]);
    free(m->wnid);
    free(m->name);
    *m = (ClassMap){0};
}
