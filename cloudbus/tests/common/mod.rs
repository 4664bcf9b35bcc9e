//! Message types and helpers shared by the whole-bus tests.
#![allow(dead_code)]

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudbus::{Context, ErrorCode, Event, Message, ReplyPort, ReplyStyle, Request, Service};
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

/// The one `echo` service of the tests: answers [`Echo`] with its text and
/// the id of the node it ran on. The text steers it:
/// - `"fail"`: the error `echo.FAILED` ("asked to fail") with details
///   `{"why": "test", "n": 1}` and the cause `disk.FULL`;
/// - `"panic"`: the handler panics with "asked to panic";
/// - anything else is echoed, followed by `|<id>` when the call carries the
///   task context value `request-id`.
pub fn echo_service() -> Service {
    echo_named("echo")
}

/// [`echo_service`] registered under another service name.
pub fn echo_named(name: &'static str) -> Service {
    Service::builder(name, ())
        .on_request(|req: Echo, ctx: Context| async move {
            match req.text.as_str() {
                "fail" => Err(ErrorCode::new("echo.FAILED", "asked to fail")
                    .with_details(serde_json::json!({"why": "test", "n": 1}))
                    .with_cause(ErrorCode::new("disk.FULL", "no space"))),
                "panic" => panic!("asked to panic"),
                _ => Ok(EchoReply {
                    text: match ctx.context("request-id") {
                        Some(id) => format!("{}|{id}", req.text),
                        None => req.text,
                    },
                    node: ctx.bus().node_id().to_string(),
                }),
            }
        })
        .build()
}

pub fn echo(text: &str) -> Echo {
    Echo { text: text.into() }
}

/// Never answers: drops the port it should reply through.
pub struct Forgetful;

#[cloudbus::handlers]
impl Forgetful {
    async fn echo(&self, _req: Echo, _ctx: Context, reply: ReplyPort<EchoReply>) {
        drop(reply);
    }
}

/// How long a test waits for something that should happen: generous, as
/// the broker tests run in parallel on a busy machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// `f`'s outcome, or a panic naming `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, f: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(WAIT, f.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

/// Waits, turn by turn of the scheduler, until `done` holds; panics naming
/// `what` if that takes longer than [`WAIT`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await
}
