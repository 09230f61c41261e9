/* Reset and fault handling for the siq test firmware on Cortex-M0/M3/M4/M7 (same code for every board).
 *
 * The vector table sits in its own section, placed first in flash by link.ld.j2: QEMU and the hardware read
 * the initial stack pointer from word 0 and the reset handler from word 1. The reset handler copies .data
 * from its load address in flash to RAM, zeroes .bss, calls main() and exits through semihosting with
 * main's return value. Every fault exits with SIQ_EXIT_FAULT (99): a looping handler would hang QEMU.
 * No interrupt is ever enabled, so the table stops after the 16 system exceptions.
 */
#include <stdint.h>

#include "semihosting.h"

/* Defined by link.ld.j2; the addresses are what matters, the element type only gives word-wise copies. */
extern uint32_t __stack_top[];
extern uint32_t __data_start[];
extern uint32_t __data_end[];
extern const uint32_t __data_load[];
extern uint32_t __bss_start[];
extern uint32_t __bss_end[];

int main(void);

void siq_reset_handler(void) __attribute__((noreturn));
void siq_nmi_handler(void) __attribute__((noreturn));
void siq_hard_fault_handler(void) __attribute__((noreturn));
void siq_mem_manage_handler(void) __attribute__((noreturn));
void siq_bus_fault_handler(void) __attribute__((noreturn));
void siq_usage_fault_handler(void) __attribute__((noreturn));
void siq_unexpected_handler(void) __attribute__((noreturn));

typedef void (*siq_handler)(void);

/* Words 0..15 of the ARMv6-M/ARMv7-M vector table. */
struct siq_vector_table {
    uint32_t *initial_stack_pointer;
    siq_handler reset;
    siq_handler nmi;
    siq_handler hard_fault;
    siq_handler mem_manage;  /* reserved on ARMv6-M (Cortex-M0): never taken there */
    siq_handler bus_fault;   /* reserved on ARMv6-M */
    siq_handler usage_fault; /* reserved on ARMv6-M */
    siq_handler reserved_7_10[4];
    siq_handler svcall;
    siq_handler debug_monitor;
    siq_handler reserved_13;
    siq_handler pendsv;
    siq_handler systick;
};

__attribute__((section(".isr_vector"), used))
const struct siq_vector_table siq_vector_table = {
    __stack_top,
    siq_reset_handler,
    siq_nmi_handler,
    siq_hard_fault_handler,
    siq_mem_manage_handler,
    siq_bus_fault_handler,
    siq_usage_fault_handler,
    {0, 0, 0, 0},
    siq_unexpected_handler,
    siq_unexpected_handler,
    0,
    siq_unexpected_handler,
    siq_unexpected_handler,
};

void siq_reset_handler(void)
{
    uint32_t *destination = __data_start;
    const uint32_t *source = __data_load;
    while (destination < __data_end) {
        *destination++ = *source++;
    }
    for (destination = __bss_start; destination < __bss_end; destination++) {
        *destination = 0;
    }
    siq_semihost_exit(main());
}

static void fault_exit(const char *message) __attribute__((noreturn));

static void fault_exit(const char *message)
{
    siq_semihost_write0(message);
    siq_semihost_exit(SIQ_EXIT_FAULT);
}

void siq_nmi_handler(void) { fault_exit("siq: NMI\n"); }
void siq_hard_fault_handler(void) { fault_exit("siq: HardFault\n"); }
void siq_mem_manage_handler(void) { fault_exit("siq: MemManage fault\n"); }
void siq_bus_fault_handler(void) { fault_exit("siq: BusFault\n"); }
void siq_usage_fault_handler(void) { fault_exit("siq: UsageFault\n"); }
void siq_unexpected_handler(void) { fault_exit("siq: unexpected exception\n"); }
