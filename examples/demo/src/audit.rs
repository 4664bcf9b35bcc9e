//! The audit service: records every VM event — API results and internal
//! state changes alike — which is why non-blocking APIs answer with events
//! rather than replies. Its event handlers are declared like its request
//! handler, so they run within the service's limits and finish before a
//! graceful stop does.

use std::sync::{Arc, Mutex};

use cloudbus::prelude::*;

use crate::messages::{AuditLog, GetAuditLog, VmStarted, VmStateChanged, VmStopped};

/// The auditor's state: what it has recorded, oldest first.
#[derive(Clone, Debug, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn record(&self, ctx: &Context, what: String) {
        let api = ctx.envelope().api_id.is_some();
        let kind = if api { "api result" } else { "event" };
        let entry = format!("{:<16} {what} ({kind})", ctx.envelope().type_name);
        tracing::info!(target: "cloudbus_demo::audit", "{entry}");
        self.0.lock().expect("audit log").push(entry);
    }
}

#[handlers]
impl Log {
    async fn get_audit_log(&self, _req: GetAuditLog, _ctx: Context) -> Result<AuditLog, ErrorCode> {
        Ok(AuditLog {
            entries: self.0.lock().expect("audit log").clone(),
        })
    }

    #[event]
    async fn vm_started(&self, ev: VmStarted, ctx: Context) -> Result<(), ErrorCode> {
        self.record(&ctx, format!("{} on {}", ev.name, ev.host));
        Ok(())
    }

    #[event]
    async fn vm_stopped(&self, ev: VmStopped, ctx: Context) -> Result<(), ErrorCode> {
        self.record(&ctx, ev.name);
        Ok(())
    }

    #[event]
    async fn state_changed(&self, ev: VmStateChanged, ctx: Context) -> Result<(), ErrorCode> {
        self.record(&ctx, format!("{} {} -> {}", ev.name, ev.from, ev.to));
        Ok(())
    }
}

/// A running auditor and its log.
#[derive(Debug)]
pub struct Auditor {
    log: Log,
}

impl Auditor {
    /// Registers the `audit` service. Events published after this returns
    /// are recorded.
    pub async fn start(bus: &Bus) -> Result<Auditor, ErrorCode> {
        let log = Log::default();
        // One at a time, so the log keeps the order events were published in.
        bus.register(
            Service::builder("audit", log.clone())
                .concurrency(1)
                .build(),
        )
        .await?;
        Ok(Auditor { log })
    }

    /// Everything recorded; after the bus has shut down, every event it
    /// received is in.
    pub async fn finish(self) -> Vec<String> {
        self.log.0.lock().expect("audit log").clone()
    }
}
