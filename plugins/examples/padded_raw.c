/*
 * padded_raw.c: a dumpconv writer plugin in C, small enough to copy.
 *
 * Format "cpadded" (output names ending in ".padded"): a padded raw image, where the
 * file offset of every byte is its guest-physical address. Holes between RAM ranges are
 * left as sparse holes on a file (zeros on a stream), so the file is exactly as long as
 * the end of the last range written.
 *
 * Build (see README.md):
 *     cc -shared -fPIC -O2 -I core/include plugins/examples/padded_raw.c -o libcpadded.so
 * Use:
 *     dumpconv --plugin ./libcpadded.so guest.elf -o guest.padded
 *
 * The rules this file follows (docs/plugins.md explains them all):
 *  - The descriptor and everything it points to are static: the host keeps pointers to
 *    them for as long as it runs (it never unloads a plugin).
 *  - The plan, its ranges and the host table are borrowed for the duration of write();
 *    never keep a pointer to them after returning.
 *  - Memory the plugin allocates, the plugin frees (here: the copy buffer).
 *  - Before returning an error, call host->set_error with a message.
 *  - After any host callback fails, stop and return an error: the host refuses further
 *    writes and fails the conversion whatever write() returns.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dumpconv_plugin.h"

/* Bytes copied per read_phys/sink_write call; progress is reported once per chunk. */
#define CHUNK_BYTES ((size_t)1 << 20)

/* Give the host the message for the error we are about to return; returns code, for
 * `return fail(host, code, "...", ...)`. The message is copied by the host. */
static int32_t fail(const dumpconv_host *host, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int32_t fail(const dumpconv_host *host, int32_t code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1;
    host->set_error(host->ctx, msg, (size_t)n);
    return code;
}

/* Copy one RAM range [start, end) to the output at file offset start. */
static int32_t copy_range(const dumpconv_host *host, uint64_t start, uint64_t end, uint8_t *buf,
                          uint64_t *done, uint64_t total)
{
    void *ctx = host->ctx;
    uint64_t pos = host->sink_position(ctx);

    /* Ranges are sorted and disjoint, so the output never has to go backwards. */
    if (start < pos)
        return fail(host, DUMPCONV_ERR_INVALID,
                    "plan range at %#" PRIx64 " is below the output position %#" PRIx64,
                    start, pos);
    /* The gap up to this range (or from 0 to the first range) becomes a hole. */
    if (start > pos && host->sink_skip(ctx, start - pos) != DUMPCONV_OK)
        return fail(host, DUMPCONV_ERR_IO, "cannot skip to output offset %#" PRIx64, start);

    for (uint64_t addr = start; addr < end;) {
        size_t n = end - addr < CHUNK_BYTES ? (size_t)(end - addr) : CHUNK_BYTES;
        if (host->read_phys(ctx, addr, buf, n) != DUMPCONV_OK)
            return fail(host, DUMPCONV_ERR_IO,
                        "cannot read %#zx bytes of physical memory at %#" PRIx64, n, addr);
        if (host->sink_write(ctx, buf, n) != DUMPCONV_OK)
            return fail(host, DUMPCONV_ERR_IO,
                        "cannot write %#zx bytes at output offset %#" PRIx64, n, addr);
        addr += n;
        *done += n;
        host->progress(ctx, *done, total);
    }
    return DUMPCONV_OK;
}

/* The writer's entry point: write the whole plan through the host's sink callbacks. */
static int32_t padded_write(const dumpconv_host *host, const dumpconv_plan *plan)
{
    /* plan->ranges are RAM already clipped to --begin/--length. A padded image still
     * starts at physical 0, so clipping only changes what is written, not where. */
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < plan->range_count; i++)
        total += plan->ranges[i].end - plan->ranges[i].start;

    uint8_t *buf = malloc(CHUNK_BYTES);
    if (buf == NULL)
        return fail(host, DUMPCONV_ERR_FAILED, "out of memory (%zu bytes)", CHUNK_BYTES);

    int32_t rc = DUMPCONV_OK;
    for (size_t i = 0; i < plan->range_count && rc == DUMPCONV_OK; i++)
        rc = copy_range(host, plan->ranges[i].start, plan->ranges[i].end, buf, &done, total);

    free(buf); /* we allocated it, we free it */
    return rc;
}

/* Everything below is static: the host keeps these pointers as long as it runs. */
static const dumpconv_writer padded_writer = {
    .struct_size = sizeof(dumpconv_writer),
    .extensions = "padded",
    .write = padded_write,
};

static const dumpconv_plugin padded_plugin = {
    .abi_major = DUMPCONV_ABI_MAJOR,
    .struct_size = sizeof(dumpconv_plugin),
    .kind = DUMPCONV_KIND_WRITER,
    .name = "cpadded",
    .version = "1.0.0",
    .description = "padded raw image written by a C plugin (file offset = physical address)",
    .writer = &padded_writer,
};

/* The host reads this constant from the file before running any of the plugin's code,
 * so a library built against another major version is refused without being called. */
const uint32_t dumpconv_plugin_abi = DUMPCONV_ABI_MAJOR;

const dumpconv_plugin *dumpconv_plugin_entry(void)
{
    return &padded_plugin;
}
