/* A libc-free workload, so it links for any ELF class (-m32 without 32-bit libc installed). */
static inline __attribute__((always_inline)) unsigned mix(unsigned x) {
    x ^= x >> 16;
    x *= 0x45d9f3bu;
    return x ^ (x >> 16);
}

__attribute__((noinline)) unsigned work(unsigned n) {
    unsigned acc = 1;
    for (unsigned i = 0; i < n; i++) {
        acc = mix(acc + i) ^ (acc << 3);
    }
    return acc;
}

volatile unsigned sink;

void _start(void) {
    sink = work(1000);
    for (;;) {
    }
}
