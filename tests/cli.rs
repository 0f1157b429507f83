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
            "auto, kmod, packet, nflog, nfqueue, pcap:PATH",
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
/// kernel cannot load modules) a live run explains how to load it.
#[test]
fn missing_module_exits_1_with_instructions() {
    if std::path::Path::new("/sys/module/icmpmon").exists() {
        eprintln!("icmpmon.ko is loaded here: the QEMU suite covers this host's case");
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
