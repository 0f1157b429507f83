//! The values of options: where an output goes, durations, replay speeds,
//! log groups, filters; each parser's error says what is allowed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use icmpmon_core::filter::Filter;

/// Whether two paths name one file (existing or not). /dev/null and other
/// devices may be shared.
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(ma), Ok(mb)) => {
            let device = ma.file_type().is_char_device() || ma.file_type().is_block_device();
            !device && ma.dev() == mb.dev() && ma.ino() == mb.ino()
        }
        _ => normalized(a).is_some_and(|na| normalized(b) == Some(na)),
    }
}

/// The absolute path with `.` and `..` resolved lexically (the file may
/// not exist yet).
pub(super) fn normalized(p: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in std::path::absolute(p).ok()?.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// `-` for standard output, or a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

pub(super) fn parse_output(s: &str) -> Result<Output, String> {
    match s {
        "" => Err("give a file path, or - for standard output".into()),
        // Names of standard output are standard output: it has one owner.
        "-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Ok(Output::Stdout),
        p => Ok(Output::File(p.into())),
    }
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds (e.g. 10 or 2.5)"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 1e9) {
        return Err("the duration must be more than 0 and at most 1e9 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) fn parse_replay(s: &str) -> Result<f64, String> {
    let speed = match s {
        "realtime" => Some(1.0),
        _ => s.strip_prefix('x').and_then(|n| n.parse::<f64>().ok()),
    };
    match speed {
        Some(x) if (1e-3..=1e6).contains(&x) => Ok(x),
        _ => Err("realtime, or xN with N from 0.001 to 1000000 (e.g. x10 or x0.5)".into()),
    }
}

/// Pairs (N, N+1) start at even numbers, so that two never overlap.
pub(super) fn parse_even_group(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n % 2 == 0 && n < u16::MAX => Ok(n),
        Ok(_) => Err("an even group number (icmpmon binds it and the next)".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn parse_filter(s: &str) -> Result<Filter, String> {
    Filter::parse(s).map_err(|e| e.to_string())
}
