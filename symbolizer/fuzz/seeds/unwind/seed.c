long g(long x);
__attribute__((noinline)) long f(long n) { char *p = __builtin_alloca(n); p[0] = 1; return g(p[0] + n); }
__attribute__((noinline)) long g(long x) { return x > 3 ? f(x - 1) * 3 : x; }
void _start(void) { volatile long r = f(9); (void)r; for (;;) {} }
