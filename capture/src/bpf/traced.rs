//! Drop tracing beside another live source (`--drops`): the tracer reads
//! its ring buffer on a thread of its own into the same sink, and ends
//! when the source does.

use std::sync::Arc;

use super::counters::BpfCounters;
use super::source::BpfSource;
use crate::pipeline::{PacketSink, Stop, StopReason};
use crate::source::{CaptureError, Counters, Source, SourceEnd};

#[derive(Debug)]
pub(crate) struct WithDrops {
    inner: Box<dyn Source>,
    tracer: BpfSource,
}

impl WithDrops {
    pub(crate) fn new(inner: Box<dyn Source>, tracer: BpfSource) -> Self {
        Self { inner, tracer }
    }
}

/// Stops the tracer when dropped.
struct SetOnDrop<'a>(&'a Stop, &'a Stop);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(self.1.reason().unwrap_or(StopReason::Quit));
    }
}

#[derive(Debug)]
struct BothCounters {
    inner: Arc<dyn Counters>,
    tracer: Arc<BpfCounters>,
}

impl Counters for BothCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner.fields();
        let t = self.tracer.fields();
        v.extend(t.into_iter().filter_map(|(k, n)| match k {
            "records" => Some(("drop_records", n)),
            "bad_records" => Some(("drop_bad_records", n)),
            k if k.starts_with("drops_") => Some((k, n)),
            _ => None,
        }));
        v
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner.losses();
        v.push(("drop_ring_buffer", self.tracer.losses()[0].1));
        v
    }
}

impl Source for WithDrops {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn describe(&self) -> String {
        format!("{} + {}", self.inner.describe(), self.tracer.describe())
    }
    fn notices(&mut self) -> Vec<String> {
        let mut v = self.inner.notices();
        v.extend(Source::notices(&mut self.tracer));
        v
    }
    fn caveat(&self) -> Option<&'static str> {
        self.inner.caveat()
    }
    fn capabilities_kept(&self) -> &'static [caps::Capability] {
        self.inner.capabilities_kept()
    }
    fn handoff(&self) -> Option<(crate::rules::Handoff, std::os::fd::BorrowedFd<'_>)> {
        self.inner.handoff()
    }
    fn hand_over(&mut self, helper: Arc<dyn crate::rules::Privileged>) {
        self.inner.hand_over(helper);
    }
    fn senders(&self) -> Vec<Arc<std::os::fd::OwnedFd>> {
        self.inner.senders()
    }
    fn counters(&self) -> Arc<dyn Counters> {
        Arc::new(BothCounters {
            inner: self.inner.counters(),
            tracer: self.tracer.counters(),
        })
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        let WithDrops { inner, tracer } = *self;
        // Its own stop: the tracer ends once the source has, whyever.
        let tracer_stop = Stop::new().map_err(CaptureError::new)?;
        let tracer_sink = sink.clone();
        let ts = tracer_stop.clone();
        let thread = std::thread::Builder::new()
            .name("drops".into())
            .spawn(move || tracer.run(tracer_sink, &ts))
            .map_err(CaptureError::new)?;
        // Set however the source ends, a panic included: the tracer holds a
        // sink, and the aggregator waits for every sink to go.
        let end = {
            let _guard = SetOnDrop(&tracer_stop, stop);
            inner.run(sink, stop)
        };
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("drop tracing: {e}"),
            Err(_) => tracing::warn!("drop tracing: the thread panicked"),
        }
        end
    }
}
