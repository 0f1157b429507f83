//! The rules helper: for a source with firewall rules (nflog, nfqueue),
//! what needs CAP_NET_ADMIN once the monitor holds none. The monitor hands
//! it the rules as installed and a copy of the source's netlink socket,
//! then asks typed, fixed-size requests (`icmpmon_capture::rules::remote`
//! has the protocol, `icmpmon_capture::privileged` the helper's `Executor`). When the monitor goes
//! away without asking, however it ends, the helper removes the rules.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use icmpmon_capture::privileged::Executor;
use icmpmon_capture::rules::{
    lock_within, Answer, Handoff, Privileged, Request, ANSWER_LEN, EXIT_WAIT, HANDOFF_LEN,
    REQUEST_LEN,
};
use icmpmon_capture::source::Source;

use super::{Helper, Role, Served};
use crate::stderr::say;

/// The monitor's side: one request at a time.
#[derive(Debug)]
pub(crate) struct RulesHelper {
    helper: Mutex<Helper>,
    pid: u32,
}

impl RulesHelper {
    /// Starts the helper for `source`'s rules, if it has any, and hands
    /// them over. Called while the process still holds the capabilities.
    pub(crate) fn start(source: &dyn Source) -> io::Result<Option<Arc<Self>>> {
        let Some((handoff, fd)) = source.handoff() else {
            return Ok(None);
        };
        let mut helper = Helper::spawn(Role::Rules)?;
        helper.hand(&handoff.encode(), fd)?;
        let pid = helper.pid();
        Ok(Some(Arc::new(Self {
            helper: Mutex::new(helper),
            pid,
        })))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl Privileged for RulesHelper {
    fn call(&self, request: Request) -> io::Result<Answer> {
        // A while, not forever: an exit path (a second interrupt, the
        // panic hook) may ask while a verdict is on its way.
        let mut helper = lock_within(&self.helper, EXIT_WAIT).ok_or(io::ErrorKind::WouldBlock)?;
        // Removing or emptying the rules runs nft or iptables, which may
        // wait for the xtables lock: those get long.
        let wait = match request {
            Request::Remove | Request::StopSending => Duration::from_secs(120),
            _ => Duration::from_secs(10),
        };
        let mut answer = [0u8; ANSWER_LEN];
        let n = helper.call(&request.encode(), &mut answer, wait)?;
        Answer::decode(&answer[..n]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed answer from the rules helper",
            )
        })
    }
}

/// The helper's loop (in its own process, with the capabilities
/// `Role::Rules` keeps): the handoff, then one request at a time until the
/// monitor closes the socket or sends something malformed. Rules still
/// installed then are removed (`Executor`'s drop).
pub(crate) fn serve(served: &Served) {
    let Some((bytes, sock)) = served.first_with_fd(HANDOFF_LEN) else {
        return;
    };
    let Some(handoff) = Handoff::decode(&bytes) else {
        return;
    };
    let mut executor = Executor::new(handoff, sock);
    let mut buf = [0u8; REQUEST_LEN];
    while let Some(request) = served.next(&mut buf, REQUEST_LEN) {
        let Some(request) = Request::decode(request) else {
            break;
        };
        if !served.answer(&executor.serve(request).encode()) {
            break;
        }
    }
    if executor.holds_rules() {
        say!("icmpmon: the monitor went away: its rules helper removes its firewall rules");
    }
}
