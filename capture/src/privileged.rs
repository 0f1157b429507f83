//! The rules helper's side of privilege separation (see `rules::remote`
//! for the protocol): it holds the rules a monitor handed over and a copy
//! of the source's netlink socket, and does what one request asks, making
//! each message itself: a batch verdict for its own queue (`nfqueue`), a
//! batch size for its own `out` log group (`nflog`), stopping or removing
//! its rules (`rules`).

use std::os::fd::OwnedFd;

use crate::rules::{Answer, Handoff, Ledger, Request, Rules, Target};

/// The helper's side: the rules handed over and the source's socket.
/// Dropped with rules still installed (the monitor went away, or a
/// removal failed), it removes them.
#[derive(Debug)]
pub struct Executor {
    rules: Option<Rules>,
    /// The rules' record, kept past a failed removal for the next try.
    ledger: Ledger,
    target: Target,
    /// The source's socket, until `Request::Release`.
    sock: Option<OwnedFd>,
}

impl Executor {
    pub fn new(handoff: Handoff, sock: OwnedFd) -> Self {
        let ledger = Ledger::new();
        let rules = Rules::adopt(handoff, &ledger);
        Self {
            rules: Some(rules),
            ledger,
            target: handoff.target,
            sock: Some(sock),
        }
    }

    /// Whether rules may still be installed.
    pub fn holds_rules(&self) -> bool {
        self.rules.is_some() || self.ledger.installed().is_some()
    }

    pub fn serve(&mut self, request: Request) -> Answer {
        match (request, self.target) {
            (Request::Verdict { id }, Target::Queue(queue)) => {
                self.send(&crate::nfqueue::verdict_message(queue, id))
            }
            (Request::OutBatch { packets }, Target::Log { group, snaplen, .. }) => self.send(
                &crate::nflog::out_batch_message(group.wrapping_add(1), packets, snaplen),
            ),
            (Request::StopSending, _) => {
                Answer::Stopping(self.rules.as_mut().is_some_and(Rules::stop_sending))
            }
            (Request::Release, _) => {
                self.sock = None;
                Answer::Sent
            }
            (Request::Remove, _) => {
                let removed = match self.rules.take() {
                    Some(r) => r.remove(),
                    // A removal that failed before: tried again.
                    None => self.ledger.remove().unwrap_or(Ok(0)),
                };
                match removed {
                    Ok(n) => Answer::Removed(n),
                    Err(e) => Answer::NotRemoved(e.to_string()),
                }
            }
            _ => Answer::Refused(libc::EINVAL),
        }
    }

    fn send(&self, message: &[u8]) -> Answer {
        let Some(sock) = &self.sock else {
            return Answer::Refused(libc::EBADF);
        };
        match rustix::net::send(sock, message, rustix::net::SendFlags::NOSIGNAL) {
            Ok(_) => Answer::Sent,
            Err(e) => Answer::Refused(e.raw_os_error()),
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        drop(self.rules.take());
        if let Some(Err(e)) = self.ledger.remove() {
            tracing::warn!("cannot remove icmpmon's firewall rules: {e}");
        }
    }
}
