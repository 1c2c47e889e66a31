/* Code named by untyped labels, as assembly writes entry points: `asm_entry` has no `.type`
 * and no size, and `inside_sized` is a label inside a sized function, which keeps its name. */
__asm__(".text\n"
        "asm_entry:\n"
        "  nop\n"
        "  nop\n"
        "  ret\n"
        ".globl after_entry\n"
        ".type after_entry, @function\n"
        "after_entry:\n"
        "  ret\n"
        ".size after_entry, .-after_entry\n");

__attribute__((noinline)) int sized(int x) {
    __asm__ volatile("inside_sized:\n");
    return x * 3 + 1;
}

int main(int argc, char **argv) {
    (void)argv;
    return sized(argc);
}
