//! The BPF source: the kernel hook without a module. BPF netfilter
//! programs (kernel 6.4+, `CONFIG_NETFILTER_BPF_LINK`) at PRE_ROUTING and
//! LOCAL_OUT of both families copy every ICMP packet into a ring buffer in
//! the module's version-2 record layout (decoded by `kmod::abi`), and a
//! `tp_btf/kfree_skb` program adds the ICMP packets the kernel drops in
//! this network namespace, with the kernel's reason (`drops`).
//!
//! Links are owned by file descriptors, nothing is pinned: any exit,
//! SIGKILL included, detaches everything. The programs live in
//! `icmpmon.bpf.c` (built by build.rs with clang, CO-RE).

mod names;
mod traced;
mod skel {
    #![allow(unsafe_code, clippy::all, clippy::pedantic, missing_debug_implementations)]
    include!(concat!(env!("OUT_DIR"), "/icmpmon.skel.rs"));
}

use std::cell::{Cell, RefCell};
use std::os::fd::AsFd;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, NetfilterOpts, OpenObject, RingBufferBuilder};
use rustix::event::{poll, PollFd, PollFlags};

use crate::kmod::abi::{self, DropFields};
use crate::pipeline::{PacketSink, Stop};
use crate::source::{CaptureError, Counters, Source, SourceEnd};
use icmpmon_core::event::RawPacket;
use names::DropNames;
use skel::{IcmpmonSkel, IcmpmonSkelBuilder};
pub(crate) use traced::WithDrops;

/// `BPF_F_NETFILTER_IP_DEFRAG` (uapi linux/bpf.h, 6.6): the hook sees
/// reassembled datagrams.
const BPF_F_NETFILTER_IP_DEFRAG: u32 = 1;
/// `NF_IP_PRI_CONNTRACK_DEFRAG + 1`: where the module hooks too, right
/// after defragmentation, before conntrack and every filter table.
const PRIORITY: i32 = -399;
/// How often the kernel's counters are copied for the summary.
const COUNTER_INTERVAL: Duration = Duration::from_millis(500);

/// The kernel this source needs: netfilter BPF links.
pub const MIN_KERNEL: (u32, u32) = (6, 4);
/// And for defragmented packets.
const DEFRAG_KERNEL: (u32, u32) = (6, 6);

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

/// Why the BPF source cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "the bpf source needs Linux {}.{} or later (netfilter BPF links); this kernel is {release}",
        MIN_KERNEL.0, MIN_KERNEL.1
    )]
    KernelTooOld { release: String },
    #[error("the bpf source needs the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)")]
    NoBtf,
    #[error(
        "the bpf source needs {missing} (run as root, or give the binary these capabilities: \
         setcap cap_bpf,cap_net_admin,cap_perfmon+ep)"
    )]
    Capabilities { missing: String },
    #[error(
        "this kernel cannot attach BPF programs to netfilter hooks (needs \
         CONFIG_NETFILTER_BPF_LINK): {0}"
    )]
    NoNetfilterLink(String),
    #[error("loading icmpmon's BPF programs: {0} (run with -v for the verifier's log)")]
    Load(String),
    #[error("{what}: {error}")]
    Kernel { what: &'static str, error: String },
}

impl From<BpfError> for CaptureError {
    fn from(e: BpfError) -> Self {
        CaptureError::new(e)
    }
}

/// Why this host cannot run the BPF source, checked without loading
/// anything (for `--source auto` and for clear errors).
pub fn unavailable(drops_only: bool) -> Option<BpfError> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    if !drops_only && kernel_version(&release).is_some_and(|v| v < MIN_KERNEL) {
        return Some(BpfError::KernelTooOld { release });
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some(BpfError::NoBtf);
    }
    let missing = missing_capabilities(!drops_only, drops_only);
    (!missing.is_empty()).then(|| BpfError::Capabilities {
        missing: missing.join(" and "),
    })
}

/// `6.12.38+deb13-amd64` → (6, 12).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The capabilities the programs need that this process lacks: CAP_BPF
/// to load, CAP_NET_ADMIN for netfilter links, CAP_PERFMON for the drop
/// tracepoint (CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON).
fn missing_capabilities(hooks: bool, drops: bool) -> Vec<&'static str> {
    use caps::{CapSet, Capability};
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !(has(Capability::CAP_BPF) || admin) {
        missing.push("CAP_BPF");
    }
    if hooks && !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if drops && !(has(Capability::CAP_PERFMON) || admin) {
        missing.push("CAP_PERFMON");
    }
    missing
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

/// The counters of the programs (summed over CPUs, copied every
/// `COUNTER_INTERVAL` and at the end) and of the reader.
#[derive(Debug, Default)]
pub struct BpfCounters {
    /// ICMP packets the netfilter programs took, wrote, and lost to a
    /// full ring buffer: seen = delivered + lost.
    pub seen: AtomicU64,
    pub delivered: AtomicU64,
    pub lost: AtomicU64,
    pub truncated: AtomicU64,
    /// The same for dropped ICMP packets of this namespace.
    pub drops_seen: AtomicU64,
    pub drops_delivered: AtomicU64,
    pub drops_lost: AtomicU64,
    /// Records read from the ring buffer, and those that did not decode.
    pub records: AtomicU64,
    pub bad_records: AtomicU64,
}

/// Indices of `enum { C_SEEN, … }` in icmpmon.bpf.c.
const KERNEL_COUNTERS: usize = 7;

impl BpfCounters {
    fn store_kernel(&self, c: [u64; KERNEL_COUNTERS]) {
        let fields = [
            &self.seen,
            &self.delivered,
            &self.lost,
            &self.truncated,
            &self.drops_seen,
            &self.drops_delivered,
            &self.drops_lost,
        ];
        for (f, v) in fields.into_iter().zip(c) {
            f.store(v, Relaxed);
        }
    }
}

impl Counters for BpfCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("records", self.records.load(Relaxed)),
            ("seen", self.seen.load(Relaxed)),
            ("delivered", self.delivered.load(Relaxed)),
            ("lost", self.lost.load(Relaxed)),
            ("truncated", self.truncated.load(Relaxed)),
            ("drops_seen", self.drops_seen.load(Relaxed)),
            ("drops_delivered", self.drops_delivered.load(Relaxed)),
            ("drops_lost", self.drops_lost.load(Relaxed)),
            ("bad_records", self.bad_records.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![(
            "ring_buffer",
            self.lost.load(Relaxed) + self.drops_lost.load(Relaxed),
        )]
    }
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
        let mut s = Self::load(opts, true, drops)?;
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
        let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
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
                    let link = skel
                        .progs
                        .icmpmon_nf
                        .attach_netfilter_with_opts(NetfilterOpts {
                            protocol_family: pf,
                            hooknum: hook,
                            priority: PRIORITY,
                            flags: if defrag { BPF_F_NETFILTER_IP_DEFRAG } else { 0 },
                            ..NetfilterOpts::default()
                        })
                        .map_err(|e| match e.kind() {
                            libbpf_rs::ErrorKind::PermissionDenied => BpfError::Capabilities {
                                missing: "CAP_NET_ADMIN in this network namespace's owner".into(),
                            },
                            libbpf_rs::ErrorKind::InvalidInput
                            | libbpf_rs::ErrorKind::Unsupported => {
                                BpfError::NoNetfilterLink(format!("{e}"))
                            }
                            _ => BpfError::Kernel {
                                what: "attaching the netfilter program",
                                error: format!("{e:#}"),
                            },
                        })?;
                    hook_links.push(link);
                }
            }
        }
        let drop_link = if drops {
            Some(skel.progs.icmpmon_drop.attach_trace().map_err(|e| {
                BpfError::Kernel {
                    what: "attaching the kfree_skb tracepoint program",
                    error: format!("{e:#}"),
                }
            })?)
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

    /// Whether drops are traced.
    pub fn traces_drops(&self) -> bool {
        self.drop_link.is_some()
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
        let batch: RefCell<Vec<RawPacket>> = RefCell::new(Vec::new());
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
                        if let Some(d) = DropFields::read(&rec, header) {
                            p.drop = Some(names.borrow_mut().name(d.reason, d.location));
                        }
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
            offset.set(realtime_offset());
            ring.consume().map_err(ring_err)?;
            sink.send(batch.take());
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
            let mut fds = [
                PollFd::from_borrowed_fd(self.skel.maps.records.as_fd(), PollFlags::IN),
                PollFd::from_borrowed_fd(stop.fd(), PollFlags::IN),
            ];
            let left = next_counters.saturating_duration_since(Instant::now());
            match poll(&mut fds, Some(&timespec(left))) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(BpfError::Kernel {
                        what: "waiting for the BPF ring buffer",
                        error: e.to_string(),
                    })
                }
            }
            if stop.is_set() {
                break;
            }
            consume()?;
        }
        // Nothing new after this: what the programs wrote before is read,
        // and the counters then balance.
        self.hook_links.clear();
        self.drop_link = None;
        consume()?;
        drop(ring);
        self.read_counters()?;
        Ok(SourceEnd::Stopped)
    }
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

fn realtime_offset() -> i128 {
    use rustix::time::{clock_gettime, ClockId};
    let ns = |t: rustix::time::Timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    let mono = clock_gettime(ClockId::Monotonic);
    let real = clock_gettime(ClockId::Realtime);
    ns(real) - ns(mono)
}

fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
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
    fn kernel_versions_read_from_release_strings() {
        assert_eq!(kernel_version("6.12.38+deb13-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("6.1.0-40-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("7.3.1-rt"), Some((7, 3)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("6.3.9").unwrap() < MIN_KERNEL);
        assert!(kernel_version("6.18.44-fc").unwrap() >= DEFRAG_KERNEL);
    }
}
