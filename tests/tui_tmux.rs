//! The dashboard in a real terminal: tmux runs the real binary replaying a
//! capture at its recorded pace; `send-keys` drives it and `capture-pane`
//! reads the screen. (The NFQUEUE case, with live pings in a namespace, is
//! in tests/netns/run.sh.) Needs tmux (tests/setup-debian.sh installs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{echo, ipv4_icmp, ipv6_icmp, write_pcap};
use pcap_file::DataLink;

const T0: u64 = 1_700_000_000_000_000_000;

/// 8 s of pings every 100 ms: 10.0.0.2, .3 and .4 to 10.0.0.1 (.4 gets
/// every other reply only) and fd00::2 to fd00::1.
fn capture(path: &Path) {
    let mut frames = Vec::new();
    for seq in 0..80u16 {
        let t = T0 + u64::from(seq) * 100_000_000;
        for (i, host) in [2u8, 3, 4].into_iter().enumerate() {
            let t = t + i as u64 * 1_000_000;
            frames.push((
                t,
                ipv4_icmp([10, 0, 0, host], [10, 0, 0, 1], &echo(8, 1, seq)),
            ));
            if host != 4 || seq % 2 == 0 {
                let reply = ipv4_icmp([10, 0, 0, 1], [10, 0, 0, host], &echo(0, 1, seq));
                frames.push((t + 300_000, reply));
            }
        }
        frames.push((t + 5_000_000, ipv6_icmp(2, 1, &echo(128, 9, seq))));
        frames.push((t + 5_400_000, ipv6_icmp(1, 2, &echo(129, 9, seq))));
    }
    write_pcap(path, DataLink::RAW, &frames);
}

/// A tmux server of our own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-u", "-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed by tests/setup-debian.sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "tui"])
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.cmd(&["send-keys", "-t", "tui", k]);
            // Apart: an Esc followed at once by a key reads as Alt+key.
            sleep(Duration::from_millis(150));
        }
    }

    fn text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", "tui", "-l", text]);
        sleep(Duration::from_millis(150));
    }

    /// Waits until the screen satisfies `pred`; panics with the screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}; screen:\n{s}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The number after `label` on the screen, e.g. `messages 123`.
fn number_after(screen: &str, label: &str) -> u64 {
    let at = screen
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{screen}"));
    screen[at + label.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The first data row of the peers table.
fn first_peer(screen: &str) -> &str {
    let mut lines = screen
        .lines()
        .skip_while(|l| !l.contains("requester → responder"));
    lines.next();
    lines.next().unwrap_or("")
}

#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn dashboard_in_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("pings.pcap");
    capture(&pcap);
    let (before, after) = (
        dir.path().join("stty.before"),
        dir.path().join("stty.after"),
    );
    let script = format!(
        "stty -g > {b}; {bin} --source pcap:{f} --replay realtime 2>{err}; echo EXIT=$?; stty -g > {a}; sleep 60",
        b = before.display(),
        a = after.display(),
        bin = env!("CARGO_BIN_EXE_icmpmon"),
        f = pcap.display(),
        err = dir.path().join("stderr").display(),
    );
    let tmux = Tmux {
        socket: format!("icmpmon-test-{}", std::process::id()),
    };
    session(&tmux, &script);

    // The peers and counts of the capture as they arrive.
    let s = tmux.wait_for("4 peers", |s| s.contains("peers 4 "));
    for pair in [
        "10.0.0.2 → 10.0.0.1",
        "10.0.0.3 → 10.0.0.1",
        "10.0.0.4 → 10.0.0.1",
        "fd00::2 → fd00::1",
    ] {
        assert!(s.contains(pair), "{pair} missing:\n{s}");
    }
    assert!(s.contains("source pcap file"), "{s}");
    assert!(number_after(&s, "messages ") > 0, "{s}");

    // p freezes the display (capture goes on), p again resumes.
    tmux.keys(&["p"]);
    let paused = tmux.wait_for("PAUSED", |s| s.contains(" PAUSED "));
    let frozen = number_after(&paused, "messages ");
    sleep(Duration::from_millis(600));
    assert_eq!(
        number_after(&tmux.screen(), "messages "),
        frozen,
        "display moved while paused"
    );
    tmux.keys(&["p"]);
    let s = tmux.wait_for("resume", |s| {
        !s.contains(" PAUSED ") && number_after(s, "messages ") > frozen
    });

    // s sorts by loss: 10.0.0.4 (half its replies missing) comes first
    // once its first requests pass the 2 s timeout.
    assert!(s.contains("sort: requests"), "{s}");
    tmux.keys(&["s"]);
    tmux.wait_for("10.0.0.4 first by loss", |s| {
        s.contains("sort: loss") && first_peer(s).contains("10.0.0.4 → 10.0.0.1")
    });
    // Issue 10.4: after a resize, the next key acts at once (it used to
    // wait for another key).
    let sort_label = |s: &str| {
        s.split("sort: ")
            .nth(1)
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let sorted_by = sort_label(&tmux.screen());
    tmux.cmd(&["resize-window", "-t", "tui", "-x", "110", "-y", "36"]);
    // Redrawn at the new size: the footer is on the last of 36 lines.
    tmux.wait_for("the redraw after a resize", |s| {
        s.lines().nth(35).is_some_and(|l| l.contains("q quit"))
    });
    tmux.cmd(&["send-keys", "-t", "tui", "s"]);
    tmux.wait_for("the key after a resize", |s| {
        !sort_label(s).is_empty() && sort_label(s) != sorted_by
    });
    tmux.cmd(&["resize-window", "-t", "tui", "-x", "120", "-y", "40"]);
    // Back to sorting by loss (the orders cycle: a few presses at most).
    for _ in 0..10 {
        if tmux.screen().contains("sort: loss") {
            break;
        }
        tmux.keys(&["s"]);
    }
    tmux.wait_for("sort: loss", |s| s.contains("sort: loss"));

    // / with a bad expression: the error shows inline, the edit stays.
    tmux.keys(&["/"]);
    tmux.text("type bogus");
    tmux.keys(&["Enter"]);
    tmux.wait_for("inline filter error", |s| {
        s.contains("unknown ICMP type 'bogus'")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("edit closed", |s| s.contains("q quit  p pause"));
    // A good one applies to the statistics: only the IPv6 pair is left.
    tmux.keys(&["/"]);
    tmux.text("family 6");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("filtered view", |s| {
        s.contains("filter family 6") && s.contains("peers 1 ")
    });
    assert!(
        s.contains("fd00::2 → fd00::1") && !s.contains("10.0.0.2 → 10.0.0.1"),
        "{s}"
    );

    // Help overlay, closed again.
    tmux.keys(&["?"]);
    tmux.wait_for("help", |s| s.contains("cycle the peers' sort order"));
    tmux.keys(&["Escape"]);
    tmux.wait_for("help closed", |s| {
        !s.contains("cycle the peers' sort order")
    });

    // q: exit status 0, the summary on stderr, the terminal as it was.
    tmux.keys(&["q"]);
    tmux.wait_for("exit", |s| s.contains("EXIT="));
    let s = tmux.wait_for("exit status", |s| s.contains("EXIT=0"));
    assert!(
        !s.contains("requester → responder"),
        "dashboard left on screen:\n{s}"
    );
    // The shell saves the modes after it echoes the status.
    let start = Instant::now();
    while std::fs::read_to_string(&after).map_or(true, |t| t.is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no terminal modes saved"
        );
        sleep(Duration::from_millis(20));
    }
    let (b, a) = (
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
    );
    assert!(
        !b.is_empty() && a == b,
        "terminal modes not restored: {b} vs {a}"
    );
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(err.contains("icmpmon: summary source=pcap"), "{err}");
    assert!(err.contains("fd00::2 → fd00::1:"), "{err}");
}

/// Starts `script` in a fresh tmux session `tui` (120x40).
fn session(tmux: &Tmux, script: &str) {
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "120",
        "-y",
        "40",
        script,
    ]);
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// Issue 10.3: the terminal goes away after a resize with a key pending:
/// the dashboard ends (no 100 % CPU spin, no error).
#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn terminal_gone_ends_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("pings.pcap");
    capture(&pcap);
    let pidfile = dir.path().join("pid");
    let err = dir.path().join("stderr");
    for round in 0..3 {
        let tmux = Tmux {
            socket: format!("icmpmon-gone-{}-{round}", std::process::id()),
        };
        let script = format!(
            "echo $$ > {p}; exec {bin} --source pcap:{f} --replay x0.1 2>{e}",
            p = pidfile.display(),
            bin = env!("CARGO_BIN_EXE_icmpmon"),
            f = pcap.display(),
            e = err.display(),
        );
        session(&tmux, &script);
        tmux.wait_for("dashboard", |s| s.contains("requester → responder"));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tmux.cmd(&["resize-window", "-t", "tui", "-x", "100", "-y", "30"]);
        tmux.cmd(&["send-keys", "-t", "tui", "x"]);
        tmux.cmd(&["kill-session", "-t", "tui"]);
        let start = Instant::now();
        while alive(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "round {round}: icmpmon still runs 5 s after its terminal went away"
            );
            sleep(Duration::from_millis(50));
        }
        let e = std::fs::read_to_string(&err).unwrap_or_default();
        assert!(!e.contains("the dashboard failed"), "round {round}: {e}");
    }
}

/// Issue 10.7: a double Ctrl-C without a dashboard writes no terminal
/// escapes into the CSV.
#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn double_ctrl_c_leaves_no_escapes_in_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("pings.pcap");
    capture(&pcap);
    let csv = dir.path().join("out.csv");
    let tmux = Tmux {
        socket: format!("icmpmon-cc-{}", std::process::id()),
    };
    let script = format!(
        "{bin} --source pcap:{f} --replay realtime --csv - > {c}; echo EXIT=$?; sleep 60",
        bin = env!("CARGO_BIN_EXE_icmpmon"),
        f = pcap.display(),
        c = csv.display(),
    );
    session(&tmux, &script);
    tmux.wait_for("capturing", |s| s.contains("capturing from"));
    // Rows are coming: the CSV has its header.
    let start = Instant::now();
    while !std::fs::read(&csv)
        .unwrap_or_default()
        .starts_with(b"timestamp,")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no rows written");
        sleep(Duration::from_millis(20));
    }
    // Both at once. A file run stops in milliseconds, so the first usually
    // wins; tests/netns/run.sh catches the second during a slower stop.
    tmux.cmd(&["send-keys", "-t", "tui", "C-c", "C-c"]);
    let s = tmux.wait_for("exit", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=130") || s.contains("EXIT=0"), "{s}");
    let out = std::fs::read(&csv).unwrap();
    assert!(
        !out.contains(&0x1b),
        "escape bytes in the CSV: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        out.starts_with(b"timestamp,"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// Starts `bin ARGS` in a fresh session of `tmux`, stderr to `err`.
fn dashboard(tmux: &Tmux, args: &str, err: &Path) {
    let script = format!(
        "{bin} {args} 2>{e}; echo EXIT=$?; sleep 60",
        bin = env!("CARGO_BIN_EXE_icmpmon"),
        e = err.display(),
    );
    session(tmux, &script);
}

/// Issue 20.1: a capture file read at full speed ends with the dashboard
/// showing the final aggregate (it used to keep an early view for good),
/// filtered or not.
#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn a_finished_file_shows_its_final_counts() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("many.pcap");
    let mut frames = Vec::new();
    for i in 0..10_124u32 {
        let t = T0 + u64::from(i) * 1_000;
        let seq = (i % 65_536) as u16;
        frames.push((
            t,
            ipv4_icmp([10, 0, 1, (i % 200) as u8], [10, 0, 0, 1], &echo(8, 7, seq)),
        ));
    }
    // Seven errors among them.
    for i in 0..7u64 {
        let unreach = [3, 3, 0, 0, 0, 0, 0, 0];
        frames.push((
            T0 + 20_000_000 + i,
            ipv4_icmp([10, 0, 0, 1], [10, 0, 1, 1], &unreach),
        ));
    }
    write_pcap(&pcap, DataLink::RAW, &frames);
    let err = dir.path().join("stderr");
    for (filter, want) in [
        ("", 10_131),
        (
            " --filter 'not type echo-request and not type echo-reply'",
            7,
        ),
    ] {
        let tmux = Tmux {
            socket: format!("icmpmon-final-{}-{want}", std::process::id()),
        };
        dashboard(
            &tmux,
            &format!("--source pcap:{}{filter}", pcap.display()),
            &err,
        );
        let s = tmux.wait_for("the end of the file", |s| s.contains("capture ended"));
        let s = if number_after(&s, "messages ") == want {
            s
        } else {
            // The end is told before the last view can follow it.
            tmux.wait_for("the final count", |s| number_after(s, "messages ") == want)
        };
        assert_eq!(number_after(&s, "messages "), want, "{s}");
        // A file says nothing of this host: no namespace, no kernel line.
        assert!(!s.contains("netns ") && !s.contains("kernel "), "{s}");
        tmux.keys(&["q"]);
        tmux.wait_for("exit", |s| s.contains("EXIT=0"));
    }
}

/// Issue 20.4: with the events panel scrolled back to its first event, the
/// panel still shows every event (it used to draw the first line only).
#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn scrolling_back_keeps_the_events_panel_full() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("three.pcap");
    let frames: Vec<(u64, Vec<u8>)> = (0..3u8)
        .map(|i| {
            let unreach = [3, 3, 0, 0, 0, 0, 0, 0];
            (
                T0 + u64::from(i) * 1_000_000,
                ipv4_icmp([10, 0, 0, 1], [10, 0, 7, 10 + i], &unreach),
            )
        })
        .collect();
    write_pcap(&pcap, DataLink::RAW, &frames);
    let tmux = Tmux {
        socket: format!("icmpmon-scroll-{}", std::process::id()),
    };
    let err = dir.path().join("stderr");
    dashboard(&tmux, &format!("--source pcap:{}", pcap.display()), &err);
    tmux.wait_for("the end of the file", |s| s.contains("capture ended"));
    let events = |s: &str| {
        (10..13)
            .filter(|i| s.contains(&format!("10.0.7.{i} ")))
            .count()
    };
    tmux.wait_for("3 events", |s| events(s) == 3);
    tmux.keys(&["Tab", "Home"]);
    let s = tmux.wait_for("scrolled back", |s| s.contains(" back, End: follow"));
    assert_eq!(events(&s), 3, "the scrolled-back panel lost events:\n{s}");
    tmux.keys(&["q"]);
    tmux.wait_for("exit", |s| s.contains("EXIT=0"));
}

/// Issue 20.7: an echo flood from a host is its flag, shown once with it
/// (alerts), not on every pair it pings: a 3-request pair of the flooding
/// host carries no flag.
#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn a_source_flag_is_not_put_on_each_of_its_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("flood.pcap");
    let mut frames = Vec::new();
    for seq in 0..60u16 {
        let t = T0 + u64::from(seq) * 10_000_000;
        frames.push((t, ipv4_icmp([10, 0, 0, 9], [10, 0, 0, 1], &echo(8, 1, seq))));
    }
    for seq in 0..3u16 {
        let t = T0 + u64::from(seq) * 100_000_000 + 5_000_000;
        frames.push((t, ipv4_icmp([10, 0, 0, 9], [10, 0, 0, 5], &echo(8, 2, seq))));
        frames.push((
            t + 200_000,
            ipv4_icmp([10, 0, 0, 5], [10, 0, 0, 9], &echo(0, 2, seq)),
        ));
    }
    frames.sort_by_key(|f| f.0);
    write_pcap(&pcap, DataLink::RAW, &frames);
    let tmux = Tmux {
        socket: format!("icmpmon-flags-{}", std::process::id()),
    };
    let err = dir.path().join("stderr");
    let args = format!("--source pcap:{} --flood-pps 20", pcap.display());
    dashboard(&tmux, &args, &err);
    let s = tmux.wait_for("the flood's alert", |s| {
        s.contains("capture ended") && s.contains("echo-flood 10.0.0.9")
    });
    let pair = s
        .lines()
        .find(|l| l.contains("10.0.0.9 → 10.0.0.5"))
        .unwrap_or_else(|| panic!("no 10.0.0.9 → 10.0.0.5 row:\n{s}"));
    assert!(!pair.contains("echo-flood"), "{pair}");
    tmux.keys(&["q"]);
    tmux.wait_for("exit", |s| s.contains("EXIT=0"));
}

/// Issue 20.8: a `/` filter applies to what was already seen: set after a
/// file has been read, it shows the matching messages at once (it used to
/// start every count from zero).
#[test]
#[ignore = "needs tmux: tests/run-all.sh runs it"]
fn a_view_filter_counts_what_was_already_seen() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("pings.pcap");
    capture(&pcap);
    let tmux = Tmux {
        socket: format!("icmpmon-seen-{}", std::process::id()),
    };
    let err = dir.path().join("stderr");
    dashboard(&tmux, &format!("--source pcap:{}", pcap.display()), &err);
    tmux.wait_for("the end of the file", |s| s.contains("capture ended"));
    tmux.keys(&["/"]);
    tmux.text("family 6");
    tmux.keys(&["Enter"]);
    // 80 IPv6 requests and their 80 replies, all read before the filter.
    let s = tmux.wait_for("the filtered view", |s| s.contains("filter family 6"));
    assert_eq!(number_after(&s, "messages "), 160, "{s}");
    assert!(
        s.contains("fd00::2 → fd00::1") && s.contains("peers 1 "),
        "{s}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("exit", |s| s.contains("EXIT=0"));
}
