//! `dumpconv plugins`: the walkers and writers available, built in and loaded.

use dumpconv::registry::Origin;
use dumpconv::Registry;
use dumpconv_core::plugin::abi::DUMPCONV_ABI_MAJOR;
use dumpconv_core::plugin::host::SUPPORTED_ABI;
use dumpconv_core::Error;
use serde_json::json;

use crate::args::PluginsArgs;

pub fn run_plugins(a: &PluginsArgs, registry: &Registry) -> Result<(), Error> {
    let entries = registry.entries();
    if a.json {
        let v = json!({
            "abi_major": DUMPCONV_ABI_MAJOR,
            "abi_supported": SUPPORTED_ABI,
            "plugins": entries.iter().map(|e| {
                let (origin, abi) = match &e.origin {
                    Origin::BuiltIn => (json!("built-in"), json!(null)),
                    Origin::Library { path, abi_major } => (json!(path), json!(abi_major)),
                };
                let mut o = json!({
                    "kind": e.kind.name(),
                    "name": e.name,
                    "version": e.version,
                    "origin": origin,
                    "abi_major": abi,
                    "description": e.description,
                });
                if !e.modes.is_empty() {
                    o["modes"] = json!(e.modes);
                }
                if !e.arches.is_empty() {
                    o["arches"] = json!(e.arches);
                }
                o
            }).collect::<Vec<_>>(),
            "failed": registry.failed().iter().map(|f| json!({
                "path": f.path,
                "error": f.error,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!(
        "plugin ABI {DUMPCONV_ABI_MAJOR} (loads {})",
        SUPPORTED_ABI.map(|v| v.to_string()).join(", ")
    );
    println!(
        "{:<7} {:<10} {:<9} {:<4} ORIGIN",
        "KIND", "NAME", "VERSION", "ABI"
    );
    for e in &entries {
        let abi = match &e.origin {
            Origin::BuiltIn => "-".to_string(),
            Origin::Library { abi_major, .. } => abi_major.to_string(),
        };
        println!(
            "{:<7} {:<10} {:<9} {:<4} {}",
            e.kind.name(),
            e.name,
            e.version,
            abi,
            e.origin.describe()
        );
        let modes = if e.modes.is_empty() {
            String::new()
        } else if e.arches.is_empty() {
            format!(" (modes: {})", e.modes.join(", "))
        } else {
            format!(
                " (arches: {}; modes: {})",
                e.arches.join(", "),
                e.modes.join(", ")
            )
        };
        println!("        {}{modes}", e.description);
    }
    for f in registry.failed() {
        println!("failed  {}: {}", f.path.display(), f.error);
    }
    Ok(())
}
