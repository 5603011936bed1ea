// The only C++ in the project: a thin extern "C" layer over OpenCV for decoding, resizing, colour conversion,
// blurring and drawing. cv::Mat headers wrap our float buffers without copying; every OpenCV exception becomes
// an Err.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "image.h"
}

static cv::Mat as_mat(const Image *im) {
    return cv::Mat(im->h, im->w, CV_32FC(im->c), (void *)im->px);
}

extern "C" int image_load(const char *path, Image *out, Err *e) {
    *out = Image{};
    char *data;
    size_t n;
    if (read_file_all(path, IMAGE_MAX_FILE_BYTES, &data, &n, e)) return -1;
    // Format, size and completeness first: OpenCV allocates whatever size a header claims, and decodes a
    // truncated JPEG without an error.
    int w, h;
    if (image_check_data((const unsigned char *)data, n, path, &w, &h, e)) {
        std::free(data);
        return -1;
    }
    cv::Mat bgr;
    try {
        cv::Mat buf(1, (int)n, CV_8UC1, data);
        bgr = cv::imdecode(buf, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
    } catch (const cv::Exception &ex) {
        std::free(data);
        return err_set(e, "%s: cannot decode image: %s", path, ex.what());
    }
    std::free(data);
    if (bgr.empty()) return err_set(e, "%s: cannot decode image (corrupt data)", path);
    if (image_alloc(out, bgr.cols, bgr.rows, 3, e)) return err_prefix(e, "%s", path);
    cv::Mat dst = as_mat(out);
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    rgb.convertTo(dst, CV_32FC3);
    return 0;
}

static int cv_flag(Interp interp) {
    switch (interp) {
    case INTERP_NEAREST: return cv::INTER_NEAREST;
    case INTERP_BILINEAR: return cv::INTER_LINEAR;
    case INTERP_AREA: return cv::INTER_AREA;
    case INTERP_CUBIC: return cv::INTER_CUBIC;
    default: return cv::INTER_LINEAR;
    }
}

extern "C" int image_resize(const Image *src, int w, int h, Interp interp, Image *dst, Err *e) {
    if (image_alloc(dst, w, h, src->c, e)) return -1;
    try {
        cv::Mat d = as_mat(dst);
        cv::resize(as_mat(src), d, d.size(), 0, 0, cv_flag(interp));
    } catch (const cv::Exception &ex) {
        image_free(dst);
        return err_set(e, "resize: %s", ex.what());
    }
    return 0;
}

extern "C" int image_convert(const Image *src, ColourSpace to, Image *dst, Err *e) {
    if (src->c != 3) return err_set(e, "colour conversion needs an RGB image, got %d channels", src->c);
    if (image_alloc(dst, src->w, src->h, to == COLOUR_GRAY ? 1 : 3, e)) return -1;
    try {
        cv::Mat s = as_mat(src), d = as_mat(dst);
        switch (to) {
        case COLOUR_RGB: s.copyTo(d); break;
        case COLOUR_GRAY: cv::cvtColor(s, d, cv::COLOR_RGB2GRAY); break;
        case COLOUR_HSV: cv::cvtColor(s, d, cv::COLOR_RGB2HSV); break;
        case COLOUR_LAB: {
            cv::Mat unit;
            s.convertTo(unit, CV_32FC3, 1.0 / 255.0); // float Lab expects RGB in [0, 1]
            cv::cvtColor(unit, d, cv::COLOR_RGB2Lab);
            break;
        }
        }
    } catch (const cv::Exception &ex) {
        image_free(dst);
        return err_set(e, "colour conversion: %s", ex.what());
    }
    return 0;
}

extern "C" int image_gaussian_blur(const Image *src, double sigma, Image *dst, Err *e) {
    if (image_alloc(dst, src->w, src->h, src->c, e)) return -1;
    try {
        cv::Mat d = as_mat(dst);
        cv::GaussianBlur(as_mat(src), d, cv::Size(0, 0), sigma, sigma, cv::BORDER_REFLECT_101);
    } catch (const cv::Exception &ex) {
        image_free(dst);
        return err_set(e, "gaussian blur: %s", ex.what());
    }
    return 0;
}

static cv::Scalar colour(const Image *im, const float rgb[3]) {
    if (im->c == 1) return cv::Scalar(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]);
    return cv::Scalar(rgb[0], rgb[1], rgb[2]);
}

extern "C" void image_draw_box(Image *im, int x1, int y1, int x2, int y2, const float rgb[3], int thickness) {
    cv::Mat m = as_mat(im);
    cv::rectangle(m, cv::Point(x1, y1), cv::Point(x2, y2), colour(im, rgb), thickness, cv::LINE_8);
}

extern "C" void image_fill_rect(Image *im, int x1, int y1, int x2, int y2, const float rgb[3]) {
    cv::Mat m = as_mat(im);
    cv::rectangle(m, cv::Point(x1, y1), cv::Point(x2, y2), colour(im, rgb), cv::FILLED, cv::LINE_8);
}

extern "C" void image_draw_line(Image *im, double x1, double y1, double x2, double y2, const float rgb[3],
                                int thickness) {
    // Sub-pixel endpoints via OpenCV's fixed-point shift, anti-aliased.
    const int shift = 4;
    const double s = 1 << shift;
    cv::Mat m = as_mat(im);
    cv::line(m, cv::Point((int)(x1 * s + 0.5), (int)(y1 * s + 0.5)), cv::Point((int)(x2 * s + 0.5), (int)(y2 * s + 0.5)),
             colour(im, rgb), thickness, cv::LINE_AA, shift);
}

extern "C" void image_text_size(const char *text, double scale, int *w, int *h) {
    int baseline = 0;
    cv::Size s = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline);
    *w = s.width;
    *h = s.height + baseline;
}

extern "C" void image_draw_text(Image *im, int x, int y, const char *text, const float rgb[3], double scale) {
    int baseline = 0;
    cv::Size s = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline);
    cv::Mat m = as_mat(im);
    cv::putText(m, text, cv::Point(x, y + s.height), cv::FONT_HERSHEY_SIMPLEX, scale, colour(im, rgb), 1, cv::LINE_AA);
}
