/* Unwind-table fixture: leaf and non-leaf functions, recursion, alloca (a CFA on rbp even
 * without frame pointers), varargs, a signal handler and libc calls through the PLT. */
#include <alloca.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t hits;

__attribute__((noinline)) static long leaf(long x) { return x * 3 + 1; }

__attribute__((noinline)) static long recurse(long n, long acc) {
    if (n <= 0)
        return acc;
    long v = recurse(n - 1, acc + leaf(n));
    return v ^ n;
}

__attribute__((noinline)) static long dynamic(int n) {
    char *buf = alloca((size_t)n + 16);
    memset(buf, n, (size_t)n + 16);
    long s = 0;
    for (int i = 0; i < n; i++)
        s += buf[i] + leaf(i);
    return s;
}

__attribute__((noinline)) static long sum(int count, ...) {
    va_list ap;
    va_start(ap, count);
    long s = 0;
    for (int i = 0; i < count; i++)
        s += va_arg(ap, long);
    va_end(ap);
    return s;
}

static void on_signal(int sig) { hits += sig; }

int main(int argc, char **argv) {
    signal(SIGUSR1, on_signal);
    raise(SIGUSR1);
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 10;
    long r = recurse(n, 0) + dynamic((int)n) + sum(3, n, n * 2, n * 3);
    printf("%ld %d\n", r, (int)hits);
    return 0;
}
