// Unwind-table fixture: C++ with exceptions (landing pads, cleanups, personality routines).
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

struct Guard {
    std::string name;
    ~Guard() { std::printf("leaving %s\n", name.c_str()); }
};

__attribute__((noinline)) static int deep(int n) {
    Guard g{"deep" + std::to_string(n)};
    if (n == 0)
        throw std::runtime_error("bottom");
    std::vector<int> v(static_cast<size_t>(n), n);
    return deep(n - 1) + v.back();
}

int main(int argc, char **) {
    try {
        return deep(argc + 3);
    } catch (const std::exception &e) {
        std::printf("caught %s\n", e.what());
    }
    return 0;
}
