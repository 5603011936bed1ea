// The devkit's blacklist: "image_index WNID" lines. Detections of that class in that image are ignored, and
// the image's boxes of that class are not counted as positives.
#include "eval.h"

#include <stdlib.h>
#include <string.h>

int blacklist_load(const char *path, const ClassMap *classes, Blacklist *bl, Err *e) {
    *bl = (Blacklist){0};
    char *data;
    size_t size;
    if (read_text_all(path, 1u << 30, &data, &size, e)) return -1;
    char *cursor = data;
    int line_no = 0;
    for (char *line; (line = text_next_line(&cursor));) {
        line_no++;
        const char *p = line;
        if (parse_at_end(p)) continue;
        long id;
        char key[256];
        int used = 0;
        if (!parse_long(&p, &id) || id < 1 || id > IMAGE_ID_MAX || sscanf(p, " %255s%n", key, &used) != 1 ||
            !parse_at_end(p + used)) {
            err_set(e, "%s:%d: expected 'image_index WNID'", path, line_no);
            goto fail;
        }
        int label = class_map_find(classes, key);
        if (label < 0) {
            err_set(e, "%s:%d: unknown class '%s'", path, line_no, key);
            goto fail;
        }
        VEC_PUSH(bl, ((Blacklisted){(int)id, label}));
    }
    free(data);
    return 0;
fail:
    free(data);
    blacklist_free(bl);
    return -1;
}

void blacklist_free(Blacklist *bl) {
    free(bl->data);
    *bl = (Blacklist){0};
}
