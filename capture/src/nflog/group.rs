//! How big a group's messages are: the buffer for a batch, and the `out`
//! group's batch for the rate it sees.

use std::time::Duration;

use netlink_packet_core::NLM_F_REQUEST;
use netlink_packet_netfilter::nflog::{config_request, ConfigNla, Timeout};
use netlink_packet_netfilter::NetfilterProtoFamily;

use crate::netlink;

/// nfnetlink_log's bounds on a group's message buffer: about NLMSG_GOODSIZE
/// (a page less the skb overhead) and 128 KiB. Every message takes a buffer
/// this size, one packet or a batch.
const NL_BUFSIZ_MIN: u32 = 4096;
const NL_BUFSIZ_MAX: u32 = 131_072;
/// How late a batched `out` packet's time may be: the `out` group batches
/// only as many packets as arrive in this time (see `adapt_out`).
const OUT_BATCH_SPAN: Duration = Duration::from_micros(250);

/// The `in` group's timer, in the kernel's unit (1/100 s): `timeout_ms`
/// rounded up, at least one.
pub(super) fn in_timer_hundredths(timeout_ms: u32) -> u32 {
    timeout_ms.div_ceil(10).max(1)
}

/// The batched `out` group's timer (under a flood), in 1/100 s.
pub(super) const OUT_TIMER_HUNDREDTHS: u32 = 1;

/// How long each group's packets wait for the other group's packets
/// logged before them (see `order`), `[in, out]`: the other group's timer
/// (the unbatched `out` group's packets are already in the socket), which
/// runs from its batch's first packet and fires at most a 10 ms step per
/// hundredth, twice, and 5 ms, for timer interrupts a loaded kernel
/// serves late. Packets are released only once the socket has been read
/// empty, so a late wake-up of icmpmon itself does not matter.
pub(super) fn order_holds(timeout_ms: u32) -> [Duration; 2] {
    let hold = |hundredths: u32| Duration::from_millis(u64::from(hundredths) * 20 + 5);
    [
        hold(OUT_TIMER_HUNDREDTHS),
        hold(in_timer_hundredths(timeout_ms)),
    ]
}

/// A message buffer for a batch of `threshold` packets, within the
/// kernel's bounds.
pub(super) fn batch_bytes(threshold: u32, snaplen: u32) -> u32 {
    threshold
        .saturating_mul(snaplen + 128)
        .clamp(NL_BUFSIZ_MIN, NL_BUFSIZ_MAX)
}

/// The `out` group's batch for `rate` packets/s: what arrives within
/// `OUT_BATCH_SPAN`, at most `max`; 1 (unbatched) below 8 000/s.
pub(super) fn out_threshold(rate: f64, max: u32) -> u32 {
    let n = rate * OUT_BATCH_SPAN.as_secs_f64();
    (n as u32).clamp(1, max.max(1))
}

/// The configuration that makes `out_group` send batches of `packets`, as
/// sent (also by the rules helper, which makes it itself). No ACK: an
/// error would come back among the packets.
pub(crate) fn out_batch_message(out_group: u16, packets: u32, snaplen: u32) -> Vec<u8> {
    let mut msg = config_request(
        NetfilterProtoFamily::Unspec,
        out_group,
        vec![
            ConfigNla::QThresh(packets),
            Timeout::new(if packets > 1 { OUT_TIMER_HUNDREDTHS } else { 0 }).into(),
            // A batch must fit: the kernel sends when the buffer is full too.
            ConfigNla::NlBufSiz(batch_bytes(packets, snaplen)),
        ],
    );
    msg.header.flags = NLM_F_REQUEST;
    netlink::encode(msg)
}
