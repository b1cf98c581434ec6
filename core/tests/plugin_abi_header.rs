//! The C header `core/include/dumpconv_plugin.h` and its Rust mirror
//! `dumpconv_core::plugin::abi` describe the same ABI (version 2); so do the frozen
//! version-1 header `core/include/v1/dumpconv_plugin.h` and `abi::v1` plus the structs
//! the versions share.
//!
//! The machine's C compiler builds a program, generated from the header's own text, that
//! prints `sizeof`, `_Alignof` and `offsetof` of every struct and field and the value of
//! every `#define`; the test compares them with `size_of`, `offset_of!` and the consts of
//! the Rust side, and compares every field's type (as written in the header, against
//! `type_name` of the Rust field). Both sides are enumerated from their source text, so a
//! struct, field or constant added on one side only fails the test, as does a field
//! removed, reordered or retyped.
//!
//! Without a C compiler the test is skipped with a reason, unless
//! `DUMPCONV_REQUIRE_GUESTS=1` (the project's test command), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use dumpconv_core::plugin::abi;

const HEADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/dumpconv_plugin.h");
const RUST_MIRROR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/plugin/abi.rs");
const HEADER_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/v1/dumpconv_plugin.h");
const RUST_MIRROR_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/plugin/abi/v1.rs");

// ---------------------------------------------------------------------------------------
// The Rust side.

#[derive(Debug)]
struct RustField {
    name: &'static str,
    offset: usize,
    size: usize,
    /// The field's type spelled as C (see `c_type_of_rust`).
    ty: String,
}

#[derive(Debug)]
struct RustStruct {
    rust_name: &'static str,
    c_name: &'static str,
    size: usize,
    align: usize,
    fields: Vec<RustField>,
}

fn field<S, T>(name: &'static str, offset: usize, _project: fn(S) -> T) -> RustField {
    RustField {
        name,
        offset,
        size: size_of::<T>(),
        ty: c_type_of_rust(std::any::type_name::<T>()),
    }
}

/// One struct of the mirror: its C name and its fields in declaration order. The field
/// list is checked against abi.rs's text, so forgetting one here fails too.
macro_rules! rust_struct {
    ($c:literal, $m:ident :: $S:ident, [$($f:ident),* $(,)?]) => {
        RustStruct {
            rust_name: stringify!($S),
            c_name: $c,
            size: size_of::<abi::$m::$S>(),
            align: align_of::<abi::$m::$S>(),
            fields: vec![$(field(stringify!($f), offset_of!(abi::$m::$S, $f), |s: abi::$m::$S| s.$f)),*],
        }
    };
    ($c:literal, $S:ident, [$($f:ident),* $(,)?]) => {
        RustStruct {
            rust_name: stringify!($S),
            c_name: $c,
            size: size_of::<abi::$S>(),
            align: align_of::<abi::$S>(),
            fields: vec![$(field(stringify!($f), offset_of!(abi::$S, $f), |s: abi::$S| s.$f)),*],
        }
    };
}

fn rust_structs() -> Vec<RustStruct> {
    vec![
        rust_struct!("dumpconv_bytes", Bytes, [ptr, len]),
        rust_struct!(
            "dumpconv_host",
            Host,
            [
                struct_size,
                reserved,
                ctx,
                read_phys,
                set_error,
                log,
                emit_mapping,
                sink_write,
                sink_skip,
                sink_write_at,
                sink_position,
                sink_seekable,
                progress,
                emit_reg,
            ]
        ),
        rust_struct!("dumpconv_arch", Arch, [machine, word_size, reserved]),
        rust_struct!("dumpconv_reg", Reg, [name, value]),
        rust_struct!(
            "dumpconv_cpu",
            Cpu,
            [struct_size, index, arch, reserved, regs, reg_count]
        ),
        rust_struct!(
            "dumpconv_cpu_info",
            CpuInfo,
            [struct_size, paging, mode, reserved, kernel_start]
        ),
        rust_struct!("dumpconv_range", Range, [start, end]),
        rust_struct!(
            "dumpconv_walk_options",
            WalkOptions,
            [
                struct_size,
                max_phys_bits,
                clear_mask,
                max_table_pages,
                ram,
                ram_count
            ]
        ),
        rust_struct!(
            "dumpconv_walk_stats",
            WalkStats,
            [
                struct_size,
                reserved,
                leaves,
                leaves_outside_ram,
                table_pages,
                tables_outside_ram
            ]
        ),
        rust_struct!(
            "dumpconv_translation_step",
            TranslationStep,
            [level, entry_addr, entry]
        ),
        rust_struct!(
            "dumpconv_translation",
            Translation,
            [
                struct_size,
                step_count,
                steps,
                step_capacity,
                mapped,
                phys,
                page_size,
                fault,
                fault_capacity,
                fault_len
            ]
        ),
        rust_struct!(
            "dumpconv_walker",
            Walker,
            [
                struct_size,
                arch_count,
                arches,
                modes,
                walk,
                cpu_info,
                translate,
                cpu_from_root,
                roots_from_vmcoreinfo
            ]
        ),
        rust_struct!("dumpconv_mapping", Mapping, [virt, phys, len]),
        rust_struct!("dumpconv_note", Note, [name, n_type, reserved, desc]),
        rust_struct!("dumpconv_option", PluginOption, [key, value]),
        rust_struct!(
            "dumpconv_plan",
            Plan,
            [
                struct_size,
                arch,
                page_size,
                ranges,
                range_count,
                mappings,
                mapping_count,
                notes,
                note_count,
                cpus,
                cpu_count,
                vmcoreinfo,
                options,
                option_count,
            ]
        ),
        rust_struct!(
            "dumpconv_writer",
            Writer,
            [struct_size, flags, extensions, write]
        ),
        rust_struct!(
            "dumpconv_plugin",
            Plugin,
            [
                abi_major,
                struct_size,
                kind,
                reserved,
                name,
                version,
                description,
                walker,
                writer
            ]
        ),
    ]
}

/// The structs of version 1: its own CPU, walker table and plan, and the structs both
/// versions share.
fn rust_structs_v1() -> Vec<RustStruct> {
    vec![
        rust_struct!("dumpconv_bytes", Bytes, [ptr, len]),
        rust_struct!(
            "dumpconv_host",
            v1::Host,
            [
                struct_size,
                reserved,
                ctx,
                read_phys,
                set_error,
                log,
                emit_mapping,
                sink_write,
                sink_skip,
                sink_write_at,
                sink_position,
                sink_seekable,
                progress,
            ]
        ),
        rust_struct!(
            "dumpconv_cpu",
            v1::Cpu,
            [
                struct_size,
                index,
                arch,
                paging_mode,
                valid,
                reserved,
                cr0,
                cr3,
                cr4,
                efer,
                a20_mask
            ]
        ),
        rust_struct!("dumpconv_range", Range, [start, end]),
        rust_struct!(
            "dumpconv_walk_options",
            WalkOptions,
            [
                struct_size,
                max_phys_bits,
                clear_mask,
                max_table_pages,
                ram,
                ram_count
            ]
        ),
        rust_struct!(
            "dumpconv_walk_stats",
            WalkStats,
            [
                struct_size,
                reserved,
                leaves,
                leaves_outside_ram,
                table_pages,
                tables_outside_ram
            ]
        ),
        rust_struct!(
            "dumpconv_walker",
            v1::Walker,
            [struct_size, mode_count, modes, walk]
        ),
        rust_struct!("dumpconv_mapping", Mapping, [virt, phys, len]),
        rust_struct!("dumpconv_note", Note, [name, n_type, reserved, desc]),
        rust_struct!("dumpconv_option", PluginOption, [key, value]),
        rust_struct!(
            "dumpconv_plan",
            v1::Plan,
            [
                struct_size,
                arch,
                page_size,
                ranges,
                range_count,
                mappings,
                mapping_count,
                notes,
                note_count,
                cpus,
                cpu_count,
                vmcoreinfo,
                options,
                option_count,
            ]
        ),
        rust_struct!(
            "dumpconv_writer",
            Writer,
            [struct_size, flags, extensions, write]
        ),
        rust_struct!(
            "dumpconv_plugin",
            Plugin,
            [
                abi_major,
                struct_size,
                kind,
                reserved,
                name,
                version,
                description,
                walker,
                writer
            ]
        ),
    ]
}

/// A constant's value, integer or string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(i128),
    Str(String),
}

macro_rules! rust_consts {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), Value::from(abi::$name))),*]
    };
    (v1: $($name:ident),* $(,)?) => {
        vec![$((stringify!($name), Value::from(abi::v1::$name))),*]
    };
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}

fn rust_consts() -> Vec<(&'static str, Value)> {
    rust_consts![
        DUMPCONV_ABI_MAJOR,
        DUMPCONV_ENTRY_SYMBOL,
        DUMPCONV_ABI_SYMBOL,
        DUMPCONV_OK,
        DUMPCONV_ERR_FAILED,
        DUMPCONV_ERR_INVALID,
        DUMPCONV_ERR_UNSUPPORTED,
        DUMPCONV_ERR_IO,
        DUMPCONV_ERR_PANIC,
        DUMPCONV_KIND_WALKER,
        DUMPCONV_KIND_WRITER,
        DUMPCONV_EM_386,
        DUMPCONV_EM_X86_64,
        DUMPCONV_EM_AARCH64,
        DUMPCONV_EM_RISCV,
        DUMPCONV_MODE_UNKNOWN,
        DUMPCONV_MAX_EMITTED_REGS,
        DUMPCONV_MAX_REG_NAME,
        DUMPCONV_LOG_ERROR,
        DUMPCONV_LOG_WARN,
        DUMPCONV_LOG_INFO,
        DUMPCONV_LOG_DEBUG,
        DUMPCONV_WRITER_SELF_COMPRESSING,
    ]
}

/// Version 1's constants: its own (abi::v1) and the shared ones.
fn rust_consts_v1() -> Vec<(&'static str, Value)> {
    let mut v = rust_consts![v1:
        DUMPCONV_ABI_MAJOR,
        DUMPCONV_ARCH_X86_64,
        DUMPCONV_ARCH_X86,
        DUMPCONV_PAGING_OFF,
        DUMPCONV_PAGING_32BIT,
        DUMPCONV_PAGING_PAE,
        DUMPCONV_PAGING_4LEVEL,
        DUMPCONV_PAGING_5LEVEL,
        DUMPCONV_CPU_CR0,
        DUMPCONV_CPU_CR3,
        DUMPCONV_CPU_CR4,
        DUMPCONV_CPU_EFER,
        DUMPCONV_CPU_A20,
    ];
    v.extend(rust_consts![
        DUMPCONV_ENTRY_SYMBOL,
        DUMPCONV_ABI_SYMBOL,
        DUMPCONV_OK,
        DUMPCONV_ERR_FAILED,
        DUMPCONV_ERR_INVALID,
        DUMPCONV_ERR_UNSUPPORTED,
        DUMPCONV_ERR_IO,
        DUMPCONV_ERR_PANIC,
        DUMPCONV_KIND_WALKER,
        DUMPCONV_KIND_WRITER,
        DUMPCONV_LOG_ERROR,
        DUMPCONV_LOG_WARN,
        DUMPCONV_LOG_INFO,
        DUMPCONV_LOG_DEBUG,
        DUMPCONV_WRITER_SELF_COMPRESSING,
    ]);
    v
}

/// `abi::EntryFn` spelled as C, for `dumpconv_entry_fn`.
fn rust_entry_fn() -> String {
    c_type_of_rust(std::any::type_name::<abi::EntryFn>())
}

/// Spell a Rust type (as `type_name` prints it) the way `normalize_c_type` spells the
/// header's C type: `*const T` is `const T *`, `Option<fn>` and `fn` are both `fn(..) -> R`
/// (the same ABI; NULL is a valid value of either in C), structs are `dumpconv_snake`.
fn c_type_of_rust(t: &str) -> String {
    let t = t.trim();
    if let Some(inner) = t
        .strip_prefix("core::option::Option<")
        .and_then(|s| s.strip_suffix('>'))
    {
        return c_type_of_rust(inner);
    }
    if let Some(rest) = t.strip_prefix("unsafe extern \"C\" fn(") {
        let close = matching_paren(rest);
        let params = split_top_level(&rest[..close])
            .iter()
            .map(|p| c_type_of_rust(p))
            .collect::<Vec<_>>();
        let ret = match rest[close + 1..].trim().strip_prefix("->") {
            Some(r) => c_type_of_rust(r),
            None => "void".to_string(),
        };
        return format!("fn({}) -> {ret}", params.join(", "));
    }
    if let Some(inner) = t.strip_prefix("*const ") {
        return format!("const {} *", c_type_of_rust(inner));
    }
    if let Some(inner) = t.strip_prefix("*mut ") {
        return format!("{} *", c_type_of_rust(inner));
    }
    let last = t.rsplit("::").next().unwrap_or(t);
    match last {
        "u8" => "uint8_t".into(),
        "u16" => "uint16_t".into(),
        "u32" => "uint32_t".into(),
        "u64" => "uint64_t".into(),
        "i32" => "int32_t".into(),
        "i64" => "int64_t".into(),
        "usize" => "size_t".into(),
        // c_char is an alias of i8 on x86; the header uses char only for text.
        "i8" | "c_char" => "char".into(),
        "c_void" => "void".into(),
        "PluginOption" => "dumpconv_option".into(),
        name => format!("dumpconv_{}", snake_case(name)),
    }
}

fn snake_case(camel: &str) -> String {
    let mut s = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// Index of the `)` closing the parenthesis opened just before `s`.
fn matching_paren(s: &str) -> usize {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' if depth > 0 => depth -= 1,
            ')' => return i,
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {s:?}")
}

/// Split a parameter list at commas outside parentheses and angle brackets.
fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out.into_iter().map(|p| p.trim().to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// The header's text.

#[derive(Debug)]
struct CField {
    name: String,
    ty: String,
}

#[derive(Debug)]
struct Header {
    /// Struct name -> fields in declaration order.
    structs: Vec<(String, Vec<CField>)>,
    /// `#define DUMPCONV_*` name -> value text.
    defines: Vec<(String, String)>,
    /// The type of `dumpconv_entry_fn`.
    entry_fn: String,
}

fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                let end = rest[b..].find("*/").expect("unterminated comment") + b + 2;
                out.push(' ');
                rest = &rest[end..];
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = &rest[l..];
                rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// `const uint8_t*` and `const uint8_t *` both become `const uint8_t *`.
fn normalize_c_type(t: &str) -> String {
    t.replace('*', " * ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A declaration without its trailing `;`: `(type, name)`.
fn parse_declaration(decl: &str) -> (String, String) {
    let decl = decl.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(star) = decl.find("(*") {
        // Function pointer: RET (*NAME)(PARAMS)
        let ret = normalize_c_type(&decl[..star]);
        let after = &decl[star + 2..];
        let close = after.find(')').expect("function pointer name");
        let name = after[..close].trim().to_string();
        let params_text = after[close + 1..].trim();
        let params_text = params_text
            .strip_prefix('(')
            .and_then(|p| p.strip_suffix(')'))
            .unwrap_or_else(|| panic!("parameters of {name}: {params_text:?}"));
        let params = if params_text.trim() == "void" {
            Vec::new()
        } else {
            split_top_level(params_text)
                .iter()
                .map(|p| {
                    // Drop the parameter's name (the header names every parameter).
                    let norm = normalize_c_type(p);
                    let mut toks: Vec<&str> = norm.split(' ').collect();
                    if toks.len() > 1 && is_ident(toks[toks.len() - 1]) {
                        toks.pop();
                    }
                    toks.join(" ")
                })
                .collect()
        };
        return (format!("fn({}) -> {ret}", params.join(", ")), name);
    }
    let norm = normalize_c_type(&decl);
    let (ty, name) = norm.rsplit_once(' ').expect("type and name");
    assert!(is_ident(name), "cannot parse declaration {decl:?}");
    (ty.to_string(), name.to_string())
}

fn parse_header(text: &str) -> Header {
    let code = strip_comments(text);
    let mut defines = Vec::new();
    for line in code.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#define ") {
            let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if !value.trim().is_empty() {
                defines.push((name.to_string(), value.trim().to_string()));
            }
        }
    }
    let mut structs = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("typedef struct ") {
        let after = &rest[at + "typedef struct ".len()..];
        let open = after.find('{').expect("struct body");
        let name = after[..open].trim().to_string();
        let close = after.find('}').expect("end of struct body");
        let body = &after[open + 1..close];
        let fields = body
            .split(';')
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                let (ty, name) = parse_declaration(d);
                CField { name, ty }
            })
            .collect();
        let tail = &after[close + 1..];
        let alias = tail[..tail.find(';').expect("typedef name")].trim();
        assert_eq!(alias, name, "typedef struct {name} is named {alias}");
        structs.push((name, fields));
        rest = tail;
    }
    let entry = code
        .split(';')
        .map(str::trim)
        .find(|d| d.contains("(*dumpconv_entry_fn)"))
        .expect("typedef of dumpconv_entry_fn");
    let (entry_fn, name) = parse_declaration(entry.strip_prefix("typedef ").expect("typedef"));
    assert_eq!(name, "dumpconv_entry_fn");
    Header {
        structs,
        defines,
        entry_fn,
    }
}

/// The `#[repr(C)]` structs of abi.rs and their `pub` fields, from its text.
fn parse_rust_mirror(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    let mut repr_c = false;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[repr(C)]" {
            repr_c = true;
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            let mut fields = Vec::new();
            for l in lines.by_ref() {
                if l.starts_with('}') {
                    break;
                }
                if let Some(f) = l.trim().strip_prefix("pub ") {
                    if let Some((fname, _)) = f.split_once(':') {
                        if is_ident(fname) {
                            fields.push(fname.to_string());
                        }
                    }
                }
            }
            assert!(repr_c, "abi.rs: struct {name} is not #[repr(C)]");
            out.insert(name, fields);
        }
        if !t.starts_with("#[") && !t.starts_with("///") {
            repr_c = false;
        }
    }
    out
}

fn rust_const_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const DUMPCONV_"))
        .filter_map(|rest| rest.split(':').next())
        .map(|n| format!("DUMPCONV_{}", n.trim()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The C compiler's view.

fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(cc);
    }
    let msg = format!("no C compiler ({cc:?} does not run); the header cannot be checked");
    assert!(
        std::env::var("DUMPCONV_REQUIRE_GUESTS").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("SKIP: {msg}");
    None
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Generate, compile and run the program that prints the compiler's layout of every
/// struct and the value of every constant named in `header`.
fn compiler_view(cc: &str, header: &Header, header_path: &str) -> String {
    let mut src = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"dumpconv_plugin.h\"\nint main(void) {\n",
    );
    for (s, fields) in &header.structs {
        src += &format!("printf(\"struct {s} %zu %zu\\n\", sizeof({s}), (size_t)_Alignof({s}));\n");
        for f in fields {
            let n = &f.name;
            src += &format!(
                "printf(\"field {s} {n} %zu %zu\\n\", offsetof({s}, {n}), sizeof((({s} *)0)->{n}));\n"
            );
        }
    }
    for (name, value) in &header.defines {
        if value.starts_with('"') {
            src += &format!("printf(\"define {name} s %s\\n\", {name});\n");
        } else {
            src += &format!("printf(\"define {name} i %lld\\n\", (long long)({name}));\n");
        }
    }
    src += "return 0;\n}\n";

    // One directory per header: the tests of the two versions run in parallel.
    let tag = if header_path.contains("/v1/") {
        "abi-header-v1"
    } else {
        "abi-header"
    };
    let dir = scratch_dir(tag);
    let c = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&c, &src).unwrap();
    let include = Path::new(header_path).parent().unwrap();
    let out = Command::new(cc)
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(include)
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cc} could not compile the layout program {}:\n{}",
        c.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "{} failed", exe.display());
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(run.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------

#[test]
fn header_and_rust_mirror_agree() {
    let Some(cc) = c_compiler() else { return };
    let mirror_text = std::fs::read_to_string(RUST_MIRROR).unwrap();
    check(
        &cc,
        HEADER,
        parse_rust_mirror(&mirror_text),
        &mirror_text,
        rust_structs(),
        rust_consts(),
        (18, 100, 21),
    );
}

/// The frozen version-1 header against `abi::v1` and the shared structs of abi.rs.
#[test]
fn v1_header_and_rust_mirror_agree() {
    let Some(cc) = c_compiler() else { return };
    let v2_text = std::fs::read_to_string(RUST_MIRROR).unwrap();
    let v1_text = std::fs::read_to_string(RUST_MIRROR_V1).unwrap();
    let rust = rust_structs_v1();
    // abi.rs's structs that v1 shares, overlaid with v1.rs's own.
    let mut mirror: BTreeMap<String, Vec<String>> = parse_rust_mirror(&v2_text)
        .into_iter()
        .filter(|(n, _)| rust.iter().any(|s| s.rust_name == n))
        .collect();
    mirror.extend(parse_rust_mirror(&v1_text));
    check(
        &cc,
        HEADER_V1,
        mirror,
        &v1_text,
        rust,
        rust_consts_v1(),
        (13, 80, 27),
    );
}

/// Compare `header_path` with the Rust structs and constants; `mirror` is the
/// `#[repr(C)]` structs of the mirror's source (name -> fields), `const_text` the source
/// whose `DUMPCONV_*` constants must all be compared. `min` guards against a parser that
/// silently finds nothing: (structs, fields, constants).
fn check(
    cc: &str,
    header_path: &str,
    mirror: BTreeMap<String, Vec<String>>,
    const_text: &str,
    rust: Vec<RustStruct>,
    consts: Vec<(&'static str, Value)>,
    min: (usize, usize, usize),
) {
    let header = parse_header(&std::fs::read_to_string(header_path).unwrap());
    let view = compiler_view(cc, &header, header_path);

    let mut problems: Vec<String> = Vec::new();

    // Every struct on each side has a counterpart, and this test's tables cover abi.rs.
    let c_names: BTreeSet<&str> = header.structs.iter().map(|(n, _)| n.as_str()).collect();
    let r_names: BTreeSet<&str> = rust.iter().map(|s| s.c_name).collect();
    for n in c_names.difference(&r_names) {
        problems.push(format!(
            "header struct {n} has no Rust counterpart in this test"
        ));
    }
    for n in r_names.difference(&c_names) {
        problems.push(format!("Rust struct for {n} is not in the header"));
    }
    let table_rust: BTreeSet<&str> = rust.iter().map(|s| s.rust_name).collect();
    for (name, fields) in &mirror {
        match rust.iter().find(|s| s.rust_name == name) {
            None => problems.push(format!("abi.rs struct {name} is not compared by this test")),
            Some(s) => {
                let listed: Vec<&str> = s.fields.iter().map(|f| f.name).collect();
                if listed != fields.iter().map(String::as_str).collect::<Vec<_>>() {
                    problems.push(format!(
                        "abi.rs {name} has fields {fields:?}, this test compares {listed:?}"
                    ));
                }
            }
        }
    }
    for n in &table_rust {
        if !mirror.contains_key(*n) {
            problems.push(format!("abi.rs has no #[repr(C)] struct {n}"));
        }
    }

    // Layout: the compiler's numbers against Rust's.
    let mut c_layout: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut c_consts: BTreeMap<String, Value> = BTreeMap::new();
    for line in view.lines() {
        let w: Vec<&str> = line.splitn(5, ' ').collect();
        match w.as_slice() {
            ["struct", s, size, align] => {
                c_layout.insert(
                    (s.to_string(), String::new()),
                    (size.parse().unwrap(), align.parse().unwrap()),
                );
            }
            ["field", s, f, off, size] => {
                c_layout.insert(
                    (s.to_string(), f.to_string()),
                    (off.parse().unwrap(), size.parse().unwrap()),
                );
            }
            ["define", n, "i", v] => {
                c_consts.insert(n.to_string(), Value::Int(v.parse().unwrap()));
            }
            ["define", n, "s", v] => {
                c_consts.insert(n.to_string(), Value::Str(v.to_string()));
            }
            _ => panic!("unexpected line from the layout program: {line:?}"),
        }
    }
    let mut compared_fields = 0;
    for s in &rust {
        let Some((_, c_fields)) = header.structs.iter().find(|(n, _)| n == s.c_name) else {
            continue;
        };
        let c = c_layout[&(s.c_name.to_string(), String::new())];
        if c != (s.size, s.align) {
            problems.push(format!(
                "{}: C size/align {c:?}, Rust {} {:?}",
                s.c_name,
                s.rust_name,
                (s.size, s.align)
            ));
        }
        let c_order: Vec<&str> = c_fields.iter().map(|f| f.name.as_str()).collect();
        let r_order: Vec<&str> = s.fields.iter().map(|f| f.name).collect();
        if c_order != r_order {
            problems.push(format!(
                "{}: fields in C {c_order:?}, in Rust {r_order:?}",
                s.c_name
            ));
        }
        for rf in &s.fields {
            let Some(cf) = c_fields.iter().find(|f| f.name == rf.name) else {
                continue;
            };
            let (off, size) = c_layout[&(s.c_name.to_string(), rf.name.to_string())];
            if (off, size) != (rf.offset, rf.size) {
                problems.push(format!(
                    "{}.{}: C offset/size {:?}, Rust {:?}",
                    s.c_name,
                    rf.name,
                    (off, size),
                    (rf.offset, rf.size)
                ));
            }
            if cf.ty != rf.ty {
                problems.push(format!(
                    "{}.{}: type in C `{}`, in Rust `{}`",
                    s.c_name, rf.name, cf.ty, rf.ty
                ));
            }
            compared_fields += 1;
        }
    }
    if header.entry_fn != rust_entry_fn() {
        problems.push(format!(
            "dumpconv_entry_fn: C `{}`, Rust EntryFn `{}`",
            header.entry_fn,
            rust_entry_fn()
        ));
    }

    // Constants: same names on both sides (and in abi.rs's text), same values.
    let r_consts: BTreeMap<&str, Value> = consts.iter().cloned().collect();
    for (name, value) in &c_consts {
        match r_consts.get(name.as_str()) {
            None => problems.push(format!("#define {name} has no Rust constant in this test")),
            Some(r) if r != value => {
                problems.push(format!("{name}: C {value:?}, Rust {r:?}"));
            }
            Some(_) => {}
        }
    }
    for name in r_consts.keys() {
        if !c_consts.contains_key(*name) {
            problems.push(format!(
                "Rust constant {name} is not #defined in the header"
            ));
        }
    }
    for name in rust_const_names(const_text) {
        if !r_consts.contains_key(name.as_str()) {
            problems.push(format!(
                "abi.rs constant {name} is not compared by this test"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "{header_path} and dumpconv_core::plugin::abi disagree:\n  {}",
        problems.join("\n  ")
    );
    // Guard against a parser that silently finds nothing.
    assert!(
        c_names.len() >= min.0,
        "structs parsed from the header: {c_names:?}"
    );
    assert!(
        compared_fields >= min.1,
        "only {compared_fields} fields compared"
    );
    assert!(
        c_consts.len() >= min.2,
        "only {} constants compared",
        c_consts.len()
    );
    println!(
        "compared {} structs, {compared_fields} fields, {} constants with {cc}",
        c_names.len(),
        c_consts.len()
    );
}

/// The parsers above find what they must: a field added, removed or retyped in a copy of
/// the header changes what they report (so the comparison cannot pass vacuously).
#[test]
fn header_parser_sees_changes() {
    let text = std::fs::read_to_string(HEADER).unwrap();
    let base = parse_header(&text);
    let fields = |h: &Header, s: &str| -> Vec<(String, String)> {
        h.structs
            .iter()
            .find(|(n, _)| n == s)
            .unwrap()
            .1
            .iter()
            .map(|f| (f.name.clone(), f.ty.clone()))
            .collect()
    };
    let host = fields(&base, "dumpconv_host");
    assert_eq!(
        host[3],
        (
            "read_phys".into(),
            "fn(void *, uint64_t, uint8_t *, size_t) -> int32_t".into()
        )
    );
    let added = parse_header(&text.replace(
        "    size_t reg_count;",
        "    size_t reg_count;\n    uint32_t extra;",
    ));
    assert_eq!(
        fields(&added, "dumpconv_cpu").len(),
        fields(&base, "dumpconv_cpu").len() + 1
    );
    let retyped =
        parse_header(&text.replace("    const char *extensions;", "    char *extensions;"));
    assert_ne!(
        fields(&retyped, "dumpconv_writer"),
        fields(&base, "dumpconv_writer")
    );
    assert_eq!(
        c_type_of_rust(std::any::type_name::<abi::Host>()),
        "dumpconv_host"
    );
}
