// common.h: the conventions every room of the project shares.
//   errors       Err, err_set: a failing function fills an Err and returns -1
//   allocation   xmalloc & co.: out of memory is fatal and reported with file:line
//   rng          Rng: seeded xoshiro256**, state passed explicitly
//   progress     Progress: "done/total, rate, time left" on stderr, silenced by --quiet
//   boxes        Box, box_iou: the devkit's +1 pixel convention; Detection, a scored box, and DetectionVec
//   files        atomic_open/atomic_commit: temp file, fsync, rename; read_file_all
//   time         now_seconds
//   cluster      Cluster: the processes of an `mpirun -n N` job (or this one alone); Farm hands out work items
#ifndef INCEPTION_COMMON_H
#define INCEPTION_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ---------------------------------------------------------------------------------------------------------------
// errors

typedef struct {
    char msg[1024]; // "file:line: what went wrong", ready to print
} Err;

// Formats the message into e (if e is not NULL) and returns -1, so that `return err_set(e, ...)` reads well.
int err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prefixes an existing message with more context ("loading model: <old message>"); returns -1.
int err_prefix(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---------------------------------------------------------------------------------------------------------------
// allocation: failure is fatal (prints file:line and aborts), so callers need no NULL checks

void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t count, size_t size, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
char *xstrdup_at(const char *s, const char *file, int line);
#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(count, size) xcalloc_at((count), (size), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
#define xstrdup(s) xstrdup_at((s), __FILE__, __LINE__)

// *out = a * b; false when it overflows. Use before allocating anything sized by input.
bool size_mul_ok(size_t a, size_t b, size_t *out);

// A growable array of T: `VEC(int) v = {0}; VEC_PUSH(&v, 3); free(v.data);`
#define VEC(T) struct { T *data; size_t len, cap; }
#define VEC_PUSH(v, x)                                                                                      \
    do {                                                                                                    \
        if ((v)->len == (v)->cap) {                                                                         \
            (v)->cap = (v)->cap ? 2 * (v)->cap : 16;                                                        \
            (v)->data = xrealloc((v)->data, (v)->cap * sizeof(*(v)->data));                                 \
        }                                                                                                   \
        (v)->data[(v)->len++] = (x);                                                                        \
    } while (0)

// ---------------------------------------------------------------------------------------------------------------
// random numbers: xoshiro256**, seeded through splitmix64. Same seed, same stream, on every machine.

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
uint32_t rng_below(Rng *r, uint32_t n); // uniform in [0, n), unbiased; n > 0
double rng_uniform(Rng *r);             // uniform in [0, 1)
double rng_normal(Rng *r);              // standard normal (Box-Muller)
// An independent stream for worker i (jump-free: reseeds from the parent's next output mixed with i).
Rng rng_split(Rng *r, uint64_t i);
// The stream named by (seed, a, b), e.g. (run seed, step, sample): randomness that depends only on where it is
// used, not on what ran before, so that runs resume and parallelise reproducibly.
void rng_seed_at(Rng *r, uint64_t seed, uint64_t a, uint64_t b);

// ---------------------------------------------------------------------------------------------------------------
// progress on stderr: "label  1234/20121  6.1%  812.3/s  ETA 0:23", at most a few updates a second

typedef struct {
    const char *label;
    int64_t total;     // 0 when unknown
    int64_t done;
    double t_start;    // seconds
    double t_last;     // last print
    const char *unit;  // "img", "step", ...
    bool quiet;
    bool printed;
    char note[96];     // shown after the rate ("loss 2.31"); set with progress_note
} Progress;

void progress_init(Progress *p, const char *label, int64_t total, const char *unit, bool quiet);
void progress_add(Progress *p, int64_t n);      // n more items done
void progress_note(Progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void progress_finish(Progress *p);              // final line with totals and elapsed time (if any was shown)

// ---------------------------------------------------------------------------------------------------------------
// files

// Writing a file atomically: write to a temp file next to `path` (named `path`.tmp.PID.XXXXXX), then fsync and
// rename over it, so a crash or an error never leaves a half-written output. Temporaries left by a writer that
// was killed are removed by the next write of the same target (once a minute old and their process gone).
// `path` "-" is standard output, and an existing target that is not a regular file (/dev/null, a FIFO) is
// written straight through, not replaced; write errors are reported either way.
typedef struct {
    FILE *f;
    char *path;
    char *tmp_path; // NULL when writing straight to path
} AtomicFile;

int atomic_open(AtomicFile *af, const char *path, Err *e);
int atomic_commit(AtomicFile *af, Err *e);   // flush, fsync, close, rename; on failure removes the temp file
void atomic_abort(AtomicFile *af);           // close and remove the temp file
// A temporary of the caller's naming, kept when a run is killed so that a later one resumes it (OUT.partial):
// written anew or appended to; atomic_commit renames it over path, atomic_keep closes it and leaves it there.
int atomic_open_journal(AtomicFile *af, const char *path, const char *journal, bool append, Err *e);
void atomic_keep(AtomicFile *af);
int write_file_atomic(const char *path, const void *data, size_t n, Err *e);

// Reads a whole file (NUL-terminated for convenience; *n excludes the NUL). Refuses files over max_bytes.
int read_file_all(const char *path, size_t max_bytes, char **data, size_t *n, Err *e);
// The same for a text file, refused when it holds a NUL byte (which would end its text early: the lines after it
// would be silently ignored).
int read_text_all(const char *path, size_t max_bytes, char **data, size_t *n, Err *e);

// Splits text in place into lines: returns the next line (its '\n' and any trailing '\r' replaced by NULs) and
// advances *cursor; NULL at the end. Empty lines are returned too, so line numbers stay right.
char *text_next_line(char **cursor);
// s without its leading and trailing white space (trailing cut in place).
char *text_trim(char *s);

// Number parsing for text formats: skips leading blanks (spaces, tabs), parses one number and advances *p past
// it; false when there is none. parse_double is exact (the same double as strtod) and takes a fast path for the
// plain decimals that dominate detection files.
bool parse_double(const char **p, double *out);
bool parse_long(const char **p, long *out);
// True when only blanks remain.
bool parse_at_end(const char *p);

// Whether a path is an existing directory / regular file (following links).
bool path_is_dir(const char *path);
bool path_is_file(const char *path);

// Creates a directory and any missing parents (mkdir -p); existing ones are fine.
int make_dirs(const char *path, Err *e);

// Joins a directory and a relative path ("dir/rel"; rel as-is when absolute). Caller frees.
char *path_join(const char *dir, const char *rel);
// The directory part of a path ("." when none). Caller frees.
char *path_dirname(const char *path);
// to_path as seen from the directory from_dir, through the real paths of both (symlinks and "..": resolved), e.g.
// ("out/viewer", "data/raccoon/a.jpg") -> "../../data/raccoon/a.jpg"; "." when they are the same. NULL when
// from_dir or the directory of to_path does not exist (to_path itself need not). Caller frees.
char *path_relative(const char *from_dir, const char *to_path);

// ---------------------------------------------------------------------------------------------------------------
// boxes: pixel-inclusive corners, 1-based like ILSVRC and VOC annotations (width = x2 - x1 + 1). Double, so
// that submissions with sub-pixel coordinates evaluate exactly as the devkit does.

typedef struct {
    double x1, y1, x2, y2;
} Box;

double box_area(Box b);       // (x2 - x1 + 1) * (y2 - y1 + 1); 0 when empty
double box_iou(Box a, Box b); // intersection over union with the +1 convention; 0 when they do not overlap
Box box_clip(Box b, int w, int h); // inside a w x h image's pixels 1..w, 1..h; empty (x2 < x1 or y2 < y1) if outside

// ---------------------------------------------------------------------------------------------------------------
// limits: what the inputs may hold, in one place (README, "Limits"). Each reader checks its input against these
// before allocating for it, and refuses more with an error naming the file. The network's own limits (layers,
// channels, classes, MultiBox boxes), the ensemble's members and the images' pixels are in their rooms' headers
// (classifier.h, detect.h, image.h), beside the structures they size; README lists them all.

// Image indices are 1..IMAGE_ID_MAX; image lists, ground truth and blacklists refuse larger ones. Tables are never
// indexed by them directly, so that one large index costs no memory.
#define IMAGE_ID_MAX INT32_MAX
#define GT_MAX_IMAGES 50000000                // images of one ground truth (ILSVRC DET val: 20,121)
#define CLASS_MAP_MAX 100000                  // classes of a class map (map_det.txt, meta_det.mat: 200)
#define MAT_MAX_BYTES (1ull << 30)            // a .mat file, and each compressed element once inflated
#define MAT_MAX_DEPTH 32                      // cells and structs nested in a .mat file (the devkit's: 2)
#define IMAGE_LIST_MAX_BYTES (1u << 30)       // an image list file
#define ANNOTATION_MAX_BYTES (64u << 20)      // one XML annotation
#define DETS_MAX_BYTES ((size_t)8 << 30)      // a submission or detections file read by eval
#define DETECT_MAX_FILE ((size_t)16 << 30)    // a detections JSON or its journal read back by detect
#define PROPOSALS_MAX_FILE ((size_t)16 << 30) // a proposals journal (or finished file) read back by --resume
#define WEIGHTS_MAX_BYTES (8ull << 30)        // a safetensors file
#define NPY_MAX_HEADER 65536                  // a .npy header
#define ONNX_MAX_BYTES (2ull << 30)           // an ONNX file (protobuf's own 2 GiB limit)
#define CAFFE_MAX_BYTES (2ull << 30)          // a .caffemodel (protobuf's own 2 GiB limit)
#define PROTOTXT_MAX_BYTES (16u << 20)        // a Caffe .prototxt (bvlc_googlenet's deploy file: 36 KB)
#define MULTIBOX_MAX_PRIORS (1 << 20)         // priors of a priors file (the papers use 100 to 1,400)
#define NET_MAX_ACT_BYTES (16ull << 30)       // activation memory a plan may ask for

// One detection: a scored box of a class in an image. The detector makes them, detection files hold them, the
// evaluator reads them: one type from end to end.
typedef struct {
    int image_id; // the image's index (ILSVRC val.txt's second column; the list position otherwise)
    int label;    // 0-based class
    double score;
    Box box;
} Detection;
typedef VEC(Detection) DetectionVec;

// ---------------------------------------------------------------------------------------------------------------
// time

double now_seconds(void); // monotonic

// ---------------------------------------------------------------------------------------------------------------
// cluster: the processes of an `mpirun -n N` job, through MPI (src/common/cluster.c, the only file that includes
// mpi.h). Without MPI at build time, or outside mpirun, it is one process of rank 0 and every call below is
// cheap and local. Rank 0 writes the outputs; the others compute.

typedef struct {
    int rank, size;
    bool mpi; // MPI_Init was called (launched by mpirun with N > 1): cluster_close finalises it
} Cluster;

// The processes launched with this one (OMPI_COMM_WORLD_SIZE, PMI_SIZE: set by mpirun, mpiexec, srun), 1 when
// none; read before MPI starts, so that commands that run alone can refuse N > 1.
int cluster_launch_size(void);
// Joins the job: MPI when launched with N > 1 (an error naming the rebuild to do when this build has no MPI).
int cluster_open(Cluster *c, Err *e);
void cluster_close(Cluster *c);
// Every rank says whether it is fine; all get the lowest rank that is not (-1: all are fine). Collective.
int cluster_first_failure(const Cluster *c, bool ok);
// x (n) from rank 0 to every rank. Collective.
void cluster_broadcast(const Cluster *c, void *x, size_t bytes);
// x (n) becomes the sum over the ranks of their x, on every rank, added in rank order ((x0 + x1) + x2 ...) so that
// the result depends on the values alone, never on timing or on how MPI would pair them. Each rank sums 1/N of
// the vector (an all-to-all, then an all-gather: 2 (N - 1) / N of x sent per rank). Collective.
void cluster_sum_floats(const Cluster *c, float *x, size_t n);
void cluster_sum_doubles(const Cluster *c, double *x, size_t n);

// A farm: rank 0 hands out work items one at a time; each rank (rank 0 too) takes the next when it is done with
// its last, so that slow items do not hold the others up. Every result goes to a sink that runs on rank 0 only,
// one call at a time, in the order results arrive. Rank 0 serves the other ranks from a thread of its own.
//   sink(ctx, rank, item, status, data, len, e): a result; status and data are the worker's (farm_submit).
//   A sink that returns -1 (e set) stops the handing out; results in flight still reach it.
typedef int (*FarmSink)(void *ctx, int rank, long item, int status, const char *data, size_t len, Err *e);

typedef struct FarmServer FarmServer;
typedef struct {
    const Cluster *c;
    FarmServer *server; // rank 0: the queue, the sink and the thread serving the other ranks
} Farm;

// Collective. items (n; rank 0's, ignored elsewhere): what to hand out, in this order.
int farm_start(Farm *f, const Cluster *c, const long *items, long n, FarmSink sink, void *ctx, Err *e);
// The next item for this rank, or -1 when there is none left (or the sink stopped the farm).
long farm_next(Farm *f);
// This rank's result for an item (data: len bytes, may be NULL).
void farm_submit(Farm *f, long item, int status, const char *data, size_t len);
// Collective: waits for every rank's last result; rank 0 gets the sink's first error, if any.
int farm_finish(Farm *f, Err *e);

#endif
