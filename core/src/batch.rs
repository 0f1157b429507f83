//! A batch of captured packets: their bytes back to back in one buffer and
//! their heads in another. Batches are reused (see the capture pipeline's
//! pool), so once their buffers have grown a flood allocates nothing per
//! packet.

use crate::event::{Direction, KernelDrop, RawPacket};

/// A batch keeps at most this much memory (bytes and heads) when cleared
/// for reuse; a larger one (a burst of big packets) is let go.
const KEEP_BYTES: usize = 4 << 20;

/// Packets as sources hand them on; read back as `RawPacket`s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Vec<u8>,
    heads: Vec<Head>,
}

/// A packet's fields, and where its bytes are in `Batch::bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    ts_ns: u64,
    mono_ns: Option<u64>,
    direction: Direction,
    ifindex: u32,
    orig_len: u32,
    start: usize,
    len: usize,
    drop: Option<KernelDrop>,
}

impl Batch {
    /// Copies `p` in.
    pub fn push(&mut self, p: RawPacket<'_>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(p.data);
        self.heads.push(Head {
            ts_ns: p.ts_ns,
            mono_ns: p.mono_ns,
            direction: p.direction,
            ifindex: p.ifindex,
            orig_len: p.orig_len,
            start,
            len: p.data.len(),
            drop: p.drop.cloned(),
        });
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Packet bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RawPacket<'_>> + '_ {
        self.heads.iter().map(|h| self.packet(h))
    }

    /// The `i`th packet.
    pub fn get(&self, i: usize) -> Option<RawPacket<'_>> {
        self.heads.get(i).map(|h| self.packet(h))
    }

    fn packet<'a>(&'a self, h: &'a Head) -> RawPacket<'a> {
        RawPacket {
            ts_ns: h.ts_ns,
            mono_ns: h.mono_ns,
            direction: h.direction,
            ifindex: h.ifindex,
            orig_len: h.orig_len,
            data: &self.bytes[h.start..h.start + h.len],
            drop: h.drop.as_ref(),
        }
    }

    /// Lets the first `n` packets go (a batch used as a queue).
    pub fn remove_front(&mut self, n: usize) {
        let n = n.min(self.heads.len());
        let cut = self.heads.get(n).map_or(self.bytes.len(), |h| h.start);
        self.bytes.drain(..cut);
        self.heads.drain(..n);
        for h in &mut self.heads {
            h.start -= cut;
        }
    }

    /// Empties the batch for reuse; false when its buffers have grown past
    /// what is worth keeping (drop it instead).
    pub fn clear(&mut self) -> bool {
        self.bytes.clear();
        self.heads.clear();
        self.bytes.capacity() + self.heads.capacity() * std::mem::size_of::<Head>() <= KEEP_BYTES
    }
}

impl<'a> Extend<RawPacket<'a>> for Batch {
    fn extend<I: IntoIterator<Item = RawPacket<'a>>>(&mut self, iter: I) {
        for p in iter {
            self.push(p);
        }
    }
}

impl<'a> FromIterator<RawPacket<'a>> for Batch {
    fn from_iter<I: IntoIterator<Item = RawPacket<'a>>>(iter: I) -> Self {
        let mut b = Batch::default();
        b.extend(iter);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet<'a>(data: &'a [u8], n: u64, drop: Option<&'a KernelDrop>) -> RawPacket<'a> {
        RawPacket {
            ts_ns: n,
            mono_ns: (n % 2 == 0).then_some(n * 3),
            direction: if drop.is_some() {
                Direction::Drop
            } else {
                Direction::ALL[(n % 3) as usize]
            },
            ifindex: n as u32,
            orig_len: data.len() as u32 + 7,
            data,
            drop,
        }
    }

    proptest! {
        /// What goes in comes out, in order, through every reuse.
        #[test]
        fn packets_read_back_as_pushed(
            rounds in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
                1..4,
            )
        ) {
            let drop = KernelDrop { reason: "NETFILTER_DROP".into(), function: "nft_do_chain".into() };
            let mut b = Batch::default();
            for round in &rounds {
                prop_assert!(b.clear());
                prop_assert!(b.is_empty());
                let want: Vec<RawPacket> = round
                    .iter()
                    .enumerate()
                    .map(|(i, d)| packet(d, i as u64, (i % 5 == 4).then_some(&drop)))
                    .collect();
                b.extend(want.iter().copied());
                prop_assert_eq!(b.len(), want.len());
                prop_assert_eq!(b.bytes(), round.iter().map(Vec::len).sum::<usize>());
                let got: Vec<RawPacket> = b.iter().collect();
                prop_assert_eq!(&got, &want);
                for (i, p) in want.iter().enumerate() {
                    prop_assert_eq!(b.get(i), Some(*p));
                }
                prop_assert_eq!(b.get(want.len()), None);
            }
        }

        /// Used as a queue: what is left after the front goes reads back
        /// as it was, and takes only its own bytes.
        #[test]
        fn the_front_goes_and_the_rest_stays(
            sizes in proptest::collection::vec(0usize..200, 0..30),
            cut in 0usize..40,
        ) {
            let data: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
            let want: Vec<RawPacket> = data.iter().enumerate().map(|(i, d)| packet(d, i as u64, None)).collect();
            let mut b: Batch = want.iter().copied().collect();
            b.remove_front(cut);
            let rest = &want[cut.min(want.len())..];
            let got: Vec<RawPacket> = b.iter().collect();
            prop_assert_eq!(got.as_slice(), rest);
            prop_assert_eq!(b.bytes(), rest.iter().map(|p| p.data.len()).sum::<usize>());
        }
    }

    #[test]
    fn a_grown_buffer_is_not_kept() {
        let big = vec![0u8; KEEP_BYTES + 1];
        let mut b: Batch = std::iter::once(packet(&big, 1, None)).collect();
        assert_eq!(b.len(), 1);
        assert!(!b.clear());
        // Heads count too: many empty packets.
        let mut many: Batch = std::iter::repeat_n(packet(&[], 1, None), KEEP_BYTES / 16).collect();
        assert!(!many.clear());
        let mut small: Batch = std::iter::once(packet(&[1, 2, 3], 1, None)).collect();
        assert!(small.clear());
    }
}
