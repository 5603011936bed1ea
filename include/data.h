// data.h: reading datasets as they come: ILSVRC/VOC XML annotations, image lists, class maps.
// Everything is checked: a malformed file gives an error naming the file and line.
#ifndef INCEPTION_DATA_H
#define INCEPTION_DATA_H

#include "common.h"
#include "image.h"

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
// Where an image's annotation is: DIR/<stem>.xml, or without DIR the VOC layout <dir>/../Annotations/<stem>.xml.
// Caller frees.
char *annotation_path_for(const char *image, const char *ann_dir);
// DIR/NAME.xml (a list's entry NAME). Caller frees.
char *annotation_xml_path(const char *ann_dir, const char *name);
// The image of an annotation in img_dir: its <filename> when that file exists, else `name` with a usual extension
// (.jpg, .JPEG, .jpeg, .png, .JPG, .PNG). NULL when none exists; caller frees.
char *annotation_image_path(const char *img_dir, const char *name, const char *filename);
void annotation_free(Annotation *a);

// Where a detection set keeps its files: VOC's ROOT/Annotations/NAME.xml and ROOT/JPEGImages/NAME.jpg, or
// ILSVRC's ROOT/Annotations/DET/SET/NAME.xml and ROOT/Data/DET/SET/NAME.JPEG.
typedef struct {
    char *ann_dir, *img_dir;
} DetLayout;

// A VOC-layout ROOT directory.
DetLayout det_layout_voc(const char *root);
// The layout a list names (its ROOT three levels up): ROOT/ImageSets/DET/SET.txt is ILSVRC's, anything else
// VOC's ROOT/ImageSets/Main/LIST.txt.
DetLayout det_layout_of_list(const char *list);
void det_layout_free(DetLayout *l);

// ---------------------------------------------------------------------------------------------------------------
// image lists: one image per line, "name [index]" (ILSVRC ImageSets/DET/val.txt has "name index", VOC
// ImageSets/Main/*.txt just "name"); the index defaults to the line's position (1-based). Blank lines and lines
// starting with '#' are skipped. Names are relative to whatever directory the caller joins them with.

typedef struct {
    char *name;
    int id; // image index
} ImageName;
typedef VEC(ImageName) ImageList;

int image_list_load(const char *path, ImageList *l, Err *e);
// All files in dir ending in `suffix` (e.g. ".xml"), sorted by name, suffix stripped, ids 1..n.
int image_list_from_dir(const char *dir, const char *suffix, ImageList *l, Err *e);
// The images of a run: files named on the command line, and a list's entries joined to `root` (may be NULL) with
// `ext` appended (may be NULL), keeping the list's indices.
void image_list_add(ImageList *l, const char *name, int id);
int image_list_append(ImageList *l, const char *list, const char *root, const char *ext, Err *e);
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
// The same for the object names of n annotations.
void class_map_from_annotations(ClassMap *m, const Annotation *ann, int n);
// 0-based index of the class whose WNID or name is `key`; -1 when none.
int class_map_find(const ClassMap *m, const char *key);
void class_map_free(ClassMap *m);

// ---------------------------------------------------------------------------------------------------------------
// labelled samples for classification training

typedef struct {
    char *path; // image path, resolved (relative paths in a list are relative to the list's directory)
    int label;  // 0..n_classes-1
} Sample;

typedef struct {
    int n;
    Sample *s;          // (n)
    int n_classes;      // 1 + the largest label (list), or the number of class folders (tree)
    char **class_names; // (n_classes) folder names for a tree; NULL for a list
} SampleList;

// "path label" lines; blank lines and '#' comments skipped; labels must be in [0, max_classes).
int sample_list_load(const char *path, int max_classes, SampleList *l, Err *e);
// root/<class>/<image>: classes are the sub-directories in name order, images their .jpg/.jpeg/.png/.bmp files.
int sample_list_from_tree(const char *root, SampleList *l, Err *e);
void sample_list_free(SampleList *l);

// ---------------------------------------------------------------------------------------------------------------
// augmentation (Section 6 of the paper), seeded and reproducible

typedef struct {
    double area_min, area_max;     // crop area as a fraction of the image area
    double aspect_min, aspect_max; // crop width / height
    double brightness, contrast, saturation; // each a factor drawn from [1 - s, 1 + s], applied in random order
    double lighting;               // standard deviation of AlexNet's PCA lighting noise (0 disables)
    bool flip;                     // horizontal flip with probability 1/2
    bool random_interp;            // resize with nearest, bilinear, area or cubic, equally likely (else bilinear)
} Augment;

// The paper's recipe: crops of 8%-100% of the area with aspect ratio in [3/4, 4/3], Howard's photometric
// distortions (0.4, 0.4, 0.4, lighting 0.1), random interpolation, flips.
Augment augment_paper(void);
// No change at all: the whole image resized bilinearly (validation).
Augment augment_none(void);
// A crop window (0-based x, y, width, height) of a w x h image; falls back to the whole image when 10 draws
// do not fit.
void augment_crop_window(int w, int h, const Augment *a, Rng *rng, int *x, int *y, int *cw, int *ch);
// Brightness, contrast, saturation in random order, then lighting noise; in place on an RGB 0..255 image.
void augment_photometric(Image *im, const Augment *a, Rng *rng);
// Crop, resize to out_w x out_h, flip, distort: one training sample from one image.
int augment_image(const Image *src, const Augment *a, int out_w, int out_h, Rng *rng, Image *dst, Err *e);
// The same for detection (MultiBox): the image's boxes (1-based inclusive pixels) follow the crop and the flip.
// out gets each box that keeps at least half its area inside the crop, clipped to it, in normalised corner
// coordinates of the output (x1, y1, x2, y2 in [0, 1]; pixel box b of a w-wide crop: (b.x1 - 1) / w .. b.x2 / w);
// at most max_out of them (the first ones), *n_out their number. Draws from rng as augment_image does.
int augment_with_boxes(const Image *src, const Augment *a, int out_w, int out_h, const Box *boxes, int n_boxes,
                       Rng *rng, Image *dst, float *out, int max_out, int *n_out, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// MATLAB v5 files (libmatio): numeric element i of a variable, whatever its numeric class, as a double; false
// when the variable is not numeric or i is out of range.

struct matvar_t;
// Checks a MAT file's structure before libmatio reads it (src/data/mat_check.c): every element inside its parent,
// compressed elements whole and their checksums right, data as large as the dimensions say, nesting at most
// MAT_MAX_DEPTH, at most MAT_MAX_BYTES (file and each inflated element). 0, or -1 with e naming the file and problem.
int mat_check(const char *path, Err *e);
bool mat_number(const struct matvar_t *v, size_t i, double *out);
size_t mat_numel(const struct matvar_t *v);

#endif
