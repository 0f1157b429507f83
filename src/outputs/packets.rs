//! `--write FILE`: the ICMP packets the run keeps (after `--filter`), saved
//! as `tcpdump -w` saves them, for Wireshark, tshark or tcpdump later.
//! Every source hands over packets from the IP header on; each is saved
//! behind a Linux cooked (SLL) header, as `tcpdump -i any` saves them,
//! which says its direction and protocol. (Raw IP, link type 101, would
//! need no header, but libpcap refuses a pcapng file with two raw-IP
//! interfaces: it compares the second one's link type with the first
//! one's DLT number, 12.) pcapng by default: one interface description per
//! interface seen (its name; nanosecond times) and each packet's direction
//! in its flags too. pcap when the file ends in `.pcap` (one interface, no
//! names). On SIGHUP the file is opened again, appending: a new pcapng
//! section, or, for pcap, more records (a file header only if it starts
//! empty). Written by the aggregator thread like the rows, off capture's
//! path; a failed write stops the run like any output's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use pcap_file::pcap::PcapHeader;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{PcapNgBlock, PcapNgWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use icmpmon_capture::pipeline::StopReason;
use icmpmon_core::aggregate::Aggregator;
use icmpmon_core::event::{Direction, RawPacket};

use super::file::{open, rotates, Output};
use super::row::IfNames;
use crate::config::Live;
use crate::pipeline::stage::{Flow, Record, Stage, Tick};
use crate::stderr::say;

/// What libpcap takes as the largest packet: the files' snap length.
const SNAPLEN: u32 = 262_144;
/// The Linux cooked header before each packet.
const SLL: usize = 16;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The file being written.
enum Writer {
    Pcapng {
        w: PcapNgWriter<Box<dyn Write + Send>>,
        /// Interface ids of this section, by ifindex.
        ids: HashMap<u32, u32>,
    },
    Pcap(Box<dyn Write + Send>),
}

/// The `--write` stage.
pub(crate) struct PacketFile {
    out: Output,
    /// Reopened on SIGHUP: a regular file at start (not a FIFO or device).
    rotates: bool,
    name: String,
    writer: Option<Writer>,
    ifnames: IfNames,
    packets: u64,
    error: Option<anyhow::Error>,
    flushed: Instant,
    /// The frame being written, reused.
    frame: Vec<u8>,
}

impl std::fmt::Debug for PacketFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketFile")
            .field("name", &self.name)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

/// `p` behind a Linux cooked header: packet type (0 to this host, 4 sent
/// by it), no link-layer address (ARPHRD_NONE), the IP version's protocol.
fn sll_frame<'a>(p: &RawPacket, frame: &'a mut Vec<u8>) -> &'a [u8] {
    let pkttype: u16 = match p.direction {
        Direction::Out => 4,
        _ => 0,
    };
    let protocol: u16 = match p.data.first().map(|b| b >> 4) {
        Some(6) => 0x86dd,
        _ => 0x0800,
    };
    frame.clear();
    frame.extend_from_slice(&pkttype.to_be_bytes());
    frame.extend_from_slice(&0xfffe_u16.to_be_bytes());
    frame.extend_from_slice(&[0; 10]);
    frame.extend_from_slice(&protocol.to_be_bytes());
    frame.extend_from_slice(p.data);
    frame
}

fn is_pcap(out: &Output) -> bool {
    matches!(out, Output::File(p) if p.extension().is_some_and(|e| e == "pcap"))
}

fn io_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl PacketFile {
    /// Creates the file (empty) and writes its header.
    pub fn create(out: &Output) -> anyhow::Result<Self> {
        let (w, name, _) = open(out, false)?;
        let mut file = Self {
            out: out.clone(),
            rotates: matches!(out, Output::File(p) if rotates(p)),
            name,
            writer: None,
            ifnames: IfNames::default(),
            packets: 0,
            error: None,
            flushed: Instant::now(),
            frame: Vec::new(),
        };
        file.writer = Some(file.start(w, true)?);
        Ok(file)
    }

    /// The file's name, for the start-up line.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The first write error, if any (a closed pipe is none).
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take()
    }

    /// A writer on `w`: a pcapng section, or a pcap file header if the file
    /// is `empty` (appended pcap records need none).
    fn start(&self, mut w: Box<dyn Write + Send>, empty: bool) -> io::Result<Writer> {
        if is_pcap(&self.out) {
            if empty {
                // Little-endian, as the records below.
                let header = PcapHeader {
                    snaplen: SNAPLEN,
                    datalink: DataLink::LINUX_SLL,
                    ts_resolution: TsResolution::NanoSecond,
                    endianness: Endianness::Little,
                    ..PcapHeader::default()
                };
                header.write_to(&mut w).map_err(io_error)?;
            }
            return Ok(Writer::Pcap(w));
        }
        Ok(Writer::Pcapng {
            w: PcapNgWriter::new(w).map_err(io_error)?,
            ids: HashMap::new(),
        })
    }

    fn write(&mut self, p: &RawPacket) -> io::Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let ts = Duration::from_nanos(p.ts_ns);
        let frame = sll_frame(p, &mut self.frame);
        // Never less than what is kept (a capture file may say less).
        let orig_len = p
            .orig_len
            .max(p.data.len() as u32)
            .saturating_add(SLL as u32);
        match writer {
            Writer::Pcap(w) => {
                // A record header (little-endian: seconds, nanoseconds,
                // bytes kept, length on the wire), then the frame.
                let mut head = [0u8; 16];
                let sec = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
                let fields = [sec, ts.subsec_nanos(), frame.len() as u32, orig_len];
                for (chunk, v) in head.chunks_exact_mut(4).zip(fields) {
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                w.write_all(&head)?;
                w.write_all(frame)
            }
            Writer::Pcapng { w, ids } => {
                let next = ids.len() as u32;
                let id = *ids.entry(p.ifindex).or_insert(next);
                if id == next {
                    let name = self.ifnames.get(p.ifindex).unwrap_or("unknown");
                    let idb = InterfaceDescriptionBlock {
                        linktype: DataLink::LINUX_SLL,
                        snaplen: SNAPLEN,
                        options: vec![
                            InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                            InterfaceDescriptionOption::IfTsResol(9),
                        ],
                    };
                    w.write_block(&idb.into_block()).map_err(io_error)?;
                }
                // epb_flags bits 0-1: 1 inbound, 2 outbound.
                let flags = match p.direction {
                    Direction::In => vec![EnhancedPacketOption::Flags(1)],
                    Direction::Out => vec![EnhancedPacketOption::Flags(2)],
                    Direction::Unknown | Direction::Drop => vec![],
                };
                let epb = EnhancedPacketBlock {
                    interface_id: id,
                    timestamp: ts,
                    original_len: orig_len,
                    data: Cow::Borrowed(frame),
                    options: flags,
                };
                w.write_block(&epb.into_block()).map(drop).map_err(io_error)
            }
        }
    }

    fn inner(&mut self) -> Option<&mut (dyn Write + Send)> {
        match self.writer.as_mut()? {
            Writer::Pcap(w) => Some(w.as_mut()),
            Writer::Pcapng { w, .. } => Some(w.get_mut().as_mut()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushed = Instant::now();
        self.inner().map_or(Ok(()), |w| w.flush())
    }

    /// Every write error ends the file the same way: a closed pipe is a
    /// normal way to stop, anything else an error.
    fn check(&mut self, r: io::Result<()>) -> Flow {
        match r {
            Ok(()) => Flow::Go,
            Err(e) => {
                self.writer = None;
                if e.kind() != io::ErrorKind::BrokenPipe && self.error.is_none() {
                    let name = &self.name;
                    self.error =
                        Some(anyhow!(e).context(format!("cannot write packets to {name}")));
                }
                Flow::Stop(StopReason::OutputClosed)
            }
        }
    }
}

impl Stage for PacketFile {
    fn on_record(&mut self, record: &Record, _agg: &Aggregator) -> Flow {
        let Record::Event { raw, .. } = record else {
            return Flow::Go;
        };
        // A drop is a second sighting of a packet the hooks saw pass (or
        // one they never see): the capture keeps the packets only once.
        if self.writer.is_none() || raw.direction == Direction::Drop {
            return Flow::Go;
        }
        let r = self.write(raw);
        if r.is_ok() {
            self.packets += 1;
        }
        self.check(r)
    }

    fn on_tick(&mut self, tick: Tick, _agg: &Aggregator) -> Flow {
        if tick.idle || tick.now.saturating_duration_since(self.flushed) >= FLUSH_EVERY {
            let r = self.flush();
            return self.check(r);
        }
        Flow::Go
    }

    /// Opened again, appending (after logrotate moved it: a new file); a
    /// FIFO or a device is kept as it is.
    fn on_reload(&mut self, _live: Option<&Live>) -> Flow {
        if self.writer.is_none() || !self.rotates {
            return Flow::Go;
        }
        let r = self.flush();
        if self.check(r) != Flow::Go {
            return Flow::Stop(StopReason::OutputClosed);
        }
        match open(&self.out, true) {
            Ok((w, _, empty)) => match self.start(w, empty) {
                Ok(writer) => self.writer = Some(writer),
                Err(e) => return self.check(Err(e)),
            },
            Err(e) => say!("icmpmon: SIGHUP: {e}; writing on to the old file"),
        }
        Flow::Go
    }

    fn finish(&mut self, _agg: &Aggregator) -> Flow {
        let r = self.flush();
        self.check(r)
    }
}
