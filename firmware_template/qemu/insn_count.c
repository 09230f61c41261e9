/* QEMU TCG plugin: executed-instruction count at every hit of one marker address.
 *
 *   qemu-system-arm ... -plugin insn_count.so,marker=0x1234 -d plugin -D log.txt
 *
 * Every translated block adds its instruction count to a counter when it starts executing (inline, cheap);
 * the instruction at the marker address gets a callback that appends the counter to a list. At exit the
 * plugin writes one line "siq-insn-count <n> <count0> ... <countN-1>" through qemu_plugin_outs (the -D log).
 * A block is counted in full on entry, so a hit records the instructions executed up to the end of the
 * block holding the marker: differences between hits are exact, and identical on every run (TCG is
 * deterministic for a single-core program that takes no interrupts).
 *
 * Host tooling, built by codegen/target/qemu.py with `cc -O2 -shared -fPIC -fvisibility=hidden`. Debian's QEMU
 * ships no qemu-plugin.h, so the few API entry points used are declared here (plugin API version 1, QEMU 7.x).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t marker_address;
static uint64_t executed;      /* instructions of every block entered so far */
static uint64_t *hits;         /* `executed` at each execution of the marker */
static size_t n_hits, hits_capacity;
static int out_of_memory;

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    if (n_hits == hits_capacity) {
        size_t capacity = hits_capacity ? 2 * hits_capacity : 1024;
        uint64_t *grown = realloc(hits, capacity * sizeof *grown);
        if (!grown) {
            out_of_memory = 1;
            return;
        }
        hits = grown;
        hits_capacity = capacity;
    }
    hits[n_hits++] = executed;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_vaddr(insn) == marker_address) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void report_at_exit(qemu_plugin_id_t id, void *userdata)
{
    char number[32];
    size_t length = 64 + 21 * n_hits, used;
    char *line = malloc(length);
    (void)id;
    (void)userdata;
    if (!line || out_of_memory) {
        qemu_plugin_outs("siq-insn-count error out of memory\n");
        return;
    }
    used = (size_t)snprintf(line, length, "siq-insn-count %zu", n_hits);
    for (size_t i = 0; i < n_hits; i++) {
        int n = snprintf(number, sizeof number, " %" PRIu64, hits[i]);
        memcpy(line + used, number, (size_t)n);
        used += (size_t)n;
    }
    memcpy(line + used, "\n", 2);
    qemu_plugin_outs(line);
    free(line);
}

PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "marker=", 7) == 0) {
            char *end;
            marker_address = strtoull(argv[i] + 7, &end, 0);
            if (*end != '\0' || end == argv[i] + 7) {
                fprintf(stderr, "insn_count: bad marker address '%s'\n", argv[i] + 7);
                return -1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument '%s' (expected marker=ADDRESS)\n", argv[i]);
            return -1;
        }
    }
    if (marker_address == 0) {
        fprintf(stderr, "insn_count: missing marker=ADDRESS\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, report_at_exit, NULL);
    return 0;
}
