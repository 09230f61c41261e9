/* memcpy/memmove/memset/memcmp for -nostdlib builds.
 *
 * GCC may emit calls to these even with -ffreestanding (struct copies, large initialisers); the linker drops
 * the ones nobody calls (-ffunction-sections, --gc-sections). This file must be compiled with
 * -fno-tree-loop-distribute-patterns, otherwise GCC turns the loops below into calls to themselves.
 * Byte loops: small, and the siq kernels do not rely on them for speed.
 */
#include <stddef.h>

void *memcpy(void *destination, const void *source, size_t n);
void *memmove(void *destination, const void *source, size_t n);
void *memset(void *destination, int value, size_t n);
int memcmp(const void *a, const void *b, size_t n);

void *memcpy(void *destination, const void *source, size_t n)
{
    unsigned char *d = destination;
    const unsigned char *s = source;
    while (n--) {
        *d++ = *s++;
    }
    return destination;
}

void *memmove(void *destination, const void *source, size_t n)
{
    unsigned char *d = destination;
    const unsigned char *s = source;
    if (d < s) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        while (n--) {
            d[n] = s[n];
        }
    }
    return destination;
}

void *memset(void *destination, int value, size_t n)
{
    unsigned char *d = destination;
    while (n--) {
        *d++ = (unsigned char)value;
    }
    return destination;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a;
    const unsigned char *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y) {
            return *x < *y ? -1 : 1;
        }
    }
    return 0;
}
