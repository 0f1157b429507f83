//! One run: outputs opened first (a bad path fails before anything is
//! registered), signals caught before any side effect, the source opened,
//! privileges dropped, the threads run, then the summary and the exit
//! status.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::reload::reloader;
use super::signals::{catch_signals, handle_signals};
use super::summary::{print_summary, write_json};
use super::threads::execute;
use crate::cli::{Destinations, Output, RunArgs};
use crate::config::{FileConfig, Layered};
use crate::dashboard::view::{namespace_name, Meta};
use crate::metrics::{self, http, Publisher};
use crate::outputs::alerts::AlertSink;
use crate::outputs::{self, Format, Outputs, PacketFile, RowSink};
use crate::pipeline::Plan;
use crate::privsep::files::{self, Handoff, Mode};
use crate::privsep::identity::Identity;
use crate::privsep::rules::RulesHelper;
use crate::privsep::{Helper, Role};
use crate::report;
use crate::stderr::say;
use icmpmon_capture::bpf::BpfOptions;
use icmpmon_capture::kmod::KmodOptions;
use icmpmon_capture::nflog::NflogOptions;
use icmpmon_capture::open::{OpenOptions, SourceKind};
use icmpmon_capture::packet::PacketOptions;
use icmpmon_capture::pipeline::{Stop, StopReason};
use icmpmon_capture::privilege::Capability;
use icmpmon_capture::rules::Ledger;
use icmpmon_capture::source::{stage_losses, SourceEnd};
use icmpmon_core::filter::Filter;

/// Drops every capability but `keep`, which the children started later
/// (the nft/iptables that remove rules) get too; or, when `identity` is to
/// be assumed, but what that takes, for this process only.
fn drop_privileges(keep: &[Capability], identity: Option<&Identity>) -> anyhow::Result<()> {
    use icmpmon_capture::privilege::{drop_all_but, Kept};
    let dropped = match identity {
        Some(_) => drop_all_but(BECOME, Kept::Here),
        None => drop_all_but(keep, Kept::AndChildren),
    }
    .context("cannot drop capabilities")?;
    tracing::info!("{dropped}");
    Ok(())
}

/// What becoming another user takes: kept until then (`Identity::assume`
/// clears them with the uid).
const BECOME: &[Capability] = &[Capability::CAP_SETUID, Capability::CAP_SETGID];

/// The files a run opens again on SIGHUP: the output files, appended to,
/// and the config file, read. Asked once the outputs are open.
fn reopened(dest: &Destinations, config: Option<PathBuf>) -> Handoff {
    let outputs = [&dest.csv, &dest.jsonl, &dest.alerts, &dest.write]
        .into_iter()
        .filter_map(|o| match o {
            Some(Output::File(p)) if outputs::rotates(p) => Some((Mode::Append, p.clone())),
            _ => None,
        });
    let config = config.map(|p| (Mode::Read, p));
    Handoff::new(outputs.chain(config).collect())
}

/// Opens one output (`-`: standard output), empty.
fn open_writer(out: &Output) -> anyhow::Result<(Box<dyn Write + Send>, String)> {
    let (w, name, _) = outputs::open(out, false)?;
    Ok((w, name))
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
                Output::File(p) if outputs::rotates(p) => Some((format, p.clone())),
                _ => None,
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
        bpf: BpfOptions {
            snaplen: args.snaplen,
            ring_bytes: socket_buffer,
            drops: !args.no_drops,
        },
        drops: args.drops,
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

pub(super) fn run(
    args: &RunArgs,
    layered: Option<(Layered, FileConfig)>,
    ledger: &Ledger,
) -> anyhow::Result<ExitCode> {
    let tui = args.wants_tui(io::stdout().is_terminal() && io::stdin().is_terminal());
    if let Some(msg) = args.conflicts(tui) {
        usage_error(msg);
    }
    let dest = args.destinations(tui).unwrap_or_else(|m| usage_error(&m));
    // Before any output is created: an unknown user stops the run here.
    let mut identity = Identity::wanted(args.user.as_deref())?;
    let stop = Stop::new().context("cannot create the stop event")?;
    crate::stderr::stop_on_close(&stop);
    let mut signals = Some(catch_signals()?);
    let groups = layered
        .as_ref()
        .map(|(_, f)| f.groups.clone())
        .unwrap_or_default();
    // Without the dashboard, SIGHUP reloads, when there is something to
    // reload or reopen; otherwise it stops the run, as a hang-up.
    let (reload_tx, reloads) = crossbeam_channel::bounded(1);
    let files = [&dest.csv, &dest.jsonl, &dest.alerts, &dest.write]
        .iter()
        .any(|o| matches!(o, Some(Output::File(_))));
    // (The dashboard reopens nothing: SIGHUP stops it.)
    let config_path = layered
        .as_ref()
        .filter(|_| !tui)
        .map(|(l, _)| l.path.clone());
    let mut on_hup = (!tui && (layered.is_some() || files))
        .then(|| reloader(layered, (reload_tx, reloads.clone())));
    // Outputs first: a bad path fails before anything is registered.
    let (sinks, files, mut out_names) = open_outputs(&dest)?;
    let packets = dest.write.as_ref().map(PacketFile::create).transpose()?;
    if let Some(p) = &packets {
        out_names.push_str(&format!(", packets to {}", p.name()));
    }
    let alerts = dest
        .alerts
        .as_ref()
        .map(open_writer)
        .transpose()?
        .map(|(w, _)| AlertSink::new(w));
    let alerts_file = match &dest.alerts {
        Some(Output::File(p)) if outputs::rotates(p) => Some(p.clone()),
        _ => None,
    };
    let summary_out = dest.summary_json.as_ref().map(open_writer).transpose()?;
    // Root gives its uid up once the source is open; the files it reopens
    // later are then opened by a helper, started while this process still
    // holds what that helper keeps.
    let files_helper = identity
        .as_ref()
        .and_then(|id| {
            let handoff = match tui {
                true => Handoff::default(),
                false => reopened(&dest, config_path),
            };
            files::start_helper(handoff)
                .map_err(|e| {
                    say!(
                        "icmpmon: cannot start the files helper ({e}): files reopened on SIGHUP \
                         are opened as user {}",
                        id.name
                    )
                })
                .ok()
        })
        .flatten();
    // A socket passed by the service manager is the endpoint: the packaged
    // unit listens for icmpmon, which then makes no Internet socket.
    let passed = metrics::passed_listener()?;
    let by_manager = passed.is_some();
    let listener = match passed {
        Some(l) => Some(l),
        None => args.metrics_listen.map(http::bind).transpose()?,
    };
    let metrics = listener.map(|l| (l, Arc::new(metrics::Shared::default())));
    if let Some(Ok(addr)) = metrics.as_ref().map(|(l, _)| l.local_addr()) {
        // The address bound, port 0 resolved: what to scrape.
        let how = if by_manager {
            " (the socket the service manager passed)"
        } else {
            ""
        };
        say!("icmpmon: metrics at http://{addr}/metrics{how}");
    }
    // The dashboard's header names the namespace, which reads
    // /proc/1/ns/net: before any drop.
    // (A capture file's packets are not this namespace's: none is named.)
    let namespace = tui.then(|| match args.source {
        SourceKind::Pcap(_) => String::new(),
        _ => namespace_name(),
    });
    if let SourceKind::Pcap(_) = args.source {
        // A capture file needs no privilege, and its reader may wait for a
        // pipe's writer: drop everything (but what becoming the user takes)
        // and handle signals first.
        drop_privileges(&[], identity.as_ref())?;
        signals
            .take()
            .map(|s| handle_signals(s, stop.clone(), ledger.clone(), on_hup.take()))
            .transpose()?;
    }
    let notice = &mut |n: String| say!("icmpmon: {n}");
    let Some(mut source) = args
        .source
        .open(&open_options(args), &stop, ledger, notice)?
    else {
        say!(
            "icmpmon: {} before the capture started",
            stop.reason().map_or("stopped", StopReason::describe)
        );
        return Ok(ExitCode::SUCCESS);
    };
    // A source with firewall rules hands them to a rules helper, which keeps
    // what they need (verdicts, configuration, removal): this process then
    // keeps nothing either.
    // Without it, the source sends and removes its rules itself, so this
    // process keeps what they need, without the filter, and root's uid.
    let rules_helper = match RulesHelper::start(&*source) {
        Ok(h) => h,
        Err(e) if args.user.is_some() => anyhow::bail!(
            "cannot start the rules helper ({e}): icmpmon would keep CAP_NET_ADMIN, CAP_NET_RAW \
             and root's uid, so it cannot become user {}",
            identity.as_ref().map_or("", |id| id.name.as_str())
        ),
        Err(e) => {
            say!(
                "icmpmon: cannot start the rules helper ({e}): keeping CAP_NET_ADMIN and \
                 CAP_NET_RAW{}, without the seccomp filter",
                if identity.is_some() {
                    " and root's uid"
                } else {
                    ""
                }
            );
            identity = None;
            None
        }
    };
    if let Some(h) = &rules_helper {
        source.hand_over(h.clone());
        ledger.delegate(h.clone());
    }
    let keep = match rules_helper {
        Some(_) => &[],
        None => source.capabilities_kept(),
    };
    // (Capabilities kept without a helper go with root's uid, which the
    // run then keeps too.)
    if let Some(id) = identity.take_if(|_| !keep.is_empty()) {
        if args.user.is_some() {
            anyhow::bail!(
                "the source keeps capabilities: icmpmon cannot become user {}",
                id.name
            );
        }
    }
    // Live sources only: a file's packets are not this host's now. The
    // helper is started while the capabilities it keeps are still held.
    let helper = (source.live() && !args.no_attribution)
        .then(|| {
            Helper::spawn(Role::Attribution)
                .map_err(|e| say!("icmpmon: no attribution: cannot start its helper: {e}"))
                .ok()
        })
        .flatten();
    if let Some(s) = signals.take() {
        drop_privileges(keep, identity.as_ref())?;
        handle_signals(s, stop.clone(), ledger.clone(), on_hup.take())?;
    }
    if let Some(id) = &identity {
        id.assume()?;
        tracing::info!("running as user {}", id.name);
    }
    let helpers: Vec<u32> = helper
        .iter()
        .map(Helper::pid)
        .chain(rules_helper.iter().map(|h| h.pid()))
        .chain(files_helper.as_ref().map(files::Opener::pid))
        .collect();
    let host = source
        .live()
        .then(|| {
            crate::attribution::Host::start(helper)
                .map_err(|e| say!("icmpmon: no kernel counters nor attribution: {e}"))
                .ok()
        })
        .flatten();
    // Held to the end of the run (past the source's own end): their numbers
    // stay taken while the sandbox refuses writes to them.
    let senders = source.senders();
    // Everything is open: from here on this process (every thread) makes
    // only the system calls `sandbox` allows. (Without its rules helper, a
    // source with rules runs nft/iptables itself at the end: not confined.)
    if keep.is_empty() {
        outputs::open_name_socket();
        use std::os::fd::AsRawFd;
        let numbers: Vec<i32> = senders.iter().map(|f| f.as_raw_fd()).collect();
        crate::privsep::sandbox::apply(&helpers, &numbers)?;
        tracing::info!("seccomp filter applied");
    }
    let source_name = source.name();
    let described = source.describe();
    if !tui {
        say!("icmpmon: capturing from {described}, {out_names}; Ctrl-C to stop");
    }
    let watch_stdout = [&dest.csv, &dest.jsonl, &dest.alerts, &dest.write]
        .iter()
        .any(|o| o.as_ref() == Some(&Output::Stdout));
    let outputs = Outputs::new(
        outputs::Opened {
            sinks,
            files,
            alerts,
            alerts_file,
            watch_stdout,
        },
        source_name,
        args.count,
        &stop,
    )?;
    let started = Instant::now();
    let plan = Plan {
        filter: args.filter.clone().unwrap_or_default(),
        config: icmpmon_core::aggregate::Config {
            groups: groups.clone(),
            // Only the dashboard shows recent events: without it, keeping
            // them would cost a quarter of the aggregator's time per event.
            recent_events: if tui {
                icmpmon_core::aggregate::Config::default().recent_events
            } else {
                0
            },
            ..args.aggregate_config()
        },
        count: args.count,
        deadline: args.duration.map(|d| started + d),
        live: source.live(),
        stop: stop.clone(),
        reloads,
        host,
        attribute: !args.no_attribution,
    };
    let ui = namespace.map(|namespace| Meta {
        source: described.clone(),
        namespace,
        caveat: source.caveat().map(str::to_string),
        started,
        filter: plan.filter.text().to_string(),
        groups,
    });
    let capacity = usize::try_from(args.channel_capacity).unwrap_or(usize::MAX);
    let publisher = metrics
        .as_ref()
        .map(|(_, shared)| Publisher::new(shared.clone(), args.metrics_peers as usize));
    // Started after privileges are dropped: its thread keeps none.
    let server = metrics
        .map(|(listener, shared)| http::Server::start(listener, shared, source_name))
        .transpose()?;
    let done = execute(source, (outputs, packets, publisher), plan, capacity, ui);
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
        saved: dest.write.is_some().then_some(tally.packets_written),
        filtered: tally.filtered,
        not_icmp: tally.not_icmp,
        parse_errors: tally.parse_error_total(),
        lost: lost.iter().copied().collect(),
        filter: args.filter.as_ref().map(Filter::text),
        lookups: tally.lookups,
        proc_scans: tally.proc_scans,
        snapshot: &done.snapshot,
    };
    let stopped = match &done.end {
        Err(_) => "capture failed",
        Ok(_) => why.as_str(),
    };
    print_summary(
        &run,
        stopped,
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
        say!("icmpmon: {e:#}");
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
