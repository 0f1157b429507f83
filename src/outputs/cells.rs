//! How the cells that need no quoting or escaping in either format are
//! written (numbers, addresses, times), and the buffer rows gather in.
//! The hot path of a flood: no `core::fmt`, no allocation per row.

use std::io;
use std::net::IpAddr;

use super::row::Cell;

/// Writes the cells that need no quoting or escaping in either format
/// (numbers, addresses, times, info) into a line buffer; the formats write
/// empty and text cells themselves. The text of a timestamp is made once
/// per second.
#[derive(Debug, Default)]
pub(crate) struct CellWriter {
    time: TimeText,
}

impl CellWriter {
    /// `cell`'s text, unquoted; nothing for `Empty` and `Text`.
    #[inline(always)]
    pub fn plain(&mut self, cell: Cell, out: &mut Vec<u8>) {
        match cell {
            Cell::Empty | Cell::Text(_) => {}
            Cell::Word(w) => out.extend_from_slice(w.as_bytes()),
            Cell::Uint(v) => self.uint(v, out),
            Cell::Ip(a) => self.ip(a, out),
            Cell::Time(t) => self.time.write(t, out),
            // Rare (errors, redirects, neighbour discovery): core's text.
            Cell::Info(i) => {
                use std::io::Write as _;
                let _ = write!(out, "{i}");
            }
        }
    }

    #[inline(always)]
    fn uint(&mut self, v: u64, out: &mut Vec<u8>) {
        match u8::try_from(v) {
            Ok(b) => byte(b, out),
            Err(_) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        }
    }

    #[inline]
    fn ip(&mut self, ip: IpAddr, out: &mut Vec<u8>) {
        match ip {
            IpAddr::V4(a) => {
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    byte(o, out);
                }
            }
            IpAddr::V6(a) => ipv6(a, out),
        }
    }
}

/// RFC 5952 text, as std's `Display` writes it (the test compares them),
/// without going through `core::fmt`: lowercase hexadecimal without
/// leading zeros, the longest run of two or more zero groups (the first of
/// equals) as `::`, and `::ffff:` then dotted decimal for an IPv4-mapped
/// address.
fn ipv6(a: std::net::Ipv6Addr, out: &mut Vec<u8>) {
    if let Some(v4) = a.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        for (i, o) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            byte(o, out);
        }
        return;
    }
    let groups = a.segments();
    // The longest run of zero groups: (start, length).
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, &g) in groups.iter().enumerate() {
        if g == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run.1 = 0;
        }
    }
    let hex = |groups: &[u16], out: &mut Vec<u8>| {
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            hex_group(g, out);
        }
    };
    if best.1 > 1 {
        hex(&groups[..best.0], out);
        out.extend_from_slice(b"::");
        hex(&groups[best.0 + best.1..], out);
    } else {
        hex(&groups, out);
    }
}

/// A group's hexadecimal digits, without leading zeros.
fn hex_group(g: u16, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (4 - g.leading_zeros() / 4).max(1);
    for d in (0..digits).rev() {
        out.push(HEX[usize::from((g >> (d * 4)) & 0xf)]);
    }
}

/// A byte's decimal digits, pushed one by one: most numbers of a row
/// (addresses' octets, types, codes, TTLs) are bytes, and a call to
/// memcpy per two-byte number cost more than the digits.
#[inline(always)]
fn byte(v: u8, out: &mut Vec<u8>) {
    if v >= 100 {
        out.push(b'0' + v / 100);
    }
    if v >= 10 {
        out.push(b'0' + v / 10 % 10);
    }
    out.push(b'0' + v % 10);
}

/// RFC 3339 UTC with nanoseconds; the date and time of day are formatted
/// once per second: rows of one second differ in their nanoseconds only.
#[derive(Debug)]
struct TimeText {
    secs: i64,
    /// `2026-11-23T08:28:00.`, or empty for a time `time` cannot show.
    prefix: String,
}

impl Default for TimeText {
    fn default() -> Self {
        Self {
            secs: i64::MIN,
            prefix: String::new(),
        }
    }
}

impl TimeText {
    /// The text of a new second.
    #[cold]
    fn second(&mut self, secs: i64) {
        use std::fmt::Write as _;
        self.prefix.clear();
        if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) {
            let _ = write!(
                self.prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        self.secs = secs;
    }

    #[inline]
    fn write(&mut self, ts_ns: u64, out: &mut Vec<u8>) {
        let secs = (ts_ns / 1_000_000_000) as i64;
        let nanos = ts_ns % 1_000_000_000;
        if self.secs != secs {
            self.second(secs);
        }
        if self.prefix.is_empty() {
            return;
        }
        // Fixed sizes, so the copies are inlined: `YYYY-MM-DDTHH:MM:SS.`
        // (the `time` crate's years here have four digits), then nine
        // digits and `Z`.
        match <&[u8; 20]>::try_from(self.prefix.as_bytes()) {
            Ok(p) => out.extend_from_slice(p),
            Err(_) => out.extend_from_slice(self.prefix.as_bytes()),
        }
        let mut digits = [b'0'; 10];
        digits[9] = b'Z';
        let mut n = nanos;
        for d in digits[..9].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
    }
}

/// Rows gathered for one write to the output: each row is written once,
/// here (a `BufWriter` behind would copy it again, as it would copy a
/// line buffer), and goes out once this holds `LINES_BYTES`.
#[derive(Debug)]
pub(crate) struct Lines<W: io::Write> {
    out: W,
    pub buf: Vec<u8>,
    /// How much of `buf` is complete rows.
    whole: usize,
}

/// What `Lines` gathers before it writes: larger than a `BufWriter`'s
/// buffer, which then passes the write straight on.
const LINES_BYTES: usize = 64 * 1024;

impl<W: io::Write> Lines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(LINES_BYTES + 1024),
            whole: 0,
        }
    }

    /// A row is complete: written out once enough have gathered.
    pub fn row_done(&mut self) -> io::Result<()> {
        self.whole = self.buf.len();
        if self.buf.len() >= LINES_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        let r = self.out.write_all(&self.buf);
        self.buf.clear();
        self.whole = 0;
        r
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }
}

impl<W: io::Write> Drop for Lines<W> {
    /// Rows gathered still go out (as a `BufWriter`'s would) when an output
    /// is dropped without a last flush (--count reached).
    fn drop(&mut self) {
        // A panic may have left a row half written: it does not go out.
        if std::thread::panicking() {
            self.buf.truncate(self.whole);
        }
        let _ = self.flush();
    }
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-23T08:28:00.000000001Z`,
/// for the dashboard, alerts and the summary (rows write theirs in place).
pub fn rfc3339_nanos(ts_ns: u64) -> String {
    use std::cell::RefCell;
    thread_local! {
        static TEXT: RefCell<(TimeText, Vec<u8>)> = RefCell::new(Default::default());
    }
    TEXT.with_borrow_mut(|(text, buf)| {
        buf.clear();
        text.write(ts_ns, buf);
        String::from_utf8_lossy(buf).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Groups that make zero runs of every length, and IPv4-mapped
    /// addresses, likely.
    fn arb_ipv6() -> impl Strategy<Value = std::net::Ipv6Addr> {
        let group = prop_oneof![Just(0u16), Just(1), Just(0xffff), Just(0xa0), any::<u16>()];
        prop::array::uniform8(group).prop_map(std::net::Ipv6Addr::from)
    }

    proptest! {
        #[test]
        fn ipv6_text_is_stds(a in arb_ipv6()) {
            let mut out = Vec::new();
            ipv6(a, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), a.to_string());
        }
    }

    /// A panic mid-row (even in a quoted cell holding a line break) leaves
    /// only whole rows in the output.
    #[test]
    fn a_row_half_written_at_a_panic_does_not_go_out() {
        use std::sync::{Arc, Mutex};
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut lines = Lines::new(Shared(out.clone()));
            lines.buf.extend_from_slice(b"a,b\n");
            lines.row_done().unwrap();
            lines.buf.extend_from_slice(b"c,\"d\ne");
            panic!("test: a panic mid-row");
        }));
        assert!(panicked.is_err());
        assert_eq!(out.lock().unwrap().as_slice(), b"a,b\n");
    }

    #[test]
    fn timestamps_have_nine_fraction_digits() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
    }
}
