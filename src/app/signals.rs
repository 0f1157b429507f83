//! The run's signals: the first SIGINT/SIGTERM/SIGHUP stops it cleanly, a
//! second exits at once, and without the dashboard SIGHUP reloads.

use crate::stderr::say;
use std::thread;

use anyhow::Context;

use icmpmon_capture::pipeline::{Stop, StopReason};
use icmpmon_capture::rules::Ledger;

/// The run's signals, caught from the start: `catch_signals` is called
/// before any side effect (files, rules, a registration), so none can be
/// left behind by an early signal; signals that arrive before
/// `handle_signals` starts the thread wait in signal-hook's queue.
/// `signal-hook` rather than `ctrlc`: a hang-up must be told apart from an
/// interrupt.
pub(super) fn catch_signals() -> anyhow::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the SIGINT/SIGTERM/SIGHUP handler")
}

/// The first SIGINT/SIGTERM/SIGHUP stops the run cleanly; a second SIGINT
/// or SIGTERM leaves at once (a hang-up often comes with another signal,
/// and must not cut the output short). With `on_hup` (no dashboard, so no
/// terminal to hang up), SIGHUP calls it instead: a reload. Started once
/// capabilities are dropped: capabilities are per thread, and this one runs
/// iptables on the way out.
pub(super) fn handle_signals(
    mut signals: signal_hook::iterator::Signals,
    stop: Stop,
    ledger: Ledger,
    mut on_hup: Option<Box<dyn FnMut() + Send>>,
) -> anyhow::Result<()> {
    use signal_hook::consts::SIGHUP;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut hits = 0;
            for sig in signals.forever() {
                if let (SIGHUP, Some(reload)) = (sig, on_hup.as_mut()) {
                    reload();
                    continue;
                }
                hits += 1;
                if hits > 1 && sig == SIGHUP {
                    continue;
                }
                if hits == 1 {
                    stop.set(if sig == SIGHUP {
                        StopReason::Hangup
                    } else {
                        StopReason::Signal
                    });
                    say!("icmpmon: stopping (interrupt again to exit at once)");
                } else {
                    say!("icmpmon: second interrupt, exiting now");
                    // No destructors run past exit: remove our firewall
                    // rules, and give the terminal back if the dashboard
                    // has it.
                    if let Some(Err(e)) = ledger.remove() {
                        say!("icmpmon: cannot remove icmpmon's firewall rules: {e}");
                    }
                    icmpmon_tui::restore();
                    std::process::exit(130);
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
