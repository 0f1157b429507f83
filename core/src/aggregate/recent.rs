//! The recent-events list's entries (the dashboard's events pane).

use std::net::IpAddr;

use super::flow::FlowKey;
use super::owners::Attribution;
use crate::event::{Direction, Family, IcmpEvent, Info, KernelDrop};

/// An event as the recent-events list keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentEvent {
    pub ts_ns: u64,
    pub direction: Direction,
    pub family: Family,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub echo: Option<(u16, u16)>,
    pub rtt_us: Option<u64>,
    pub flow: Option<FlowKey>,
    pub info: Option<Info>,
    /// The local process of the flow (errors) or socket (echo requests
    /// sent), once the attribution thread has answered.
    pub attribution: Option<Attribution>,
    /// Why the kernel dropped it (a `drop` event).
    pub drop: Option<KernelDrop>,
}

impl RecentEvent {
    pub(super) fn new(ev: &IcmpEvent, rtt_us: Option<u64>) -> Self {
        Self {
            ts_ns: ev.ts_ns,
            direction: ev.direction,
            family: ev.family,
            src: ev.src,
            dst: ev.dst,
            icmp_type: ev.icmp_type,
            icmp_code: ev.icmp_code,
            echo: ev.echo.map(|e| (e.id, e.seq)),
            rtt_us,
            flow: ev.quoted.as_ref().map(FlowKey::from),
            info: ev.info,
            attribution: None,
            drop: ev.drop.clone(),
        }
    }
}
