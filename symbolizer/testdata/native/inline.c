/* A native workload for the DWARF oracle test: two levels of forced inlining inside a loop. */
#include <stdio.h>
#include <stdlib.h>

static inline __attribute__((always_inline)) unsigned mix(unsigned x) {
    x ^= x >> 16;
    x *= 0x45d9f3bu;
    return x ^ (x >> 16);
}

static inline __attribute__((always_inline)) unsigned step(unsigned acc, unsigned i) {
    return mix(acc + i) ^ (acc << 3);
}

__attribute__((noinline)) unsigned work(unsigned n) {
    unsigned acc = 1;
    for (unsigned i = 0; i < n; i++) {
        acc = step(acc, i);
    }
    return acc;
}

__attribute__((noinline)) unsigned other(unsigned n) {
    return work(n / 2) + mix(n);
}

int main(int argc, char **argv) {
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 1000u;
    printf("%u\n", other(n) + work(n));
    return 0;
}
