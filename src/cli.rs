//! Command line (a contract: see DESIGN.md). Bad values exit with status 2
//! and a message that says what is allowed.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::proto;

const AFTER_HELP: &str = "\
Examples:
  sudo insmod kmod-hook/icmpmon.ko
  sudo icmpmon --source kmod --csv icmp.csv          # until Ctrl-C
  sudo icmpmon --csv - --count 20                    # CSV to stdout, 20 rows
  sudo icmpmon --csv out.csv --duration 30
  icmpmon --source pcap:capture.pcapng --jsonl -     # offline, no root
  icmpmon stats                                      # module counters

Exit status: 0 clean stop (Ctrl-C, SIGTERM, --count, --duration, module
unloaded), 1 runtime error (e.g. module not loaded, missing CAP_NET_ADMIN),
2 usage error. A second Ctrl-C exits at once.

Each CSV row is one ICMP/ICMPv6 message; the columns are described in
README.md (CSV schema v1).";

#[derive(Debug, Parser)]
#[command(
    name = "icmpmon",
    version,
    about = "Monitor ICMP and ICMPv6 on this host",
    long_about = "Monitor ICMP and ICMPv6 on this host.\n\n\
        With the icmpmon kernel module loaded, a netfilter hook sends every ICMP \
        and ICMPv6 packet (received: direction in, sent: direction out) to icmpmon \
        over generic netlink. icmpmon writes one CSV row per message and, on \
        Ctrl-C, unregisters, flushes its output and prints a summary on stderr.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
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
    Stats,
}

/// Where packets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The kernel module when loaded.
    Auto,
    /// The kernel module (generic netlink family "icmpmon").
    Kmod,
    /// NFQUEUE with icmpmon's own firewall rules (no module needed).
    Nfqueue,
    /// A pcap or pcapng file.
    Pcap(PathBuf),
}

fn parse_source(s: &str) -> Result<SourceSpec, String> {
    match s {
        "auto" => Ok(SourceSpec::Auto),
        "kmod" => Ok(SourceSpec::Kmod),
        "nfqueue" => Ok(SourceSpec::Nfqueue),
        _ => match s.strip_prefix("pcap:") {
            Some("") => Err("pcap: needs a file path, e.g. pcap:capture.pcapng".into()),
            Some(path) => Ok(SourceSpec::Pcap(path.into())),
            None => Err("the sources are: auto, kmod, nfqueue, pcap:PATH".into()),
        },
    }
}

/// `-` for standard output, or a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

fn parse_output(s: &str) -> Result<Output, String> {
    match s {
        "" => Err("give a file path, or - for standard output".into()),
        "-" => Ok(Output::Stdout),
        p => Ok(Output::File(p.into())),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds (e.g. 10 or 2.5)"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 1e9) {
        return Err("the duration must be more than 0 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Packet source: auto (the kernel module if loaded, else nfqueue),
    /// kmod, nfqueue, or pcap:PATH (a pcap/pcapng file; no privileges).
    #[arg(long, value_name = "SOURCE", default_value = "auto", value_parser = parse_source)]
    pub source: SourceSpec,
    /// No dashboard: export only (the only mode of this build).
    #[arg(long)]
    pub headless: bool,
    /// Write CSV rows to PATH, or to standard output with -. The default
    /// when no output is given.
    #[arg(long, value_name = "PATH|-", value_parser = parse_output)]
    pub csv: Option<Output>,
    /// Write JSON lines (the CSV's fields and names) to PATH, or to
    /// standard output with -.
    #[arg(long, value_name = "PATH|-", value_parser = parse_output)]
    pub jsonl: Option<Output>,
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
    #[arg(long, value_name = "BYTES", default_value_t = proto::BATCH_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(proto::BATCH_BYTES_MIN)..=i64::from(proto::BATCH_BYTES_MAX)),
          help_heading = "Kernel module")]
    pub batch_bytes: u32,
    /// Longest time a record waits in a partial kernel batch, in ms.
    #[arg(long, value_name = "MS", default_value_t = proto::FLUSH_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(proto::FLUSH_MS_MIN)..=i64::from(proto::FLUSH_MS_MAX)),
          help_heading = "Kernel module")]
    pub flush_ms: u32,
    /// Netlink receive buffer in bytes (larger absorbs longer bursts).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20,
          value_parser = clap::value_parser!(u64).range(65536..=1 << 30))]
    pub socket_buffer: u64,
    /// NFQUEUE queue number icmpmon binds and its rules feed.
    #[arg(long, value_name = "N", default_value_t = crate::capture::nfqueue::DEFAULT_QUEUE,
          help_heading = "NFQUEUE")]
    pub queue_num: u16,
    /// Batches the capture→consumer channel holds before it drops.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub channel_capacity: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
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
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn defaults_and_outputs() {
        let cli = Cli::try_parse_from(["icmpmon", "--csv", "-", "--duration", "1.5"]).unwrap();
        assert_eq!(cli.run.source, SourceSpec::Auto);
        assert_eq!(cli.run.csv, Some(Output::Stdout));
        assert_eq!(cli.run.duration, Some(Duration::from_millis(1500)));
        let cli = Cli::try_parse_from(["icmpmon", "--source", "pcap:a:b.pcap"]).unwrap();
        assert_eq!(cli.run.source, SourceSpec::Pcap("a:b.pcap".into()));
        let cli = Cli::try_parse_from(["icmpmon", "stats"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Stats)));
    }
}
