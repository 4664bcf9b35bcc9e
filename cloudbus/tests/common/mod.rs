//! Message types and helpers shared by the whole-bus tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cloudbus::{Event, Message, ReplyStyle, Request, Service};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

macro_rules! message {
    ($name:ident = $ty:literal { $($field:ident : $t:ty),* $(,)? }) => {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct $name { $(pub $field: $t),* }
        impl Message for $name { const TYPE: &'static str = $ty; }
    };
}

message!(Echo = "echo.Echo" { text: String });
message!(EchoReply = "echo.EchoReply" { text: String, node: String });
impl Request for Echo {
    type Reply = EchoReply;
}

message!(Work = "work.Work" { key: String, n: u32 });
message!(Done = "work.Done" { n: u32 });
impl Request for Work {
    type Reply = Done;
}

message!(Note = "work.Note" { key: String, n: u32 });

message!(StartVm = "vm.StartVm" { uuid: String });
message!(VmStarted = "vm.VmStarted" { uuid: String, host: String });
impl Request for StartVm {
    type Reply = VmStarted;
    const STYLE: ReplyStyle = ReplyStyle::ApiEvent;
}
impl Event for VmStarted {}

message!(VmStateChanged = "vm.StateChanged" { uuid: String, state: String });
impl Event for VmStateChanged {}
message!(HostDown = "host.Down" { host: String });
impl Event for HostDown {}

/// Counts how many are inside a section at once, and the most ever seen.
#[derive(Clone, Default)]
pub struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

pub struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gauge {
    pub fn enter(&self) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// A service handling [`Work`] whose handler says it `started`, then waits
/// until `release` before answering `Done { n }`: a request held in flight
/// for as long as a test needs.
pub fn gated(name: &'static str, started: Arc<Notify>, release: Arc<Notify>) -> Service {
    Service::builder(name, ())
        .on_request(move |w: Work, _| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok(Done { n: w.n })
            }
        })
        .build()
}
