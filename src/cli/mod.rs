//! Command line (a contract: see docs/architecture.md). Bad values exit
//! with status 2
//! and a message that says what is allowed.

use std::path::PathBuf;
use std::time::Duration;

mod values;

pub use values::Output;
use values::{
    parse_duration, parse_even_group, parse_filter, parse_output, parse_replay, same_file,
};

use clap::{Args, Parser, Subcommand};

use icmpmon_capture::kmod::abi as proto;
use icmpmon_capture::open::SourceKind;
use icmpmon_core::aggregate::Thresholds;
use icmpmon_core::filter::Filter;

const AFTER_HELP: &str = "\
Examples:
  sudo icmpmon                                       # live dashboard (on a terminal)
  sudo icmpmon --csv - --count 20                    # CSV to stdout, 20 rows
  sudo icmpmon -i eth0 --csv icmp.csv                # one interface, until Ctrl-C
  sudo icmpmon --source bpf --csv -                  # the hook without a module (6.4+)
  sudo icmpmon --source nflog --csv -                # netfilter's view (after defrag)
  make -C kmod-hook && sudo make -C kmod-hook install && sudo modprobe icmpmon
  sudo icmpmon --source kmod --csv icmp.csv          # the kernel module
  sudo icmpmon --csv out.csv --duration 30
  icmpmon --source pcap:capture.pcapng --jsonl -     # offline, no root
  icmpmon --source pcap:capture.pcap --replay x10    # dashboard, 10x the recorded pace
  tcpdump -U -w - | icmpmon --source pcap:- --csv -  # live from a pipe
  icmpmon stats                                      # module counters
  sudo icmpmon --filter 'type echo-request and not src 10.0.0.0/8'
  icmpmon --source pcap:f.pcap --summary-json s.json --alerts - --csv /dev/null

Filter language (--filter): host|src|dst ADDR[/LEN], type NAME|NUM
(echo-request, unreachable, time-exceeded, redirect, packet-too-big, ... or
a kind such as port-unreachable), code NUM, family 4|6, dir in|out|drop,
combined with and, or, not and parentheses.

At the end, a summary goes to stderr: echo RTT and loss per peer pair, top
types, errors per quoted flow, anomaly flags and what was lost per stage.

Sources: auto uses the kernel module when it is loaded, else bpf where
the kernel (6.4+, BTF) and the process's capabilities allow, else packet.
bpf hooks netfilter with BPF programs (CAP_BPF, CAP_NET_ADMIN; nothing
pinned, gone when icmpmon exits) and traces the ICMP packets the kernel
drops, with its reason (CAP_PERFMON): rows with direction drop;
packet (AF_PACKET) needs CAP_NET_RAW and changes nothing on the host;
nflog needs CAP_NET_ADMIN and adds firewall rules of its own, removed on
exit; nfqueue holds each ICMP packet until icmpmon lets it through (a
ping -f keeps about a quarter of its rate): use it only when asked to.

Exit status: 0 clean stop (Ctrl-C, SIGTERM, --count, --duration, module
unloaded, the reader of standard output gone, SIGHUP when there is
nothing to reload),
1 runtime error (e.g. module not loaded, missing capability), 2 usage
error (a bad --config file too). A second Ctrl-C exits at once.

Without the dashboard, with --config or output files, SIGHUP reloads
--config (filter, thresholds, peer groups; other options at the next
start) and reopens the --csv, --jsonl and --alerts files, appending:
rotate them with logrotate's `create` and a postrotate `kill -HUP`.

Standard output takes one output: --csv -, --jsonl -, --alerts - and
--summary-json - exclude each other (as do two outputs naming one file).

A row with direction drop is a message the kernel dropped: drop_reason is
the kernel's name for why (NETFILTER_DROP, IP_RPFILTER, ...), info the
function that dropped it.

Each CSV row is one ICMP/ICMPv6 message, with these columns (schema v3;
JSON lines have the same fields):
timestamp,source,direction,ifname,family,src,dst,icmp_type,icmp_code,kind,
id,seq,ttl,length,rtt_us,inner_proto,inner_src,inner_dst,inner_sport,
inner_dport,info,pid,comm,cgroup,drop_reason";

/// `--version`: the version, the commit it was built from, the sources
/// (from `SourceKind`, so a new source shows up by itself).
fn long_version() -> &'static str {
    let text = format!(
        "{} (commit {})\nsources: {}",
        env!("CARGO_PKG_VERSION"),
        env!("ICMPMON_GIT_COMMIT"),
        SourceKind::NAMES.join(", ")
    );
    // Once per process: clap keeps `&'static str`s.
    Box::leak(text.into_boxed_str())
}

/// The command line's definition, with what clap's derive cannot hold.
pub(crate) fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command().long_version(long_version())
}

/// `--metrics-peers`' default: per-peer series for a few pairs, as a host
/// usually pings a few targets.
pub(crate) const PEERS_DEFAULT: u32 = 10;

#[derive(Debug, Parser)]
#[command(
    name = "icmpmon",
    version,
    about = "Monitor ICMP and ICMPv6 on this host",
    long_about = "Monitor ICMP and ICMPv6 on this host.\n\n\
        Packets come from the icmpmon kernel module (a netfilter hook, over generic \
        netlink), from AF_PACKET or NFLOG (passive, no module needed), from NFQUEUE \
        (inline, on request) or from a capture file. icmpmon \
        pairs echo requests and replies (RTT, loss per peer pair), ties ICMP errors \
        to the flows they quote and raises anomaly flags. On a terminal it shows a \
        live dashboard; with --csv/--jsonl it writes one row per message. On quit \
        (q, Ctrl-C, SIGTERM) it unregisters, flushes its output and prints a summary \
        on stderr.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    // `--duration -1` is a bad value, not an unknown option.
    allow_negative_numbers = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the kernel module's counters for this network namespace.
    ///
    /// Run it as root: like /proc/net/icmpmon, the module answers only
    /// CAP_NET_ADMIN in the initial user namespace.
    Stats,
    /// Print the manual page (roff) on standard output, e.g.
    /// `icmpmon man > /usr/share/man/man8/icmpmon.8`.
    Man,
    /// Print a completion script for SHELL, e.g.
    /// `icmpmon completions bash > /etc/bash_completion.d/icmpmon`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// The outputs of a run, checked by `RunArgs::destinations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    pub csv: Option<Output>,
    pub jsonl: Option<Output>,
    pub alerts: Option<Output>,
    pub summary_json: Option<Output>,
    pub write: Option<Output>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read options from a TOML file: each key a long option (flood-pps =
    /// 500, headless = true, interface = ["eth0"]), plus [peer-groups]
    /// ("10.0.0.0/8" = "dc1") for the metrics and the dashboard. The
    /// command line wins. Headless, SIGHUP reloads the filter, thresholds
    /// and groups, and reopens the output files.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Packet source: auto (the kernel module if loaded, else bpf where it
    /// can run, else packet); kmod; bpf (BPF netfilter programs, Linux
    /// 6.4+, CAP_BPF and CAP_NET_ADMIN; traces drops too); packet
    /// (AF_PACKET, passive, CAP_NET_RAW); nflog (netfilter
    /// log, passive, CAP_NET_ADMIN, adds its own firewall rules); nfqueue
    /// (inline: every ICMP packet waits for icmpmon, which costs a flood
    /// about 3/4 of its rate; only when named); or pcap:PATH (a pcap/pcapng
    /// file or pipe, read as a stream; - is standard input; no privileges).
    #[arg(long, value_name = "SOURCE", default_value = "auto", value_parser = SourceKind::parse)]
    pub source: SourceKind,
    /// Trace the ICMP packets the kernel drops, with its reason (rows with
    /// direction drop), beside a live source other than bpf: BPF on
    /// kfree_skb, needs CAP_BPF and CAP_PERFMON. The bpf source does this
    /// unless --no-drops.
    #[arg(long, conflicts_with = "no_drops")]
    pub drops: bool,
    /// With the bpf source: no drop tracing.
    #[arg(long)]
    pub no_drops: bool,
    /// Capture on interface NAME only (repeatable; packet source, which
    /// auto then picks). Default: every interface of the namespace.
    #[arg(long = "interface", short = 'i', value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// No dashboard: export only. The default unless standard output is
    /// a terminal and neither --csv nor --jsonl is given.
    #[arg(long, conflicts_with = "tui")]
    pub headless: bool,
    /// The live dashboard, even with --csv/--jsonl (written to files).
    #[arg(long)]
    pub tui: bool,
    /// With --source pcap:PATH: hand packets on at their recorded pace
    /// (realtime) or N times faster (xN, e.g. x10), for demos.
    #[arg(long, value_name = "realtime|xN", value_parser = parse_replay)]
    pub replay: Option<f64>,
    /// Write CSV rows to PATH, or to standard output with -. Headless with
    /// no output given (and no --metrics-listen), CSV goes to standard
    /// output.
    #[arg(long, value_name = "PATH|-", value_parser = parse_output)]
    pub csv: Option<Output>,
    /// Write JSON lines (the CSV's fields and names) to PATH, or to
    /// standard output with -.
    #[arg(long, value_name = "PATH|-", value_parser = parse_output)]
    pub jsonl: Option<Output>,
    /// Only messages matching EXPR reach the rows, the statistics and the
    /// alerts (language below).
    #[arg(long, value_name = "EXPR", value_parser = parse_filter)]
    pub filter: Option<Filter>,
    /// Write anomaly alerts as JSON lines to PATH, or to standard output
    /// with -.
    #[arg(long, value_name = "PATH|-", value_parser = parse_output)]
    pub alerts: Option<Output>,
    /// Save the ICMP packets the run keeps (after --filter) to FILE, as
    /// tcpdump -w does: pcapng (with each packet's interface and
    /// direction), or pcap when FILE ends in .pcap; - is standard output
    /// (pcapng). Reopened on SIGHUP like the other outputs.
    #[arg(long, value_name = "FILE|-", value_parser = parse_output)]
    pub write: Option<Output>,
    /// Do not name the local process (pid, comm, cgroup) of the flow an
    /// ICMP error quotes or of the socket an echo request left from. With
    /// it on (live sources), rows wait up to 0.5 s for the lookup, made by
    /// a helper process from the kernel's socket tables and /proc; other
    /// users' processes need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (root
    /// has them; else: "hidden"), which only the helper keeps.
    #[arg(long)]
    pub no_attribution: bool,
    /// Started as root, become USER once the source is open, as tcpdump
    /// -Z does: the process that parses packets then holds neither a
    /// capability nor root's uid, and the output files it reopens on
    /// SIGHUP are opened by a small helper that keeps root's uid. Default:
    /// the user icmpmon if there is one, else nobody; --user root keeps
    /// root's uid.
    #[arg(long, short = 'Z', value_name = "USER")]
    pub user: Option<String>,
    /// Write the end-of-run summary as JSON to PATH (- for stdout).
    #[arg(long, value_name = "PATH|-", value_parser = parse_output)]
    pub summary_json: Option<Output>,
    /// Serve OpenMetrics for Prometheus at http://ADDR:PORT/metrics (e.g.
    /// 127.0.0.1:9798, or [::]:9798 for every address). With --headless
    /// and no --csv/--jsonl, nothing else is written: a daemon.
    #[arg(long, value_name = "ADDR:PORT", help_heading = "Metrics")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Peer pairs with their own series in the metrics (those with the most
    /// echo requests; one idle for 5 minutes gives its place up); the rest
    /// are summed as requester="other". Bounds the number of series.
    #[arg(long, value_name = "N", default_value_t = PEERS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=100_000), help_heading = "Metrics")]
    pub metrics_peers: u32,
    /// Stop after N rows.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after SECS seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Bytes kept of each packet, from its IP header.
    #[arg(long, value_name = "N", default_value_t = proto::SNAPLEN_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(proto::SNAPLEN_MIN)..=i64::from(proto::SNAPLEN_MAX)))]
    pub snaplen: u32,
    /// Kernel batch size in bytes (kmod source).
    ///
    /// The module sends at most two pages per batch (7852 bytes of records
    /// with 4 KiB pages; larger sizes, the default too, are served in
    /// batches of that size): it allocates them where it may not sleep.
    #[arg(long, value_name = "BYTES", default_value_t = proto::BATCH_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(proto::BATCH_BYTES_MIN)..=i64::from(proto::BATCH_BYTES_MAX)),
          help_heading = "Kernel module")]
    pub batch_bytes: u32,
    /// Longest time a record waits in a partial kernel batch, in ms.
    #[arg(long, value_name = "MS", default_value_t = proto::FLUSH_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(proto::FLUSH_MS_MIN)..=i64::from(proto::FLUSH_MS_MAX)),
          help_heading = "Kernel module")]
    pub flush_ms: u32,
    /// Netlink receive buffer in bytes, and the bpf source's ring buffer
    /// (rounded up to a power of two): larger absorbs longer bursts.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20,
          value_parser = clap::value_parser!(u64).range(65536..=1 << 30))]
    pub socket_buffer: u64,
    /// Size of one block of the packet ring, in bytes (a multiple of the
    /// page size). The kernel hands a block over when it is full or when
    /// --ring-timeout passes.
    #[arg(long, value_name = "BYTES", default_value_t = icmpmon_capture::packet::BLOCK_SIZE_DEFAULT,
          value_parser = clap::value_parser!(u32).range(4096..=1 << 30), help_heading = "AF_PACKET")]
    pub ring_block_size: u32,
    /// Size of the packet ring, in 2 KiB frames (8192: 16 MiB). Larger
    /// absorbs longer bursts while icmpmon is busy.
    #[arg(long, value_name = "N", default_value_t = icmpmon_capture::packet::FRAMES_DEFAULT,
          value_parser = clap::value_parser!(u32).range(16..=1 << 20), help_heading = "AF_PACKET")]
    pub ring_frames: u32,
    /// Longest time a partly filled ring block waits before it is handed
    /// over, in ms (timestamps come from the kernel: RTTs do not change).
    #[arg(long, value_name = "MS", default_value_t = icmpmon_capture::packet::TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=10_000), help_heading = "AF_PACKET")]
    pub ring_timeout: u32,
    /// First of the two NFLOG groups icmpmon binds (in; out is the next),
    /// an even number. Default: the first free pair from 7710.
    #[arg(long, value_name = "N", value_parser = parse_even_group, help_heading = "NFLOG")]
    pub nflog_group: Option<u16>,
    /// Incoming packets per NFLOG message (batching; they keep the
    /// kernel's timestamp). Outgoing ones go one at a time, so that their
    /// receive time is their send time, unless a flood needs batches.
    #[arg(long, value_name = "N", default_value_t = icmpmon_capture::nflog::THRESHOLD_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=4096), help_heading = "NFLOG")]
    pub nflog_threshold: u32,
    /// Longest wait of a partial NFLOG batch, in ms (the kernel counts in
    /// 10 ms steps; incoming packets keep the kernel's timestamp). Rows of
    /// outgoing packets wait up to twice this (in those steps), plus 5 ms,
    /// for the incoming packets logged before them.
    #[arg(long, value_name = "MS", default_value_t = icmpmon_capture::nflog::TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(10..=10_000), help_heading = "NFLOG")]
    pub nflog_timeout: u32,
    /// NFQUEUE queue number icmpmon binds and its rules feed.
    #[arg(long, value_name = "N", default_value_t = icmpmon_capture::nfqueue::DEFAULT_QUEUE,
          help_heading = "NFQUEUE")]
    pub queue_num: u16,
    /// An echo request unanswered after SECS is counted lost.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_duration,
          help_heading = "Analysis")]
    pub echo_timeout: Duration,
    /// Flag a source sending more than N echo requests in one second.
    #[arg(long, value_name = "N", default_value_t = Thresholds::default().echo_flood_pps,
          help_heading = "Analysis")]
    pub flood_pps: u64,
    /// Flag more than N destination-unreachable messages in one second.
    #[arg(long, value_name = "N", default_value_t = Thresholds::default().unreachable_pps,
          help_heading = "Analysis")]
    pub unreachable_pps: u64,
    /// Flag echo requests carrying more than BYTES of data.
    #[arg(long, value_name = "BYTES", default_value_t = Thresholds::default().oversize_bytes,
          help_heading = "Analysis")]
    pub oversize_bytes: u32,
    /// Flag a traceroute: more than N time-exceeded messages in one second
    /// sent back to one prober.
    #[arg(long, value_name = "N", default_value_t = Thresholds::default().ttl_exceeded_pps,
          help_heading = "Analysis")]
    pub ttl_exceeded_pps: u64,
    /// Most peer pairs, error flows and pending echo requests kept (each
    /// table evicts its least recently used entry beyond this).
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(16..=1 << 22), help_heading = "Analysis")]
    pub max_peers: u64,
    /// Batches the capture→consumer channel holds before it drops.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub channel_capacity: u64,
}

impl RunArgs {
    /// Whether to run the dashboard: asked for, or the default on a
    /// terminal when no export is.
    pub fn wants_tui(&self, stdout_is_terminal: bool) -> bool {
        self.tui
            || (!self.headless && stdout_is_terminal && self.csv.is_none() && self.jsonl.is_none())
    }

    /// Option combinations clap cannot check; a usage error if any.
    pub fn conflicts(&self, tui: bool) -> Option<&'static str> {
        if self.replay.is_some() && !matches!(self.source, SourceKind::Pcap(_)) {
            return Some("--replay replays a capture file: use it with --source pcap:PATH");
        }
        if self.drops && matches!(self.source, SourceKind::Pcap(_)) {
            return Some("--drops traces this host's kernel: use it with a live source");
        }
        if !self.interfaces.is_empty()
            && !matches!(self.source, SourceKind::Auto | SourceKind::Packet)
        {
            return Some("--interface selects the interfaces of the packet source: use it with --source packet");
        }
        if tui && self.outputs().any(|(_, o)| o == &Output::Stdout) {
            return Some("the dashboard uses the terminal: write --csv, --jsonl, --alerts, --summary-json and --write to files (or use --headless)");
        }
        None
    }

    fn outputs(&self) -> impl Iterator<Item = (&'static str, &Output)> {
        [
            ("--csv", &self.csv),
            ("--jsonl", &self.jsonl),
            ("--alerts", &self.alerts),
            ("--summary-json", &self.summary_json),
            ("--write", &self.write),
        ]
        .into_iter()
        .filter_map(|(flag, o)| o.as_ref().map(|o| (flag, o)))
    }

    /// Where each output goes. Standard output has one owner: two outputs
    /// asking for it, or two naming the same file, are usage errors. Run
    /// headless with no row output, rows go to standard output as CSV,
    /// unless another output owns it.
    pub fn destinations(&self, tui: bool) -> Result<Destinations, String> {
        let outputs: Vec<_> = self.outputs().collect();
        for (i, (a, oa)) in outputs.iter().enumerate() {
            for (b, ob) in &outputs[i + 1..] {
                match (oa, ob) {
                    (Output::Stdout, Output::Stdout) => {
                        return Err(format!(
                            "{a} - and {b} - both ask for standard output, which takes one \
                             format: write one of them to a file"
                        ))
                    }
                    (Output::File(pa), Output::File(pb)) if same_file(pa, pb) => {
                        return Err(format!(
                            "{a} and {b} both write to {}: give each its own file",
                            pa.display()
                        ))
                    }
                    _ => {}
                }
            }
        }
        let stdout_taken = outputs.iter().any(|(_, o)| o == &&Output::Stdout);
        let csv = match (&self.csv, &self.jsonl) {
            // A metrics daemon, or a run saving packets (as tcpdump -w),
            // writes rows only when asked to.
            (None, None)
                if !tui
                    && !stdout_taken
                    && self.metrics_listen.is_none()
                    && self.write.is_none() =>
            {
                Some(Output::Stdout)
            }
            (csv, _) => csv.clone(),
        };
        Ok(Destinations {
            csv,
            jsonl: self.jsonl.clone(),
            alerts: self.alerts.clone(),
            summary_json: self.summary_json.clone(),
            write: self.write.clone(),
        })
    }

    /// The aggregator's settings from the command line.
    pub fn aggregate_config(&self) -> icmpmon_core::aggregate::Config {
        let n = usize::try_from(self.max_peers).unwrap_or(usize::MAX);
        icmpmon_core::aggregate::Config {
            echo_timeout_ns: u64::try_from(self.echo_timeout.as_nanos()).unwrap_or(u64::MAX),
            max_peers: n,
            max_flows: n,
            max_pending: n.saturating_mul(16),
            thresholds: Thresholds {
                echo_flood_pps: self.flood_pps,
                unreachable_pps: self.unreachable_pps,
                oversize_bytes: self.oversize_bytes,
                ttl_exceeded_pps: self.ttl_exceeded_pps,
            },
            ..icmpmon_core::aggregate::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_the_csv_columns() {
        let listed = AFTER_HELP
            .rsplit_once("JSON lines have the same fields):\n")
            .unwrap()
            .1
            .replace('\n', "");
        assert_eq!(listed, crate::outputs::HEADER.join(","));
    }
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn dest(args: &[&str]) -> Result<Destinations, String> {
        let mut v = vec!["icmpmon"];
        v.extend(args);
        Cli::try_parse_from(v).unwrap().run.destinations(false)
    }

    #[test]
    fn stdout_has_one_owner_and_files_are_named_once() {
        // Headless without row outputs: CSV on stdout, unless stdout is taken.
        assert_eq!(dest(&[]).unwrap().csv, Some(Output::Stdout));
        let d = dest(&["--summary-json", "-"]).unwrap();
        assert_eq!((d.csv, d.summary_json), (None, Some(Output::Stdout)));
        assert!(dest(&["--csv", "-", "--alerts", "/dev/stdout"]).is_err());
        assert!(dest(&["--jsonl", "-", "--csv", "/proc/self/fd/1"]).is_err());
        assert!(dest(&["--csv", "out.csv", "--jsonl", "./x/../out.csv"]).is_err());
        assert!(dest(&["--csv", "a.csv", "--jsonl", "b.jsonl"]).is_ok());
        assert!(dest(&["--csv", "/dev/null", "--jsonl", "/dev/null"]).is_ok());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["icmpmon", "--source", "bogus"][..],
            &["icmpmon", "--count", "0"],
            &["icmpmon", "--duration", "-1"],
            &["icmpmon", "--snaplen", "10"],
            &["icmpmon", "--csv", ""],
            &["icmpmon", "--source", "pcap:"],
            &["icmpmon", "--filter", "type bogus"],
            &["icmpmon", "--echo-timeout", "0"],
            &["icmpmon", "--replay", "fast"],
            &["icmpmon", "--replay", "x0"],
            // Would overflow a Duration while replaying.
            &["icmpmon", "--replay", "x1e-300"],
            &["icmpmon", "--duration", "1e99"],
            &["icmpmon", "--tui", "--headless"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    /// Issue 20.9: a negative number is a bad value, told as such.
    #[test]
    fn a_negative_duration_is_a_bad_value() {
        let err = Cli::try_parse_from(["icmpmon", "--duration", "-1"]).unwrap_err();
        assert!(err.to_string().contains("more than 0"), "{err}");
    }

    #[test]
    fn defaults_and_outputs() {
        let cli = Cli::try_parse_from(["icmpmon", "--csv", "-", "--duration", "1.5"]).unwrap();
        assert_eq!(cli.run.source, SourceKind::Auto);
        assert_eq!(cli.run.csv, Some(Output::Stdout));
        assert_eq!(cli.run.duration, Some(Duration::from_millis(1500)));
        let cli = Cli::try_parse_from(["icmpmon", "--source", "pcap:a:b.pcap"]).unwrap();
        assert_eq!(cli.run.source, SourceKind::Pcap("a:b.pcap".into()));
        let cli = Cli::try_parse_from(["icmpmon", "stats"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Stats)));
    }
}
