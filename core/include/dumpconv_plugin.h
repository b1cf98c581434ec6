/*
 * dumpconv_plugin.h: the C ABI of dumpconv plugins (walkers and writers), major version 2.
 *
 * Version 2 is architecture-neutral: an architecture is an ELF e_machine plus a word size
 * (dumpconv_arch), a CPU is its architecture plus a list of named registers (dumpconv_reg:
 * "cr3", "ttbr1_el1", ...), and a walker lists the architectures and mode names it
 * handles. Version 1 (x86 only: CR0/CR3/CR4/EFER and x86 paging-mode numbers) is frozen
 * in v1/dumpconv_plugin.h; dumpconv loads plugins of either version.
 *
 * A plugin is a shared library that exports
 *
 *     const dumpconv_plugin *dumpconv_plugin_entry(void);
 *     const uint32_t dumpconv_plugin_abi;    (= DUMPCONV_ABI_MAJOR; read without running code)
 *
 * The host reads dumpconv_plugin_abi from the file before loading it, then calls the entry,
 * then checks abi_major and struct_size of the descriptor before reading anything else.
 *
 * Rules that never change within a major version:
 *  - Every struct starts with the fields shown; new fields are only ever appended, and
 *    every struct that can grow carries its own struct_size. A reader uses only the fields
 *    that fit in the struct_size it was given.
 *  - Memory is freed by the side that allocated it. Everything the host passes (plan,
 *    CPU states, buffers) is borrowed for the duration of the call. Everything the plugin
 *    returns (descriptor, names, tables) is static and lives as long as the library,
 *    which the host never unloads.
 *  - Functions return DUMPCONV_OK or an error code; before returning an error, call
 *    host->set_error with a message (UTF-8, not NUL-terminated). After a host callback
 *    has failed, the plugin must stop and return an error: the host refuses any further
 *    write and treats the call as failed whatever it returns.
 *  - No exception or unwinding may cross the boundary (the Rust SDK catches panics).
 *  - Host callbacks are thread-safe: during a call, a plugin may call them from several
 *    threads (a writer compressing in parallel reads memory from each). They, and the
 *    host's ctx, are valid only until the plugin function returns; a callback made
 *    after that (from a thread left running) is the plugin's bug and fails with
 *    DUMPCONV_ERR_INVALID. ctx is an opaque handle, not a pointer to dereference.
 *  - Strings in the descriptor are NUL-terminated UTF-8 of at most 4096 bytes;
 *    extensions are names without their dot (letters, digits, '-', '_', '+', at most
 *    16 each). Strings and byte strings in plans are (pointer, length) pairs.
 *
 * The Rust mirror of this header is dumpconv_core::plugin::abi; a test compares every
 * size, offset and constant of the two.
 */
#ifndef DUMPCONV_PLUGIN_H
#define DUMPCONV_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DUMPCONV_ABI_MAJOR 2u
#define DUMPCONV_ENTRY_SYMBOL "dumpconv_plugin_entry"
#define DUMPCONV_ABI_SYMBOL "dumpconv_plugin_abi"

/* Status codes returned by plugin functions and host callbacks. */
#define DUMPCONV_OK 0
#define DUMPCONV_ERR_FAILED 1      /* generic failure; the message says why */
#define DUMPCONV_ERR_INVALID 2     /* the dump's data is unusable (bad table, bad plan) */
#define DUMPCONV_ERR_UNSUPPORTED 3 /* a mode, arch or option this plugin does not handle */
#define DUMPCONV_ERR_IO 4          /* a host callback failed (read outside RAM, sink error) */
#define DUMPCONV_ERR_PANIC 5       /* a panic was caught at the boundary (Rust SDK) */

/* Plugin kinds. */
#define DUMPCONV_KIND_WALKER 1u
#define DUMPCONV_KIND_WRITER 2u

/* ELF machine numbers of architectures dumpconv names (any e_machine may be used). */
#define DUMPCONV_EM_386 3u
#define DUMPCONV_EM_X86_64 62u
#define DUMPCONV_EM_AARCH64 183u
#define DUMPCONV_EM_RISCV 243u

/* dumpconv_cpu_info.mode when the walker cannot tell the CPU's mode. */
#define DUMPCONV_MODE_UNKNOWN (-1)

/* Bounds on a CPU a walker builds through emit_reg. */
#define DUMPCONV_MAX_EMITTED_REGS 256u
#define DUMPCONV_MAX_REG_NAME 64u

/* Log levels for host->log. */
#define DUMPCONV_LOG_ERROR 1u
#define DUMPCONV_LOG_WARN 2u
#define DUMPCONV_LOG_INFO 3u
#define DUMPCONV_LOG_DEBUG 4u

/* Bits of dumpconv_writer.flags. */
/* The format compresses its own data (as kdump does per page): the writer receives the
 * compress, level and threads options itself, and the host never wraps its output in a
 * whole-file zstd or lz4 stream (out.X.zst). Without it, the writer must be able to
 * write to a forward-only sink (no sink_write_at) whenever the output is compressed. */
#define DUMPCONV_WRITER_SELF_COMPRESSING (1u << 0)

/* A byte string borrowed from the host. ptr may be NULL when len is 0. */
typedef struct dumpconv_bytes {
    const uint8_t *ptr;
    size_t len;
} dumpconv_bytes;

/*
 * The host's services for one call. Callbacks that do not apply to the call are NULL:
 * emit_mapping exists only during walk; the sink_* and progress callbacks only during
 * write.
 */
typedef struct dumpconv_host {
    uint32_t struct_size;
    uint32_t reserved;
    void *ctx; /* pass back unchanged as the first argument of every callback */

    /* Copy len bytes of guest-physical memory at addr into buf. Fails (non-zero) if any
     * byte is not RAM in the dump or cannot be read. */
    int32_t (*read_phys)(void *ctx, uint64_t addr, uint8_t *buf, size_t len);
    /* The message for the error the plugin is about to return. */
    void (*set_error)(void *ctx, const char *msg, size_t len);
    /* A message for the user (warnings appear in dumpconv's output). */
    void (*log)(void *ctx, uint32_t level, const char *msg, size_t len);

    /* walk: one virtual-to-physical run; phys .. phys+len must be RAM of the dump. */
    int32_t (*emit_mapping)(void *ctx, uint64_t virt, uint64_t phys, uint64_t len);

    /* write: append bytes to the output. */
    int32_t (*sink_write)(void *ctx, const uint8_t *buf, size_t len);
    /* write: advance the output by len zero bytes (a hole where the output allows). */
    int32_t (*sink_skip)(void *ctx, uint64_t len);
    /* write: overwrite bytes already written; fails on a non-seekable output. */
    int32_t (*sink_write_at)(void *ctx, uint64_t offset, const uint8_t *buf, size_t len);
    /* write: bytes written so far (the current end of the output). */
    uint64_t (*sink_position)(void *ctx);
    /* write: 1 if sink_write_at works (a file), 0 for a stream (pipe, stdout). */
    int32_t (*sink_seekable)(void *ctx);
    /* write: bytes of RAM done, out of the plan's total. */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    /* Appended (read only when struct_size covers it): one register of the CPU that
     * cpu_from_root or roots_from_vmcoreinfo builds; NULL in every other call. name is
     * len bytes, not NUL-terminated; the host copies it. */
    int32_t (*emit_reg)(void *ctx, const char *name, size_t len, uint64_t value);
} dumpconv_host;

/* An architecture: ELF e_machine and word size in bytes (4 or 8). machine 0: unknown. */
typedef struct dumpconv_arch {
    uint16_t machine;
    uint8_t word_size;
    uint8_t reserved;
} dumpconv_arch;

/* One register of a CPU. Names are lowercase ASCII, as dumpconv names them: x86 "rax".."r15",
 * "rip", "rflags", "cr0", "cr2", "cr3", "cr4", "efer", "a20_mask", "cs.selector"...;
 * aarch64 "x0".."x30", "sp", "pc", "pstate", "ttbr0_el1", "ttbr1_el1", "tcr_el1",
 * "sctlr_el1"... A register the dump did not record is absent from the list. */
typedef struct dumpconv_reg {
    dumpconv_bytes name;
    uint64_t value;
} dumpconv_reg;

/* The state of one CPU: its architecture and the registers the dump recorded, in the
 * order recorded. */
typedef struct dumpconv_cpu {
    uint32_t struct_size;
    uint32_t index; /* position in the dump, 0-based */
    dumpconv_arch arch;
    uint32_t reserved;
    const dumpconv_reg *regs;
    size_t reg_count;
} dumpconv_cpu;

/* What a walker says about a CPU (filled by cpu_info; the host sets struct_size). */
typedef struct dumpconv_cpu_info {
    uint32_t struct_size;
    uint32_t paging; /* 1: paging is on (there are mappings to walk); 0: off */
    int32_t mode;    /* index of the CPU's mode in the walker's mode list, or DUMPCONV_MODE_UNKNOWN */
    uint32_t reserved;
    /* First virtual address of the kernel half: a view of several CPUs keeps one CPU's
     * mappings below it and merges every CPU's from it on. */
    uint64_t kernel_start;
} dumpconv_cpu_info;

/* Half-open physical range [start, end). */
typedef struct dumpconv_range {
    uint64_t start;
    uint64_t end;
} dumpconv_range;

typedef struct dumpconv_walk_options {
    uint32_t struct_size;
    uint32_t max_phys_bits;   /* MAXPHYADDR */
    uint64_t clear_mask;      /* bits cleared from entries (AMD SME C-bit) */
    uint64_t max_table_pages; /* give up with an error after reading this many tables */
    /* The dump's RAM ranges, sorted and disjoint, so that a walker can skip and count
     * tables and leaves outside RAM without a failing read_phys. Read only when
     * struct_size covers them. */
    const dumpconv_range *ram;
    size_t ram_count;
} dumpconv_walk_options;

/* Filled by walk. The host sets struct_size; write only the fields that fit. */
typedef struct dumpconv_walk_stats {
    uint32_t struct_size;
    uint32_t reserved;
    uint64_t leaves;
    uint64_t leaves_outside_ram;
    uint64_t table_pages;
    uint64_t tables_outside_ram;
} dumpconv_walk_stats;

/* One entry read by translate. */
typedef struct dumpconv_translation_step {
    const char *level; /* static NUL-terminated level name ("PML4", "L1") */
    uint64_t entry_addr;
    uint64_t entry;
} dumpconv_translation_step;

/* The result of translate. The host sets struct_size, steps/step_capacity and
 * fault/fault_capacity; the plugin fills the rest. */
typedef struct dumpconv_translation {
    uint32_t struct_size;
    uint32_t step_count;    /* out: steps filled (at most step_capacity) */
    dumpconv_translation_step *steps;
    uint32_t step_capacity; /* in */
    uint32_t mapped;        /* out: 1 when phys and page_size hold the answer */
    uint64_t phys;
    uint64_t page_size;
    char *fault;            /* out: why the address is not mapped, or a note; UTF-8 */
    size_t fault_capacity;  /* in: bytes at fault */
    size_t fault_len;       /* out: bytes written at fault */
} dumpconv_translation;

typedef struct dumpconv_walker {
    uint32_t struct_size;
    uint32_t arch_count;
    const dumpconv_arch *arches; /* the architectures this walker handles */
    /* The names of the modes (translation regimes) this walker handles, comma-separated
     * ("32bit,pae,4level,5level"): what --paging-mode accepts and cpu_info's mode indexes. */
    const char *modes;
    /* Walk cpu's page tables; call host->emit_mapping for every mapped run, in any
     * order (the host sorts and merges). */
    int32_t (*walk)(const dumpconv_host *host, const dumpconv_cpu *cpu,
                    const dumpconv_walk_options *opts, dumpconv_walk_stats *stats);
    /* Say whether cpu has paging on, its mode and where its kernel half starts. NULL:
     * every CPU with registers is taken to page, mode unknown, kernel half from the top
     * bit of the word. An error return means "the registers do not say". */
    int32_t (*cpu_info)(const dumpconv_host *host, const dumpconv_cpu *cpu,
                        dumpconv_cpu_info *info);
    /* Optional (NULL: `dumpconv translate` says the walker cannot): translate one
     * address, recording every entry read. A fault is an answer (mapped = 0 and a
     * message), not an error; return an error only when the walk could not be done. */
    int32_t (*translate)(const dumpconv_host *host, const dumpconv_cpu *cpu,
                         const dumpconv_walk_options *opts, uint64_t virt,
                         dumpconv_translation *out);
    /* Appended: read only when struct_size covers them; each may be NULL.
     * Both build a CPU by calling host->emit_reg once per register (the host owns the
     * CPU; at most DUMPCONV_MAX_EMITTED_REGS registers, names of 1 to
     * DUMPCONV_MAX_REG_NAME lowercase ASCII letters, digits, '_' or '.', each once;
     * anything else fails the call). Memory cannot be read (read_phys fails).
     * cpu_from_root: the registers the walker's mode `mode` (mode_len bytes, one of
     * `modes`, not NUL-terminated) needs to walk from page-table root `root`
     * (--cr3/--root ADDR --paging-mode NAME). */
    int32_t (*cpu_from_root)(const dumpconv_host *host, dumpconv_arch arch,
                             const char *mode, size_t mode_len, uint64_t root);
    /* roots_from_vmcoreinfo: the CPU of the kernel's own page-table root, from the
     * VMCOREINFO text (len bytes, KEY=value lines); emitting no register and returning
     * DUMPCONV_OK means "VMCOREINFO does not say". */
    int32_t (*roots_from_vmcoreinfo)(const dumpconv_host *host, dumpconv_arch arch,
                                     const uint8_t *vmcoreinfo, size_t len);
} dumpconv_walker;

typedef struct dumpconv_mapping {
    uint64_t virt;
    uint64_t phys;
    uint64_t len;
} dumpconv_mapping;

/* An ELF note: name without its NUL, type, descriptor. */
typedef struct dumpconv_note {
    dumpconv_bytes name;
    uint32_t n_type;
    uint32_t reserved;
    dumpconv_bytes desc;
} dumpconv_note;

/* A writer option from the command line (--compress zstd => "compress" = "zstd"). */
typedef struct dumpconv_option {
    dumpconv_bytes key;
    dumpconv_bytes value;
} dumpconv_option;

/* What to write: the RAM ranges (already clipped to --begin/--length), the virtual
 * mappings when --paging was given, the notes in output order, the CPUs, VMCOREINFO. */
typedef struct dumpconv_plan {
    uint32_t struct_size;
    dumpconv_arch arch;
    uint64_t page_size;
    const dumpconv_range *ranges;
    size_t range_count;
    const dumpconv_mapping *mappings; /* NULL without --paging */
    size_t mapping_count;
    const dumpconv_note *notes;
    size_t note_count;
    const dumpconv_cpu *cpus;
    size_t cpu_count;
    dumpconv_bytes vmcoreinfo; /* ptr NULL when there is none */
    const dumpconv_option *options;
    size_t option_count;
} dumpconv_plan;

typedef struct dumpconv_writer {
    uint32_t struct_size;
    uint32_t flags; /* DUMPCONV_WRITER_* bits */
    /* Output name extensions this writer claims, comma-separated ("img,bin"), or "". */
    const char *extensions;
    /* Write the whole output through the host's sink callbacks. */
    int32_t (*write)(const dumpconv_host *host, const dumpconv_plan *plan);
} dumpconv_writer;

/* The descriptor returned by dumpconv_plugin_entry. */
typedef struct dumpconv_plugin {
    uint32_t abi_major;   /* DUMPCONV_ABI_MAJOR */
    uint32_t struct_size; /* sizeof(dumpconv_plugin) as the plugin was built */
    uint32_t kind;        /* DUMPCONV_KIND_* */
    uint32_t reserved;
    const char *name;        /* unique among plugins, e.g. "x86" or "toyraw" */
    const char *version;     /* the plugin's own version, e.g. "1.2.0" */
    const char *description; /* one line for `dumpconv plugins` */
    const dumpconv_walker *walker; /* non-NULL iff kind == DUMPCONV_KIND_WALKER */
    const dumpconv_writer *writer; /* non-NULL iff kind == DUMPCONV_KIND_WRITER */
} dumpconv_plugin;

typedef const dumpconv_plugin *(*dumpconv_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* DUMPCONV_PLUGIN_H */
