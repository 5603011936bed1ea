// Number parsing for text formats. parse_double's fast path is Clinger's: a decimal with at most 19 significant
// digits whose mantissa fits in 53 bits and whose decimal exponent is within +-22 is one exact integer times or
// divided by one exact power of ten, so a single IEEE operation rounds it correctly. Anything else goes to strtod.
#include "common.h"

#include <stdlib.h>

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static const char *skip_blanks(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

static bool parse_double_slow(const char **p, double *out) {
    char *end;
    double v = strtod(*p, &end);
    if (end == *p) return false;
    *out = v;
    *p = end;
    return true;
}

bool parse_double(const char **p, double *out) {
    const char *s = skip_blanks(*p);
    *p = s;
    const char *q = s;
    bool neg = false;
    if (*q == '-' || *q == '+') neg = (*q++ == '-');
    uint64_t mant = 0;
    int digits = 0, exp10 = 0;
    bool any = false;
    while (*q == '0') q++, any = true; // leading zeros are not significant
    for (; *q >= '0' && *q <= '9'; q++, any = true) {
        if (digits < 19) mant = mant * 10 + (uint64_t)(*q - '0'), digits++;
        else if (exp10++, *q != '0') digits = 99;
    }
    if (*q == '.') {
        q++;
        if (digits == 0)
            for (; *q == '0'; q++) exp10--, any = true;
        for (; *q >= '0' && *q <= '9'; q++, any = true)
            if (digits < 19) mant = mant * 10 + (uint64_t)(*q - '0'), digits++, exp10--;
            else if (*q != '0') digits = 99; // more precision than the fast path can hold
    }
    if (!any) return parse_double_slow(p, out); // "inf", "nan", or not a number at all
    if (*q == 'e' || *q == 'E') return parse_double_slow(p, out);
    if (digits > 19 || mant > (1ULL << 53) || exp10 < -22 || exp10 > 22) return parse_double_slow(p, out);
    double v = (double)mant;
    v = exp10 < 0 ? v / POW10[-exp10] : v * POW10[exp10];
    *out = neg ? -v : v;
    *p = q;
    return true;
}

bool parse_long(const char **p, long *out) {
    const char *s = skip_blanks(*p);
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s) return false;
    *out = v;
    *p = end;
    return true;
}

bool parse_at_end(const char *p) {
    p = skip_blanks(p);
    return *p == '\0' || *p == '\r' || *p == '\n';
}
