//! The end of a run on stderr (the human summary and the machine-readable
//! line) and in --summary-json.

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::Context;

use crate::report;
use crate::stderr::{say, say_text};

pub(super) fn write_json(
    mut w: Box<dyn Write + Send>,
    name: &str,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let written = serde_json::to_writer_pretty(&mut w, value)
        .map_err(io::Error::from)
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush());
    match written {
        // Its reader has gone: like a closed row output, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("cannot write the summary to {name}")),
    }
}

/// The human summary and the machine-readable line on stderr; `stopped`
/// says why the run ended (a capture's error is left to the run's last
/// line, so that it is said once).
pub(super) fn print_summary(
    run: &report::Summary,
    stopped: &str,
    out_names: &str,
    lost: &[(&'static str, u64)],
    fields: &[(&'static str, u64)],
    parse_errors: &BTreeMap<&'static str, u64>,
) {
    say_text!("{}", report::text(run.snapshot));
    // In pipeline order, unlike the JSON map.
    let losses: Vec<String> = lost.iter().map(|(what, n)| format!("{what} {n}")).collect();
    say!(
        "icmpmon: {}; {} rows{} ({out_names}) in {:.1} s; lost: {}; parse errors {}; \
         not ICMP {}; filtered out {}",
        stopped,
        run.rows,
        run.saved
            .map_or(String::new(), |n| format!(", {n} packets saved")),
        run.seconds,
        losses.join(", "),
        run.parse_errors,
        run.not_icmp,
        run.filtered,
    );
    let fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    say!(
        "icmpmon: summary source={} rows={} packets={}{fields} channel_dropped={} \
         parse_errors={} not_icmp={} seconds={:.3} packets_per_s={:.0}",
        run.source,
        run.rows,
        run.packets,
        run.lost.get("channel").copied().unwrap_or(0),
        run.parse_errors,
        run.not_icmp,
        run.seconds,
        run.packets as f64 / run.seconds.max(1e-9),
    );
    for (label, n) in parse_errors {
        say!("icmpmon:   parse error {label}: {n}");
    }
}
