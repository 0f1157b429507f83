//! SIGHUP without the dashboard: read --config again and ask the
//! aggregator thread to apply it and to reopen the output files.

use crossbeam_channel::{Receiver, Sender};

use crate::config::{self, FileConfig, Layered, Live, Reload};
use crate::stderr::say;

/// What SIGHUP does without the dashboard: reads the --config file again
/// (keeping the running settings when it has become bad) and asks the
/// aggregator to apply it and to reopen the output files.
pub(super) fn reloader(
    layered: Option<(Layered, FileConfig)>,
    (tx, rx): (Sender<Reload>, Receiver<Reload>),
) -> Box<dyn FnMut() + Send> {
    let mut layered = layered;
    Box::new(move || {
        let live = layered.as_mut().and_then(|(l, last)| match l.load() {
            Ok((cli, file)) => {
                let later = config::changed_at_restart(last, &file);
                if !later.is_empty() {
                    say!(
                        "icmpmon: SIGHUP: {} changed in {}: applied at the next start",
                        later.join(", "),
                        l.path.display()
                    );
                }
                let live = Live::of(&cli.run, file.groups.clone());
                *last = file;
                say!("icmpmon: SIGHUP: reloaded {}", l.path.display());
                Some(live)
            }
            Err(e) => {
                say!("icmpmon: SIGHUP: {e}; the running settings stay");
                None
            }
        });
        // One reload waits at most: a newer one replaces it, keeping its
        // settings if this read of the file failed.
        let mut next = Reload { live };
        while let Err(crossbeam_channel::TrySendError::Full(r)) = tx.try_send(next) {
            next = r;
            if let Ok(waiting) = rx.try_recv() {
                next.live = next.live.or(waiting.live);
            }
        }
    })
}
