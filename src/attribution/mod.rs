//! What this host's kernel knows besides the packets: which local process
//! owns a flow an ICMP error quotes (or the socket an echo request left
//! from), and its own ICMP counters and sysctls ("why no reply").
//!
//! One thread does all of it, off the capture path: the aggregator thread
//! asks through a bounded channel (`Join`, in join.rs; a full channel is a
//! counted skip, never a wait) and gets answers and a kernel sample a
//! second back on another. The thread holds no capability: it passes each
//! lookup to the attribution helper, a process of its own that keeps the
//! two capabilities reading other users' /proc/PID/fd needs (`privsep`;
//! `wire` is their protocol, `serve` the helper's loop). A helper that
//! dies is reported once, and its lookups are counted as skipped from
//! then on. Everything is read in the network namespace
//! icmpmon runs in: flows of other namespaces (containers with their own
//! netns, seen on a bridge or veth) find no socket here and are counted as
//! such. Live sources only: a capture file makes no lookups.

mod ask;
pub(crate) mod join;
mod kernel;
mod procs;
mod sockets;
mod wire;

pub(crate) use ask::{Ask, LookupKey};

use crate::privsep::{Helper, Served};
use crate::stderr::say;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use icmpmon_core::aggregate::Attribution;
use icmpmon_core::aggregate::KernelSample;

/// How long a lookup may take before the helper is called stuck (a /proc
/// scan of a host with 100 000 processes takes about a second).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Lookups waiting for the thread; more are skipped (and counted).
const ASKS: usize = 1024;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// From the thread to the aggregator.
#[derive(Debug)]
pub(crate) enum News {
    Answer(LookupKey, Attribution),
    Kernel(KernelSample),
}

/// Lookups made by the thread (for the summary and the tests: a capture
/// file makes none), and /proc scans.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub lookups: std::sync::atomic::AtomicU64,
    pub scans: std::sync::atomic::AtomicU64,
}

/// The thread, and the aggregator's ends of its channels.
#[derive(Debug)]
pub(crate) struct Host {
    pub asks: Sender<Ask>,
    pub news: Receiver<News>,
    pub work: Arc<Work>,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    /// Starts the thread: it samples the kernel's counters each second, and
    /// passes what it is asked to the attribution helper (`None`: nothing
    /// is looked up). Started after the run has dropped its capabilities:
    /// it holds none, and reads no packet.
    pub fn start(helper: Option<Helper>) -> std::io::Result<Self> {
        let (asks, asked) = bounded::<Ask>(ASKS);
        let (tell, news) = bounded(ASKS * 4);
        let work = Arc::new(Work::default());
        let w = work.clone();
        let thread = std::thread::Builder::new()
            .name("icmpmon-host".into())
            .spawn(move || run(&asked, &tell, &w, helper))?;
        Ok(Self {
            asks,
            news,
            work,
            thread: Some(thread),
        })
    }

    /// Ends the thread: with every sender of asks gone (the caller drops
    /// its `Join` first) and every receiver of news gone, its next wait or
    /// send fails, within one lookup.
    pub fn stop(mut self) {
        let Host { asks, news, .. } = &mut self;
        drop(std::mem::replace(asks, crossbeam_channel::bounded(0).0));
        drop(std::mem::replace(news, crossbeam_channel::never()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(asked: &Receiver<Ask>, tell: &Sender<News>, work: &Work, mut helper: Option<Helper>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut next_sample = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            // From now: a stalled thread does not send a burst to catch up.
            next_sample = Instant::now() + SAMPLE_EVERY;
            if tell.send(News::Kernel(kernel::sample())).is_err() {
                return;
            }
        }
        let ask = match asked.recv_timeout(next_sample.saturating_duration_since(Instant::now())) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Not asked: its rows have gone (counted skipped) or the helper is
        // gone. Told so, so that the flow's next row asks again.
        let mut answer = Attribution::Skipped;
        if let Some(h) = helper.as_mut().filter(|_| ask.at.elapsed() < join::WAIT) {
            work.lookups.fetch_add(1, Relaxed);
            match ask_helper(h, &ask.key) {
                Ok(Some((a, scans))) => {
                    answer = a;
                    work.scans.store(scans, Relaxed);
                }
                // Malformed: counted skipped, and the helper is not trusted
                // with more.
                Ok(None) => {
                    say!(
                        "icmpmon: the attribution helper sent a malformed answer: no more lookups"
                    );
                    helper = None;
                }
                Err(e) => {
                    say!(
                        "icmpmon: {}: flows are no longer attributed (counted as skipped)",
                        h.ended(&e)
                    );
                    helper = None;
                }
            }
        }
        if tell.send(News::Answer(ask.key, answer)).is_err() {
            return;
        }
    }
}

fn ask_helper(h: &mut Helper, key: &LookupKey) -> std::io::Result<Option<(Attribution, u64)>> {
    let mut answer = [0u8; wire::ANSWER];
    let (n, _) = h.call(&wire::encode_request(key), &mut answer, ANSWER_WAIT)?;
    Ok(wire::decode_answer(&answer[..n]))
}

/// The attribution helper's loop (in its own process, with the
/// capabilities `Role::Attribution` keeps): one lookup per request, until
/// the monitor closes the socket or sends something malformed.
pub(crate) fn serve(served: &Served) {
    let mut diag = match sockets::SockDiag::new() {
        Ok(d) => Some(d),
        Err(e) => {
            say!("icmpmon: no sock_diag socket ({e}): TCP and UDP flows are not attributed");
            None
        }
    };
    let mut procs = procs::Processes::default();
    let mut local = sockets::local_addresses().unwrap_or_default();
    let mut local_read = Instant::now();
    let mut buf = [0u8; wire::REQUEST];
    while let Some(request) = served.next(&mut buf, wire::REQUEST) {
        let Some(key) = wire::decode_request(request) else {
            return;
        };
        if local_read.elapsed() >= SAMPLE_EVERY {
            local_read = Instant::now();
            if let Some(l) = sockets::local_addresses() {
                local = l;
            }
        }
        let a = lookup(key, &local, diag.as_mut(), &mut procs);
        if !served.answer(&wire::encode_answer(&a, procs.scans)) {
            return;
        }
    }
}

/// One lookup. A flow whose local end is not an address of this host
/// (forwarded, spoofed, another namespace's) has no local socket, whatever
/// socket the kernel would deliver a packet with those ports to.
fn lookup(
    key: LookupKey,
    local: &std::collections::HashSet<IpAddr>,
    diag: Option<&mut sockets::SockDiag>,
    procs: &mut procs::Processes,
) -> Attribution {
    let at = Instant::now();
    let here = match key {
        LookupKey::Inet { local: l, .. } => l.ip(),
        LookupKey::Echo { local: l, .. } => l,
    };
    let here = here.to_canonical();
    // Loopback: all of 127.0.0.0/8 is local, not only what lo lists.
    if !here.is_loopback() && !local.contains(&here) {
        return Attribution::NoSocket;
    }
    let found = match key {
        LookupKey::Inet {
            proto,
            local,
            remote,
        } => match diag.map(|d| d.inet(proto, local, remote)) {
            Some(Ok(found)) => found.map(|f| f.inode),
            // No socket to ask with, or it failed: not known, not guessed.
            None | Some(Err(_)) => return Attribution::Skipped,
        },
        LookupKey::Echo { v6, local, id } => sockets::echo_socket(v6, local, id).map(|s| s.inode),
    };
    match found {
        None => Attribution::NoSocket,
        Some(inode) => match procs.owner(inode, at) {
            Some(o) => Attribution::Owner(Arc::new(o)),
            None if procs.hidden() => Attribution::Hidden,
            None => Attribution::Gone,
        },
    }
}
