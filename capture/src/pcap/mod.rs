//! The capture-file source: pcap and pcapng (crate `pcap-file`'s slice
//! parsers over a bounded stream, `stream`), from a file, a pipe or
//! standard input (`-`), without privileges. Link layers are stripped here
//! (`link`) so that the one parser sees packets from their IP header on, as
//! from every other source; `--replay` paces packets at their recorded
//! times.

mod batch;
mod classic;
mod link;
mod ngblock;
mod stream;

pub use batch::PcapCounters;

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crossbeam_channel::select;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};

use crate::pipeline::{PacketSink, Stop};
use batch::{Batcher, Pace};
use classic::Format;
use link::{interface_from_idb, Interface};
use ngblock::Plain;
use stream::{Input, Starved, Stream, MAX_RECORD};

#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    #[error("cannot read {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty, not a pcap or pcapng file")]
    Empty { path: PathBuf },
    #[error("{path} is not a pcap or pcapng file (it starts with {magic})")]
    NotCapture { path: PathBuf, magic: String },
    #[error("{path} is damaged at byte {offset}: {reason}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The run was stopped before the file said what it is.
    #[error("stopped before {path} gave its header")]
    Stopped { path: PathBuf },
}

/// pcap (both byte orders, µs and ns) and pcapng magic numbers.
const MAGICS: [u32; 4] = [0xa1b2_c3d4, 0xa1b2_3c4d, 0xa1b2_cd34, 0x0a0d_0d0a];

/// An opened capture, its magic number checked, ready to be read.
#[derive(Debug)]
pub struct PcapSource {
    path: PathBuf,
    stream: Stream,
    counters: Arc<PcapCounters>,
    /// Replay at the recorded pace times this factor (`--replay`).
    speed: Option<f64>,
}

impl PcapSource {
    /// Opens `path` (`-`: standard input) and reads its magic number,
    /// waiting for a pipe's writer until `stop`.
    pub fn open(path: &Path, stop: &Stop) -> Result<Self, PcapFileError> {
        let open_err = |source| PcapFileError::Open {
            path: path.to_owned(),
            source,
        };
        let file = if path == Path::new("-") {
            let fd = std::io::stdin().as_fd().try_clone_to_owned();
            std::fs::File::from(fd.map_err(open_err)?)
        } else {
            match open_interruptible(path, stop) {
                Some(file) => file.map_err(open_err)?,
                None => {
                    return Err(PcapFileError::Stopped {
                        path: path.to_owned(),
                    })
                }
            }
        };
        let input = Input::file(file).map_err(open_err)?;
        Self::checked(path, input, Some(stop))
    }

    /// A capture from any reader; `path` only names it in messages.
    pub fn from_reader(
        path: &Path,
        reader: Box<dyn std::io::Read + Send>,
    ) -> Result<Self, PcapFileError> {
        Self::checked(path, Input::Reader(reader), None)
    }

    /// Refuses what is not a capture file, by its magic number.
    fn checked(path: &Path, input: Input, stop: Option<&Stop>) -> Result<Self, PcapFileError> {
        let mut stream = Stream::new(input);
        while stream.bytes().len() < 4 {
            match stream.fill(stop) {
                Ok(()) => {}
                Err(Starved::Stopped) => {
                    return Err(PcapFileError::Stopped {
                        path: path.to_owned(),
                    })
                }
                Err(Starved::Io(source)) => {
                    return Err(PcapFileError::Open {
                        path: path.to_owned(),
                        source,
                    })
                }
                Err(Starved::Eof | Starved::TooLong) => break,
            }
        }
        let head = stream.bytes();
        let magic = head
            .get(..4)
            .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        if head.is_empty() {
            return Err(PcapFileError::Empty {
                path: path.to_owned(),
            });
        }
        if !magic.is_some_and(|m| MAGICS.contains(&m) || MAGICS.contains(&m.swap_bytes())) {
            return Err(PcapFileError::NotCapture {
                path: path.to_owned(),
                magic: head.iter().take(4).map(|b| format!("{b:02x}")).collect(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            stream,
            counters: Arc::default(),
            speed: None,
        })
    }

    /// Hands packets on at their recorded pace, `speed` times faster.
    pub fn with_replay(mut self, speed: f64) -> Self {
        self.speed = Some(speed);
        self
    }

    pub fn counters(&self) -> Arc<PcapCounters> {
        Arc::clone(&self.counters)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn damaged(&self, reason: impl Into<String>) -> PcapFileError {
        PcapFileError::Damaged {
            path: self.path.clone(),
            offset: self.stream.offset(),
            reason: reason.into(),
        }
    }

    /// Reads more input for a record the parser found incomplete. Ok(true):
    /// parse again; Ok(false): a clean end (end of input between records,
    /// or the run stopped).
    fn more(&mut self, out: &mut Batcher, stop: &Stop, what: &str) -> Result<bool, PcapFileError> {
        if self.stream.is_live() {
            // Rows must not wait for a batch to fill while the writer is
            // quiet.
            out.flush();
        }
        match self.stream.fill(Some(stop)) {
            Ok(()) => Ok(true),
            Err(Starved::Stopped) => Ok(false),
            Err(Starved::Eof) if self.stream.bytes().is_empty() => Ok(false),
            Err(Starved::Eof) => Err(self.damaged(format!(
                "it ends in the middle of {what} ({} bytes of it)",
                self.stream.bytes().len()
            ))),
            Err(Starved::TooLong) => Err(self.damaged(format!(
                "{what} longer than {} MiB (a damaged length field)",
                MAX_RECORD >> 20
            ))),
            Err(Starved::Io(source)) => Err(PcapFileError::Open {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Reads to the end (or until `stop`), waiting for the consumer rather
    /// than dropping: a file has no deadline.
    pub fn run(mut self, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, PcapFileError> {
        let counters = Arc::clone(&self.counters);
        let mut out = Batcher {
            sink: &sink,
            batch: sink.batch(),
            counters: &counters,
            pace: self.speed.map(|speed| Pace {
                speed,
                origin: None,
            }),
            stop,
            closed: false,
        };
        let result = if self.stream.bytes().starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            self.read_pcapng(&mut out, stop)
        } else {
            self.read_pcap(&mut out, stop)
        };
        // Every good packet before a damaged spot is still delivered.
        out.flush();
        result?;
        Ok(if stop.is_set() || out.closed {
            SourceEnd::Stopped
        } else {
            SourceEnd::Ended(format!("end of {}", self.path.display()))
        })
    }

    /// Parses the file's (first) header with `parse`, reading more while
    /// it is incomplete; None when the run stopped first.
    fn header<P>(
        &mut self,
        out: &mut Batcher,
        stop: &Stop,
        what: &str,
        parse: impl Fn(&[u8]) -> Result<(&[u8], P), PcapError>,
    ) -> Result<Option<P>, PcapFileError> {
        loop {
            match parse(self.stream.bytes()) {
                Ok((rest, parser)) => {
                    let used = self.stream.bytes().len() - rest.len();
                    self.stream.consume(used);
                    return Ok(Some(parser));
                }
                Err(PcapError::IncompleteBuffer) => {
                    if !self.more(out, stop, what)? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(self.damaged(e.to_string())),
            }
        }
    }

    fn read_pcap(&mut self, out: &mut Batcher, stop: &Stop) -> Result<(), PcapFileError> {
        while self.stream.bytes().len() < classic::FILE_HEADER {
            if !self.more(out, stop, "its file header")? {
                return Ok(());
            }
        }
        let mut head = [0u8; classic::FILE_HEADER];
        head.copy_from_slice(&self.stream.bytes()[..classic::FILE_HEADER]);
        let format = match Format::parse(&head) {
            Ok(Some(f)) => f,
            Ok(None) => return Err(self.damaged("not a pcap file header")),
            Err(e) => return Err(self.damaged(e)),
        };
        self.stream.consume(classic::FILE_HEADER);
        let iface = Interface {
            link: DataLink::from(format.linktype),
            ns_per_unit: 1,
            binary_exp: None,
        };
        while !(stop.is_set() || out.closed) {
            let bytes = self.stream.bytes();
            let rec = match format.record(bytes) {
                Ok(Some(r)) if bytes.len() >= r.total => r,
                // The record's header or data is not all here yet.
                Ok(_) => {
                    if !self.more(out, stop, "a packet record")? {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(self.damaged(e)),
            };
            let at = format.data_offset();
            let data = &bytes[at..at + rec.kept as usize];
            // Record times are already nanoseconds.
            out.push(&iface, rec.ts_ns, rec.orig_len.max(rec.kept), data, None);
            self.stream.consume(rec.total);
        }
        Ok(())
    }

    fn read_pcapng(&mut self, out: &mut Batcher, stop: &Stop) -> Result<(), PcapFileError> {
        let Some(mut parser) = self.header(out, stop, "its section header", PcapNgParser::new)?
        else {
            return Ok(());
        };
        let mut ifaces: Vec<Interface> = Vec::new();
        while !(stop.is_set() || out.closed) {
            let bytes = self.stream.bytes();
            if bytes.is_empty() {
                if !self.more(out, stop, "a block")? {
                    return Ok(());
                }
                continue;
            }
            let endianness = parser.section().endianness;
            let whole = block_len(bytes, endianness).filter(|&n| n >= 12 && n <= bytes.len());
            let (used, block) = match (parser.next_block(bytes), whole) {
                (Ok((rest, block)), _) => (bytes.len() - rest.len(), block),
                (Err(PcapError::IncompleteBuffer), None) => {
                    if !self.more(out, stop, "a block")? {
                        return Ok(());
                    }
                    continue;
                }
                // The whole block is there, yet pcap-file refuses it (an
                // option it does not like, a name that is not UTF-8): read
                // it from its fixed fields, as libpcap would.
                (Err(e), Some(len)) => {
                    match ngblock::read(bytes, len, endianness) {
                        Some(Plain::Interface { linktype, tsresol }) => {
                            let link = DataLink::from(u32::from(linktype));
                            ifaces.push(interface_from_idb(link, tsresol));
                        }
                        Some(Plain::Packet {
                            interface,
                            units,
                            orig_len,
                            data,
                        }) => {
                            let Some(iface) = ifaces.get(interface as usize) else {
                                let e = PcapError::InvalidInterfaceId(interface);
                                return Err(self.damaged(e.to_string()));
                            };
                            out.push(
                                iface,
                                iface.timestamp_ns(u128::from(units)),
                                orig_len,
                                data,
                                None,
                            );
                        }
                        Some(Plain::Simple { orig_len, data }) => {
                            let Some(iface) = ifaces.first() else {
                                let e = PcapError::InvalidInterfaceId(0);
                                return Err(self.damaged(e.to_string()));
                            };
                            out.push(iface, 0, orig_len, data, None);
                        }
                        Some(Plain::Other) => {}
                        // pcap-file says "incomplete" for some damage too.
                        None if matches!(e, PcapError::IncompleteBuffer) => {
                            return Err(self.damaged("a block that does not decode"));
                        }
                        None => return Err(self.damaged(e.to_string())),
                    }
                    self.stream.consume(len);
                    continue;
                }
                (Err(e), None) => return Err(self.damaged(e.to_string())),
            };
            match block {
                // A new section starts its own interface list.
                Block::SectionHeader(_) => ifaces.clear(),
                Block::InterfaceDescription(idb) => {
                    let tsresol = idb.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                        _ => None,
                    });
                    ifaces.push(interface_from_idb(idb.linktype, tsresol));
                }
                Block::EnhancedPacket(epb) => {
                    let Some(iface) = ifaces.get(epb.interface_id as usize) else {
                        let e = PcapError::InvalidInterfaceId(epb.interface_id);
                        return Err(self.damaged(e.to_string()));
                    };
                    // pcap-file 2.0 reads the raw timestamp as nanoseconds
                    // whatever if_tsresol says: rescale the raw units.
                    let units = epb.timestamp.as_nanos();
                    let flags = epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Flags(f) => Some(*f),
                        _ => None,
                    });
                    out.push(
                        iface,
                        iface.timestamp_ns(units),
                        epb.original_len,
                        &epb.data,
                        flags,
                    );
                }
                Block::SimplePacket(spb) => {
                    let Some(iface) = ifaces.first() else {
                        return Err(self.damaged(PcapError::InvalidInterfaceId(0).to_string()));
                    };
                    // No timestamp in a simple packet block.
                    out.push(iface, 0, spb.original_len, &spb.data, None);
                }
                _ => {}
            }
            self.stream.consume(used);
        }
        Ok(())
    }
}

/// Opens `path`, or gives up (None) on `stop`: opening a FIFO waits for its
/// writer, and no signal interrupts that (handlers restart system calls).
/// A thread abandoned in `open` ends with the process.
fn open_interruptible(path: &Path, stop: &Stop) -> Option<std::io::Result<std::fs::File>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("pcap-open".into())
        .spawn(move || {
            let _ = tx.send(std::fs::File::open(owned));
        });
    if let Err(e) = spawned {
        return Some(Err(e));
    }
    select! {
        recv(rx) -> r => Some(r.unwrap_or_else(|_| Err(std::io::ErrorKind::Other.into()))),
        recv(stop.stopped()) -> _ => None,
    }
}

/// A pcapng block's total length (its second word), in the section's byte
/// order.
fn block_len(bytes: &[u8], endianness: pcap_file::Endianness) -> Option<usize> {
    let w: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    let n = match endianness {
        pcap_file::Endianness::Big => u32::from_be_bytes(w),
        pcap_file::Endianness::Little => u32::from_le_bytes(w),
    };
    usize::try_from(n).ok()
}

impl From<PcapFileError> for CaptureError {
    fn from(e: PcapFileError) -> Self {
        CaptureError::new(e)
    }
}

impl Source for PcapSource {
    fn name(&self) -> &'static str {
        "pcap"
    }
    fn describe(&self) -> String {
        format!("pcap file {}", self.path().display())
    }
    fn live(&self) -> bool {
        false
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        Ok(PcapSource::run(*self, sink, stop)?)
    }
}

impl Counters for PcapCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("frames", self.frames.load(Relaxed)),
            ("not_ip", self.not_ip.load(Relaxed)),
            ("unknown_link", self.unknown_link.load(Relaxed)),
        ]
    }
    // A file waits for the consumer: nothing is lost before the parser.
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `data` as a capture file to the end; returns the packets.
    fn read_all(data: Vec<u8>) -> (Result<SourceEnd, PcapFileError>, usize) {
        let reader = Box::new(std::io::Cursor::new(data));
        let Ok(src) = PcapSource::from_reader(Path::new("fuzz"), reader) else {
            return (Ok(SourceEnd::Stopped), 0);
        };
        let (sink, rx, _) = crate::pipeline::channel(1 << 16);
        let end = src.run(sink, &Stop::new().unwrap());
        (end, rx.receiver().try_iter().map(|b| b.len()).sum())
    }

    const PCAP_HEADER: [u8; 24] = [
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    const PCAPNG_HEADER: [u8; 28] = [
        0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0,
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        #[test]
        fn arbitrary_bytes_never_panic(
            ng in proptest::bool::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
        ) {
            let mut data = if ng { PCAPNG_HEADER.to_vec() } else { PCAP_HEADER.to_vec() };
            data.extend_from_slice(&body);
            let _ = read_all(data);
        }
    }

    /// Reads `data` given out in pieces cut at `cuts`.
    fn read_in_pieces(data: &[u8], cuts: &[usize]) -> (Result<SourceEnd, PcapFileError>, usize) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.extend([0, data.len()]);
        points.sort_unstable();
        points.dedup();
        let pieces = points
            .windows(2)
            .map(|w| data[w[0]..w[1]].to_vec())
            .collect();
        let reader = Box::new(stream::Pieces(pieces));
        let Ok(src) = PcapSource::from_reader(Path::new("pieces"), reader) else {
            return (Ok(SourceEnd::Stopped), 0);
        };
        let (sink, rx, _) = crate::pipeline::channel(1 << 16);
        let end = src.run(sink, &Stop::new().unwrap());
        (end, rx.receiver().try_iter().map(|b| b.len()).sum())
    }

    /// A pcap with `n` 40-byte raw IP records.
    fn capture(n: usize) -> Vec<u8> {
        let mut data = PCAP_HEADER.to_vec();
        data[20] = 101; // LINKTYPE_RAW
        for i in 0..n {
            data.extend_from_slice(&(i as u32).to_le_bytes());
            data.extend_from_slice(&[0; 4]);
            data.extend_from_slice(&40u32.to_le_bytes());
            data.extend_from_slice(&40u32.to_le_bytes());
            data.extend_from_slice(&[0x45; 40]);
        }
        data
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// However a pipe splits a capture, every packet comes out once.
        #[test]
        fn any_split_of_a_capture_reads_the_same(
            n in 0usize..40,
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..30),
        ) {
            let data = capture(n);
            let (end, got) = read_in_pieces(&data, &cuts);
            proptest::prop_assert!(end.is_ok(), "{:?}", end);
            proptest::prop_assert_eq!(got, n);
        }

        /// Arbitrary bytes, arbitrarily split: an answer, never a panic,
        /// and the same answer as reading them whole.
        #[test]
        fn any_split_of_any_bytes_agrees_with_reading_whole(
            ng in proptest::bool::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..30),
        ) {
            let mut data = if ng { PCAPNG_HEADER.to_vec() } else { PCAP_HEADER.to_vec() };
            data.extend_from_slice(&body);
            let (whole_end, whole) = read_all(data.clone());
            let (end, got) = read_in_pieces(&data, &cuts);
            proptest::prop_assert_eq!(got, whole);
            proptest::prop_assert_eq!(end.is_ok(), whole_end.is_ok());
        }
    }

    #[test]
    fn a_capture_cut_inside_a_record_says_so() {
        let data = capture(3);
        let (end, got) = read_in_pieces(&data[..data.len() - 5], &[30, 70]);
        assert_eq!(got, 2);
        let err = end.unwrap_err().to_string();
        assert!(err.contains("damaged at byte 136"), "{err}");
        assert!(err.contains("in the middle of a packet record"), "{err}");
    }

    #[test]
    fn valid_headers_alone_read_as_empty_files() {
        assert_eq!(read_all(PCAP_HEADER.to_vec()).1, 0);
        let (end, n) = read_all(PCAPNG_HEADER.to_vec());
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(n, 0);
    }

    #[test]
    fn pcapng_timestamp_resolutions() {
        let us = interface_from_idb(DataLink::RAW, None);
        assert_eq!(us.timestamp_ns(1_500_000), 1_500_000_000);
        let ns = interface_from_idb(DataLink::RAW, Some(9));
        assert_eq!(ns.timestamp_ns(42), 42);
        let bin = interface_from_idb(DataLink::RAW, Some(0x80 | 10));
        assert_eq!(bin.timestamp_ns(1024), 1_000_000_000);
    }
}
