//! Rust mirror of the kernel ABI in `kmod-hook/include/uapi/icmpmon.h`
//! (version 2), and the generic netlink message type built on it.
//!
//! Only version 2 is spoken: a version-1 module is refused with a message
//! saying to rebuild and reload it (its records lack the header length and
//! the monotonic timestamp, and nobody runs a module older than the binary
//! built from the same tree for long).
//!
//! `tests/uapi_layout.rs` compiles the C header and checks every constant,
//! size and offset here against it: change both together.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use icmpmon_core::event::{Direction, RawPacket};

pub const GENL_NAME: &str = "icmpmon";
pub const GENL_VERSION: u8 = 2;

/// `enum icmpmon_cmd`
pub mod cmd {
    pub const REGISTER: u8 = 1;
    pub const CLOSE: u8 = 2;
    pub const RECORDS: u8 = 3;
    pub const STATS: u8 = 4;
    pub const BYE: u8 = 5;
    pub const MAX: u8 = 5;
}

/// `enum icmpmon_attr`
pub mod attr {
    pub const HOOK_MASK: u16 = 1;
    pub const FAMILY_MASK: u16 = 2;
    pub const SNAPLEN: u16 = 3;
    pub const BATCH_BYTES: u16 = 4;
    pub const FLUSH_MS: u16 = 5;
    pub const SEQ: u16 = 6;
    pub const LOST: u16 = 7;
    pub const RECORDS: u16 = 8;
    pub const BYE_REASON: u16 = 9;
    pub const STAT_PACKETS: u16 = 10;
    pub const STAT_SEEN: u16 = 11;
    pub const STAT_DELIVERED: u16 = 12;
    pub const STAT_LOST_NOBUFS: u16 = 13;
    pub const STAT_LOST_NOMEM: u16 = 14;
    pub const STAT_LOST_CLOSED: u16 = 15;
    pub const STAT_TRUNCATED: u16 = 16;
    pub const STAT_SUBSCRIBERS: u16 = 17;
    pub const PAD: u16 = 18;
    pub const STAT_LOST_OTHER: u16 = 19;
    pub const STAT_SUBSCRIBED: u16 = 20;
    pub const SEEN: u16 = 21;
    pub const MAX: u16 = 21;
}

/// `enum icmpmon_hook`
pub const HOOK_PRE_ROUTING: u8 = 0;
pub const HOOK_LOCAL_OUT: u8 = 1;
/// Not a module hook: the BPF source's drop records (`struct icmpmon_rec_drop`).
pub const HOOK_DROP: u8 = 2;
pub const HOOK_F_PRE_ROUTING: u32 = 1 << HOOK_PRE_ROUTING;
pub const HOOK_F_LOCAL_OUT: u32 = 1 << HOOK_LOCAL_OUT;

pub const FAMILY_F_IPV4: u32 = 1 << 0;
pub const FAMILY_F_IPV6: u32 = 1 << 1;

/// `enum icmpmon_bye_reason`
pub const BYE_UNLOAD: u32 = 1;

pub const SNAPLEN_MIN: u32 = 64;
pub const SNAPLEN_MAX: u32 = 4096;
pub const SNAPLEN_DEFAULT: u32 = 256;
pub const BATCH_BYTES_MIN: u32 = 1024;
pub const BATCH_BYTES_MAX: u32 = 61440;
pub const BATCH_BYTES_DEFAULT: u32 = 16384;
pub const FLUSH_MS_MIN: u32 = 1;
pub const FLUSH_MS_MAX: u32 = 1000;
pub const FLUSH_MS_DEFAULT: u32 = 5;

pub const REC_FAMILY_IPV4: u8 = 4;
pub const REC_FAMILY_IPV6: u8 = 6;
pub const REC_F_TRUNCATED: u8 = 1 << 0;
pub const REC_HDR_LEN_V2: u16 = 32;
pub const REC_ALIGN: usize = 8;
pub const REC_HDR_LEN_DROP: u16 = 48;

/// `struct icmpmon_rec`: host byte order, followed by `caplen` packet bytes
/// at `hdr_len` from its start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpmonRec {
    pub hdr_len: u16,
    pub caplen: u16,
    pub origlen: u32,
    pub ifindex: u32,
    pub family: u8,
    pub hook: u8,
    pub flags: u8,
    pub reserved: u8,
    pub ts_real_ns: u64,
    pub ts_mono_ns: u64,
}

impl IcmpmonRec {
    pub const SIZE: usize = std::mem::size_of::<Self>();

    /// Reads the version-2 fields from the start of `buf` (no alignment
    /// needed); fields a newer module appends are left for the caller to
    /// skip by `hdr_len`.
    pub fn read(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..Self::SIZE)?;
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap_or_default());
        Some(Self {
            hdr_len: u16_at(0),
            caplen: u16_at(2),
            origlen: u32_at(4),
            ifindex: u32_at(8),
            family: b[12],
            hook: b[13],
            flags: b[14],
            reserved: b[15],
            ts_real_ns: u64_at(16),
            ts_mono_ns: u64_at(24),
        })
    }

    /// Appends this header in the kernel's layout, padded with zeroes to
    /// `hdr_len` (tests and fixtures).
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.hdr_len.to_ne_bytes());
        out.extend_from_slice(&self.caplen.to_ne_bytes());
        out.extend_from_slice(&self.origlen.to_ne_bytes());
        out.extend_from_slice(&self.ifindex.to_ne_bytes());
        out.extend_from_slice(&[self.family, self.hook, self.flags, self.reserved]);
        out.extend_from_slice(&self.ts_real_ns.to_ne_bytes());
        out.extend_from_slice(&self.ts_mono_ns.to_ne_bytes());
        out.resize(out.len().max(start + usize::from(self.hdr_len)), 0);
    }
}

/// The fields `struct icmpmon_rec_drop` appends to a drop record's header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropFields {
    /// The running kernel's `enum skb_drop_reason` value.
    pub reason: u32,
    /// Address of the code that dropped the packet.
    pub location: u64,
}

impl DropFields {
    /// Offsets in `struct icmpmon_rec_drop`.
    pub const REASON_OFFSET: usize = 32;
    pub const LOCATION_OFFSET: usize = 40;

    /// A drop record's fields; `None` for other records or a header too
    /// short to hold them.
    pub fn read(rec: &IcmpmonRec, header: &[u8]) -> Option<Self> {
        if rec.hook != HOOK_DROP || rec.hdr_len < REC_HDR_LEN_DROP {
            return None;
        }
        let r = header.get(Self::REASON_OFFSET..Self::REASON_OFFSET + 4)?;
        let l = header.get(Self::LOCATION_OFFSET..Self::LOCATION_OFFSET + 8)?;
        Some(Self {
            reason: u32::from_ne_bytes(r.try_into().ok()?),
            location: u64::from_ne_bytes(l.try_into().ok()?),
        })
    }
}

impl IcmpmonRec {
    /// The packet as every source yields it; `ts_real_ns` replaces the
    /// record's when the writer has no wall clock (BPF). The caller sets
    /// `drop` on drop records.
    pub fn to_raw<'a>(&self, data: &'a [u8], ts_real_ns: u64) -> RawPacket<'a> {
        RawPacket {
            ts_ns: ts_real_ns,
            mono_ns: Some(self.ts_mono_ns),
            direction: match self.hook {
                HOOK_PRE_ROUTING => Direction::In,
                HOOK_LOCAL_OUT => Direction::Out,
                HOOK_DROP => Direction::Drop,
                _ => Direction::Unknown,
            },
            ifindex: self.ifindex,
            orig_len: self.origlen,
            data,
            drop: None,
        }
    }
}

/// Why a RECORDS payload could not be walked to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RECORDS attribute at byte {offset}: {what}")]
pub struct RecordsError {
    pub offset: usize,
    pub what: &'static str,
}

/// One record at the start of `buf`: its header, its header's bytes (for
/// fields appended after version 2's) and its packet bytes.
pub fn record(buf: &[u8]) -> Result<(IcmpmonRec, &[u8], &[u8]), &'static str> {
    let rec = IcmpmonRec::read(buf).ok_or("record header cut short")?;
    let hdr_len = usize::from(rec.hdr_len);
    if hdr_len < IcmpmonRec::SIZE {
        return Err("record header shorter than version 2's");
    }
    // Header fields this reader does not know are skipped.
    let header = buf.get(..hdr_len).ok_or("record header cut short")?;
    let data = buf
        .get(hdr_len..hdr_len + usize::from(rec.caplen))
        .ok_or("record data cut short")?;
    Ok((rec, header, data))
}

/// Walks the packed records of one `ICMPMON_A_RECORDS` attribute.
pub fn records(buf: &[u8]) -> impl Iterator<Item = Result<(IcmpmonRec, &[u8]), RecordsError>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let at = off;
        match record(&buf[off..]) {
            Ok((rec, header, data)) => {
                off = (at + header.len() + data.len()).next_multiple_of(REC_ALIGN);
                Some(Ok((rec, data)))
            }
            Err(what) => {
                off = buf.len();
                Some(Err(RecordsError { offset: at, what }))
            }
        }
    })
}

/// One attribute of the icmpmon family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcmpmonAttr {
    HookMask(u32),
    FamilyMask(u32),
    Snaplen(u32),
    BatchBytes(u32),
    FlushMs(u32),
    Seq(u64),
    Lost(u64),
    /// CLOSE's reply and BYE: records made for this subscriber in all.
    Seen(u64),
    Records(Vec<u8>),
    ByeReason(u32),
    /// Any u64 STATS counter, by its attribute number.
    Counter(u16, u64),
    Subscribers(u32),
    /// STATS: whether the asking socket is a subscriber.
    Subscribed(bool),
    Other(DefaultNla),
}

impl Nla for IcmpmonAttr {
    fn value_len(&self) -> usize {
        use IcmpmonAttr::*;
        match self {
            HookMask(_) | FamilyMask(_) | Snaplen(_) | BatchBytes(_) | FlushMs(_)
            | ByeReason(_) | Subscribers(_) | Subscribed(_) => 4,
            Seq(_) | Lost(_) | Seen(_) | Counter(..) => 8,
            Records(v) => v.len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IcmpmonAttr::*;
        match self {
            HookMask(_) => attr::HOOK_MASK,
            FamilyMask(_) => attr::FAMILY_MASK,
            Snaplen(_) => attr::SNAPLEN,
            BatchBytes(_) => attr::BATCH_BYTES,
            FlushMs(_) => attr::FLUSH_MS,
            Seq(_) => attr::SEQ,
            Lost(_) => attr::LOST,
            Seen(_) => attr::SEEN,
            Records(_) => attr::RECORDS,
            ByeReason(_) => attr::BYE_REASON,
            Counter(kind, _) => *kind,
            Subscribers(_) => attr::STAT_SUBSCRIBERS,
            Subscribed(_) => attr::STAT_SUBSCRIBED,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use IcmpmonAttr::*;
        match self {
            HookMask(v) | FamilyMask(v) | Snaplen(v) | BatchBytes(v) | FlushMs(v)
            | ByeReason(v) | Subscribers(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Subscribed(v) => buf[..4].copy_from_slice(&u32::from(*v).to_ne_bytes()),
            Seq(v) | Lost(v) | Seen(v) | Counter(_, v) => {
                buf[..8].copy_from_slice(&v.to_ne_bytes())
            }
            Records(v) => buf[..v.len()].copy_from_slice(v),
            Other(nla) => nla.emit_value(buf),
        }
    }
}

fn nla_u32(value: &[u8]) -> Result<u32, DecodeError> {
    Ok(u32::from_ne_bytes(value.try_into().map_err(|_| {
        DecodeError::invalid_number(4, value.len())
    })?))
}

fn nla_u64(value: &[u8]) -> Result<u64, DecodeError> {
    Ok(u64::from_ne_bytes(value.try_into().map_err(|_| {
        DecodeError::invalid_number(8, value.len())
    })?))
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for IcmpmonAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            attr::HOOK_MASK => Self::HookMask(nla_u32(v)?),
            attr::FAMILY_MASK => Self::FamilyMask(nla_u32(v)?),
            attr::SNAPLEN => Self::Snaplen(nla_u32(v)?),
            attr::BATCH_BYTES => Self::BatchBytes(nla_u32(v)?),
            attr::FLUSH_MS => Self::FlushMs(nla_u32(v)?),
            attr::SEQ => Self::Seq(nla_u64(v)?),
            attr::LOST => Self::Lost(nla_u64(v)?),
            attr::SEEN => Self::Seen(nla_u64(v)?),
            attr::RECORDS => Self::Records(v.to_vec()),
            attr::BYE_REASON => Self::ByeReason(nla_u32(v)?),
            k @ (attr::STAT_PACKETS..=attr::STAT_TRUNCATED | attr::STAT_LOST_OTHER) => {
                Self::Counter(k, nla_u64(v)?)
            }
            attr::STAT_SUBSCRIBERS => Self::Subscribers(nla_u32(v)?),
            attr::STAT_SUBSCRIBED => Self::Subscribed(nla_u32(v)? != 0),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A message of the icmpmon generic netlink family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpmonMsg {
    pub cmd: u8,
    pub attrs: Vec<IcmpmonAttr>,
}

impl IcmpmonMsg {
    pub fn new(cmd: u8, attrs: Vec<IcmpmonAttr>) -> Self {
        Self { cmd, attrs }
    }
}

impl GenlFamily for IcmpmonMsg {
    fn family_name() -> &'static str {
        GENL_NAME
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        GENL_VERSION
    }
}

impl Emitable for IcmpmonMsg {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IcmpmonMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| IcmpmonAttr::parse(&nla)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            cmd: header.cmd,
            attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_record_carries_its_reason_and_location() {
        let rec = IcmpmonRec {
            hdr_len: REC_HDR_LEN_DROP,
            caplen: 3,
            origlen: 84,
            family: REC_FAMILY_IPV4,
            hook: HOOK_DROP,
            ts_mono_ns: 7,
            ..IcmpmonRec::default()
        };
        let mut buf = Vec::new();
        rec.write(&mut buf);
        buf[DropFields::REASON_OFFSET..DropFields::REASON_OFFSET + 4]
            .copy_from_slice(&9u32.to_ne_bytes());
        buf[DropFields::LOCATION_OFFSET..DropFields::LOCATION_OFFSET + 8]
            .copy_from_slice(&0xffff_ffff_8100_0000u64.to_ne_bytes());
        buf.extend_from_slice(&[1, 2, 3]);
        let (r, header, data) = super::record(&buf).unwrap();
        assert_eq!(data, &[1, 2, 3]);
        assert_eq!(
            DropFields::read(&r, header),
            Some(DropFields {
                reason: 9,
                location: 0xffff_ffff_8100_0000
            })
        );
        let p = r.to_raw(data, 5);
        assert_eq!(
            (p.direction, p.ts_ns, p.mono_ns),
            (Direction::Drop, 5, Some(7))
        );
        // A version-2 reader's view: the same packet, the fields skipped.
        assert_eq!(records(&buf).count(), 1);
        // Not a drop record, or one too short for the fields: none.
        let plain = IcmpmonRec {
            hook: HOOK_PRE_ROUTING,
            ..r
        };
        assert_eq!(DropFields::read(&plain, header), None);
        let short = IcmpmonRec {
            hdr_len: REC_HDR_LEN_V2,
            ..r
        };
        assert_eq!(DropFields::read(&short, &header[..32]), None);
    }

    fn record(rec: IcmpmonRec, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        rec.write(&mut out);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(REC_ALIGN), 0);
        out
    }

    fn rec(ts: u64, caplen: u16) -> IcmpmonRec {
        IcmpmonRec {
            hdr_len: REC_HDR_LEN_V2,
            caplen,
            origlen: caplen.into(),
            family: 4,
            ts_real_ns: ts,
            ts_mono_ns: ts + 1,
            ..Default::default()
        }
    }

    #[test]
    fn records_walk_aligned_entries() {
        let a = rec(1, 3);
        let b = IcmpmonRec {
            origlen: 90,
            family: 6,
            hook: HOOK_LOCAL_OUT,
            flags: REC_F_TRUNCATED,
            ..rec(2, 4)
        };
        let mut buf = record(a, &[1, 2, 3]);
        assert_eq!(buf.len(), 40, "32-byte header + 3 bytes, padded to 8");
        buf.extend(record(b, &[9, 9, 9, 9]));
        let got: Vec<_> = records(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(a, &[1u8, 2, 3][..]), (b, &[9u8, 9, 9, 9][..])]);
    }

    #[test]
    fn records_skip_header_fields_a_newer_module_appends() {
        // A record from a future module: 16 more header bytes (nonzero, so
        // reading them as packet data would show), then the packet.
        let mut newer = rec(5, 3);
        newer.hdr_len = REC_HDR_LEN_V2 + 16;
        let mut buf = Vec::new();
        newer.write(&mut buf);
        buf[IcmpmonRec::SIZE..].fill(0xee);
        buf.extend_from_slice(&[7, 8, 9]);
        buf.resize(buf.len().next_multiple_of(REC_ALIGN), 0);
        let next = rec(6, 2);
        buf.extend(record(next, &[4, 5]));
        let got: Vec<_> = records(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(newer, &[7u8, 8, 9][..]), (next, &[4u8, 5][..])]);
    }

    #[test]
    fn records_refuse_a_short_header_length() {
        let mut old = rec(1, 0);
        old.hdr_len = 24;
        let mut buf = Vec::new();
        old.write(&mut buf);
        let got: Vec<_> = records(&buf).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].as_ref().unwrap_err().what,
            "record header shorter than version 2's"
        );
    }

    #[test]
    fn records_report_truncation_once() {
        let a = rec(0, 40);
        let buf = record(a, &[0; 10]);
        let got: Vec<_> = records(&buf).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap_err().what, "record data cut short");
        let short: Vec<_> = records(&buf[..5]).collect();
        assert_eq!(short.len(), 1);
        assert!(short[0].is_err());
    }

    #[test]
    fn attrs_roundtrip() {
        let msg = IcmpmonMsg::new(
            cmd::RECORDS,
            vec![
                IcmpmonAttr::Seq(7),
                IcmpmonAttr::Lost(2),
                IcmpmonAttr::Records(vec![1, 2, 3, 4, 5]),
                IcmpmonAttr::Counter(attr::STAT_SEEN, 9),
                IcmpmonAttr::Subscribers(1),
            ],
        );
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let back = IcmpmonMsg::parse_with_param(
            &buf,
            GenlHeader {
                cmd: cmd::RECORDS,
                version: GENL_VERSION,
            },
        )
        .unwrap();
        assert_eq!(back, msg);
    }

    /// A real RECORDS message (three records) as the module sends it: the
    /// seed the mutation tests below damage.
    fn records_message() -> Vec<u8> {
        let mut recs = record(rec(1, 28), &[0x45; 28]);
        recs.extend(record(rec(2, 64), &[0x60; 64]));
        recs.extend(record(rec(3, 8), &[8; 8]));
        let msg = IcmpmonMsg::new(
            cmd::RECORDS,
            vec![
                IcmpmonAttr::Seq(4),
                IcmpmonAttr::Lost(1),
                IcmpmonAttr::Records(recs),
            ],
        );
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    /// Decodes a generic netlink payload (what follows the genl header)
    /// and walks its records as the kmod reader does.
    fn decode(cmd: u8, payload: &[u8]) -> usize {
        let header = GenlHeader {
            cmd,
            version: GENL_VERSION,
        };
        let Ok(msg) = IcmpmonMsg::parse_with_param(payload, header) else {
            return 0;
        };
        let mut n = 0;
        for a in &msg.attrs {
            if let IcmpmonAttr::Records(data) = a {
                n += records(data).count();
            }
        }
        n
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The module's messages (and BPF ring records, read by the same
        /// `record`) are untrusted bytes: any payload decodes or is refused,
        /// never a panic, and the walk ends within the payload.
        #[test]
        fn arbitrary_payloads_never_panic(
            cmd in 0u8..8,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let n = decode(cmd, &payload);
            proptest::prop_assert!(n <= payload.len() / REC_ALIGN + 1);
            let walked = records(&payload).count();
            proptest::prop_assert!(walked <= payload.len() / REC_ALIGN + 1);
            let _ = super::record(&payload);
        }

        /// A real message with bytes changed, cut short or grown: the same.
        #[test]
        fn damaged_real_messages_never_panic(
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8),
            cut in 0usize..400,
        ) {
            let mut buf = records_message();
            for (at, v) in flips {
                let i = at % buf.len();
                buf[i] = v;
            }
            buf.truncate(cut.max(1));
            decode(cmd::RECORDS, &buf);
            let _ = records(&buf).count();
        }
    }

    #[test]
    fn the_seed_message_decodes() {
        assert_eq!(decode(cmd::RECORDS, &records_message()), 3);
    }

    #[test]
    fn wrong_width_attr_is_an_error() {
        let mut buf = vec![0u8; 8];
        buf[0..2].copy_from_slice(&6u16.to_ne_bytes());
        buf[2..4].copy_from_slice(&attr::SEQ.to_ne_bytes());
        let err = IcmpmonMsg::parse_with_param(
            &buf,
            GenlHeader {
                cmd: cmd::RECORDS,
                version: 1,
            },
        );
        assert!(err.is_err());
    }
}
