//! The icmpmon program: wires a source, the pipeline and an exporter
//! together, and owns signals, exit status and the summary.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, Context};
use crossbeam_channel::{Receiver, Sender};

use crate::aggregator::{consume, Dashboard, Live, Outputs, Plan, Reload, Tally, UiCommand};
use crate::cli::{Cli, Command, Destinations, Output, RunArgs};
use crate::config::{self, FileConfig, Layered};
use crate::dashboard::view::{namespace_name, Meta};
use crate::metrics::{self, http, Publisher};
use crate::outputs::alerts::AlertSink;
use crate::outputs::{self, Format, IfNames, RowSink};
use crate::report;
use icmpmon_capture::kmod::{KmodClient, KmodOptions};
use icmpmon_capture::nflog::NflogOptions;
use icmpmon_capture::open::{OpenOptions, Opened, SourceKind};
use icmpmon_capture::packet::PacketOptions;
use icmpmon_capture::pipeline::{self, Stop, StopReason};
use icmpmon_capture::rules::Ledger;
use icmpmon_capture::source::{stage_losses, Counters, Source, SourceEnd};
use icmpmon_core::aggregate::Snapshot;
use icmpmon_core::filter::Filter;

pub fn main() -> ExitCode {
    let (cli, layered) = command_line();
    // A panic anywhere must not leave our firewall rules behind.
    let ledger = Ledger::new();
    let default_hook = std::panic::take_hook();
    let installed = ledger.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(Err(e)) = installed.remove() {
            eprintln!("icmpmon: cannot remove icmpmon's firewall rules: {e}");
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
    result.unwrap_or_else(|e| {
        eprintln!("icmpmon: {e:#}");
        ExitCode::FAILURE
    })
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
            eprintln!("icmpmon: {e}");
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

/// The run's signals, caught from the start: `catch_signals` is called
/// before any side effect (files, rules, a registration), so none can be
/// left behind by an early signal; signals that arrive before
/// `handle_signals` starts the thread wait in signal-hook's queue.
/// `signal-hook` rather than `ctrlc`: a hang-up must be told apart from an
/// interrupt.
fn catch_signals() -> anyhow::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the SIGINT/SIGTERM/SIGHUP handler")
}

/// The first SIGINT/SIGTERM/SIGHUP stops the run cleanly; a second SIGINT
/// or SIGTERM leaves at once (a hang-up often comes with another signal,
/// and must not cut the output short). With `on_hup` (no dashboard, so no
/// terminal to hang up), SIGHUP calls it instead: a reload. Started once
/// capabilities are dropped: capabilities are per thread, and this one runs
/// iptables on the way out.
fn handle_signals(
    mut signals: signal_hook::iterator::Signals,
    stop: Stop,
    ledger: Ledger,
    mut on_hup: Option<Box<dyn FnMut() + Send>>,
) -> anyhow::Result<()> {
    use signal_hook::consts::SIGHUP;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut hits = 0;
            for sig in signals.forever() {
                if let (SIGHUP, Some(reload)) = (sig, on_hup.as_mut()) {
                    reload();
                    continue;
                }
                hits += 1;
                if hits > 1 && sig == SIGHUP {
                    continue;
                }
                if hits == 1 {
                    stop.set(if sig == SIGHUP {
                        StopReason::Hangup
                    } else {
                        StopReason::Signal
                    });
                    eprintln!("icmpmon: stopping (interrupt again to exit at once)");
                } else {
                    eprintln!("icmpmon: second interrupt, exiting now");
                    // No destructors run past exit: remove our firewall
                    // rules, and give the terminal back if the dashboard
                    // has it.
                    if let Some(Err(e)) = ledger.remove() {
                        eprintln!("icmpmon: cannot remove icmpmon's firewall rules: {e}");
                    }
                    icmpmon_tui::restore();
                    std::process::exit(130);
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn drop_privileges(keep: &[icmpmon_capture::privilege::Capability]) -> anyhow::Result<()> {
    let dropped =
        icmpmon_capture::privilege::drop_all_but(keep).context("cannot drop capabilities")?;
    tracing::info!("{dropped}");
    Ok(())
}

/// Opens one output (`-`: standard output), empty.
fn open_writer(out: &Output) -> anyhow::Result<(Box<dyn Write + Send>, String)> {
    let (w, name, _) = outputs::open(out, false)?;
    Ok((w, name))
}

fn write_json(
    mut w: Box<dyn Write + Send>,
    name: &str,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let written = serde_json::to_writer_pretty(&mut w, value)
        .map_err(io::Error::from)
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush());
    match written {
        // Its reader has gone: like a closed row output, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("cannot write the summary to {name}")),
    }
}

/// The row exporters, the files among them (reopened on SIGHUP) and a
/// label.
#[allow(clippy::type_complexity)]
fn open_outputs(
    dest: &Destinations,
) -> anyhow::Result<(
    Vec<Box<dyn RowSink>>,
    Vec<Option<(Format, PathBuf)>>,
    String,
)> {
    let mut sinks = Vec::new();
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (format, out) in [(Format::Csv, &dest.csv), (Format::Jsonl, &dest.jsonl)] {
        if let Some(out) = out {
            let (w, name) = open_writer(out)?;
            sinks.push(outputs::sink(format, w, true));
            files.push(match out {
                Output::File(p) => Some((format, p.clone())),
                Output::Stdout => None,
            });
            names.push(format!("{} to {name}", format.name()));
        }
    }
    if names.is_empty() {
        names.push("no row output".into());
    }
    Ok((sinks, files, names.join(", ")))
}

/// Every source's settings, from the command line.
fn open_options(args: &RunArgs) -> OpenOptions {
    let socket_buffer = usize::try_from(args.socket_buffer).unwrap_or(usize::MAX);
    OpenOptions {
        kmod: KmodOptions {
            snaplen: args.snaplen,
            batch_bytes: args.batch_bytes,
            flush_ms: args.flush_ms,
            socket_buffer,
        },
        packet: PacketOptions {
            interfaces: args.interfaces.clone(),
            snaplen: args.snaplen,
            block_size: args.ring_block_size,
            frames: args.ring_frames,
            timeout_ms: args.ring_timeout,
        },
        nflog: NflogOptions {
            group: args.nflog_group,
            snaplen: args.snaplen,
            socket_buffer,
            threshold: args.nflog_threshold,
            timeout_ms: args.nflog_timeout,
        },
        queue_num: args.queue_num,
        replay: args.replay,
    }
}

fn usage_error(msg: &str) -> ! {
    clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{msg}\n")).exit()
}

/// What SIGHUP does without the dashboard: reads the --config file again
/// (keeping the running settings when it has become bad) and asks the
/// aggregator to apply it and to reopen the output files.
fn reloader(
    layered: Option<(Layered, FileConfig)>,
    (tx, rx): (Sender<Reload>, Receiver<Reload>),
) -> Box<dyn FnMut() + Send> {
    let mut layered = layered;
    Box::new(move || {
        let live = layered.as_mut().and_then(|(l, last)| match l.load() {
            Ok((cli, file)) => {
                let later = config::changed_at_restart(last, &file);
                if !later.is_empty() {
                    eprintln!(
                        "icmpmon: SIGHUP: {} changed in {}: applied at the next start",
                        later.join(", "),
                        l.path.display()
                    );
                }
                let live = Live::of(&cli.run, file.groups.clone());
                *last = file;
                eprintln!("icmpmon: SIGHUP: reloaded {}", l.path.display());
                Some(live)
            }
            Err(e) => {
                eprintln!("icmpmon: SIGHUP: {e}; the running settings stay");
                None
            }
        });
        // One reload waits at most: a newer one replaces it, keeping its
        // settings if this read of the file failed.
        let mut next = Reload { live };
        while let Err(crossbeam_channel::TrySendError::Full(r)) = tx.try_send(next) {
            next = r;
            if let Ok(waiting) = rx.try_recv() {
                next.live = next.live.or(waiting.live);
            }
        }
    })
}

fn run(
    args: &RunArgs,
    layered: Option<(Layered, FileConfig)>,
    ledger: &Ledger,
) -> anyhow::Result<ExitCode> {
    let tui = args.wants_tui(io::stdout().is_terminal() && io::stdin().is_terminal());
    if let Some(msg) = args.conflicts(tui) {
        usage_error(msg);
    }
    let dest = args.destinations(tui).unwrap_or_else(|m| usage_error(&m));
    let stop = Stop::new().context("cannot create the stop event")?;
    let mut signals = Some(catch_signals()?);
    let groups = layered
        .as_ref()
        .map(|(_, f)| f.groups.clone())
        .unwrap_or_default();
    // Without the dashboard, SIGHUP reloads, when there is something to
    // reload or reopen; otherwise it stops the run, as a hang-up.
    let (reload_tx, reloads) = crossbeam_channel::bounded(1);
    let files = [&dest.csv, &dest.jsonl, &dest.alerts]
        .iter()
        .any(|o| matches!(o, Some(Output::File(_))));
    let mut on_hup = (!tui && (layered.is_some() || files))
        .then(|| reloader(layered, (reload_tx, reloads.clone())));
    // Outputs first: a bad path fails before anything is registered.
    let (sinks, files, out_names) = open_outputs(&dest)?;
    let alerts = dest
        .alerts
        .as_ref()
        .map(open_writer)
        .transpose()?
        .map(|(w, _)| AlertSink::new(w));
    let summary_out = dest.summary_json.as_ref().map(open_writer).transpose()?;
    let metrics = args
        .metrics_listen
        .map(|addr| anyhow::Ok((http::bind(addr)?, Arc::new(metrics::Shared::default()))))
        .transpose()?;
    // The dashboard's header names the namespace, which reads
    // /proc/1/ns/net: before any drop.
    let namespace = tui.then(namespace_name);
    if let SourceKind::Pcap(_) = args.source {
        // A capture file needs no privilege, and its reader may wait for a
        // pipe's writer: drop everything and handle signals first.
        drop_privileges(&[])?;
        signals
            .take()
            .map(|s| handle_signals(s, stop.clone(), ledger.clone(), on_hup.take()))
            .transpose()?;
    }
    let Some(Opened { source, notices }) = args.source.open(&open_options(args), &stop, ledger)?
    else {
        eprintln!(
            "icmpmon: {} before the capture started",
            stop.reason().map_or("stopped", StopReason::describe)
        );
        return Ok(ExitCode::SUCCESS);
    };
    for notice in notices {
        eprintln!("icmpmon: {notice}");
    }
    // Live sources only: a file's packets are not this host's now.
    let host = source
        .live()
        .then(|| {
            crate::attribution::Host::start(!args.no_attribution)
                .map_err(|e| eprintln!("icmpmon: no kernel counters nor attribution: {e}"))
                .ok()
        })
        .flatten();
    if let Some(s) = signals.take() {
        drop_privileges(source.capabilities_kept())?;
        handle_signals(s, stop.clone(), ledger.clone(), on_hup.take())?;
    }
    let source_name = source.name();
    let described = source.describe();
    if !tui {
        eprintln!("icmpmon: capturing from {described}, {out_names}; Ctrl-C to stop");
    }
    let watch_stdout = [&dest.csv, &dest.jsonl, &dest.alerts]
        .iter()
        .any(|o| o.as_ref() == Some(&Output::Stdout));
    let outputs = Outputs {
        sinks,
        files,
        alerts_file: match &dest.alerts {
            Some(Output::File(p)) => Some(p.clone()),
            _ => None,
        },
        alerts,
        source: source_name,
        ifnames: IfNames::default(),
        watch_stdout,
    };
    let started = Instant::now();
    let plan = Plan {
        filter: args.filter.clone().unwrap_or_default(),
        config: icmpmon_core::aggregate::Config {
            groups: groups.clone(),
            ..args.aggregate_config()
        },
        count: args.count,
        deadline: args.duration.map(|d| started + d),
        live: source.live(),
        stop: stop.clone(),
        metrics: metrics
            .as_ref()
            .map(|(_, shared)| Publisher::new(shared.clone(), args.metrics_peers as usize)),
        reloads,
        host,
        attribute: !args.no_attribution,
    };
    let ui = namespace.map(|namespace| Meta {
        source: described.clone(),
        namespace,
        started,
        filter: plan.filter.text().to_string(),
        groups,
    });
    let capacity = usize::try_from(args.channel_capacity).unwrap_or(usize::MAX);
    // Started after privileges are dropped: its thread keeps none.
    let server = metrics
        .map(|(listener, shared)| http::Server::start(listener, shared, source_name))
        .transpose()?;
    let done = execute(source, outputs, plan, capacity, ui);
    if let Some(s) = server {
        s.stop();
    }
    let done = done?;

    let why = match &done.end {
        Ok(SourceEnd::Stopped) => stop
            .reason()
            .map_or("stopped", StopReason::describe)
            .to_string(),
        Ok(SourceEnd::Ended(why)) => why.clone(),
        Err(e) => format!("capture failed: {e:#}"),
    };
    let lost = stage_losses(&*done.counters, done.dropped);
    let tally = &done.tally;
    let run = report::Summary {
        source: source_name,
        stopped: &why,
        seconds: started.elapsed().as_secs_f64(),
        rows: tally.rows,
        packets: tally.packets,
        filtered: tally.filtered,
        not_icmp: tally.not_icmp,
        parse_errors: tally.parse_error_total(),
        lost: lost.iter().copied().collect(),
        filter: args.filter.as_ref().map(Filter::text),
        lookups: tally.lookups,
        proc_scans: tally.proc_scans,
        snapshot: &done.snapshot,
    };
    print_summary(
        &run,
        &out_names,
        &lost,
        &done.counters.fields(),
        &tally.parse_errors,
    );
    let summary_error = summary_out.and_then(|(w, name)| write_json(w, &name, &run).err());

    let mut failed = false;
    let errors = [done.end.err(), done.ui.err(), done.finish.err()]
        .into_iter()
        .flatten();
    for e in errors.chain(done.tally.output_error).chain(summary_error) {
        eprintln!("icmpmon: {e:#}");
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What a finished run hands to the summary.
struct Finished {
    end: anyhow::Result<SourceEnd>,
    /// The dashboard's own end (a terminal that failed).
    ui: anyhow::Result<()>,
    /// Completing the row outputs.
    finish: anyhow::Result<()>,
    tally: Tally,
    snapshot: Snapshot,
    counters: Arc<dyn Counters>,
    dropped: u64,
}

/// The run's threads: capture → bounded channel → the aggregator thread,
/// and the dashboard on this thread (`ui`) or a wait for both. Every thread
/// ends through `plan.stop`; a panicking thread sets it too, so the others
/// still wind down (and the firewall rules are removed) before the error
/// is reported.
fn execute(
    source: Box<dyn Source>,
    outputs: Outputs,
    plan: Plan,
    capacity: usize,
    ui: Option<Meta>,
) -> anyhow::Result<Finished> {
    let stop = plan.stop.clone();
    let counters = source.counters();
    // A file's reader waits for the consumer: a deep queue would only hold
    // packets in memory, not absorb bursts.
    let capacity = if source.live() {
        capacity
    } else {
        capacity.min(8)
    };
    let (sink, rx, dropped) = pipeline::channel(capacity);
    let mut plan = plan;
    if let Some(m) = plan.metrics.as_mut() {
        m.set_losses(counters.clone(), dropped.clone());
    }
    let (end, consumed, shown) = thread::scope(|scope| -> anyhow::Result<_> {
        let capture = thread::Builder::new()
            .name("capture".into())
            .spawn_scoped(scope, {
                let stop = stop.clone();
                move || {
                    let _stop_on_panic = stop.on_panic(StopReason::Failed);
                    // Returning drops the sink, which ends the consumer's loop.
                    source.run(sink, &stop)
                }
            })
            .context("cannot start the capture thread")?;
        let mut views = None;
        let dash = ui.map(|meta| {
            let (view_tx, view_rx) = crossbeam_channel::bounded(1);
            let (command_tx, command_rx) = crossbeam_channel::unbounded();
            views = Some((view_rx, command_tx));
            Dashboard::new(view_tx, command_rx, meta, counters.clone(), dropped.clone())
        });
        let aggregator = thread::Builder::new()
            .name("aggregator".into())
            .spawn_scoped(scope, move || consume(rx, outputs, plan, dash));
        let aggregator = match aggregator {
            Ok(a) => a,
            Err(e) => {
                stop.set(StopReason::Failed);
                return Err(anyhow!(e).context("cannot start the aggregator thread"));
            }
        };
        let shown = match views {
            Some((view_rx, filter_tx)) => {
                let shown = show_dashboard(&view_rx, filter_tx, &stop);
                drop(view_rx);
                shown
            }
            None => Ok(()),
        };
        let consumed = aggregator.join();
        let end = capture.join();
        Ok((end, consumed, shown))
    })?;
    let (tally, snapshot, mut outputs) =
        consumed.map_err(|_| anyhow!("the aggregator thread panicked"))?;
    let end = end
        .map_err(|_| anyhow!("the capture thread panicked"))
        .and_then(|r| r.map_err(anyhow::Error::from));
    let finished = match &end {
        Ok(_) => outputs.finish(),
        Err(_) => Ok(()),
    };
    Ok(Finished {
        end,
        ui: shown,
        finish: finished,
        tally,
        snapshot,
        counters,
        dropped: dropped.load(Relaxed),
    })
}

/// Runs the dashboard on this thread until the user quits (or a signal,
/// --count or --duration stops the run), then stops the capture.
fn show_dashboard(
    views: &crossbeam_channel::Receiver<icmpmon_tui::View>,
    commands: crossbeam_channel::Sender<UiCommand>,
    stop: &Stop,
) -> anyhow::Result<()> {
    // A panic here must still stop the capture and aggregator threads,
    // which the scope waits for before the panic goes on.
    let _stop_on_panic = stop.on_panic(StopReason::Failed);
    let ui_stop = stop.clone();
    let peers = commands.clone();
    let controls = icmpmon_tui::Controls {
        validate: Box::new(|s| Filter::parse(s).map(drop).map_err(|e| e.to_string())),
        apply_filter: Box::new(move |f| {
            let _ = commands.send(UiCommand::Filter(f));
        }),
        request_peers: Box::new(move |sort, rows| {
            let _ = peers.send(UiCommand::Peers(sort, rows));
        }),
        should_exit: Box::new(move || ui_stop.is_set()),
    };
    let shown = icmpmon_tui::run(views, controls);
    match shown {
        // The terminal hung up: like SIGHUP, a way to stop.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            stop.set(StopReason::Hangup);
            eprintln!("icmpmon: {e}; stopping");
            Ok(())
        }
        other => {
            stop.set(StopReason::Quit);
            other.context("the dashboard failed")
        }
    }
}

/// The human summary and the machine-readable line on stderr.
fn print_summary(
    run: &report::Summary,
    out_names: &str,
    lost: &[(&'static str, u64)],
    fields: &[(&'static str, u64)],
    parse_errors: &BTreeMap<&'static str, u64>,
) {
    eprint!("{}", report::text(run.snapshot));
    // In pipeline order, unlike the JSON map.
    let losses: Vec<String> = lost.iter().map(|(what, n)| format!("{what} {n}")).collect();
    eprintln!(
        "icmpmon: {}; {} rows ({out_names}) in {:.1} s; lost: {}; parse errors {}; \
         not ICMP {}; filtered out {}",
        run.stopped,
        run.rows,
        run.seconds,
        losses.join(", "),
        run.parse_errors,
        run.not_icmp,
        run.filtered,
    );
    let fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    eprintln!(
        "icmpmon: summary source={} rows={} packets={}{fields} channel_dropped={} \
         parse_errors={} not_icmp={} seconds={:.3} packets_per_s={:.0}",
        run.source,
        run.rows,
        run.packets,
        run.lost.get("channel").copied().unwrap_or(0),
        run.parse_errors,
        run.not_icmp,
        run.seconds,
        run.packets as f64 / run.seconds.max(1e-9),
    );
    for (label, n) in parse_errors {
        eprintln!("icmpmon:   parse error {label}: {n}");
    }
}

/// Whole runs in-process with a fake source: the shutdown paths.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use icmpmon_core::event::{Direction, RawPacket};

    use super::*;
    use crate::outputs::Row;

    /// What the fake source does until (and after) the stop.
    #[derive(Debug, Clone, Copy)]
    enum Behaviour {
        /// Echo requests as fast as the channel takes them, never waiting.
        Flood,
        /// Nothing; after the stop, `linger` before returning.
        Idle { linger: Duration },
    }

    #[derive(Debug)]
    struct Fake(Behaviour);

    #[derive(Debug, Default)]
    struct NoCounters;

    impl Counters for NoCounters {
        fn fields(&self) -> Vec<(&'static str, u64)> {
            vec![]
        }
        fn losses(&self) -> Vec<(&'static str, u64)> {
            vec![]
        }
    }

    /// An IPv4 echo request 10.0.0.1 → 10.0.0.2.
    fn echo_request(seq: u16) -> RawPacket {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[8, 0, 0, 0, 0, 7]);
        p.extend_from_slice(&seq.to_be_bytes());
        RawPacket {
            ts_ns: 1,
            mono_ns: None,
            direction: Direction::Out,
            ifindex: 0,
            orig_len: 28,
            data: p,
        }
    }

    impl Source for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn counters(&self) -> Arc<dyn Counters> {
            Arc::new(NoCounters)
        }
        fn run(
            self: Box<Self>,
            sink: pipeline::PacketSink,
            stop: &Stop,
        ) -> Result<SourceEnd, icmpmon_capture::source::CaptureError> {
            match self.0 {
                Behaviour::Flood => {
                    let mut seq = 0u16;
                    while !stop.is_set() {
                        let batch = (0..64)
                            .map(|_| {
                                seq = seq.wrapping_add(1);
                                echo_request(seq)
                            })
                            .collect();
                        sink.send(batch);
                    }
                }
                Behaviour::Idle { linger } => {
                    let _ = stop.stopped().recv();
                    thread::sleep(linger);
                }
            }
            Ok(SourceEnd::Stopped)
        }
    }

    /// Counts rows; panics at row `panic_at`.
    struct Rows {
        n: Arc<AtomicU64>,
        panic_at: Option<u64>,
    }

    impl RowSink for Rows {
        fn write_row(&mut self, _: &Row) -> io::Result<()> {
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(Some(n) != self.panic_at, "test: a panic in the aggregator");
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn outputs(n: &Arc<AtomicU64>, panic_at: Option<u64>) -> Outputs {
        Outputs {
            sinks: vec![Box::new(Rows {
                n: Arc::clone(n),
                panic_at,
            })],
            files: vec![None],
            alerts: None,
            alerts_file: None,
            source: "fake",
            ifnames: IfNames::default(),
            watch_stdout: false,
        }
    }

    fn plan(stop: &Stop, count: Option<u64>, duration: Option<Duration>) -> Plan {
        Plan {
            filter: Filter::default(),
            config: icmpmon_core::aggregate::Config::default(),
            count,
            deadline: duration.map(|d| Instant::now() + d),
            live: true,
            stop: stop.clone(),
            metrics: None,
            reloads: crossbeam_channel::never(),
            host: None,
            attribute: false,
        }
    }

    /// Runs `execute` on a thread; fails the test instead of hanging.
    fn run_bounded(source: Behaviour, outputs: Outputs, plan: Plan) -> anyhow::Result<Finished> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            let _ = tx.send(execute(Box::new(Fake(source)), outputs, plan, 16, None));
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the run did not end: a wait ignores the stop")
    }

    /// CPU time (ticks) of this process's threads named `name`.
    fn thread_ticks(name: &str) -> u64 {
        let mut sum = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the ")" of comm: utime and stime are 14 and 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            sum += f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
        }
        sum
    }

    /// One test, so that no other run's threads share the names measured.
    #[test]
    fn every_stop_path_ends_the_run() {
        // A panic in the aggregator, under a flood: the run ends and says so.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let err = run_bounded(
            Behaviour::Flood,
            outputs(&n, Some(5)),
            plan(&stop, None, None),
        )
        .err()
        .expect("a panicking aggregator is an error");
        assert!(
            err.to_string().contains("aggregator thread panicked"),
            "{err}"
        );
        assert_eq!(stop.reason(), Some(StopReason::Failed));

        // --count stops a flood that never pauses.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let done = run_bounded(
            Behaviour::Flood,
            outputs(&n, None),
            plan(&stop, Some(10), None),
        )
        .unwrap();
        assert_eq!(done.tally.rows, 10);
        assert_eq!(n.load(Ordering::SeqCst), 10);
        assert_eq!(stop.reason(), Some(StopReason::Count));
        assert!(matches!(done.end, Ok(SourceEnd::Stopped)));

        // A stop from outside (a signal) ends a flood.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let stopper = {
            let stop = stop.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                stop.set(StopReason::Signal);
            })
        };
        let done =
            run_bounded(Behaviour::Flood, outputs(&n, None), plan(&stop, None, None)).unwrap();
        stopper.join().unwrap();
        assert!(done.tally.rows > 0);
        assert_eq!(stop.reason(), Some(StopReason::Signal));

        // --duration: the run ends, and while the source winds down the
        // aggregator waits instead of spinning.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let linger = Duration::from_millis(800);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let p = plan(&stop, None, Some(Duration::from_millis(50)));
        let o = outputs(&n, None);
        thread::spawn(move || {
            let _ = tx.send(execute(
                Box::new(Fake(Behaviour::Idle { linger })),
                o,
                p,
                16,
                None,
            ));
        });
        thread::sleep(Duration::from_millis(200));
        let before = thread_ticks("aggregator");
        thread::sleep(Duration::from_millis(400));
        let spent = thread_ticks("aggregator") - before;
        let done = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
        assert!(matches!(done.end, Ok(SourceEnd::Stopped)));
        assert_eq!(stop.reason(), Some(StopReason::Duration));
        // 400 ms of spinning would be about 40 ticks.
        assert!(
            spent <= 5,
            "the aggregator used {spent} ticks while waiting"
        );
    }
}
