//! The program's entry: the command line (with its --config file), the
//! subcommands (`stats`, `man`, `completions`), logging, the panic hook
//! that removes firewall rules, and the exit status.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use super::run::run;
use crate::cli::{Cli, Command};
use crate::config::{FileConfig, Layered};
use crate::privsep::Role;
use crate::stderr::say;
use icmpmon_capture::kmod::KmodClient;
use icmpmon_capture::rules::Ledger;

pub fn main() -> ExitCode {
    // A helper process (privsep) serves its role and nothing else.
    match crate::privsep::as_helper(&std::env::args_os().collect::<Vec<_>>()) {
        Some(Ok((Role::Attribution, served))) => {
            crate::attribution::serve(&served);
            return ExitCode::SUCCESS;
        }
        Some(Ok((Role::Rules, served))) => {
            crate::privsep::rules::serve(&served);
            return ExitCode::SUCCESS;
        }
        Some(Ok((Role::Files, served))) => {
            crate::privsep::files::serve(&served);
            return ExitCode::SUCCESS;
        }
        Some(Err(code)) => return code,
        None => {}
    }
    let (cli, layered) = command_line();
    // A panic anywhere must not leave our firewall rules behind.
    let ledger = Ledger::new();
    let default_hook = std::panic::take_hook();
    let installed = ledger.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(Err(e)) = installed.remove() {
            say!("icmpmon: cannot remove icmpmon's firewall rules: {e}");
        }
        default_hook(info);
    }));
    init_logging(cli.verbose);
    let result = match cli.command {
        Some(Command::Stats) => stats(),
        Some(Command::Man) => man(),
        Some(Command::Completions { shell }) => {
            let mut cmd = crate::cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell.generator(), &mut cmd, "icmpmon", &mut script);
            print_document(&script)
        }
        None => run(&cli.run, layered, &ledger),
    };
    let code = result.unwrap_or_else(|e| {
        say!("icmpmon: {e:#}");
        ExitCode::FAILURE
    });
    // Rules still installed (their source failed before removing them, or
    // removing them failed): tried once more, and reported.
    match ledger.remove() {
        Some(Err(e)) => {
            say!("icmpmon: cannot remove icmpmon's firewall rules: {e}");
            ExitCode::FAILURE
        }
        _ => code,
    }
}

/// The command line, with the options of its --config file under it (a
/// bad file is a usage error, exit 2).
fn command_line() -> (Cli, Option<(Layered, FileConfig)>) {
    use clap::FromArgMatches;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = crate::cli::command().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let path = match (&cli.command, &cli.run.config) {
        (None, Some(p)) => p.clone(),
        _ => return (cli, None),
    };
    let layered = Layered::new(path, argv, matches);
    match layered.load() {
        Ok((cli, file)) => (cli, Some((layered, file))),
        Err(e) => {
            say!("icmpmon: {e}");
            std::process::exit(2)
        }
    }
}

/// The manual page, from the same definition as --help (section 8: it
/// needs privileges).
fn man() -> anyhow::Result<ExitCode> {
    let cmd = crate::cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut page)
        .context("cannot render the manual page")?;
    print_document(&page)
}

/// Writes a generated document to standard output; a reader that goes
/// away (`| head`) is a clean end, as for rows.
fn print_document(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let color = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(color)
        .init();
}

fn stats() -> anyhow::Result<ExitCode> {
    let stats = KmodClient::open()?.stats()?;
    for (name, value) in stats.fields() {
        println!("{name:<12} {value}");
    }
    Ok(ExitCode::SUCCESS)
}
