//! Issue 12: `--config FILE`. Bad files are usage errors naming the line
//! and the key; SIGHUP reloads the live settings and reopens the output
//! files, losing no row (log rotation).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{echo, ipv4_icmp, pcap_raw_parts};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn icmpmon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icmpmon"))
}

#[test]
fn bad_files_are_usage_errors_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (
            "headless = true\n\nflood-pps = -3\n",
            ":3: flood-pps: invalid value '-3'",
        ),
        (
            "csv = \"-\"\nnot-an-option = 1\n",
            ":2: not-an-option: unknown key",
        ),
        (
            "source = \"nowhere\"\n",
            ":1: source: invalid value 'nowhere'",
        ),
        ("filter = \"type\"\n", ":1: filter: invalid value"),
        (
            "[peer-groups]\n\"10.0.0.0/8\" = \"a\"\n\"300.0.0.0/8\" = \"b\"\n",
            ":3: peer-groups: \"300.0.0.0/8\" is not an address prefix",
        ),
        ("count = \n", ":1:"),
    ] {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let out = icmpmon()
            .args([
                "--config",
                f.to_str().unwrap(),
                "--source",
                "pcap:/dev/null",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(err.contains(&format!("bad.toml{says}")), "{text:?}: {err}");
    }
    let out = icmpmon()
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

#[test]
fn the_file_applies_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("p.pcap");
    let frames: Vec<(u64, Vec<u8>)> = (0..4u16)
        .flat_map(|i| {
            let t = 1_000_000_000 + u64::from(i) * 1_000_000;
            [
                (t, ipv4_icmp([10, 0, 0, 2], [10, 0, 0, 1], &echo(8, 1, i))),
                (
                    t + 1000,
                    ipv4_icmp([10, 0, 0, 1], [10, 0, 0, 2], &echo(0, 1, i)),
                ),
            ]
        })
        .collect();
    common::write_pcap(&pcap, pcap_file::DataLink::RAW, &frames);
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"pcap:{}\"\ncsv = \"-\"\nfilter = \"type echo-reply\"\n",
            pcap.display()
        ),
    )
    .unwrap();
    let rows = |extra: &[&str]| {
        let out = icmpmon()
            .args(["--config", cfg.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let replies = rows(&[]);
    assert_eq!(replies.lines().count(), 5, "{replies}");
    assert!(replies.lines().skip(1).all(|l| l.contains(",echo-reply,")));
    let requests = rows(&["--filter", "type echo-request"]);
    assert_eq!(requests.lines().count(), 5, "{requests}");
    assert!(requests
        .lines()
        .skip(1)
        .all(|l| l.contains(",echo-request,")));
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Requests from 10.0.0.2 and their replies, `n` of each, starting at
/// `t0` (s) and 10 ms apart.
fn pings(t0: u64, first_seq: u16, n: u16) -> Vec<(u64, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..n {
        let seq = first_seq + i;
        let t = t0 * 1_000_000_000 + u64::from(i) * 10_000_000;
        v.push((t, ipv4_icmp([10, 0, 0, 2], [10, 0, 0, 1], &echo(8, 1, seq))));
        v.push((
            t + 500_000,
            ipv4_icmp([10, 0, 0, 1], [10, 0, 0, 2], &echo(0, 1, seq)),
        ));
    }
    v
}

/// The pcap file header, then `pings`' records, as a pipe carries them.
fn header() -> Vec<u8> {
    pcap_raw_parts(&[]).0
}

fn records(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    pcap_raw_parts(frames).1
}

#[test]
fn sighup_reloads_the_live_settings_and_reopens_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, alerts, cfg) = (
        dir.path().join("rows.csv"),
        dir.path().join("alerts.jsonl"),
        dir.path().join("icmpmon.toml"),
    );
    let config = |filter: &str, flood: u32| {
        format!(
            "source = \"pcap:-\"\ncsv = \"{}\"\nalerts = \"{}\"\nfilter = \"{filter}\"\nflood-pps = {flood}\n",
            rows.display(),
            alerts.display()
        )
    };
    std::fs::write(&cfg, config("type echo-request", 1000)).unwrap();
    let stderr = dir.path().join("stderr");
    let mut child = icmpmon()
        .args(["--config", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let said = |what: &str| std::fs::read_to_string(&stderr).unwrap().contains(what);
    let pid = Pid::from_raw(child.id() as i32);
    let mut stdin = child.stdin.take().unwrap();
    // A pcap header (LINKTYPE_RAW), then 20 pings in the first second.
    stdin.write_all(&header()).unwrap();
    stdin.write_all(&records(&pings(1000, 0, 20))).unwrap();
    stdin.flush().unwrap();
    wait_for("the first 20 rows", || lines(&rows).len() == 21);

    // logrotate: move the files away, then SIGHUP, with a new filter and a
    // flood threshold the next second's 20 requests cross.
    std::fs::rename(&rows, rows.with_extension("csv.1")).unwrap();
    std::fs::rename(&alerts, alerts.with_extension("jsonl.1")).unwrap();
    std::fs::write(&cfg, config("type echo-request or type echo-reply", 5)).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    wait_for("the reopened files", || rows.exists() && alerts.exists());
    stdin.write_all(&records(&pings(1010, 100, 20))).unwrap();
    stdin.flush().unwrap();
    wait_for("the next 40 rows", || lines(&rows).len() == 41);

    // A broken file at the next SIGHUP: the running settings stay.
    std::fs::write(&cfg, "flood-pps = \"x\"\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    wait_for("the failed reload", || said("the running settings stay"));
    stdin.write_all(&records(&pings(1020, 200, 3))).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");

    let before = lines(&rows.with_extension("csv.1"));
    assert_eq!(before.len(), 21, "header and the first 20 requests");
    assert!(before[1..].iter().all(|l| l.contains(",echo-request,")));
    let after = lines(&rows);
    assert!(
        after[0].starts_with("timestamp,"),
        "the new file has its header"
    );
    assert_eq!(after.len(), 1 + 40 + 6, "{after:?}");
    let replies = after.iter().filter(|l| l.contains(",echo-reply,")).count();
    assert_eq!(replies, 23, "the new filter lets replies through");
    assert!(lines(&alerts.with_extension("jsonl.1")).is_empty());
    let flood = lines(&alerts);
    assert!(
        flood
            .iter()
            .any(|l| l.contains("echo-flood") && l.contains("10.0.0.2")),
        "{flood:?}"
    );
    assert!(err.contains("SIGHUP: reloaded"), "{err}");
    assert!(
        err.contains("icmpmon.toml:1: flood-pps: invalid value 'x'"),
        "{err}"
    );
}

#[test]
fn sighup_stops_a_run_with_nothing_to_reload() {
    // No --config and rows on standard output: a hang-up, as before.
    let mut child = icmpmon()
        .args(["--source", "pcap:-", "--csv", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&header()).unwrap();
    stdin.write_all(&records(&pings(1000, 0, 2))).unwrap();
    stdin.flush().unwrap();
    common::wait_signal_caught(child.id(), Signal::SIGHUP as u32);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "SIGHUP did not stop the run");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hung up (SIGHUP)"), "{err}");
}

/// Issue 20.3: --config reads a regular file of bounded size, and never
/// blocks: /dev/zero and a FIFO are refused at once (exit 2), not read for
/// ever.
#[test]
fn a_config_that_is_no_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "# a comment\n".repeat(200_000)).unwrap();
    for (path, says) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (big.as_path(), "larger than 1024 KiB"),
    ] {
        let mut child = icmpmon()
            .arg("--config")
            .arg(path)
            .args(["--source", "pcap:/dev/null", "--csv", "-"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("--config {} did not return", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(err.contains(says), "{}: {err}", path.display());
    }
}
