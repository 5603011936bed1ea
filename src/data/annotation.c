// ILSVRC / PASCAL VOC XML annotations, parsed with libxml2. Only the elements the detector needs are read:
// filename, size, and each object's name, difficult flag and bndbox. Tag order is free.
#include "data.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


static xmlNode *child(xmlNode *parent, const char *name) {
    for (xmlNode *c = parent->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, name)) return c;
    return NULL;
}

// Text of <name> under parent, trimmed, as a new string; NULL when absent.
static char *child_text(xmlNode *parent, const char *name) {
    xmlNode *c = child(parent, name);
    if (!c) return NULL;
    xmlChar *s = xmlNodeGetContent(c);
    const char *p = (const char *)s;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\n' || p[n - 1] == '\r')) n--;
    char *out = xmalloc(n + 1);
    memcpy(out, p, n);
    out[n] = '\0';
    xmlFree(s);
    return out;
}

static int child_number(const char *path, xmlNode *parent, const char *name, double *out, Err *e) {
    char *s = child_text(parent, name);
    if (!s) return err_set(e, "%s:%ld: <%s> is missing", path, xmlGetLineNo(parent), name);
    char *end;
    *out = strtod(s, &end);
    bool ok = *s && !*end && isfinite(*out); // nan and inf are no pixel coordinates
    if (!ok) err_set(e, "%s:%ld: <%s> is not a finite number: '%s'", path, xmlGetLineNo(parent), name, s);
    free(s);
    return ok ? 0 : -1;
}

static int read_object(const char *path, xmlNode *obj, AnnObject *o, Err *e) {
    o->line = (int)xmlGetLineNo(obj);
    o->name = child_text(obj, "name");
    if (!o->name || !o->name[0]) return err_set(e, "%s:%d: <object> without a <name>", path, o->line);
    char *difficult = child_text(obj, "difficult");
    o->difficult = difficult && atoi(difficult) != 0;
    free(difficult);
    xmlNode *bb = child(obj, "bndbox");
    if (!bb) return err_set(e, "%s:%d: <object> '%s' has no <bndbox>", path, o->line, o->name);
    if (child_number(path, bb, "xmin", &o->box.x1, e) || child_number(path, bb, "ymin", &o->box.y1, e) ||
        child_number(path, bb, "xmax", &o->box.x2, e) || child_number(path, bb, "ymax", &o->box.y2, e))
        return -1;
    if (o->box.x2 < o->box.x1 || o->box.y2 < o->box.y1)
        return err_set(e, "%s:%ld: box (%g, %g, %g, %g) has xmax < xmin or ymax < ymin", path, xmlGetLineNo(bb),
                       o->box.x1, o->box.y1, o->box.x2, o->box.y2);
    return 0;
}

int annotation_load(const char *path, Annotation *a, Err *e) {
    *a = (Annotation){0};
    char *data;
    size_t n;
    if (read_file_all(path, ANNOTATION_MAX_BYTES, &data, &n, e)) return -1;
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        free(data);
        return err_set(e, "%s: cannot create an XML parser", path);
    }
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, data, (int)n, path, NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    free(data);
    if (!doc) {
        const xmlError *xe = xmlCtxtGetLastError(ctxt);
        if (xe && xe->message) {
            size_t len = strlen(xe->message);
            while (len && xe->message[len - 1] == '\n') len--;
            err_set(e, "%s:%d: malformed XML: %.*s", path, xe->line, (int)len, xe->message);
        } else {
            err_set(e, "%s: malformed XML", path);
        }
        xmlFreeParserCtxt(ctxt);
        return -1;
    }
    int rc = -1;
    xmlNode *root = xmlDocGetRootElement(doc);
    if (!root || strcmp((const char *)root->name, "annotation") != 0) {
        err_set(e, "%s: root element is not <annotation>", path);
        goto done;
    }
    a->filename = child_text(root, "filename");
    if (!a->filename) a->filename = xstrdup("");
    xmlNode *size = child(root, "size");
    if (size) {
        double w, h;
        if (child_number(path, size, "width", &w, e) || child_number(path, size, "height", &h, e)) goto done;
        if (w < 0 || h < 0 || w > 1e6 || h > 1e6) {
            err_set(e, "%s:%ld: implausible image size %gx%g", path, xmlGetLineNo(size), w, h);
            goto done;
        }
        a->width = (int)w, a->height = (int)h;
    }
    int count = 0;
    for (xmlNode *c = root->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, "object")) count++;
    a->objects = xcalloc((size_t)count, sizeof(AnnObject));
    for (xmlNode *c = root->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, "object") != 0) continue;
        AnnObject *o = &a->objects[a->n_objects++];
        if (read_object(path, c, o, e)) goto done;
    }
    rc = 0;
done:
    xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    if (rc) annotation_free(a);
    return rc;
}

void annotation_free(Annotation *a) {
    for (int i = 0; i < a->n_objects; i++) free(a->objects[i].name);
    free(a->objects);
    free(a->filename);
    *a = (Annotation){0};
}

char *annotation_path_for(const char *image, const char *ann_dir) {
    const char *base = strrchr(image, '/');
    base = base ? base + 1 : image;
    const char *dot = strrchr(base, '.');
    size_t stem = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *name = xmalloc(stem + 1), *d = ann_dir ? NULL : path_dirname(image);
    memcpy(name, base, stem);
    name[stem] = '\0';
    char *dir = ann_dir ? xstrdup(ann_dir) : path_join(d, "../Annotations");
    char *p = annotation_xml_path(dir, name);
    free(d), free(dir), free(name);
    return p;
}

// DIR/NAME.EXT
static char *join_ext(const char *dir, const char *name, const char *ext) {
    size_t n = strlen(name) + strlen(ext) + 1;
    char *file = xmalloc(n);
    snprintf(file, n, "%s%s", name, ext);
    char *path = path_join(dir, file);
    free(file);
    return path;
}

char *annotation_xml_path(const char *ann_dir, const char *name) { return join_ext(ann_dir, name, ".xml"); }

char *annotation_image_path(const char *img_dir, const char *name, const char *filename) {
    static const char *const exts[] = {".jpg", ".JPEG", ".jpeg", ".png", ".JPG", ".PNG"};
    if (filename && filename[0]) {
        char *path = path_join(img_dir, filename);
        if (path_is_file(path)) return path;
        free(path);
    }
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        char *path = join_ext(img_dir, name, exts[i]);
        if (path_is_file(path)) return path;
        free(path);
    }
    return NULL;
}

DetLayout det_layout_voc(const char *root) {
    return (DetLayout){path_join(root, "Annotations"), path_join(root, "JPEGImages")};
}

DetLayout det_layout_of_list(const char *list) {
    char *a = path_dirname(list), *b = path_dirname(a), *root = path_dirname(b);
    const char *dir = strrchr(a, '/');
    dir = dir ? dir + 1 : a;
    DetLayout lay;
    if (!strcmp(dir, "DET")) {
        const char *base = strrchr(list, '/');
        base = base ? base + 1 : list;
        size_t n = strlen(base);
        char *set = xstrdup(base);
        if (n > 4 && !strcmp(set + n - 4, ".txt")) set[n - 4] = '\0';
        char *ann = path_join(root, "Annotations/DET"), *img = path_join(root, "Data/DET");
        lay = (DetLayout){path_join(ann, set), path_join(img, set)};
        free(ann), free(img), free(set);
    } else {
        lay = det_layout_voc(root);
    }
    free(a), free(b), free(root);
    return lay;
}

void det_layout_free(DetLayout *l) {
    free(l->ann_dir);
    free(l->img_dir);
    *l = (DetLayout){0};
}
