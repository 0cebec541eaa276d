//! `midge completions` and `midge man`: shell completion scripts and roff man pages, made
//! from the command line's own definition, so they always match the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Command};
use clap_complete::Shell;

/// `midge completions` options.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// `midge man` options.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// The page of this subcommand (as `pub`, or `bench fanout`) instead of midge's own.
    subcommand: Vec<String>,
    /// Write the pages of midge and of every subcommand (midge.1, midge-pub.1,
    /// midge-bench-fanout.1, ...) into DIR instead of one page on stdout.
    #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
    out: Option<PathBuf>,
}

/// `midge completions SHELL`: prints the script on stdout.
pub(crate) fn completions(args: &CompletionsArgs, mut cli: Command) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "midge", &mut script);
    write_out("completions", &script)
}

/// `midge man [SUBCOMMAND...]` or `midge man --out DIR`.
pub(crate) fn man(args: &ManArgs, cli: Command) -> ExitCode {
    // The `help` subcommand is clap's own: no page of its own.
    let mut cli = cli.disable_help_subcommand(true);
    // Built, so that subcommands have their full names (midge-pub) and inherited settings.
    cli.build();
    if let Some(dir) = &args.out {
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("midge man: cannot create {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
        return match write_pages(&cli, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("midge man: cannot write into {}: {err}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut page = &cli;
    for name in &args.subcommand {
        match page.find_subcommand(name) {
            Some(sub) => page = sub,
            None => {
                let known: Vec<&str> = page.get_subcommands().map(Command::get_name).collect();
                eprintln!(
                    "midge man: {} has no subcommand {name:?} (it has: {})",
                    page.get_display_name().unwrap_or(page.get_name()),
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let mut roff = Vec::new();
    if let Err(err) = man_page(page).render(&mut roff) {
        eprintln!("midge man: {err}");
        return ExitCode::FAILURE;
    }
    write_out("man", &roff)
}

/// The page of `cmd` (a built command), its footer naming midge and its version for
/// subcommands too.
fn man_page(cmd: &Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone()).source(format!("midge {}", env!("CARGO_PKG_VERSION")))
}

/// Writes the page of `cmd` and of each of its subcommands, at every depth, into `dir`.
fn write_pages(cmd: &Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    man_page(cmd).generate_to(dir).map(drop)
}

fn write_out(command: &str, bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("midge {command}: cannot write to stdout: {err}");
            ExitCode::FAILURE
        }
    }
}
