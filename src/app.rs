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

use crate::aggregate::Aggregator;
use crate::capture::kmod::{KmodClient, KmodError, KmodOptions};
use crate::capture::nfqueue::{rules, NfqueueSource};
use crate::capture::pcap::PcapSource;
use crate::capture::{Source, SourceEnd};
use crate::cli::{Cli, Command, Output, RunArgs, SourceSpec};
use crate::event::{IcmpEvent, RawPacket};
use crate::export::alerts::AlertSink;
use crate::export::csv::CsvExport;
use crate::export::jsonl::JsonlExport;
use crate::export::{IfNames, Row, RowSink};
use crate::filter::Filter;
use crate::parse::{parse, ParseError};
use crate::pipeline::{self, StopFlag, StopReason};
use crate::report;

/// How often the consumer flushes and checks the clock when idle.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// While packets keep coming, flush at most this often (a write per packet
/// would cost a syscall each under ping-pong traffic).
const BUSY_FLUSH: Duration = Duration::from_millis(100);

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
            // No destructors run past exit: remove our firewall rules here.
            rules::remove_installed();
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

/// The exporters asked for (CSV to stdout when none is), and a label.
fn open_outputs(args: &RunArgs) -> anyhow::Result<(Vec<Box<dyn RowSink>>, String)> {
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
        (None, None) => Some(Output::Stdout),
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
        SourceSpec::Pcap(path) => Source::Pcap(PcapSource::open(path)?),
    })
}

/// What the consumer saw.
#[derive(Debug, Default)]
struct Tally {
    packets: u64,
    rows: u64,
    /// Well-formed IP packets that are not ICMP (capture files).
    not_icmp: u64,
    /// ICMP messages `--filter` left out.
    filtered: u64,
    parse_errors: BTreeMap<&'static str, u64>,
    output_error: Option<anyhow::Error>,
}

impl Tally {
    fn parse_error_total(&self) -> u64 {
        self.parse_errors.values().sum()
    }
}

/// Every exporter, fed one row per event.
struct Outputs {
    sinks: Vec<Box<dyn RowSink>>,
    alerts: Option<AlertSink>,
    source: &'static str,
    ifnames: IfNames,
}

impl Outputs {
    fn write(&mut self, ev: &IcmpEvent, rtt_us: Option<u64>) -> io::Result<()> {
        let row = Row::new(ev, self.source, self.ifnames.get(ev.ifindex), rtt_us);
        self.sinks.iter_mut().try_for_each(|s| s.write_row(&row))
    }

    /// Alerts are written even once rows are not (--count reached).
    fn alerts(&mut self, agg: &mut Aggregator) -> io::Result<()> {
        let flags = agg.take_alerts();
        match &mut self.alerts {
            Some(a) => flags.iter().try_for_each(|f| a.write(f)),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(a) = &mut self.alerts {
            a.flush()?;
        }
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }
}

/// Wall-clock time in ns since the epoch, the clock of live sources.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The aggregator thread: parses, filters, aggregates and exports until
/// the capture side hangs up. `live`: the clock moves on while idle (loss
/// timeouts); for a file, time is the packets' own.
fn consume(
    rx: &Receiver<Vec<RawPacket>>,
    out: &mut Outputs,
    agg: &mut Aggregator,
    args: &RunArgs,
    stop: &StopFlag,
    started: Instant,
    live: bool,
) -> Tally {
    let filter = args.filter.clone().unwrap_or_default();
    let mut t = Tally::default();
    let deadline = args.duration.map(|d| started + d);
    // Once the output is done (count reached, closed, failed) keep draining
    // so the source can unregister cleanly, but write nothing more.
    let mut writing = true;
    let mut flushed = Instant::now();
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
                        Err(ParseError::NotIcmp(_)) => {
                            t.not_icmp += 1;
                            continue;
                        }
                        Err(e) => {
                            *t.parse_errors.entry(e.label()).or_default() += 1;
                            continue;
                        }
                    };
                    if !writing {
                        continue;
                    }
                    if !filter.matches(&ev) {
                        t.filtered += 1;
                        continue;
                    }
                    let outcome = agg.ingest(&ev);
                    if let Err(e) = out.write(&ev, outcome.rtt_us) {
                        writing = false;
                        stop.set(StopReason::OutputClosed);
                        // A closed pipe (`| head`) is a normal way to stop.
                        if e.kind() != io::ErrorKind::BrokenPipe {
                            t.output_error = Some(anyhow!(e).context("cannot write output"));
                        }
                        continue;
                    }
                    t.rows += 1;
                    if Some(t.rows) == args.count {
                        writing = false;
                        stop.set(StopReason::Count);
                    }
                }
                if let Err(e) = out.alerts(agg) {
                    t.output_error
                        .get_or_insert(anyhow!(e).context("cannot write alerts"));
                }
                if writing && rx.is_empty() && flushed.elapsed() >= BUSY_FLUSH {
                    let _ = out.flush();
                    flushed = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if live {
                    agg.tick(now_ns());
                }
                if writing {
                    let _ = out.flush();
                    flushed = Instant::now();
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.set(StopReason::Duration);
        }
    }
    if live {
        agg.tick(now_ns());
    }
    let alerts = out.alerts(agg);
    if let Err(e) = alerts.and_then(|()| out.flush()) {
        if e.kind() != io::ErrorKind::BrokenPipe && t.output_error.is_none() {
            t.output_error = Some(anyhow!(e).context("cannot write output"));
        }
    }
    t
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // Outputs first: a bad path fails before anything is registered.
    let (sinks, out_names) = open_outputs(args)?;
    let alerts = args
        .alerts
        .as_ref()
        .map(open_writer)
        .transpose()?
        .map(|(w, _)| AlertSink::new(w));
    let summary_out = args.summary_json.as_ref().map(open_writer).transpose()?;
    let source = open_source(args)?;
    let dropped = crate::privilege::drop_all_but(source.capabilities_kept())
        .context("cannot drop capabilities")?;
    tracing::info!("{dropped}");
    let counters = source.counters();
    let source_name = source.name();
    eprintln!(
        "icmpmon: capturing from {}, {out_names}; Ctrl-C to stop",
        source.describe()
    );
    let mut outputs = Outputs {
        sinks,
        alerts,
        source: source_name,
        ifnames: IfNames::default(),
    };
    let live = !matches!(source, Source::Pcap(_));
    let mut agg = Aggregator::new(args.aggregate_config());

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

    let tally = consume(&rx, &mut outputs, &mut agg, args, &stop, started, live);
    let end = capture
        .join()
        .map_err(|_| anyhow!("the capture thread panicked"))?;
    let elapsed = started.elapsed().as_secs_f64();
    let dropped = dropped.load(Relaxed);

    let why = match &end {
        Ok(SourceEnd::Stopped) => stop
            .reason()
            .map_or("stopped", StopReason::describe)
            .to_string(),
        Ok(SourceEnd::Ended(why)) => why.clone(),
        Err(e) => format!("capture failed: {e:#}"),
    };
    let mut losses: Vec<String> = counters
        .losses()
        .iter()
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
    losses.push(format!("channel {dropped}"));
    let snapshot = agg.snapshot();
    eprint!("{}", report::text(&snapshot));
    eprintln!(
        "icmpmon: {why}; {} rows ({out_names}) in {elapsed:.1} s; lost: {}; parse errors {}; \
         not ICMP {}; filtered out {}",
        tally.rows,
        losses.join(", "),
        tally.parse_error_total(),
        tally.not_icmp,
        tally.filtered,
    );
    let fields: String = counters
        .fields()
        .iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    eprintln!(
        "icmpmon: summary source={source_name} rows={} packets={}{fields} channel_dropped={dropped} \
         parse_errors={} not_icmp={} seconds={elapsed:.3} packets_per_s={:.0}",
        tally.rows,
        tally.packets,
        tally.parse_error_total(),
        tally.not_icmp,
        tally.packets as f64 / elapsed.max(1e-9),
    );
    for (label, n) in &tally.parse_errors {
        eprintln!("icmpmon:   parse error {label}: {n}");
    }
    let mut summary_error = None;
    if let Some((w, name)) = summary_out {
        let mut lost: BTreeMap<&'static str, u64> = counters.losses().into_iter().collect();
        lost.insert("channel", dropped);
        let summary = report::Summary {
            source: source_name,
            stopped: &why,
            seconds: elapsed,
            rows: tally.rows,
            packets: tally.packets,
            filtered: tally.filtered,
            not_icmp: tally.not_icmp,
            parse_errors: tally.parse_error_total(),
            lost,
            filter: args.filter.as_ref().map(Filter::text),
            snapshot: &snapshot,
        };
        summary_error = write_json(w, &name, &summary).err();
    }

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
