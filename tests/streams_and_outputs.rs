//! Issue 10, items 1, 7–9 and 11 on the real binary: capture files and
//! pipes are streamed with bounded memory and stop on Ctrl-C; standard
//! output has one owner; a closed pipe ends the run cleanly; errors say
//! what happened once.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{echo, icmpmon, ipv4_icmp, write_pcap};
use pcap_file::DataLink;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icmpmon"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pcap of `n` echo requests (raw IP link type).
fn pings(n: u16) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.pcap");
    let frames: Vec<(u64, Vec<u8>)> = (1..=n)
        .map(|s| {
            (
                u64::from(s) * 1_000_000,
                ipv4_icmp([10, 0, 0, 1], [10, 0, 0, 2], &echo(8, 7, s)),
            )
        })
        .collect();
    write_pcap(&f, DataLink::RAW, &frames);
    std::fs::read(&f).unwrap()
}

/// `icmpmon --source pcap:- --csv -` with every stream piped.
fn spawn_pipe_reader() -> Child {
    bin()
        .args(["--source", "pcap:-", "--csv", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn interrupt(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
}

/// Waits up to `limit` for the child; kills it and fails if it hangs.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("icmpmon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn dev_zero_is_refused_at_once_without_output() {
    let out = icmpmon(&["--source", "pcap:/dev/zero", "--csv", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no CSV header before a fatal error");
    assert!(
        stderr(&out).contains("/dev/zero is not a pcap or pcapng file (it starts with 00000000)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn file_errors_say_what_happened_once() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let out = icmpmon(&[
        "--source",
        &format!("pcap:{}", empty.display()),
        "--csv",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("(it starts with )"));

    let missing = icmpmon(&["--source", "pcap:/nonexistent.pcap", "--csv", "-"]);
    let err = stderr(&missing);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &pings(1)[..10]).unwrap();
    let out = icmpmon(&["--source", &format!("pcap:{}", cut.display()), "--csv", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no CSV header before a fatal error");
    assert!(
        stderr(&out).contains("in the middle of its file header"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pipe_is_read_live_and_ctrl_c_ends_the_wait() {
    let data = pings(3);
    let mut child = spawn_pipe_reader();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    stdin.flush().unwrap();
    // The writer stays open: rows must come out before its end.
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.iter().filter(|b| **b == b'\n').count() >= 4 {
                let _ = tx.send(buf.clone());
            }
        }
    });
    let rows = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no rows while the pipe is open");
    assert_eq!(String::from_utf8(rows).unwrap().lines().count(), 4);
    interrupt(&child);
    let out = wait_bounded(child, Duration::from_secs(5));
    drop(stdin);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));

    // A writer that never writes: Ctrl-C still ends the run.
    let child = spawn_pipe_reader();
    common::wait_signal_caught(child.id(), nix::sys::signal::Signal::SIGINT as u32);
    interrupt(&child);
    let out = wait_bounded(child, Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn stdout_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.pcap");
    std::fs::write(&f, pings(3)).unwrap();
    let src = format!("pcap:{}", f.display());

    // --summary-json - alone: standard output is JSON, nothing else.
    let out = icmpmon(&["--source", &src, "--summary-json", "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON value");
    assert_eq!(v["rows"], 3);

    for two in [
        ["--csv", "-", "--summary-json", "-"],
        ["--csv", "-", "--alerts", "-"],
        ["--jsonl", "-", "--csv", "-"],
    ] {
        let mut args = vec!["--source", src.as_str()];
        args.extend(two);
        let out = icmpmon(&args);
        assert_eq!(out.status.code(), Some(2), "{two:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains("standard output"), "{}", stderr(&out));
    }

    let same = dir.path().join("rows");
    let same = same.to_str().unwrap();
    let out = icmpmon(&["--source", &src, "--csv", same, "--jsonl", same]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("both write to"), "{}", stderr(&out));
    assert!(!std::path::Path::new(same).exists(), "nothing created");
    // Devices may be shared.
    let out = icmpmon(&[
        "--source",
        &src,
        "--csv",
        "/dev/null",
        "--jsonl",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_closed_stdout_ends_the_run_cleanly() {
    // A pipe whose reader has gone, with rows still coming: exit 0.
    let mut child = spawn_pipe_reader();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&pings(2)).unwrap();
    stdin.flush().unwrap();
    // Read the header and one row, then close, as `head -2` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while got.iter().filter(|c| **c == b'\n').count() < 2 {
        stdout.read_exact(&mut b).unwrap();
        got.push(b[0]);
    }
    drop(stdout);
    // No more input comes: the closed output alone must end the run.
    let out = wait_bounded(child, Duration::from_secs(5));
    drop(stdin);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("output closed"), "{}", stderr(&out));
}

#[test]
fn jsonl_ifname_is_null_when_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.pcap");
    std::fs::write(&f, pings(1)).unwrap();
    let out = icmpmon(&["--source", &format!("pcap:{}", f.display()), "--jsonl", "-"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ifname"], serde_json::Value::Null);
}

/// Issue 20.2: standard error's reader going away (`2>&1 | head -1`) is a
/// clean end, as for standard output: exit 0, no panic (it used to exit
/// 101 with "failed printing to stderr").
#[test]
fn a_closed_stderr_is_a_clean_end() {
    let mut child = bin()
        .args(["--source", "pcap:-", "--csv", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&pings(3)).unwrap();
    stdin.flush().unwrap();
    // The first line (what it captures from), then the reader goes.
    let mut err = child.stderr.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8];
    while err.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&first).contains("capturing from"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    drop(err);
    // The end of the input: the summary goes to the closed stderr.
    drop(stdin);
    let out = wait_bounded(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
}
