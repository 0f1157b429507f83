//! The real binary's command-line contract: usage errors exit 2 and say
//! what is allowed; runtime errors exit 1 and say what to do.

use std::process::{Command, Output};

fn icmpmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run icmpmon")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_teaches() {
    let out = icmpmon(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--source",
        "--csv",
        "--count",
        "--duration",
        "Exit status",
        "stats",
        "Examples",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

/// The whole of `--help` and `-h`, as users read them: a change to the
/// command line shows up here for review (`INSTA_UPDATE=always` to accept).
#[test]
fn help_snapshots() {
    for flag in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
            .arg(flag)
            .env("COLUMNS", "100")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        insta::assert_snapshot!(format!("help{flag}"), text);
    }
}

#[test]
fn bad_values_exit_2_with_what_is_allowed() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--source", "bogus"],
            "auto, kmod, bpf, packet, nflog, nfqueue, pcap:PATH",
        ),
        (&["--source", "kmod", "--interface", "lo"], "--interface"),
        (&["--ring-frames", "1"], "--ring-frames"),
        (&["--count", "0"], "--count"),
        (&["--duration", "soon"], "not a number of seconds"),
        (&["--snaplen", "9999"], "64..=4096"),
        (&["--flush-ms", "0"], "--flush-ms"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, needle) in cases {
        let out = icmpmon(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

/// Without the module loaded (as on this project's build machines, whose
/// kernel cannot load modules) a live run explains how to load it; with it
/// loaded, `stats` answers with the module's counters.
#[test]
fn missing_module_exits_1_with_instructions() {
    if std::path::Path::new("/sys/module/icmpmon").exists() {
        let out = icmpmon(&["stats"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l.starts_with("seen ")), "{text}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    for args in [
        vec!["--source", "kmod", "--csv", csv.to_str().unwrap()],
        vec!["stats"],
    ] {
        let out = icmpmon(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("kernel module is not loaded"), "{err}");
        assert!(err.contains("sudo modprobe icmpmon"), "{err}");
        assert!(!err.contains("insmod"), "{err}");
    }
}

#[test]
fn unwritable_output_exits_1_before_capturing() {
    let out = icmpmon(&["--csv", "/nonexistent-dir/out.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot create /nonexistent-dir/out.csv"),
        "{}",
        stderr(&out)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every long option of `--help`, as written there.
fn long_options() -> Vec<String> {
    let help = stdout(&icmpmon(&["--help"]));
    let mut opts: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 3)
        .map(str::to_owned)
        .collect();
    opts.sort();
    opts.dedup();
    assert!(opts.len() > 30, "{opts:?}");
    opts
}

/// The manual page comes from the same definition as --help: every option
/// is in it (roff escapes dashes), in section 8.
#[test]
fn man_page_has_every_option() {
    let out = icmpmon(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH icmpmon 8"), "{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    for opt in long_options() {
        let roff = opt.replace('-', "\\-");
        assert!(page.contains(&roff), "the man page lacks {opt}");
    }
}

#[test]
fn completions_for_each_shell() {
    let options = long_options();
    for (shell, marker) in [
        ("bash", "complete -F _icmpmon"),
        ("zsh", "#compdef icmpmon"),
        ("fish", "complete -c icmpmon"),
    ] {
        let out = icmpmon(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}:\n{script}");
        // fish names options without their dashes.
        for opt in &options {
            let name = opt.trim_start_matches('-');
            assert!(script.contains(name), "{shell} completion lacks {opt}");
        }
    }
    // The bash script parses.
    let bash = stdout(&icmpmon(&["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("icmpmon.bash");
    std::fs::write(&file, bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(check.success());
    let bad = icmpmon(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("bash, zsh, fish"), "{}", stderr(&bad));
}

/// `--version` names the commit and the sources built in; `-V` is short.
#[test]
fn version_says_commit_and_sources() {
    let long = stdout(&icmpmon(&["--version"]));
    assert!(
        long.starts_with(concat!("icmpmon ", env!("CARGO_PKG_VERSION"), " (commit ")),
        "{long}"
    );
    let commit = long
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{long}"
    );
    assert!(
        long.contains("sources: kmod, bpf, packet, nflog, nfqueue, pcap"),
        "{long}"
    );
    let short = stdout(&icmpmon(&["-V"]));
    assert_eq!(short.trim(), concat!("icmpmon ", env!("CARGO_PKG_VERSION")));
}

/// `icmpmon man | head -1`: a reader that goes away is a clean end.
#[test]
fn generated_documents_end_cleanly_on_a_closed_pipe() {
    use std::process::Stdio;
    for args in [&["man"][..], &["completions", "zsh"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // closed before anything is read
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
}
