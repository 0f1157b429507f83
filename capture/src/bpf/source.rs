//! The BPF source's programs, loaded and attached, and the reader of
//! their ring buffer.

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, NetfilterOpts, OpenObject, RingBufferBuilder};

use super::check::{
    kernel_version, missing_capabilities, unavailable, who, BpfError, DEFRAG_KERNEL,
};
use super::counters::{BpfCounters, KERNEL_COUNTERS};
use super::names::DropNames;
use super::skel::{IcmpmonSkel, IcmpmonSkelBuilder};
use crate::kmod::abi::{self, DropFields};
use crate::netlink::{self, Wait};
use crate::pipeline::{PacketSink, Stop};
use crate::source::{CaptureError, Counters, Source, SourceEnd};

/// `BPF_F_NETFILTER_IP_DEFRAG` (uapi linux/bpf.h, 6.6): the hook sees
/// reassembled datagrams.
const BPF_F_NETFILTER_IP_DEFRAG: u32 = 1;
/// `NF_IP_PRI_CONNTRACK_DEFRAG + 1`: where the module hooks too, right
/// after defragmentation, before conntrack and every filter table. The
/// kernel gives each BPF hook a priority of its own (EBUSY otherwise): a
/// second monitor takes the next free one, up to the raw table's (−300).
const PRIORITIES: std::ops::Range<i32> = -399..-300;
/// How long records gather after a wake-up before they are read.
const GATHER: Duration = Duration::from_millis(2);
/// How long the end waits for programs still running to finish.
const SETTLE: Duration = Duration::from_millis(200);
/// How often the kernel's counters are copied for the summary.
const COUNTER_INTERVAL: Duration = Duration::from_millis(500);

/// Settings of the BPF source.
#[derive(Debug, Clone)]
pub struct BpfOptions {
    /// Bytes kept of each packet, from its IP header (as the module's).
    pub snaplen: u32,
    /// Ring buffer size asked for; rounded up to a power of two pages.
    pub ring_bytes: usize,
    /// Trace drops (`kfree_skb`) too.
    pub drops: bool,
}

/// libbpf's messages go to tracing (`-v`), never straight to stderr.
fn route_libbpf_log() {
    fn log(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::info!(target: "libbpf", "{msg}"),
            _ => tracing::debug!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, log)));
}

/// Loaded and attached programs: the capture side of the BPF source and
/// of drop tracing for other sources.
pub struct BpfSource {
    skel: IcmpmonSkel<'static>,
    /// Dropped to detach; the netfilter links first, at the end.
    hook_links: Vec<Link>,
    drop_link: Option<Link>,
    counters: Arc<BpfCounters>,
    names: DropNames,
    notices: Vec<String>,
    /// A drop tracer only (`--drops` beside another source).
    drops_only: bool,
}

impl std::fmt::Debug for BpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfSource")
            .field("hook_links", &self.hook_links.len())
            .field("drops", &self.drop_link.is_some())
            .finish_non_exhaustive()
    }
}

impl BpfSource {
    /// The netfilter programs, and drop tracing if `opts.drops` and the
    /// process may (else a notice says why not).
    pub fn open(opts: &BpfOptions) -> Result<Self, BpfError> {
        if let Some(e) = unavailable(false) {
            return Err(e);
        }
        let mut notices = Vec::new();
        let drops = opts.drops && {
            let missing = missing_capabilities(false, true);
            if !missing.is_empty() {
                notices.push(format!(
                    "drop tracing is off: it needs {} (--no-drops silences this)",
                    missing.join(" and ")
                ));
            }
            missing.is_empty()
        };
        let mut s = match Self::load(opts, true, drops) {
            // The netfilter programs alone, when the drop program is what
            // this kernel refuses (its tracepoint, BTF, lockdown).
            Err(e) if drops => {
                let s = Self::load(opts, true, false)?;
                notices.push(format!("drop tracing is off: {e}"));
                s
            }
            other => other?,
        };
        s.notices.splice(0..0, notices);
        Ok(s)
    }

    /// Drop tracing alone, beside another source (`--drops`).
    pub fn open_drops(opts: &BpfOptions) -> Result<Self, BpfError> {
        if let Some(e) = unavailable(true) {
            return Err(e);
        }
        Self::load(opts, false, true)
    }

    fn load(opts: &BpfOptions, hooks: bool, drops: bool) -> Result<Self, BpfError> {
        route_libbpf_log();
        let load_err = |e: libbpf_rs::Error| BpfError::Load(format!("{e:#}"));
        // The skeleton borrows its object for as long as it lives: this
        // run. One small box per run is never freed; the object in it
        // (and every kernel file descriptor) is closed when the skeleton
        // drops.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = IcmpmonSkelBuilder::default()
            .open(storage)
            .map_err(load_err)?;
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| BpfError::Load("the programs have no read-only data".into()))?;
        ro.snaplen = opts.snaplen.clamp(abi::SNAPLEN_MIN, abi::SNAPLEN_MAX);
        ro.netns_ino = netns_inode()?;
        let page = rustix::param::page_size();
        let ring = opts.ring_bytes.max(page).next_power_of_two();
        open.maps
            .records
            .set_max_entries(u32::try_from(ring).unwrap_or(1 << 30))
            .map_err(load_err)?;
        open.progs.icmpmon_nf.set_autoload(hooks);
        open.progs.icmpmon_drop.set_autoload(drops);
        let skel = open.load().map_err(load_err)?;

        let mut notices = Vec::new();
        let mut hook_links = Vec::new();
        if hooks {
            let defrag = rustix::system::uname()
                .release()
                .to_str()
                .ok()
                .and_then(kernel_version)
                .is_none_or(|v| v >= DEFRAG_KERNEL);
            if !defrag {
                notices.push(format!(
                    "this kernel cannot defragment for BPF netfilter programs (Linux {}.{}+): \
                     a fragmented ICMP message shows as its first fragment",
                    DEFRAG_KERNEL.0, DEFRAG_KERNEL.1
                ));
            }
            for pf in [libbpf_rs::NFPROTO_IPV4, libbpf_rs::NFPROTO_IPV6] {
                for hook in [libbpf_rs::NF_INET_PRE_ROUTING, libbpf_rs::NF_INET_LOCAL_OUT] {
                    let link = attach_hook(&skel, pf, hook, defrag)?;
                    hook_links.push(link);
                }
            }
        }
        let drop_link = if drops {
            Some(
                skel.progs
                    .icmpmon_drop
                    .attach_trace()
                    .map_err(|e| BpfError::Kernel {
                        what: "attaching the kfree_skb tracepoint program",
                        error: format!("{e:#}"),
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            skel,
            hook_links,
            drop_link,
            counters: Arc::default(),
            names: if drops {
                DropNames::load()
            } else {
                DropNames::default()
            },
            notices,
            drops_only: !hooks,
        })
    }

    pub fn counters(&self) -> Arc<BpfCounters> {
        Arc::clone(&self.counters)
    }

    /// The programs' per-CPU counters, summed.
    fn read_counters(&self) -> Result<(), BpfError> {
        let per_cpu = self
            .skel
            .maps
            .counters
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| BpfError::Kernel {
                what: "reading the BPF counters",
                error: format!("{e:#}"),
            })?
            .unwrap_or_default();
        let mut sum = [0u64; KERNEL_COUNTERS];
        for cpu in per_cpu {
            for (i, s) in sum.iter_mut().enumerate() {
                let b = cpu.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok());
                *s += b.map(u64::from_ne_bytes).unwrap_or(0);
            }
        }
        self.counters.store_kernel(sum);
        Ok(())
    }

    /// Reads the ring buffer into `sink` until `stop`; then detaches the
    /// programs, reads what they wrote before that and the final counters.
    pub fn run(mut self, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, BpfError> {
        let ring_err = |e: libbpf_rs::Error| BpfError::Kernel {
            what: "reading the BPF ring buffer",
            error: format!("{e:#}"),
        };
        let batch = RefCell::new(sink.batch());
        // CLOCK_REALTIME − CLOCK_MONOTONIC, taken before each read: BPF has
        // only the monotonic clock.
        let offset = Cell::new(0i128);
        let counters = Arc::clone(&self.counters);
        let names = RefCell::new(std::mem::take(&mut self.names));
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.skel.maps.records, |data: &[u8]| {
                counters.records.fetch_add(1, Relaxed);
                match abi::record(data) {
                    Ok((rec, header, bytes)) => {
                        let real = (i128::from(rec.ts_mono_ns) + offset.get()).max(0);
                        let mut p = rec.to_raw(bytes, u64::try_from(real).unwrap_or(0));
                        let drop = DropFields::read(&rec, header)
                            .map(|d| names.borrow_mut().name(d.reason, d.location));
                        p.drop = drop.as_ref();
                        batch.borrow_mut().push(p);
                    }
                    Err(what) => {
                        tracing::warn!("a BPF record did not decode: {what}");
                        counters.bad_records.fetch_add(1, Relaxed);
                    }
                }
                0
            })
            .map_err(ring_err)?;
        let ring = builder.build().map_err(ring_err)?;
        let consume = || -> Result<(), BpfError> {
            offset.set(crate::clock::wall_offset_ns());
            ring.consume().map_err(ring_err)?;
            sink.send_take(&mut batch.borrow_mut());
            Ok(())
        };

        let mut next_counters = Instant::now();
        loop {
            if Instant::now() >= next_counters {
                self.read_counters()?;
                next_counters = Instant::now() + COUNTER_INTERVAL;
            }
            // The ring buffer map's own descriptor turns readable when the
            // programs have written.
            let left = next_counters.saturating_duration_since(Instant::now());
            let waited = netlink::wait_readable(&self.skel.maps.records, Some(left), Some(stop))
                .map_err(|e| BpfError::Kernel {
                    what: "waiting for the BPF ring buffer",
                    error: e.to_string(),
                })?;
            match waited {
                Wait::Stopped => break,
                Wait::TimedOut => {}
                // The kernel wakes the reader for the first record after it
                // has read everything (not while it lags): letting records
                // gather a moment makes one batch of many under a flood
                // instead of a wake-up, a batch and a channel hand-off per
                // packet. Timestamps are the hook's: nothing moves.
                Wait::Readable => {
                    let _ = netlink::wait_readable(&stop.fd(), Some(GATHER), None);
                }
            }
            consume()?;
        }
        // Nothing new after this. A program that started before its link
        // went may still finish (links are freed after an RCU grace
        // period): read until the counters balance, for a while.
        self.hook_links.clear();
        self.drop_link = None;
        let deadline = Instant::now() + SETTLE;
        loop {
            consume()?;
            self.read_counters()?;
            if self.counters.balanced() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(ring);
        Ok(SourceEnd::Stopped)
    }
}

/// Attaches the netfilter program at one family's hook, at the first
/// priority no other BPF hook holds.
fn attach_hook(skel: &IcmpmonSkel<'_>, pf: i32, hook: i32, defrag: bool) -> Result<Link, BpfError> {
    let mut last = None;
    for priority in PRIORITIES {
        let attached = skel
            .progs
            .icmpmon_nf
            .attach_netfilter_with_opts(NetfilterOpts {
                protocol_family: pf,
                hooknum: hook,
                priority,
                flags: if defrag { BPF_F_NETFILTER_IP_DEFRAG } else { 0 },
                ..NetfilterOpts::default()
            });
        match attached {
            Ok(link) => return Ok(link),
            Err(e) if is_busy(&e) => last = Some(e),
            Err(e) => {
                return Err(match e.kind() {
                    libbpf_rs::ErrorKind::PermissionDenied => BpfError::Capabilities {
                        what: who(false),
                        missing: "CAP_NET_ADMIN in this network namespace's owner".into(),
                    },
                    libbpf_rs::ErrorKind::InvalidInput | libbpf_rs::ErrorKind::Unsupported => {
                        BpfError::NoNetfilterLink(format!("{e}"))
                    }
                    _ => BpfError::Kernel {
                        what: "attaching the netfilter program",
                        error: format!("{e:#}"),
                    },
                })
            }
        }
    }
    Err(BpfError::Kernel {
        what: "attaching the netfilter program",
        error: format!(
            "every priority from {} to {} is taken by other BPF hooks ({})",
            PRIORITIES.start,
            PRIORITIES.end - 1,
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
    })
}

/// Whether a libbpf error is EBUSY. libbpf-rs keeps the system error to
/// itself (its kinds fold EBUSY into `Other`), but its text ends with the
/// system error's own.
fn is_busy(e: &libbpf_rs::Error) -> bool {
    let busy = std::io::Error::from_raw_os_error(libc::EBUSY).to_string();
    format!("{e:#}").ends_with(&busy)
}

/// The monitor's network namespace: its inode, as the drop program
/// compares it.
fn netns_inode() -> Result<u32, BpfError> {
    let st = rustix::fs::stat("/proc/self/ns/net").map_err(|e| BpfError::Kernel {
        what: "reading /proc/self/ns/net",
        error: e.to_string(),
    })?;
    u32::try_from(st.st_ino).map_err(|_| BpfError::Kernel {
        what: "reading /proc/self/ns/net",
        error: "inode number out of range".into(),
    })
}

impl Source for BpfSource {
    fn name(&self) -> &'static str {
        "bpf"
    }
    fn describe(&self) -> String {
        let drops = if self.drop_link.is_some() {
            ", drop tracing (kfree_skb)"
        } else {
            ""
        };
        if self.drops_only {
            "drop tracing (BPF kfree_skb)".into()
        } else {
            format!("bpf (netfilter BPF links, ring buffer{drops})")
        }
    }
    fn notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        Ok(BpfSource::run(*self, sink, stop)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_priority_is_told_from_other_failures() {
        assert!(is_busy(&libbpf_rs::Error::from_raw_os_error(libc::EBUSY)));
        assert!(!is_busy(&libbpf_rs::Error::from_raw_os_error(libc::EPERM)));
    }
}
