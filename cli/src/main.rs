//! The `dumpconv` command line. All work is done by the `dumpconv` library; this file
//! parses arguments, draws progress and maps errors to exit codes.

/// `println!` for reports on standard output that ends the process quietly when the
/// reader has gone (`dumpconv info X | head`), as a tool in a pipeline should, instead of
/// panicking as std's `println!` does. Defined before the modules so they use it too.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

/// `print!` with the same rule as [`println!`].
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod args;
mod info;
mod plugins;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use dumpconv::{Output, Registry};
use dumpconv_core::Error;

use args::{Cli, Command};

/// Exit codes, documented in `--help` and README.md. Errors carry their own
/// ([`dumpconv_core::ErrorClass`]: 1 input, 2 usage, 3 output, 4 plugin, 5 internal); these
/// two are the ones this file uses directly.
const EXIT_INPUT: u8 = dumpconv_core::ErrorClass::Input.exit_code();
const EXIT_OUTPUT: u8 = dumpconv_core::ErrorClass::Output.exit_code();

/// Standard output cannot be written: a closed pipe ends the run quietly (its reader has
/// what it wanted); anything else is an output error.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("dumpconv: error: cannot write to standard output: {e}");
    std::process::exit(i32::from(EXIT_OUTPUT));
}

fn main() -> ExitCode {
    let args = args::with_default_subcommand(std::env::args_os());
    let (args, mut plugins) = args::take_plugin_args(args);
    let cli = Cli::parse_from(args);
    plugins.paths.extend(cli.plugins.paths);
    plugins.plugin_override |= cli.plugins.plugin_override;
    let done = |r: Result<(), Error>| r.map(|()| 0u8);
    // Generated from the argument definitions alone: no plugin is loaded for them.
    let command = match cli.command {
        Command::Completions(c) => return report(done(completions(c.shell))),
        Command::Man(m) => return report(done(man(m.dir.as_deref()))),
        command => command,
    };
    let result = load_registry(&plugins).and_then(|registry| match command {
        Command::Convert(c) => done(run_convert(c, &registry)),
        Command::Info(i) => done(info::run_info(i, &registry)),
        Command::Translate(t) => done(info::run_translate(t, &registry)),
        Command::Plugins(p) => done(plugins::run_plugins(&p, &registry)),
        // A batch reports its own failures per job; its exit code says whether any failed.
        Command::Batch(b) => run_batch(b, &registry),
        Command::Completions(_) | Command::Man(_) => Ok(0),
    });
    report(result)
}

/// Exit with `result`'s code, printing its error and causes.
fn report(result: Result<u8, Error>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
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
            ExitCode::from(e.class().exit_code())
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
        if let Some(f) = &report.filter {
            for line in f.lines() {
                eprintln!("dumpconv: {line}");
            }
        }
        for k in &report.kernels {
            eprintln!("dumpconv: paging: {k}");
        }
        if let Some(r) = &report.root {
            eprintln!("dumpconv: paging: {r}");
        }
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

/// `dumpconv batch`: Ok(exit code) once the batch ran (1 if a job failed).
fn run_batch(b: args::BatchArgs, registry: &Registry) -> Result<u8, Error> {
    use dumpconv::batch::{self, plan, BatchSettings, PlanSettings};
    let specs = plan::expand_inputs(&b.inputs)?;
    if specs.is_empty() {
        return Err(Error::invalid(
            "no inputs: the directories and patterns given hold no file",
        ));
    }
    let plan_settings = PlanSettings {
        out_dir: b.out_dir.clone(),
        template: b.template.clone(),
        options: b.option_map(),
    };
    let mut jobs = plan::plan(specs, &plan_settings, registry)?;
    if let Some(s) = b.shard {
        jobs = s.select(jobs);
    }
    let mut settings = BatchSettings::new(&b.out_dir);
    if let Some(j) = b.jobs {
        settings.jobs = j as usize;
    }
    settings.max_memory = b.max_memory;
    settings.verify = b.verify;
    settings.force = b.force;
    settings.rehash = b.rehash;
    settings.hash = !b.no_hash;
    settings.shard = b.shard;
    if b.list {
        for (job, d) in jobs.iter().zip(batch::run::decisions(&jobs, &settings)?) {
            let action = match d {
                batch::journal::Decision::Skip(_) => "skip",
                batch::journal::Decision::Run { .. } => "run",
                batch::journal::Decision::Refuse(_) => "refuse",
            };
            println!(
                "{}\t{action}\t{}\t{}",
                job.index,
                job.input.display(),
                job.output.display()
            );
        }
        return Ok(0);
    }
    let bars = progress::BatchBars::new(b.quiet);
    let report = batch::run_batch(registry, jobs, &settings, &bars)?;
    bars.finish();
    if let Some(path) = &b.report {
        report.write_json(path)?;
    }
    if !b.quiet {
        print!("{}", report.table());
    }
    Ok(if report.success() { 0 } else { EXIT_INPUT })
}

/// `dumpconv completions SHELL`: the completion script on standard output.
fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dumpconv", &mut buf);
    print!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// `dumpconv man [--dir DIR]`: dumpconv.1 on standard output, or every page into DIR.
fn man(dir: Option<&std::path::Path>) -> Result<(), Error> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            let failed = |source| Error::Output {
                path: dir.to_path_buf(),
                offset: 0,
                source,
            };
            std::fs::create_dir_all(dir).map_err(failed)?;
            clap_mangen::generate_to(cmd, dir).map_err(failed)
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|source| Error::Output {
                    path: "standard output".into(),
                    offset: 0,
                    source,
                })?;
            print!("{}", String::from_utf8_lossy(&buf));
            Ok(())
        }
    }
}
