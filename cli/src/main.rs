//! The `dumpconv` command line. All work is done by the `dumpconv` library; this file
//! parses arguments, draws progress and maps errors to exit codes.

mod args;
mod info;
mod plugins;
mod progress;

use std::process::ExitCode;

use clap::Parser;
use dumpconv::{Output, Registry};
use dumpconv_core::Error;

use args::{Cli, Command};

/// Exit codes, documented in `--help`.
const EXIT_INPUT: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_OUTPUT: u8 = 3;
const EXIT_PLUGIN: u8 = 4;

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Invalid(_) | Error::Unsupported(_) => EXIT_USAGE,
        Error::Output { .. } => EXIT_OUTPUT,
        Error::Plugin { .. } => EXIT_PLUGIN,
        _ => EXIT_INPUT,
    }
}

fn main() -> ExitCode {
    let args = args::with_default_subcommand(std::env::args_os());
    let (args, mut plugins) = args::take_plugin_args(args);
    let cli = Cli::parse_from(args);
    plugins.paths.extend(cli.plugins.paths);
    plugins.plugin_override |= cli.plugins.plugin_override;
    let result = load_registry(&plugins).and_then(|registry| match cli.command {
        Command::Convert(c) => run_convert(c, &registry),
        Command::Info(i) => info::run_info(i, &registry),
        Command::Translate(t) => info::run_translate(t, &registry),
        Command::Plugins(p) => plugins::run_plugins(&p, &registry),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dumpconv: error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                // Our Display already includes the io::Error text; print deeper causes only.
                if !e.to_string().contains(&s.to_string()) {
                    eprintln!("  caused by: {s}");
                }
                src = s.source();
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The built-ins plus `--plugin` libraries and the plugin directories. Libraries found
/// in directories that cannot be used are warnings.
fn load_registry(p: &args::PluginArgs) -> Result<Registry, Error> {
    let dirs = dumpconv_core::plugin::loader::plugin_dirs_from_env();
    let (registry, warnings) = Registry::with_plugins(&p.paths, &dirs, p.plugin_override)?;
    for w in warnings {
        eprintln!("dumpconv: warning: {w}");
    }
    Ok(registry)
}

fn run_convert(c: args::ConvertArgs, registry: &Registry) -> Result<(), Error> {
    let opts = c.to_options()?;
    let output = Output::parse(&c.output);
    let progress = progress::BarProgress::new(c.quiet);
    let report = dumpconv::pipeline::convert_with(registry, &c.input, &output, &opts, &progress)?;
    if c.verbose {
        eprintln!(
            "dumpconv: {} {} -> {} ({}): {} bytes of RAM in {:.2?}",
            report.input_format,
            c.input.display(),
            output.display_name(),
            report.writer,
            report.memory_bytes,
            report.total_time
        );
        if let Some(w) = &report.walker {
            eprintln!("dumpconv: paging: walker {w}");
        }
        if let Some(w) = &report.walk {
            eprintln!(
                "dumpconv: paging: {} mapping runs from {} leaves, {} table pages read, \
                 {} leaves and {} tables outside RAM skipped, walk {:.2?}",
                report.mappings.unwrap_or(0),
                w.leaves,
                w.table_pages,
                w.leaves_outside_ram,
                w.tables_outside_ram,
                report.walk_time
            );
            for msg in &w.warnings {
                eprintln!("dumpconv: paging: {msg}");
            }
        }
    }
    Ok(())
}
