// Which kernel variants this CPU runs: one binary for every machine of the project (AVX2-only AMD, AVX-512 AMD
// and Intel), each fast kernel compiled for several instruction sets beside its baseline and chosen here, at run
// time, from cpuid (GCC's __builtin_cpu_supports). Nothing is cached: asking costs a few loads.
#include <stdlib.h>
#include <string.h>

#include "layers.h"

bool isa_supported(Isa isa) {
    switch (isa) {
    case ISA_BASE: return true;
    case ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("bmi2"); // every AVX-512 CPU has it; im2col's stride 2 uses pdep
    }
    return false;
}

bool isa_has_bf16(void) {
    return isa_supported(ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
}

const char *isa_name(Isa isa) {
    static const char *const names[] = {"baseline", "avx2", "avx512"};
    return names[isa];
}

// The best variant the CPU supports, capped by INCEPTION_ISA (baseline, avx2 or avx512) when set: benchmarks
// and tests compare the variants on one machine with it.
Isa isa_best(void) {
    Isa best = ISA_BASE;
    for (int i = ISA_AVX2; i <= ISA_AVX512; i++)
        if (isa_supported((Isa)i)) best = (Isa)i;
    const char *cap = getenv("INCEPTION_ISA");
    if (cap)
        for (int i = ISA_BASE; i <= ISA_AVX512; i++)
            if (!strcmp(cap, isa_name((Isa)i)) && (Isa)i < best) best = (Isa)i;
    return best;
}
