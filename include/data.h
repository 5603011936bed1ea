// data.h: reading datasets as they come: ILSVRC/VOC XML annotations, image lists, class maps.
// Everything is checked: a malformed file gives an error naming the file and line.
#ifndef INCEPTION_DATA_H
#define INCEPTION_DATA_H

#include "common.h"

// ---------------------------------------------------------------------------------------------------------------
// one annotation file (ILSVRC or PASCAL VOC XML; the order of tags inside <bndbox> varies and does not matter)

typedef struct {
    char *name;     // <name>: a WNID for ILSVRC ("n02840245"), a class name for VOC ("dog")
    Box box;        // <bndbox>, 1-based inclusive pixels
    bool difficult; // VOC <difficult>1</difficult>; false when absent (ILSVRC has none)
    int line;       // line of the <object> element, for error messages
} AnnObject;

typedef struct {
    char *filename;     // <filename>, possibly without extension ("" when absent)
    int width, height;  // <size>, 0 when absent
    int n_objects;
    AnnObject *objects; // (n_objects)
} Annotation;

int annotation_load(const char *path, Annotation *a, Err *e);
void annotation_free(Annotation *a);

// ---------------------------------------------------------------------------------------------------------------
// image lists: one image per line, "name [index]" (ILSVRC ImageSets/DET/val.txt has "name index", VOC
// ImageSets/Main/*.txt just "name"); the index defaults to the line's position (1-based). Blank lines and lines
// starting with '#' are skipped. Names are relative to whatever directory the caller joins them with.

typedef struct {
    int n;
    char **names; // (n)
    int *ids;     // (n) image index
} ImageList;

int image_list_load(const char *path, ImageList *l, Err *e);
// All files in dir ending in `suffix` (e.g. ".xml"), sorted by name, suffix stripped, ids 1..n.
int image_list_from_dir(const char *dir, const char *suffix, ImageList *l, Err *e);
void image_list_free(ImageList *l);

// ---------------------------------------------------------------------------------------------------------------
// class maps: class k (0-based) has the 1-based id k + 1 that submissions use (ILSVRC's DET_ID)

typedef struct {
    int n;
    char **wnid; // (n) "n02672831"; for VOC-style classes the same as the name
    char **name; // (n) "accordion"
} ClassMap;

// Reads the devkit's map_det.txt ("WNID DET_ID name" lines) or meta_det.mat (its `synsets` struct array).
// DET_IDs must run 1..n without gaps.
int class_map_load(const char *path, ClassMap *m, Err *e);
// A map whose names are the given strings (sorted, duplicates removed), ids 1..n: VOC-style classes.
void class_map_from_names(ClassMap *m, char **names, int n);
// 0-based index of the class whose WNID or name is `key`; -1 when none.
int class_map_find(const ClassMap *m, const char *key);
void class_map_free(ClassMap *m);

// ---------------------------------------------------------------------------------------------------------------
// MATLAB v5 files (libmatio): numeric element i of a variable, whatever its numeric class, as a double; false
// when the variable is not numeric or i is out of range.

struct matvar_t;
bool mat_number(const struct matvar_t *v, size_t i, double *out);
size_t mat_numel(const struct matvar_t *v);

#endif
