/*
 * A writer plugin that misbehaves in one way, chosen at compile time (-D...), for the
 * bad-plugin tests in cli/tests/plugin_bad.rs. Without any -D it is a correct writer of a
 * padded image, so each variant differs from a working plugin in one thing only.
 *
 *   -DABI_SYMBOL=N        dumpconv_plugin_abi is N instead of DUMPCONV_ABI_MAJOR
 *   -DABI_MAJOR=N         the descriptor's abi_major is N
 *   -DSHORT_DESCRIPTOR    the descriptor's struct_size ends before the writer pointer
 *   -DNO_ENTRY            no dumpconv_plugin_entry symbol
 *   -DRETURN_ERROR        write() writes a little, sets an error message and fails
 *   -DIGNORE_READ_FAILURE read_phys outside RAM fails; write() goes on writing, returns OK
 *   -DIGNORE_SINK_FAILURE sink_write_at past the end fails; write() goes on, returns OK
 *   -DERROR_THEN_OK       write() calls set_error, keeps writing and returns OK
 *   -DCONSTRUCTOR_ABORTS  loading the library runs a constructor that kills the process
 *                         (with ABI_SYMBOL: proves the host refuses before loading)
 */
#include <stdlib.h>
#include <string.h>

#include "dumpconv_plugin.h"

#ifndef ABI_SYMBOL
#define ABI_SYMBOL DUMPCONV_ABI_MAJOR
#endif
#ifndef ABI_MAJOR
#define ABI_MAJOR DUMPCONV_ABI_MAJOR
#endif

#define MARK "AFTER-FAILURE"

#ifdef CONSTRUCTOR_ABORTS
__attribute__((constructor)) static void abort_on_load(void)
{
    abort();
}
#endif

static uint8_t buf[4096] __attribute__((unused));

static inline void set_error(const dumpconv_host *host, const char *msg)
{
    host->set_error(host->ctx, msg, strlen(msg));
}

static int32_t bad_write(const dumpconv_host *host, const dumpconv_plan *plan)
{
    void *ctx = host->ctx;
    (void)plan;
    if (host->sink_write(ctx, (const uint8_t *)"HEAD", 4) != DUMPCONV_OK)
        return DUMPCONV_ERR_IO;
#if defined(RETURN_ERROR)
    set_error(host, "the bad writer refuses: no room for a padded image today");
    return DUMPCONV_ERR_FAILED;
#elif defined(IGNORE_READ_FAILURE)
    /* Far above any RAM of the test dumps: the host callback fails. */
    int32_t rc = host->read_phys(ctx, (uint64_t)1 << 45, buf, sizeof buf);
    (void)rc; /* wrong: a plugin must stop here */
    host->sink_write(ctx, (const uint8_t *)MARK, strlen(MARK));
    return DUMPCONV_OK;
#elif defined(IGNORE_SINK_FAILURE)
    /* Past the end of the output (and on a stream, anywhere): the host callback fails. */
    int32_t rc = host->sink_write_at(ctx, (uint64_t)1 << 40, (const uint8_t *)"X", 1);
    (void)rc; /* wrong: a plugin must stop here */
    host->sink_write(ctx, (const uint8_t *)MARK, strlen(MARK));
    return DUMPCONV_OK;
#elif defined(ERROR_THEN_OK)
    set_error(host, "the bad writer reports a failure and then claims success");
    host->sink_write(ctx, (const uint8_t *)MARK, strlen(MARK));
    return DUMPCONV_OK;
#else
    uint64_t done = 0, total = 0;
    for (size_t i = 0; i < plan->range_count; i++)
        total += plan->ranges[i].end - plan->ranges[i].start;
    for (size_t i = 0; i < plan->range_count; i++) {
        const dumpconv_range *r = &plan->ranges[i];
        uint64_t pos = host->sink_position(ctx);
        if (r->start > pos && host->sink_skip(ctx, r->start - pos) != DUMPCONV_OK)
            return DUMPCONV_ERR_IO;
        for (uint64_t a = r->start; a < r->end; a += sizeof buf) {
            size_t n = r->end - a < sizeof buf ? (size_t)(r->end - a) : sizeof buf;
            if (host->read_phys(ctx, a, buf, n) != DUMPCONV_OK ||
                host->sink_write(ctx, buf, n) != DUMPCONV_OK)
                return DUMPCONV_ERR_IO;
            done += n;
        }
        host->progress(ctx, done, total);
    }
    return DUMPCONV_OK;
#endif
}

static const dumpconv_writer bad_writer = {
    .struct_size = sizeof(dumpconv_writer),
    .extensions = "bad",
    .write = bad_write,
};

static const dumpconv_plugin bad_plugin = {
    .abi_major = ABI_MAJOR,
#ifdef SHORT_DESCRIPTOR
    .struct_size = offsetof(dumpconv_plugin, walker),
#else
    .struct_size = sizeof(dumpconv_plugin),
#endif
    .kind = DUMPCONV_KIND_WRITER,
    .name = "badwriter",
    .version = "0.0.1",
    .description = "a writer that misbehaves on purpose (tests)",
    .writer = &bad_writer,
};

const uint32_t dumpconv_plugin_abi = ABI_SYMBOL;

#ifndef NO_ENTRY
const dumpconv_plugin *dumpconv_plugin_entry(void)
{
    return &bad_plugin;
}
#else
/* Keep the descriptor referenced so the library still looks like a plugin otherwise. */
const dumpconv_plugin *dumpconv_plugin_entry_misspelled(void)
{
    return &bad_plugin;
}
#endif
