//! The metrics endpoint (`--metrics-listen`): the aggregator thread
//! publishes a copy of what it counts about once a second (`Publisher`);
//! the HTTP thread (`http`) encodes the newest copy on a scrape. Neither
//! waits for the other beyond swapping one pointer, and capture never
//! waits for either.
//!
//! Series are bounded: per-peer labels only for `--metrics-peers` pairs,
//! the rest summed in one `other` pair.

mod encode;
pub(crate) mod http;
mod publish;

pub(crate) use publish::{Publisher, Shared};

/// The listening socket a service manager passed (systemd's socket
/// activation: LISTEN_FDS, the first one), if any. With it, the service
/// needs no Internet socket of its own (its unit can forbid AF_INET).
/// Called before any thread starts (it clears the environment variables).
pub(crate) fn passed_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    use anyhow::Context;
    let l = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context(
            "the socket the service manager passed (LISTEN_FDS) is not a listening TCP socket",
        )?;
    if let Some(l) = &l {
        l.set_nonblocking(true)
            .context("cannot set the metrics listener non-blocking")?;
    }
    Ok(l)
}
