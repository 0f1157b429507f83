//! `--config FILE`: a TOML file whose keys are the long options of the
//! command line (`flood-pps = 500`, `interface = ["eth0", "eth1"]`,
//! `headless = true`), plus a `[peer-groups]` table of address prefixes
//! (`"10.0.0.0/8" = "dc1"`). Each key becomes its option and goes through
//! the same parser as the command line, so the file accepts exactly what
//! the command line does; options given on the command line win.
//!
//! Errors name the file, the line and the key.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory};
use ipnet::IpNet;
use toml_edit::{Item, Value};

use crate::cli::Cli;
pub(crate) use icmpmon_core::aggregate::Groups;

/// The table of peer groups.
const GROUPS: &str = "peer-groups";
/// Options that make no sense in the file.
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

/// A mistake in the file, where it is.
#[derive(Debug)]
pub(crate) struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What the file says: the options it sets (as command-line arguments) and
/// the peer groups.
#[derive(Debug, Default)]
pub(crate) struct FileConfig {
    /// One entry per key, in file order: the key and its arguments.
    pub options: Vec<(String, Vec<OsString>)>,
    pub groups: Groups,
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let bytes = text.as_bytes();
    span.map(|s| {
        bytes[..s.start.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    })
}

/// The most a config file may hold: a few hundred lines are plenty.
const MAX_BYTES: u64 = 1 << 20;

/// The text of a config file: a regular file (a FIFO or a device such as
/// /dev/zero would block or never end) of at most `MAX_BYTES`, opened
/// without blocking (by the files helper once the run has given root's
/// uid up).
fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = crate::privsep::files::open(path, crate::privsep::files::Mode::Read)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file: --config takes a TOML file".into());
    }
    if meta.len() > MAX_BYTES {
        return Err(format!(
            "larger than {} KiB: not a config file",
            MAX_BYTES / 1024
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!(
            "larger than {} KiB: not a config file",
            MAX_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text: not a TOML file".into())
}

/// Reads and checks `path`: every key must be a long option of the command
/// line with a value that option accepts.
pub(crate) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let err = |line, key: Option<&str>, message: String| ConfigError {
        path: path.to_path_buf(),
        line,
        key: key.map(str::to_string),
        message,
    };
    let text = read_text(path).map_err(|m| err(None, None, m))?;
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| {
        let msg = e.message().to_string();
        err(line_of(&text, e.span()), None, msg)
    })?;
    let root = doc.as_item().as_table().expect("a document is a table");
    let cmd = Cli::command();
    let mut out = FileConfig::default();
    for (key, item) in root.iter() {
        let line = line_of(&text, root.key(key).and_then(|k| k.span()));
        if key == GROUPS {
            out.groups = groups(item)
                .map_err(|(span, m)| err(line_of(&text, span).or(line), Some(GROUPS), m))?;
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key) && !NOT_IN_FILE.contains(&key));
        let Some(arg) = arg else {
            let hint = if key.contains('_') {
                format!(
                    " (options are written with dashes: {})",
                    key.replace('_', "-")
                )
            } else {
                String::new()
            };
            return Err(err(
                line,
                Some(key),
                format!("unknown key{hint}; the keys are the long options of `icmpmon --help` and [{GROUPS}]"),
            ));
        };
        let flag = format!("--{key}");
        let values = item
            .as_value()
            .ok_or_else(|| err(line, Some(key), "expects a value, not a table".into()))?;
        let args: Vec<OsString> = match (arg.get_action(), values) {
            (ArgAction::SetTrue, Value::Boolean(b)) => {
                if *b.value() {
                    vec![flag.into()]
                } else {
                    vec![]
                }
            }
            (ArgAction::SetTrue, _) => {
                return Err(err(line, Some(key), "expects true or false".into()))
            }
            (ArgAction::Count, Value::Integer(n)) => {
                vec![flag.into(); usize::try_from(*n.value()).unwrap_or(0).min(8)]
            }
            (ArgAction::Append, Value::Array(a)) => {
                let mut v = Vec::new();
                for x in a.iter() {
                    let x = scalar(x).ok_or_else(|| {
                        err(
                            line,
                            Some(key),
                            "expects a list of strings or numbers".into(),
                        )
                    })?;
                    v.push(with_value(&flag, x));
                }
                v
            }
            (_, x) => match scalar(x) {
                Some(s) => vec![with_value(&flag, s)],
                None => return Err(err(line, Some(key), "expects a string or a number".into())),
            },
        };
        // The option's own parser checks the value, as on the command line.
        let mut one = vec![OsString::from("icmpmon")];
        one.extend(args.iter().cloned());
        if let Err(e) = Cli::command().try_get_matches_from(one) {
            return Err(err(line, Some(key), first_line(&e)));
        }
        out.options.push((key.to_string(), args));
    }
    Ok(out)
}

/// `--key=value`: a value that starts with a dash stays a value.
fn with_value(flag: &str, value: OsString) -> OsString {
    let mut a = OsString::from(format!("{flag}="));
    a.push(value);
    a
}

fn scalar(v: &Value) -> Option<OsString> {
    Some(match v {
        Value::String(s) => s.value().into(),
        Value::Integer(n) => n.value().to_string().into(),
        Value::Float(f) => f.value().to_string().into(),
        _ => return None,
    })
}

type Span = Option<std::ops::Range<usize>>;

fn groups(item: &Item) -> Result<Groups, (Span, String)> {
    let t = item.as_table_like().ok_or((
        item.span(),
        format!("[{GROUPS}] is a table: \"10.0.0.0/8\" = \"dc1\""),
    ))?;
    let mut v = Vec::new();
    for (prefix, name) in t.iter() {
        let span = name.span();
        let net: IpNet = prefix
            .parse()
            .or_else(|_| prefix.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                (
                    span.clone(),
                    format!("{prefix:?} is not an address prefix (e.g. 10.0.0.0/8, 2001:db8::/32)"),
                )
            })?;
        let name = name.as_str().ok_or((
            span.clone(),
            format!("the group of {prefix} must be a string"),
        ))?;
        v.push((net, name.to_string()));
    }
    Ok(Groups::new(v))
}

/// The command line with the file's options before it: those the command
/// line gives itself are left out, so the command line wins (repeatable
/// options included: the command line's list replaces the file's).
pub(crate) fn merged_args(
    argv: &[OsString],
    matches: &ArgMatches,
    file: &FileConfig,
) -> Vec<OsString> {
    let cmd = Cli::command();
    let on_cli = |key: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(key))
            .is_some_and(|a| {
                matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
            })
    };
    let mut out = vec![argv.first().cloned().unwrap_or_else(|| "icmpmon".into())];
    for (key, args) in &file.options {
        if !on_cli(key) {
            out.extend(args.iter().cloned());
        }
    }
    out.extend(argv.iter().skip(1).cloned());
    out
}

/// The command line and the file under it, kept to be read again on
/// SIGHUP.
#[derive(Debug, Clone)]
pub(crate) struct Layered {
    pub path: PathBuf,
    argv: Vec<OsString>,
    matches: ArgMatches,
}

/// Options whose change a reload applies; the others wait for a restart.
pub(crate) const LIVE_KEYS: [&str; 6] = [
    "filter",
    "flood-pps",
    "unreachable-pps",
    "oversize-bytes",
    "ttl-exceeded-pps",
    GROUPS,
];

impl Layered {
    pub fn new(path: PathBuf, argv: Vec<OsString>, matches: ArgMatches) -> Self {
        Self {
            path,
            argv,
            matches,
        }
    }

    /// The file read again under the same command line.
    pub fn load(&self) -> Result<(Cli, FileConfig), String> {
        use clap::FromArgMatches;
        let file = read(&self.path).map_err(|e| e.to_string())?;
        let merged = merged_args(&self.argv, &self.matches, &file);
        let m = Cli::command()
            .try_get_matches_from(merged)
            .map_err(|e| format!("{}: {}", self.path.display(), first_line(&e)))?;
        let cli = Cli::from_arg_matches(&m).map_err(|e| first_line(&e))?;
        Ok((cli, file))
    }
}

fn first_line(e: &clap::Error) -> String {
    let s = e.to_string();
    s.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// Keys whose value changed between two reads of the file and that a
/// reload does not apply.
pub(crate) fn changed_at_restart(old: &FileConfig, new: &FileConfig) -> Vec<String> {
    let get = |f: &FileConfig, k: &str| {
        f.options
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, a)| a.clone())
    };
    let mut keys: Vec<String> = old
        .options
        .iter()
        .chain(&new.options)
        .map(|(k, _)| k.clone())
        .filter(|k| !LIVE_KEYS.contains(&k.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| get(old, k) != get(new, k));
    keys
}

/// What a reload may change while running.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub filter: icmpmon_core::filter::Filter,
    pub thresholds: icmpmon_core::aggregate::Thresholds,
    pub groups: Groups,
}

impl Live {
    pub fn of(args: &crate::cli::RunArgs, groups: Groups) -> Self {
        Self {
            filter: args.filter.clone().unwrap_or_default(),
            thresholds: args.aggregate_config().thresholds,
            groups,
        }
    }
}

/// SIGHUP: new live settings (when --config was read again), and reopen
/// the output files.
#[derive(Debug)]
pub(crate) struct Reload {
    pub live: Option<Live>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// A config file is untrusted text: any bytes, and the shipped
        /// example with bytes changed, are read or refused with a message,
        /// never a panic.
        #[test]
        fn arbitrary_and_damaged_files_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..6),
        ) {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&bytes).unwrap();
            let _ = read(f.path());
            let mut example = include_bytes!("../dist/icmpmon.toml").to_vec();
            for (at, v) in flips {
                let i = at % example.len();
                example[i] = v;
            }
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&example).unwrap();
            if let Err(e) = read(f.path()) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn the_shipped_example_reads() {
        let f = file(std::str::from_utf8(include_bytes!("../dist/icmpmon.toml")).unwrap());
        read(f.path()).unwrap();
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        for (text, line, key, says) in [
            (
                "headless = true\nflood-pps = \"many\"\n",
                2,
                Some("flood-pps"),
                "invalid value",
            ),
            ("\n\nfloodpps = 3\n", 3, Some("floodpps"), "unknown key"),
            ("flood_pps = 3\n", 1, Some("flood_pps"), "flood-pps"),
            ("headless = 1\n", 1, Some("headless"), "true or false"),
            ("csv = [1]\n", 1, Some("csv"), "string or a number"),
            ("config = \"x\"\n", 1, Some("config"), "unknown key"),
            (
                "[peer-groups]\n\"10.0.0.0/33\" = \"x\"\n",
                2,
                Some("peer-groups"),
                "not an address prefix",
            ),
            (
                "[peer-groups]\n\"10.0.0.0/8\" = 3\n",
                2,
                Some("peer-groups"),
                "must be a string",
            ),
            ("a = \n", 1, None, ""),
        ] {
            let f = file(text);
            let e = read(f.path()).unwrap_err();
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert_eq!(e.key.as_deref(), key, "{text:?}: {e}");
            assert!(e.to_string().contains(says), "{text:?}: {e}");
        }
    }

    /// A value of every option that is not its default, as the file writes
    /// it and as the command line does.
    const SAMPLES: &[(&str, &str, &[&str])] = &[
        ("source", "\"pcap:x.pcap\"", &["pcap:x.pcap"]),
        ("interface", "[\"eth0\", \"eth1\"]", &["eth0", "eth1"]),
        ("headless", "true", &[]),
        ("tui", "true", &[]),
        ("replay", "\"x10\"", &["x10"]),
        ("csv", "\"/tmp/a.csv\"", &["/tmp/a.csv"]),
        ("jsonl", "\"-\"", &["-"]),
        (
            "filter",
            "\"type echo-request and not host 10.0.0.1\"",
            &["type echo-request and not host 10.0.0.1"],
        ),
        ("alerts", "\"/tmp/alerts.jsonl\"", &["/tmp/alerts.jsonl"]),
        ("write", "\"/tmp/saved.pcapng\"", &["/tmp/saved.pcapng"]),
        ("summary-json", "\"/tmp/s.json\"", &["/tmp/s.json"]),
        ("no-attribution", "true", &[]),
        ("drops", "true", &[]),
        ("no-drops", "true", &[]),
        ("count", "12", &["12"]),
        ("duration", "1.5", &["1.5"]),
        ("snaplen", "200", &["200"]),
        ("socket-buffer", "1048576", &["1048576"]),
        ("channel-capacity", "64", &["64"]),
        ("verbose", "2", &[]),
        ("metrics-listen", "\"[::1]:9798\"", &["[::1]:9798"]),
        ("metrics-peers", "100", &["100"]),
        ("batch-bytes", "8192", &["8192"]),
        ("flush-ms", "3", &["3"]),
        ("ring-block-size", "2097152", &["2097152"]),
        ("ring-frames", "4096", &["4096"]),
        ("ring-timeout", "5", &["5"]),
        ("nflog-group", "40", &["40"]),
        ("nflog-threshold", "8", &["8"]),
        ("nflog-timeout", "20", &["20"]),
        ("queue-num", "9", &["9"]),
        ("echo-timeout", "5", &["5"]),
        ("flood-pps", "77", &["77"]),
        ("unreachable-pps", "78", &["78"]),
        ("oversize-bytes", "1600", &["1600"]),
        ("ttl-exceeded-pps", "79", &["79"]),
        ("max-peers", "100", &["100"]),
        ("user", "\"icmpmon\"", &["icmpmon"]),
    ];

    fn parse(args: &[OsString]) -> Cli {
        use clap::FromArgMatches;
        Cli::from_arg_matches(&Cli::command().get_matches_from(args)).unwrap()
    }

    /// Every long option of the command line can be written in the file
    /// and means the same there; the command line wins over it.
    #[test]
    fn every_option_round_trips_through_the_file() {
        let cmd = Cli::command();
        let longs: Vec<&str> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !NOT_IN_FILE.contains(l))
            .collect();
        for l in &longs {
            assert!(SAMPLES.iter().any(|(k, ..)| k == l), "no sample for --{l}");
        }
        let default = format!("{:?}", parse(&["icmpmon".into()]).run);
        for (key, toml, values) in SAMPLES {
            let f = file(&format!("{key} = {toml}\n"));
            let argv: Vec<OsString> = vec!["icmpmon".into(), "--config".into(), f.path().into()];
            let layered = Layered::new(
                f.path().into(),
                argv.clone(),
                Cli::command().get_matches_from(&argv),
            );
            let (from_file, _) = layered.load().unwrap_or_else(|e| panic!("{key}: {e}"));
            let mut cli_argv = argv.clone();
            if values.is_empty() {
                let n = if *key == "verbose" { 2 } else { 1 };
                cli_argv.extend(std::iter::repeat_n(OsString::from(format!("--{key}")), n));
            }
            for v in *values {
                cli_argv.push(format!("--{key}").into());
                cli_argv.push(v.into());
            }
            let from_cli = parse(&cli_argv);
            assert_eq!(
                format!("{:?}", from_file.run),
                format!("{:?}", from_cli.run),
                "{key}"
            );
            assert_eq!(from_file.verbose, from_cli.verbose, "{key}");
            assert!(
                *key == "verbose" || format!("{:?}", from_file.run) != default,
                "{key} changed nothing"
            );
        }
        // The command line wins, lists included.
        let f = file("flood-pps = 5\ninterface = [\"a\", \"b\"]\nmax-peers = 99\n");
        let argv: Vec<OsString> = [
            "icmpmon",
            "--config",
            f.path().to_str().unwrap(),
            "--flood-pps",
            "7",
            "-i",
            "c",
        ]
        .map(OsString::from)
        .to_vec();
        let layered = Layered::new(
            f.path().into(),
            argv.clone(),
            Cli::command().get_matches_from(&argv),
        );
        let run = layered.load().unwrap().0.run;
        assert_eq!(
            (run.flood_pps, run.interfaces, run.max_peers),
            (7, vec!["c".to_string()], 99)
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/icmpmon.toml"));
        let f = read(p).unwrap();
        assert!(f.options.iter().any(|(k, _)| k == "metrics-listen"));
    }

    #[test]
    fn groups_come_from_the_table() {
        let f = file("[peer-groups]\n\"10.0.0.0/8\" = \"dc1\"\n\"10.1.0.0/16\" = \"dc1-edge\"\n\"192.0.2.7\" = \"one\"\n");
        let g = read(f.path()).unwrap().groups;
        let of = |a: &str| g.of(a.parse().unwrap()).map(str::to_string);
        assert_eq!(of("10.2.3.4").as_deref(), Some("dc1"));
        assert_eq!(of("10.1.3.4").as_deref(), Some("dc1-edge"));
        assert_eq!(of("192.0.2.7").as_deref(), Some("one"));
        assert_eq!(of("192.0.2.8"), None);
    }
}
