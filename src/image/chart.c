// Line charts drawn with the shim's primitives: white background, light grid, ticks, title, axis labels, one
// polyline per series in a fixed palette, and a legend.
#include "image.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const float PALETTE[10][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};
static const float BLACK[3] = {0, 0, 0}, GRID[3] = {225, 225, 225}, WHITE[3] = {255, 255, 255};
#define TEXT 0.45

typedef struct {
    const Chart *c;
    double left, top, pw, ph; // the plot area in canvas pixels
} Frame;

static double fx(const Frame *f, double x) {
    const Chart *c = f->c;
    double t = c->log_x ? (log10(x) - log10(c->x0)) / (log10(c->x1) - log10(c->x0)) : (x - c->x0) / (c->x1 - c->x0);
    return f->left + t * f->pw;
}

static double fy(const Frame *f, double y) { return f->top + (1.0 - (y - f->c->y0) / (f->c->y1 - f->c->y0)) * f->ph; }

static void tick_label(char *buf, size_t n, double v) {
    if (fabs(v) >= 10000 || (v != 0 && fabs(v) < 0.01)) snprintf(buf, n, "%.0e", v);
    else snprintf(buf, n, "%g", round(v * 1000) / 1000);
}

// The title on one line, or on two (split at a space) when it does not fit in `width`.
static void draw_title(Image *im, const char *title, int x, int y, int width) {
    int tw, th;
    image_text_size(title, TEXT, &tw, &th);
    if (tw <= width) {
        image_draw_text(im, x, y, title, BLACK, TEXT);
        return;
    }
    char line[256];
    snprintf(line, sizeof line, "%s", title);
    size_t cut = strlen(line);
    for (;;) { // the longest prefix ending before a space that fits
        char *sp = NULL;
        for (size_t i = 0; i < cut; i++)
            if (line[i] == ' ') sp = &line[i];
        if (!sp) break;
        *sp = '\0';
        cut = (size_t)(sp - line);
        image_text_size(line, TEXT, &tw, &th);
        if (tw <= width) break;
    }
    image_draw_text(im, x, y - 4, line, BLACK, TEXT);
    image_draw_text(im, x, y - 2 + th, title + cut + (title[cut] ? 1 : 0), BLACK, TEXT);
}

void chart_nice_range(double max, double *top, int *ticks) {
    if (!(max > 0)) max = 1;
    double raw = max / 6, unit = pow(10, floor(log10(raw))), step = 10 * unit;
    static const double NICE[4] = {1, 2, 2.5, 5};
    for (int i = 3; i >= 0; i--)
        if (NICE[i] * unit >= raw) step = NICE[i] * unit;
    *ticks = (int)ceil(max / step - 1e-9);
    if (*ticks < 1) *ticks = 1;
    *top = *ticks * step;
}

void chart_draw(Image *im, int x, int y, int w, int h, const Chart *c, const ChartSeries *s, int n_series) {
    int legend_w = c->legend_outside ? 220 : 0;
    Frame f = {c, x + 70, y + 40, w - 70 - 20 - legend_w, h - 40 - 55};
    image_fill_rect(im, x, y, x + w - 1, y + h - 1, WHITE);
    char label[64];
    int tw, th;
    // y grid and ticks
    int ny = c->y_ticks > 0 ? c->y_ticks : 5;
    for (int i = 0; i <= ny; i++) {
        double v = c->y0 + (c->y1 - c->y0) * i / ny, py = fy(&f, v);
        image_draw_line(im, f.left, py, f.left + f.pw, py, GRID, 1);
        tick_label(label, sizeof label, v);
        image_text_size(label, TEXT, &tw, &th);
        image_draw_text(im, (int)f.left - tw - 8, (int)py - th / 2, label, BLACK, TEXT);
    }
    // x grid and ticks: decades on a log axis
    if (c->log_x) {
        for (double d = pow(10, ceil(log10(c->x0))); d <= c->x1 * (1 + 1e-9); d *= 10) {
            double px = fx(&f, d);
            image_draw_line(im, px, f.top, px, f.top + f.ph, GRID, 1);
            tick_label(label, sizeof label, d);
            image_text_size(label, TEXT, &tw, &th);
            image_draw_text(im, (int)px - tw / 2, (int)(f.top + f.ph) + 6, label, BLACK, TEXT);
        }
    } else {
        int nx = c->x_ticks > 0 ? c->x_ticks : 10;
        for (int i = 0; i <= nx; i++) {
            double v = c->x0 + (c->x1 - c->x0) * i / nx, px = fx(&f, v);
            image_draw_line(im, px, f.top, px, f.top + f.ph, GRID, 1);
            tick_label(label, sizeof label, v);
            image_text_size(label, TEXT, &tw, &th);
            image_draw_text(im, (int)px - tw / 2, (int)(f.top + f.ph) + 6, label, BLACK, TEXT);
        }
    }
    image_draw_box(im, (int)f.left, (int)f.top, (int)(f.left + f.pw), (int)(f.top + f.ph), BLACK, 1);
    if (c->xlabel) {
        image_text_size(c->xlabel, 0.55, &tw, &th);
        image_draw_text(im, (int)(f.left + f.pw / 2) - tw / 2, y + h - 26, c->xlabel, BLACK, 0.55);
    }
    // the title centred above the plot, the y axis's label under it at the left
    if (c->title) {
        image_text_size(c->title, TEXT, &tw, &th);
        int width = (int)f.pw + legend_w;
        draw_title(im, c->title, tw < width ? (int)f.left + (width - tw) / 2 : (int)f.left, y + 6, width);
    }
    if (c->ylabel) image_draw_text(im, x + 6, y + 22, c->ylabel, BLACK, 0.5);
    // series, clipped to the axis ranges
    for (int q = 0; q < n_series; q++) {
        const float *col = PALETTE[q % 10];
        for (int k = 1; k < s[q].n; k++) {
            double x0 = s[q].x[k - 1], y0 = s[q].y[k - 1], x1 = s[q].x[k], y1 = s[q].y[k];
            if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) continue;
            if (c->log_x && (x0 <= 0 || x1 <= 0)) continue;
            y0 = fmin(fmax(y0, c->y0), c->y1), y1 = fmin(fmax(y1, c->y0), c->y1);
            image_draw_line(im, fx(&f, x0), fy(&f, y0), fx(&f, x1), fy(&f, y1), col, 2);
        }
        if (!s[q].label) continue;
        int lx = c->legend_outside ? (int)(f.left + f.pw) + 15 : (int)(f.left + f.pw) - 200;
        int ly = c->legend_outside ? (int)f.top + 4 + 22 * q : (int)(f.top + f.ph) - 22 * (n_series - q) - 4;
        image_fill_rect(im, lx, ly + 6, lx + 22, ly + 9, col);
        image_draw_text(im, lx + 30, ly, s[q].label, BLACK, TEXT);
    }
}

int chart_write_png(const char *path, int w, int h, const Chart *c, const ChartSeries *s, int n_series, Err *e) {
    Image im;
    if (image_alloc(&im, w, h, 3, e)) return -1;
    chart_draw(&im, 0, 0, w, h, c, s, n_series);
    int rc = image_write_png(&im, path, e);
    image_free(&im);
    return rc;
}
