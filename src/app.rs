//! The icmpmon program: wires a source, the pipeline and an exporter
//! together, and owns signals, exit status and the summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::capture::kmod::{KmodClient, KmodOptions, KmodSource};
use crate::capture::SourceEnd;
use crate::cli::{Cli, Command, Output, RunArgs};
use crate::event::RawPacket;
use crate::export::csv::CsvExport;
use crate::parse::parse;
use crate::pipeline::{self, StopFlag, StopReason};

/// How often the consumer flushes and checks the clock when idle.
const IDLE_TICK: Duration = Duration::from_millis(200);

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Some(Command::Stats) => stats(),
        None => run(&cli.run),
    };
    result.unwrap_or_else(|e| {
        eprintln!("icmpmon: {e:#}");
        ExitCode::FAILURE
    })
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

/// First signal: stop cleanly. Second: leave at once.
fn install_signal_handler(stop: StopFlag) -> anyhow::Result<()> {
    let hits = AtomicU8::new(0);
    ctrlc::set_handler(move || {
        if hits.fetch_add(1, Relaxed) == 0 {
            stop.set(StopReason::Signal);
            eprintln!("icmpmon: stopping (interrupt again to exit at once)");
        } else {
            eprintln!("icmpmon: second interrupt, exiting now");
            std::process::exit(130);
        }
    })
    .context("cannot install the SIGINT/SIGTERM handler")
}

fn open_output(out: Option<&Output>) -> anyhow::Result<(Box<dyn Write + Send>, String)> {
    Ok(match out {
        None | Some(Output::Stdout) => (Box::new(BufWriter::new(io::stdout())), "stdout".into()),
        Some(Output::File(path)) => {
            let f =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            (Box::new(BufWriter::new(f)), path.display().to_string())
        }
    })
}

fn open_kmod(args: &RunArgs) -> anyhow::Result<KmodSource> {
    let opts = KmodOptions {
        snaplen: args.snaplen,
        batch_bytes: args.batch_bytes,
        flush_ms: args.flush_ms,
        socket_buffer: usize::try_from(args.socket_buffer).unwrap_or(usize::MAX),
    };
    Ok(KmodClient::open()?.register(&opts)?)
}

/// What the consumer saw.
#[derive(Debug, Default)]
struct Tally {
    packets: u64,
    rows: u64,
    parse_errors: BTreeMap<&'static str, u64>,
    output_error: Option<anyhow::Error>,
}

impl Tally {
    fn parse_error_total(&self) -> u64 {
        self.parse_errors.values().sum()
    }
}

fn is_broken_pipe(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == io::ErrorKind::BrokenPipe)
}

/// Parses and exports until the capture side hangs up.
fn consume<W: Write>(
    rx: &Receiver<Vec<RawPacket>>,
    out: &mut CsvExport<W>,
    args: &RunArgs,
    stop: &StopFlag,
    started: Instant,
) -> Tally {
    let mut t = Tally::default();
    let deadline = args.duration.map(|d| started + d);
    // Once the output is done (count reached, closed, failed) keep draining
    // so the source can unregister cleanly, but write nothing more.
    let mut writing = true;
    loop {
        let wait = deadline.map_or(IDLE_TICK, |d| {
            d.saturating_duration_since(Instant::now()).min(IDLE_TICK)
        });
        match rx.recv_timeout(wait) {
            Ok(batch) => {
                for raw in batch {
                    t.packets += 1;
                    let ev = match parse(&raw) {
                        Ok(ev) => ev,
                        Err(e) => {
                            *t.parse_errors.entry(e.label()).or_default() += 1;
                            continue;
                        }
                    };
                    if !writing {
                        continue;
                    }
                    if let Err(e) = out.write(&ev) {
                        writing = false;
                        stop.set(StopReason::OutputClosed);
                        // A closed pipe (`| head`) is a normal way to stop.
                        if !is_broken_pipe(&e) {
                            t.output_error = Some(anyhow!(e).context("cannot write CSV"));
                        }
                        continue;
                    }
                    t.rows += 1;
                    if Some(t.rows) == args.count {
                        writing = false;
                        stop.set(StopReason::Count);
                    }
                }
                if rx.is_empty() && writing {
                    let _ = out.flush();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if writing {
                    let _ = out.flush();
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.set(StopReason::Duration);
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != io::ErrorKind::BrokenPipe && t.output_error.is_none() {
            t.output_error = Some(anyhow!(e).context("cannot write CSV"));
        }
    }
    t
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // Output first: a bad path fails before anything is registered.
    let (writer, out_name) = open_output(args.csv.as_ref())?;
    let mut csv = CsvExport::new(writer, "kmod").context("cannot write the CSV header")?;

    let source = open_kmod(args)?;
    let counters = source.counters();
    eprintln!(
        "icmpmon: capturing from kmod (generic netlink family icmpmon, id {}), CSV to {out_name}; Ctrl-C to stop",
        source.family_id()
    );

    let stop = StopFlag::new();
    install_signal_handler(stop.clone())?;
    let capacity = usize::try_from(args.channel_capacity).unwrap_or(usize::MAX);
    let (sink, rx, dropped) = pipeline::channel(capacity);
    let started = Instant::now();
    let capture = thread::Builder::new()
        .name("capture".into())
        .spawn({
            let stop = stop.clone();
            // Returning drops the sink, which ends the consumer's loop.
            move || source.run(sink, &stop)
        })
        .context("cannot start the capture thread")?;

    let tally = consume(&rx, &mut csv, args, &stop, started);
    let end = capture
        .join()
        .map_err(|_| anyhow!("the capture thread panicked"))?;
    let elapsed = started.elapsed().as_secs_f64();

    let why = match &end {
        Ok(SourceEnd::Stopped) => stop
            .reason()
            .map_or("stopped", StopReason::describe)
            .to_string(),
        Ok(SourceEnd::Ended(why)) => why.clone(),
        Err(e) => format!("capture failed: {e}"),
    };
    let c = &counters;
    eprintln!(
        "icmpmon: {why}; {} rows to {out_name} in {elapsed:.1} s; lost: kernel {}, missing batches {}, \
         socket overruns {}, channel {}; parse errors {}",
        tally.rows,
        c.kernel_lost.load(Relaxed),
        c.missing_batches.load(Relaxed),
        c.socket_overruns.load(Relaxed),
        dropped.load(Relaxed),
        tally.parse_error_total(),
    );
    eprintln!(
        "icmpmon: summary source=kmod rows={} records={} batches={} kernel_lost={} missing_batches={} \
         socket_overruns={} channel_dropped={} bad_batches={} parse_errors={} seconds={elapsed:.3} records_per_s={:.0}",
        tally.rows,
        c.records.load(Relaxed),
        c.batches.load(Relaxed),
        c.kernel_lost.load(Relaxed),
        c.missing_batches.load(Relaxed),
        c.socket_overruns.load(Relaxed),
        dropped.load(Relaxed),
        c.bad_batches.load(Relaxed),
        tally.parse_error_total(),
        c.records.load(Relaxed) as f64 / elapsed.max(1e-9),
    );
    for (label, n) in &tally.parse_errors {
        eprintln!("icmpmon:   parse error {label}: {n}");
    }

    let mut failed = false;
    if let Err(e) = end {
        eprintln!("icmpmon: {e}");
        failed = true;
    }
    if let Some(e) = tally.output_error {
        eprintln!("icmpmon: {e:#}");
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
