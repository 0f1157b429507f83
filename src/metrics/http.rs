//! A small HTTP/1.x server for `GET /metrics`, on one thread (mio).
//!
//! Bounded whatever clients do: at most `MAX_CONNS` connections, each with
//! an 8 KiB request buffer and `DEADLINE` to send its request and take its
//! answer. When full, the oldest connection that has had `GRACE` is closed
//! (a slow or stuck client, sending or reading: a scraper sends its request
//! at once and reads a 2 MB answer in milliseconds). Every answer closes its
//! connection: the write side at once, then what the client still sends
//! is read and dropped until it closes too (a close with unread data would
//! reset the connection and could lose the answer, e.g. a 431). Bodies are
//! encoded once per publication and shared.
//!
//! Why not hyper or tiny_http: hyper needs an async runtime for one
//! endpoint, and tiny_http runs a thread per client, which slow clients
//! can multiply.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::net::{TcpListener as MioListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use prometheus_client::registry::Registry;

use super::encode::{registry, Stats};
use super::publish::Shared;

const MAX_CONNS: usize = 256;
const MAX_REQUEST: usize = 8192;
const MAX_HEADERS: usize = 64;
const DEADLINE: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Binds the endpoint's address (before privileges are dropped, so a port
/// below 1024 works with CAP_NET_BIND_SERVICE).
pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} for --metrics-listen (in use? another address or port?)")
    })?;
    l.set_nonblocking(true)
        .context("cannot set the metrics listener non-blocking")?;
    Ok(l)
}

/// The running endpoint; `stop` ends its thread.
#[derive(Debug)]
pub(crate) struct Server {
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listener: TcpListener,
        shared: Arc<Shared>,
        source: &'static str,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let registry = registry(shared.clone(), source, stats.clone());
        let poll = Poll::new().context("cannot create the metrics poller")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("cannot create a waker")?);
        let mut listener = MioListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .context("cannot poll the metrics listener")?;
        let mut server = Endpoint {
            poll,
            listener,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            accept_pending: true,
            accept_retry: None,
            last_warning: None,
            shared,
            registry,
            stats,
            cache: None,
        };
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || server.run())
            .context("cannot start the metrics thread")?;
        Ok(Self {
            waker,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        if self.waker.wake().is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

struct Conn {
    stream: TcpStream,
    accepted: Instant,
    request: Vec<u8>,
    /// Set once the request is read: the answer's head and body, and how
    /// much of them is written.
    answer: Option<(Vec<u8>, Arc<[u8]>, usize)>,
    /// The answer is out; waiting for the client to close.
    draining: bool,
}

struct Endpoint {
    poll: Poll,
    listener: MioListener,
    conns: Vec<Option<Conn>>,
    accept_pending: bool,
    /// accept() failed (out of descriptors, say): try again from then.
    accept_retry: Option<Instant>,
    last_warning: Option<Instant>,
    shared: Arc<Shared>,
    registry: Registry,
    stats: Arc<Stats>,
    /// The last encoding: (data version, format, body).
    cache: Option<(u64, Format, Arc<[u8]>)>,
}

impl Endpoint {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("metrics endpoint stopped: {e}");
                return;
            }
            for ev in &events {
                match ev.token() {
                    WAKER => return,
                    LISTENER => self.accept_pending = true,
                    Token(i) => self.serve(i),
                }
            }
            if self.accept_retry.is_some_and(|t| Instant::now() >= t) {
                self.accept_retry = None;
                self.accept_pending = true;
            }
            self.accept();
            self.expire();
        }
    }

    fn next_timeout(&self) -> Duration {
        if self.accept_pending && self.conns.iter().any(Option::is_none) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        // Full with clients waiting: the next one to reach `GRACE` can go.
        let until = if self.accept_pending { GRACE } else { DEADLINE };
        let soonest = self
            .conns
            .iter()
            .flatten()
            .map(|c| (c.accepted + until).saturating_duration_since(now))
            .chain(self.accept_retry.map(|t| t.saturating_duration_since(now)))
            .min();
        // A little past the deadline, so that it has passed when we wake.
        soonest.map_or(Duration::from_secs(1), |d| d + Duration::from_millis(1))
    }

    fn accept(&mut self) {
        while self.accept_pending {
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(s) => s,
                None => match self.evict() {
                    Some(s) => s,
                    None => return,
                },
            };
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(slot), Interest::READABLE)
                        .is_ok()
                    {
                        self.conns[slot] = Some(Conn {
                            stream,
                            accepted: Instant::now(),
                            request: Vec::new(),
                            answer: None,
                            draining: false,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept_pending = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, say: try again a little later,
                    // and say so now and then.
                    let now = Instant::now();
                    self.accept_pending = false;
                    self.accept_retry = Some(now + Duration::from_millis(250));
                    if self
                        .last_warning
                        .is_none_or(|t| now - t >= Duration::from_secs(10))
                    {
                        tracing::warn!("metrics endpoint cannot accept: {e}");
                        self.last_warning = Some(now);
                    }
                    return;
                }
            }
        }
    }

    /// Full: closes a connection whose answer is out, or else the oldest
    /// that has had `GRACE` (still sending its request, or not reading its
    /// answer), and returns its slot.
    fn evict(&mut self) -> Option<usize> {
        let now = Instant::now();
        let (i, _) = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| c.draining || now.duration_since(c.accepted) >= GRACE)
            .min_by_key(|(_, c)| (!c.draining, c.accepted))?;
        if self.conns[i].as_ref().is_some_and(|c| !c.draining) {
            self.stats.evicted.fetch_add(1, Relaxed);
        }
        self.close(i);
        Some(i)
    }

    fn expire(&mut self) {
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let Some(c) = &self.conns[i] else { continue };
            if now.duration_since(c.accepted) >= DEADLINE {
                if !c.draining {
                    self.stats.timed_out.fetch_add(1, Relaxed);
                }
                self.close(i);
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Reads what the client sent, answers once the request is whole, and
    /// writes what the socket takes.
    fn serve(&mut self, i: usize) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        if c.draining {
            if !drain(c) {
                self.close(i);
            }
            return;
        }
        if c.answer.is_none() {
            match read_request(c) {
                Received::More => return,
                Received::Request(req) => {
                    let (status, format) = match req {
                        Ok(format) => (200, format),
                        Err(status) => (status, Format::Prometheus),
                    };
                    let answer = self.answer(status, format);
                    self.stats.answered(status);
                    let Some(Some(c)) = self.conns.get_mut(i) else {
                        return;
                    };
                    c.answer = Some(answer);
                    if self
                        .poll
                        .registry()
                        .reregister(&mut c.stream, Token(i), Interest::WRITABLE)
                        .is_err()
                    {
                        return self.close(i);
                    }
                }
                Received::Gone => return self.close(i),
            }
        }
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        if write_answer(c) {
            c.draining = true;
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            let again =
                self.poll
                    .registry()
                    .reregister(&mut c.stream, Token(i), Interest::READABLE);
            if again.is_err() || !drain(c) {
                self.close(i);
            }
        }
    }

    fn answer(&mut self, status: u16, format: Format) -> (Vec<u8>, Arc<[u8]>, usize) {
        let (reason, body, ctype): (&str, Arc<[u8]>, &str) = match status {
            200 => ("OK", self.body(format), format.content_type()),
            400 => (
                "Bad Request",
                Arc::from(&b"bad request\n"[..]),
                "text/plain",
            ),
            404 => (
                "Not Found",
                Arc::from(&b"not found: the metrics are at /metrics\n"[..]),
                "text/plain",
            ),
            405 => (
                "Method Not Allowed",
                Arc::from(&b"use GET\n"[..]),
                "text/plain",
            ),
            _ => (
                "Request Header Fields Too Large",
                Arc::from(&b"request too large\n"[..]),
                "text/plain",
            ),
        };
        let allow = if status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            body.len()
        );
        (head.into_bytes(), body, 0)
    }

    /// The newest data, encoded once per publication and format.
    fn body(&mut self, format: Format) -> Arc<[u8]> {
        let version = self.shared.current().version;
        if let Some((v, f, b)) = &self.cache {
            if *v == version && *f == format {
                return b.clone();
            }
        }
        let mut text = String::new();
        let encoded = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        };
        if let Err(e) = encoded {
            tracing::error!("cannot encode the metrics: {e}");
        }
        let body: Arc<[u8]> = Arc::from(text.into_bytes());
        self.cache = Some((version, format, body.clone()));
        body
    }
}

/// What reading a client gave.
enum Received {
    /// The request is not whole yet.
    More,
    /// A scrape in this format, or a request to refuse with this status.
    Request(Result<Format, u16>),
    /// The client has gone.
    Gone,
}

fn read_request(c: &mut Conn) -> Received {
    let mut buf = [0u8; 4096];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return Received::Gone,
            Ok(n) => {
                let room = MAX_REQUEST - c.request.len();
                c.request.extend_from_slice(&buf[..n.min(room)]);
                if let Some(r) = parse(&c.request) {
                    return Received::Request(r);
                }
                if c.request.len() >= MAX_REQUEST {
                    return Received::Request(Err(431));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::More,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Received::Gone,
        }
    }
}

/// Reads and drops what the client sends after its answer; false once it
/// has closed (or failed).
fn drain(c: &mut Conn) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// The request, once whole (`None` before).
fn parse(buf: &[u8]) -> Option<Result<Format, u16>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Err(431)),
        Err(_) => Some(Err(400)),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if !matches!(req.method, Some("GET" | "HEAD")) {
                return Some(Err(405));
            }
            if path != "/metrics" {
                return Some(Err(404));
            }
            let openmetrics = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
            });
            Some(Ok(if openmetrics {
                Format::OpenMetrics
            } else {
                Format::Prometheus
            }))
        }
    }
}

/// Writes what the socket takes; true when the answer is out (or the
/// client has gone).
fn write_answer(c: &mut Conn) -> bool {
    let head_only = c.request.starts_with(b"HEAD ");
    let Some((head, body, done)) = &mut c.answer else {
        return false;
    };
    let total = head.len() + if head_only { 0 } else { body.len() };
    while *done < total {
        let chunk = if *done < head.len() {
            &head[*done..]
        } else {
            &body[*done - head.len()..]
        };
        match c.stream.write(chunk) {
            Ok(0) => return true,
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_refused_by_rule() {
        let get = |r: &str| parse(r.as_bytes());
        assert_eq!(get("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ok(Format::Prometheus))
        );
        assert_eq!(
            get("GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n"),
            Some(Ok(Format::OpenMetrics))
        );
        assert_eq!(get("GET / HTTP/1.1\r\n\r\n"), Some(Err(404)));
        assert_eq!(get("POST /metrics HTTP/1.1\r\n\r\n"), Some(Err(405)));
        assert_eq!(get("\x16\x03\x01garbage\r\n\r\n"), Some(Err(400)));
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            get(&format!("GET /metrics HTTP/1.1\r\n{many}\r\n")),
            Some(Err(431))
        );
    }
}
