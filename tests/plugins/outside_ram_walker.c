/*
 * A walker plugin that emits a mapping whose physical range is not RAM of the dump,
 * ignores the failure the host reports, and returns OK, for the bad-plugin tests in
 * cli/tests/plugin_bad.rs. It claims x86 4-level paging under the name given with
 * -DWALKER_NAME (default "x86", which needs --plugin-override to replace the built-in).
 * It builds against either header: ABI 2 (core/include) or the frozen ABI 1
 * (core/include/v1), so the same test runs with a plugin of each version.
 */
#include "dumpconv_plugin.h"

#ifndef WALKER_NAME
#define WALKER_NAME "x86"
#endif

static int32_t outside_walk(const dumpconv_host *host, const dumpconv_cpu *cpu,
                            const dumpconv_walk_options *opts, dumpconv_walk_stats *stats)
{
    (void)cpu;
    (void)opts;
    /* 1 TiB: far above the RAM of any test dump. */
    int32_t rc = host->emit_mapping(host->ctx, 0xffff888000000000ull, 1ull << 40, 4096);
    (void)rc; /* wrong: a plugin must stop and return an error here */
    stats->leaves = 1;
    return DUMPCONV_OK;
}

#if DUMPCONV_ABI_MAJOR >= 2
static const dumpconv_arch outside_arches[] = {{.machine = DUMPCONV_EM_X86_64, .word_size = 8}};

static const dumpconv_walker outside_walker = {
    .struct_size = sizeof(dumpconv_walker),
    .arch_count = 1,
    .arches = outside_arches,
    .modes = "4level",
    .walk = outside_walk,
    /* No cpu_info: every CPU with registers is taken to page. */
};
#else
static const uint32_t outside_modes[] = {DUMPCONV_PAGING_4LEVEL};

static const dumpconv_walker outside_walker = {
    .struct_size = sizeof(dumpconv_walker),
    .mode_count = 1,
    .modes = outside_modes,
    .walk = outside_walk,
};
#endif

static const dumpconv_plugin outside_plugin = {
    .abi_major = DUMPCONV_ABI_MAJOR,
    .struct_size = sizeof(dumpconv_plugin),
    .kind = DUMPCONV_KIND_WALKER,
    .name = WALKER_NAME,
    .version = "0.0.1",
    .description = "a walker that maps outside RAM on purpose (tests)",
    .walker = &outside_walker,
};

const uint32_t dumpconv_plugin_abi = DUMPCONV_ABI_MAJOR;

const dumpconv_plugin *dumpconv_plugin_entry(void)
{
    return &outside_plugin;
}
