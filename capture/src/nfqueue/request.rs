//! The messages icmpmon sends on its queue: nfgenmsg, then attributes. The
//! batch verdict is also made by the rules helper (see `rules::remote`),
//! which sends it for icmpmon once icmpmon holds no capability.

use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_REQUEST,
};

use crate::netlink;

pub(super) const NFNL_SUBSYS_QUEUE: u16 = libc::NFNL_SUBSYS_QUEUE as u16;
const NFQNL_MSG_VERDICT_BATCH: u16 = libc::NFQNL_MSG_VERDICT_BATCH as u16;
const NFQA_VERDICT_HDR: u16 = libc::NFQA_VERDICT_HDR as u16;
const NF_ACCEPT: u32 = libc::NF_ACCEPT as u32;

/// An outgoing nfnetlink_queue message: nfgenmsg, then attributes.
#[derive(Debug)]
pub(super) struct NfqRequest {
    pub(super) msg: u16,
    pub(super) queue: u16,
    pub(super) attrs: Vec<DefaultNla>,
}

impl NetlinkSerializable for NfqRequest {
    fn message_type(&self) -> u16 {
        (NFNL_SUBSYS_QUEUE << 8) | self.msg
    }
    fn buffer_len(&self) -> usize {
        4 + self.attrs.as_slice().buffer_len()
    }
    fn serialize(&self, buf: &mut [u8]) {
        // nfgenmsg: family AF_UNSPEC, version 0, res_id = queue (big endian).
        buf[0] = 0;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&self.queue.to_be_bytes());
        self.attrs.as_slice().emit(&mut buf[4..]);
    }
}

/// The batch verdict that accepts every packet of `queue` with an id up to
/// `id`, as sent (also by the rules helper, which makes it itself).
pub(crate) fn verdict_message(queue: u16, id: u32) -> Vec<u8> {
    let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    netlink::encode(request_message(
        queue,
        NFQNL_MSG_VERDICT_BATCH,
        vec![DefaultNla::new(NFQA_VERDICT_HDR, hdr)],
        NLM_F_REQUEST,
    ))
}

pub(super) fn request_message(
    queue: u16,
    msg: u16,
    attrs: Vec<DefaultNla>,
    flags: u16,
) -> NetlinkMessage<NfqRequest> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(NfqRequest { msg, queue, attrs }),
    )
}
