/*
 * A walker plugin (ABI 2) whose CPUs are malformed, for cli/tests/plugin_bad.rs:
 * cpu_from_root emits a register name the host refuses ("cr 3"), roots_from_vmcoreinfo
 * emits more registers than the host takes (300). Both ignore the failure the host
 * reports and return OK (wrong: a plugin must stop). It claims x86 4-level paging under
 * the name "x86" (which needs --plugin-override).
 */
#include <stdio.h>

#include "dumpconv_plugin.h"

static int32_t bad_walk(const dumpconv_host *host, const dumpconv_cpu *cpu,
                        const dumpconv_walk_options *opts, dumpconv_walk_stats *stats)
{
    (void)host;
    (void)cpu;
    (void)opts;
    (void)stats;
    return DUMPCONV_OK;
}

static int32_t bad_cpu_from_root(const dumpconv_host *host, dumpconv_arch arch,
                                 const char *mode, size_t mode_len, uint64_t root)
{
    (void)arch;
    (void)mode;
    (void)mode_len;
    (void)host->emit_reg(host->ctx, "cr 3", 4, root);
    return DUMPCONV_OK;
}

static int32_t bad_roots(const dumpconv_host *host, dumpconv_arch arch,
                         const uint8_t *vmcoreinfo, size_t len)
{
    (void)arch;
    (void)vmcoreinfo;
    (void)len;
    for (unsigned i = 0; i < 300; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "r%u", i);
        (void)host->emit_reg(host->ctx, name, (size_t)n, i);
    }
    return DUMPCONV_OK;
}

static const dumpconv_arch bad_arches[] = {{.machine = DUMPCONV_EM_X86_64, .word_size = 8}};

static const dumpconv_walker bad_walker = {
    .struct_size = sizeof(dumpconv_walker),
    .arch_count = 1,
    .arches = bad_arches,
    .modes = "4level",
    .walk = bad_walk,
    .cpu_from_root = bad_cpu_from_root,
    .roots_from_vmcoreinfo = bad_roots,
};

static const dumpconv_plugin bad_plugin = {
    .abi_major = DUMPCONV_ABI_MAJOR,
    .struct_size = sizeof(dumpconv_plugin),
    .kind = DUMPCONV_KIND_WALKER,
    .name = "x86",
    .version = "0.0.1",
    .description = "a walker whose CPUs are malformed on purpose (tests)",
    .walker = &bad_walker,
};

const uint32_t dumpconv_plugin_abi = DUMPCONV_ABI_MAJOR;

const dumpconv_plugin *dumpconv_plugin_entry(void)
{
    return &bad_plugin;
}
