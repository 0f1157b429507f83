//! Which sources exist, and opening one: the `auto` policy lives here.
//! A new source is a module that implements `Source` plus an arm of
//! `SourceKind`; its name (the `--source` value, the CSV `source` column,
//! `--version`'s list) comes from `SourceKind::name`.

use std::path::PathBuf;

use crate::bpf::{self, BpfOptions, BpfSource, WithDrops};
use crate::kmod::{KmodClient, KmodError, KmodOptions};
use crate::nflog::{NflogOptions, NflogSource};
use crate::nfqueue::NfqueueSource;
use crate::packet::{PacketOptions, PacketSource};
use crate::pcap::{PcapFileError, PcapSource};
use crate::pipeline::Stop;
use crate::rules::Ledger;
use crate::source::{CaptureError, Source};

/// Where packets come from: `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// The kernel module when loaded, else BPF where the kernel and the
    /// process's capabilities allow, else AF_PACKET.
    Auto,
    /// The kernel module (generic netlink family "icmpmon").
    Kmod,
    /// BPF netfilter programs (Linux 6.4+), no module.
    Bpf,
    /// AF_PACKET ring (passive, no module, no firewall change).
    Packet,
    /// NFLOG with icmpmon's own firewall rules (passive, no module).
    Nflog,
    /// NFQUEUE with icmpmon's own firewall rules (inline: opt-in).
    Nfqueue,
    /// A pcap or pcapng file, or a pipe (`-`: standard input).
    Pcap(PathBuf),
}

impl SourceKind {
    /// Every source's name, in the order `--help` and `--version` list them.
    pub const NAMES: [&'static str; 6] = ["kmod", "bpf", "packet", "nflog", "nfqueue", "pcap"];

    /// The source's name (the CSV `source` column); `auto` before it is
    /// resolved.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Auto => "auto",
            SourceKind::Kmod => "kmod",
            SourceKind::Bpf => "bpf",
            SourceKind::Packet => "packet",
            SourceKind::Nflog => "nflog",
            SourceKind::Nfqueue => "nfqueue",
            SourceKind::Pcap(_) => "pcap",
        }
    }

    /// Parses a `--source` value: a name, or `pcap:PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let kind = match s {
            "auto" => SourceKind::Auto,
            "kmod" => SourceKind::Kmod,
            "bpf" => SourceKind::Bpf,
            "packet" => SourceKind::Packet,
            "nflog" => SourceKind::Nflog,
            "nfqueue" => SourceKind::Nfqueue,
            _ => match s.strip_prefix("pcap:") {
                Some("") => {
                    return Err("pcap: needs a file path (or - for standard input), e.g. \
                                pcap:capture.pcapng"
                        .into())
                }
                Some(path) => SourceKind::Pcap(path.into()),
                None => {
                    let names: Vec<&str> = Self::NAMES
                        .iter()
                        .map(|&n| if n == "pcap" { "pcap:PATH" } else { n })
                        .collect();
                    return Err(format!("the sources are: auto, {}", names.join(", ")));
                }
            },
        };
        Ok(kind)
    }

    /// Opens the source (for `Auto`, the module if loaded, else BPF where
    /// it can run, else AF_PACKET; never NFQUEUE), with drop tracing beside
    /// it when asked (`OpenOptions::drops`). `Ok(None)`: the run was stopped while the source
    /// waited (a pipe's writer that never wrote). Firewall rules a source
    /// installs are recorded in `ledger`. What the user should hear of is
    /// told to `notice` as it happens (the `auto` choice before the chosen
    /// source opens, so a failure to open it still comes after its reason).
    pub fn open(
        &self,
        opts: &OpenOptions,
        stop: &Stop,
        ledger: &Ledger,
        notice: &mut dyn FnMut(String),
    ) -> Result<Option<Box<dyn Source>>, CaptureError> {
        let mut source: Box<dyn Source> = match self {
            SourceKind::Kmod => Box::new(KmodClient::open()?.register(&opts.kmod)?),
            SourceKind::Bpf => Box::new(BpfSource::open(&opts.bpf)?),
            SourceKind::Packet => Box::new(PacketSource::open(&opts.packet)?),
            SourceKind::Nflog => Box::new(NflogSource::open(&opts.nflog, ledger)?),
            SourceKind::Nfqueue => Box::new(NfqueueSource::open(
                opts.queue_num,
                opts.kmod.snaplen,
                opts.kmod.socket_buffer,
                ledger,
            )?),
            SourceKind::Auto if !opts.packet.interfaces.is_empty() => {
                notice("--interface given; using AF_PACKET (--source packet)".into());
                Box::new(PacketSource::open(&opts.packet)?)
            }
            SourceKind::Auto => match KmodClient::open() {
                Ok(client) => Box::new(client.register(&opts.kmod)?),
                Err(KmodError::NotLoaded) => {
                    match bpf::unavailable(false).map_or_else(|| BpfSource::open(&opts.bpf), Err) {
                        Ok(source) => {
                            notice(
                                "the icmpmon kernel module is not loaded; using BPF netfilter \
                             programs (--source bpf)"
                                    .into(),
                            );
                            Box::new(source)
                        }
                        // Loading can fail where the checks pass (a user
                        // namespace's root, lockdown, a kernel without netfilter
                        // links): AF_PACKET then, as without BPF.
                        Err(why) => {
                            notice(format!(
                                "the icmpmon kernel module is not loaded and BPF cannot run here \
                             ({}); using AF_PACKET (--source packet)",
                                why.why_not()
                            ));
                            Box::new(PacketSource::open(&opts.packet)?)
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            },
            SourceKind::Pcap(path) => {
                let pcap = match PcapSource::open(path, stop) {
                    Err(PcapFileError::Stopped { .. }) => return Ok(None),
                    other => other?,
                };
                Box::new(match opts.replay {
                    Some(speed) => pcap.with_replay(speed),
                    None => pcap,
                })
            }
        };
        // Drop tracing beside a source that has none of its own.
        if opts.drops && source.live() && source.name() != "bpf" {
            source = Box::new(WithDrops::new(source, BpfSource::open_drops(&opts.bpf)?));
        }
        source.notices().into_iter().for_each(notice);
        Ok(Some(source))
    }
}

/// Every source's settings, from the command line.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The module's; its snaplen and socket buffer serve NFQUEUE too.
    pub kmod: KmodOptions,
    pub bpf: BpfOptions,
    /// `--drops`: trace drops beside a live source other than bpf (which
    /// traces them unless `bpf.drops` is off).
    pub drops: bool,
    pub packet: PacketOptions,
    pub nflog: NflogOptions,
    pub queue_num: u16,
    /// `--replay` speed for capture files.
    pub replay: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_its_kind() {
        for name in SourceKind::NAMES.iter().filter(|&&n| n != "pcap") {
            assert_eq!(SourceKind::parse(name).unwrap().name(), *name);
        }
        assert_eq!(
            SourceKind::parse("pcap:a:b.pcap").unwrap(),
            SourceKind::Pcap("a:b.pcap".into())
        );
        let err = SourceKind::parse("bogus").unwrap_err();
        assert_eq!(
            err,
            "the sources are: auto, kmod, bpf, packet, nflog, nfqueue, pcap:PATH"
        );
        assert!(SourceKind::parse("pcap:").is_err());
    }
}
