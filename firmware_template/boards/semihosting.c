/* ARM semihosting over `bkpt 0xab` (ARMv6-M and ARMv7-M Thumb). See semihosting.h. */
#include <stdint.h>

#include "semihosting.h"

enum {
    SYS_WRITE0 = 0x04,                /* r1 = pointer to a NUL-terminated string */
    SYS_EXIT_EXTENDED = 0x20,         /* r1 = pointer to {reason, subcode} */
    ADP_STOPPED_APPLICATION_EXIT = 0x20026
};

static int semihost_call(int operation, const void *argument)
{
    register int r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ __volatile__("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void siq_semihost_write0(const char *text)
{
    (void)semihost_call(SYS_WRITE0, text);
}

void siq_semihost_exit(int status)
{
    /* SYS_EXIT (0x18) only tells success from failure; the extended call carries the exact status. */
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
        /* Not reached under QEMU. */
    }
}
