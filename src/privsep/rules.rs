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

/// The monitor's side: requests in order, each answered in order; posted
/// ones (verdicts) are not waited for at once.
#[derive(Debug)]
pub(crate) struct RulesHelper {
    line: Mutex<Line>,
    pid: u32,
}

/// The helper, and how many posted requests still owe their answer.
#[derive(Debug)]
struct Line {
    helper: Helper,
    posted: usize,
}

/// Posted requests whose answers may wait: far fewer than either end of
/// the socket holds, so neither side ever blocks on a send.
const MAX_POSTED: usize = 32;

impl Line {
    /// The next answer, within `wait`.
    fn answer(&mut self, wait: Duration) -> io::Result<Answer> {
        let mut answer = [0u8; ANSWER_LEN];
        let (n, _) = self.helper.next_answer(&mut answer, wait)?;
        Answer::decode(&answer[..n]).ok_or_else(|| {
            // Which request it answered is no longer known: no later
            // answer can be trusted to be its request's.
            self.helper.hang_up();
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed answer from the rules helper",
            )
        })
    }

    /// The oldest posted request's answer.
    fn settle(&mut self) -> io::Result<Answer> {
        let answer = self.answer(Duration::from_secs(10))?;
        self.posted -= 1;
        Ok(answer)
    }
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
            line: Mutex::new(Line { helper, posted: 0 }),
            pid,
        })))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The line, within a while, not forever: an exit path (a second
    /// interrupt, the panic hook) may ask while a verdict is on its way.
    fn line(&self) -> io::Result<std::sync::MutexGuard<'_, Line>> {
        lock_within(&self.line, EXIT_WAIT).ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

impl Privileged for RulesHelper {
    fn call(&self, request: Request) -> io::Result<Answer> {
        let mut line = self.line()?;
        // Answers come in order: the posted requests' first. One not sent
        // is said (the kernel counts what it then held back) and the
        // request goes on: at the end, the rules must still be removed.
        while line.posted > 0 {
            let answer = line.settle()?;
            if answer != Answer::Sent {
                say!("icmpmon: the rules helper answered a verdict with {answer:?}");
            }
        }
        // Removing or emptying the rules runs nft or iptables, which may
        // wait for the xtables lock: those get long.
        let wait = match request {
            Request::Remove | Request::StopSending => Duration::from_secs(120),
            _ => Duration::from_secs(10),
        };
        line.helper.post(&request.encode())?;
        line.answer(wait)
    }

    /// Sent without waiting: the capture thread reads the next burst while
    /// the helper sends this verdict. Answers already back are read (an
    /// error if one was not sent), and the oldest is waited for only when
    /// `MAX_POSTED` are out.
    fn post(&self, request: Request) -> io::Result<Result<(), Answer>> {
        let mut line = self.line()?;
        while line.posted >= MAX_POSTED || (line.posted > 0 && line.helper.answered()) {
            match line.settle()? {
                Answer::Sent => {}
                other => return Ok(Err(other)),
            }
        }
        line.helper.post(&request.encode())?;
        line.posted += 1;
        Ok(Ok(()))
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
