/*
 * insnprof: a QEMU TCG plugin that counts executed instructions per vCPU and per translation
 * block, for finding where virtual time goes under -icount (where it is instructions).
 *
 * Build:  gcc -O2 -shared -fPIC -o insnprof.so tools/insnprof/insnprof.c
 * Use:    ASYNCPF_QEMU_ARGS="-plugin $PWD/insnprof.so,out=/tmp/prof.txt" cargo xtask run ...
 * Report: python3 tools/insnprof/report.py /tmp/prof.txt [TOP]
 *
 * Output lines: "vcpu N INSNS", then "blk VADDR HADDR NINSNS EXECS VCPUMASK" per block.
 * The few declarations of QEMU's plugin API (include/qemu/qemu-plugin.h, API version 2 and
 * later) are repeated here so that no QEMU source tree is needed.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
__attribute__((visibility("default"))) int qemu_plugin_version = 2;
typedef struct {
    const char *target_name;
    struct { int min, cur; } version;
    bool system_emulation;
    union { struct { int smp_vcpus, max_vcpus; } system; };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);
typedef void (*vcpu_udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb cb, int flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);

#define SLOTS (1u << 20) /* open-addressing table of blocks, at most half full */
#define MAX_VCPUS 16

struct block {
    uint64_t vaddr, haddr, insns, execs;
    unsigned vcpus;
};
static struct block *blocks;
static size_t used;
static uint64_t per_vcpu[MAX_VCPUS];
static const char *out_path = "insnprof.txt";

/* Under -icount QEMU runs every vCPU on one thread: no atomics needed. */
static void on_exec(unsigned int vcpu, void *userdata)
{
    struct block *b = userdata;
    b->execs++;
    b->vcpus |= 1u << (vcpu % MAX_VCPUS);
    per_vcpu[vcpu % MAX_VCPUS] += b->insns;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    /* Host address: tells the hypervisor (identity map) from the guest at the same vaddr. */
    uint64_t haddr = (uint64_t)(uintptr_t)qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0));
    uint64_t insns = qemu_plugin_tb_n_insns(tb);
    uint64_t h = (vaddr * 0x9E3779B97F4A7C15ull) ^ (haddr * 0xC2B2AE3D27D4EB4Full) ^ insns;
    size_t i = (h >> 20) & (SLOTS - 1);
    while (blocks[i].insns && !(blocks[i].vaddr == vaddr && blocks[i].haddr == haddr && blocks[i].insns == insns))
        i = (i + 1) & (SLOTS - 1);
    struct block *b = &blocks[i];
    if (!b->insns) {
        if (used >= SLOTS / 2)
            return;
        used++;
        b->vaddr = vaddr;
        b->haddr = haddr;
        b->insns = insns;
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, 0 /* QEMU_PLUGIN_CB_NO_REGS */, b);
}

static void write_profile(qemu_plugin_id_t id, void *userdata)
{
    FILE *f = fopen(out_path, "w");
    if (!f)
        return;
    for (int v = 0; v < MAX_VCPUS; v++)
        if (per_vcpu[v])
            fprintf(f, "vcpu %d %" PRIu64 "\n", v, per_vcpu[v]);
    for (size_t i = 0; i < SLOTS; i++)
        if (blocks[i].execs)
            fprintf(f, "blk %" PRIx64 " %" PRIx64 " %" PRIu64 " %" PRIu64 " %x\n", blocks[i].vaddr, blocks[i].haddr,
                    blocks[i].insns, blocks[i].execs, blocks[i].vcpus);
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                                               char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "out=", 4))
            out_path = argv[i] + 4;
    blocks = calloc(SLOTS, sizeof *blocks);
    if (!blocks)
        return 1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_profile, NULL);
    return 0;
}
