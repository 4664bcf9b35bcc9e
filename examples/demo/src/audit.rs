//! The audit service: subscribes to every `vm.*` event — API results and
//! internal state changes alike — which is why non-blocking APIs answer
//! with events rather than replies.

use std::sync::{Arc, Mutex};

use cloudbus::{Bus, Context, ErrorCode, Handler, RawEvent, Service};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::messages::{AuditLog, GetAuditLog};

/// The events the auditor records.
pub const PATTERN: &str = "vm.#";

#[derive(Clone, Debug, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Handler<GetAuditLog> for Log {
    async fn handle(&self, _req: GetAuditLog, _ctx: Context) -> Result<AuditLog, ErrorCode> {
        Ok(AuditLog {
            entries: self.0.lock().expect("audit log").clone(),
        })
    }
}

/// A running auditor: its subscription task and its log.
#[derive(Debug)]
pub struct Auditor {
    log: Log,
    task: JoinHandle<()>,
}

impl Auditor {
    /// Subscribes to [`PATTERN`] and registers the `audit` service. Events
    /// published after this returns are recorded.
    pub async fn start(bus: &Bus) -> Result<Auditor, ErrorCode> {
        let log = Log::default();
        let mut events = bus.subscribe_pattern(PATTERN).await?;
        bus.register(
            Service::builder("audit", log.clone())
                .handle::<GetAuditLog>()
                .build(),
        )
        .await?;
        let recorder = log.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let entry = describe(event);
                tracing::info!(target: "cloudbus_demo::audit", "{entry}");
                recorder.0.lock().expect("audit log").push(entry);
            }
        });
        Ok(Auditor { log, task })
    }

    /// Waits until the subscription has ended (the bus was shut down) and
    /// returns everything recorded.
    pub async fn finish(self) -> Vec<String> {
        // The task only ends when the subscription does; a panic in it
        // would already have lost entries, so report what there is.
        let _ = self.task.await;
        self.log.0.lock().expect("audit log").clone()
    }
}

/// One line per event: its type, the VM's name and what it says.
fn describe(event: RawEvent) -> String {
    let api = event.envelope.api_id.is_some();
    let type_name = event.envelope.type_name.to_string();
    let body: serde_json::Value = event
        .body
        .to_json()
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    let field = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    let what = match type_name.as_str() {
        "vm.StateChanged" => format!("{} {} -> {}", field("name"), field("from"), field("to")),
        "vm.VmStarted" => format!("{} on {}", field("name"), field("host")),
        _ => field("name").to_string(),
    };
    let kind = if api { "api result" } else { "event" };
    format!("{type_name:<16} {what} ({kind})")
}
