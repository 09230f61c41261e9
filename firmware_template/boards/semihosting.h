/* Semihosting calls used by the siq firmware: print a string on the host, exit with a status.
 *
 * The guest executes `bkpt 0xab` with the operation number in r0 and a pointer to the argument in r1;
 * QEMU (-semihosting-config enable=on) performs the operation on the host. Without a debugger or QEMU
 * attached, a semihosting call on real hardware faults: these images are for the emulator.
 */
#ifndef SIQ_SEMIHOSTING_H
#define SIQ_SEMIHOSTING_H

/* Exit status reported by the fault handlers (a model or harness bug, never a mismatch count). */
#define SIQ_EXIT_FAULT 99

/* Print a NUL-terminated string on the host (SYS_WRITE0). */
void siq_semihost_write0(const char *text);

/* Stop the emulator; QEMU's own exit status becomes `status` (SYS_EXIT_EXTENDED, 0..255). */
void siq_semihost_exit(int status) __attribute__((noreturn));

#endif /* SIQ_SEMIHOSTING_H */
