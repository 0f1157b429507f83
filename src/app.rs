//! The icmpmon program: wires a source, the pipeline and an exporter
//! together, and owns signals, exit status and the summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::Parser;

use crate::aggregator::{consume, Dashboard, Outputs, Plan};
use crate::cli::{Cli, Command, Output, RunArgs, SourceSpec};
use crate::export::alerts::AlertSink;
use crate::export::csv::CsvExport;
use crate::export::jsonl::JsonlExport;
use crate::export::{IfNames, RowSink};
use crate::report;
use crate::view::{namespace_name, Meta};
use icmpmon_capture::kmod::{KmodClient, KmodError, KmodOptions};
use icmpmon_capture::nfqueue::{rules, NfqueueSource};
use icmpmon_capture::pcap::PcapSource;
use icmpmon_capture::pipeline::{self, StopFlag, StopReason};
use icmpmon_capture::{Source, SourceEnd};
use icmpmon_core::filter::Filter;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panic anywhere must not leave our firewall rules behind.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        rules::remove_installed();
        default_hook(info);
    }));
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
            // No destructors run past exit: remove our firewall rules and
            // give the terminal back here.
            rules::remove_installed();
            icmpmon_tui::restore();
            std::process::exit(130);
        }
    })
    .context("cannot install the SIGINT/SIGTERM handler")
}

/// Opens one output; `-` is standard output.
fn open_writer(out: &Output) -> anyhow::Result<(Box<dyn Write + Send>, String)> {
    Ok(match out {
        Output::Stdout => (Box::new(BufWriter::new(io::stdout())), "stdout".into()),
        Output::File(path) => {
            let f =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            (Box::new(BufWriter::new(f)), path.display().to_string())
        }
    })
}

fn write_json(
    mut w: Box<dyn Write + Send>,
    name: &str,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut w, value)
        .map_err(io::Error::from)
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush())
        .with_context(|| format!("cannot write the summary to {name}"))
}

/// The exporters asked for (headless: CSV to stdout when none is), and a
/// label.
fn open_outputs(args: &RunArgs, headless: bool) -> anyhow::Result<(Vec<Box<dyn RowSink>>, String)> {
    if args.csv == Some(Output::Stdout) && args.jsonl == Some(Output::Stdout) {
        // A usage error, but only visible once both are parsed.
        clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "--csv - and --jsonl - cannot both write to standard output\n",
        )
        .exit();
    }
    let mut sinks: Vec<Box<dyn RowSink>> = Vec::new();
    let mut names = Vec::new();
    let csv = match (&args.csv, &args.jsonl) {
        (None, None) if headless => Some(Output::Stdout),
        (csv, _) => csv.clone(),
    };
    if let Some(out) = &csv {
        let (w, name) = open_writer(out)?;
        sinks.push(Box::new(
            CsvExport::new(w).context("cannot write the CSV header")?,
        ));
        names.push(format!("CSV to {name}"));
    }
    if let Some(out) = &args.jsonl {
        let (w, name) = open_writer(out)?;
        sinks.push(Box::new(JsonlExport::new(w)));
        names.push(format!("JSON lines to {name}"));
    }
    if names.is_empty() {
        names.push("no export".into());
    }
    Ok((sinks, names.join(", ")))
}

fn open_source(args: &RunArgs) -> anyhow::Result<Source> {
    let socket_buffer = usize::try_from(args.socket_buffer).unwrap_or(usize::MAX);
    let kmod_opts = KmodOptions {
        snaplen: args.snaplen,
        batch_bytes: args.batch_bytes,
        flush_ms: args.flush_ms,
        socket_buffer,
    };
    let nfqueue = || NfqueueSource::open(args.queue_num, args.snaplen, socket_buffer);
    Ok(match &args.source {
        SourceSpec::Kmod => Source::Kmod(KmodClient::open()?.register(&kmod_opts)?),
        SourceSpec::Nfqueue => Source::Nfqueue(nfqueue()?),
        SourceSpec::Auto => match KmodClient::open() {
            Ok(client) => Source::Kmod(client.register(&kmod_opts)?),
            Err(KmodError::NotLoaded) => {
                eprintln!("icmpmon: the icmpmon kernel module is not loaded; using NFQUEUE");
                Source::Nfqueue(nfqueue()?)
            }
            Err(e) => return Err(e.into()),
        },
        SourceSpec::Pcap(path) => {
            let pcap = PcapSource::open(path)?;
            Source::Pcap(match args.replay {
                Some(speed) => pcap.with_replay(speed),
                None => pcap,
            })
        }
    })
}

fn usage_error(msg: &str) -> ! {
    clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{msg}\n")).exit()
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let tui = args.wants_tui(io::stdout().is_terminal() && io::stdin().is_terminal());
    if let Some(msg) = args.conflicts(tui) {
        usage_error(msg);
    }
    // Outputs first: a bad path fails before anything is registered.
    let (sinks, out_names) = open_outputs(args, !tui)?;
    let alerts = args
        .alerts
        .as_ref()
        .map(open_writer)
        .transpose()?
        .map(|(w, _)| AlertSink::new(w));
    let summary_out = args.summary_json.as_ref().map(open_writer).transpose()?;
    let source = open_source(args)?;
    // Before the drop: naming the namespace reads /proc/1/ns/net.
    let namespace = namespace_name();
    let dropped = icmpmon_capture::privilege::drop_all_but(source.capabilities_kept())
        .context("cannot drop capabilities")?;
    tracing::info!("{dropped}");
    let counters = source.counters();
    let source_name = source.name();
    let described = source.describe();
    if !tui {
        eprintln!("icmpmon: capturing from {described}, {out_names}; Ctrl-C to stop");
    }
    let mut outputs = Outputs {
        sinks,
        alerts,
        source: source_name,
        ifnames: IfNames::default(),
    };

    let stop = StopFlag::new();
    install_signal_handler(stop.clone())?;
    let live = !matches!(source, Source::Pcap(_));
    let mut capacity = usize::try_from(args.channel_capacity).unwrap_or(usize::MAX);
    if !live {
        // A file's reader waits for the consumer: a deep queue would only
        // hold packets in memory, not absorb bursts.
        capacity = capacity.min(8);
    }
    let (sink, rx, dropped) = pipeline::channel(capacity);
    let started = Instant::now();
    let plan = Plan {
        filter: args.filter.clone().unwrap_or_default(),
        config: args.aggregate_config(),
        count: args.count,
        deadline: args.duration.map(|d| started + d),
        live,
        stop: &stop,
    };
    // Capture thread → aggregator thread (this one when headless) → the
    // dashboard on this thread.
    let (end, (tally, agg)) = thread::scope(|scope| -> anyhow::Result<_> {
        let capture = thread::Builder::new()
            .name("capture".into())
            .spawn_scoped(scope, {
                let stop = stop.clone();
                // Returning drops the sink, which ends the consumer's loop.
                move || source.run(sink, &stop)
            })
            .context("cannot start the capture thread")?;
        let consumed = if tui {
            let meta = Meta {
                source: described.clone(),
                namespace,
                started,
                filter: plan.filter.text().to_string(),
            };
            let (view_tx, view_rx) = crossbeam_channel::bounded(1);
            let (filter_tx, filter_rx) = crossbeam_channel::unbounded();
            let dash = Dashboard::new(view_tx, filter_rx, meta, counters.clone(), dropped.clone());
            let aggregator = thread::Builder::new()
                .name("aggregator".into())
                .spawn_scoped(scope, {
                    let (rx, outputs) = (&rx, &mut outputs);
                    move || consume(rx, outputs, plan, Some(dash))
                })
                .context("cannot start the aggregator thread")?;
            let shown = show_dashboard(&view_rx, filter_tx, &stop);
            drop(view_rx);
            let consumed = aggregator
                .join()
                .map_err(|_| anyhow!("the aggregator thread panicked"))?;
            shown?;
            consumed
        } else {
            consume(&rx, &mut outputs, plan, None)
        };
        let end = capture
            .join()
            .map_err(|_| anyhow!("the capture thread panicked"))?;
        Ok((end, consumed))
    })?;

    let why = match &end {
        Ok(SourceEnd::Stopped) => stop
            .reason()
            .map_or("stopped", StopReason::describe)
            .to_string(),
        Ok(SourceEnd::Ended(why)) => why.clone(),
        Err(e) => format!("capture failed: {e:#}"),
    };
    let lost = counters.stage_losses(dropped.load(Relaxed));
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
        snapshot: &agg.snapshot(),
    };
    print_summary(
        &run,
        &out_names,
        &lost,
        &counters.fields(),
        &tally.parse_errors,
    );
    let summary_error = summary_out.and_then(|(w, name)| write_json(w, &name, &run).err());

    let mut failed = false;
    if let Err(e) = end {
        eprintln!("icmpmon: {e:#}");
        failed = true;
    }
    for e in tally.output_error.iter().chain(&summary_error) {
        eprintln!("icmpmon: {e:#}");
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs the dashboard on this thread until the user quits (or a signal,
/// --count or --duration stops the run), then stops the capture.
fn show_dashboard(
    views: &crossbeam_channel::Receiver<icmpmon_tui::View>,
    filters: crossbeam_channel::Sender<String>,
    stop: &StopFlag,
) -> anyhow::Result<()> {
    let ui_stop = stop.clone();
    let controls = icmpmon_tui::Controls {
        validate: Box::new(|s| Filter::parse(s).map(drop).map_err(|e| e.to_string())),
        apply_filter: Box::new(move |f| {
            let _ = filters.send(f);
        }),
        should_exit: Box::new(move || ui_stop.is_set()),
    };
    let shown = icmpmon_tui::run(views, controls);
    stop.set(StopReason::Quit);
    match shown {
        // The terminal hung up: like SIGHUP, a way to stop.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            eprintln!("icmpmon: {e}; stopping");
            Ok(())
        }
        other => other.context("the dashboard failed"),
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
