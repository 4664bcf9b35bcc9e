//! Bounds on concurrent commands: per agent, so one host is never flooded
//! and connections get reused; and overall, so a node never runs out of
//! sockets however many hosts it drives.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) struct Limits {
    per_host: usize,
    hosts: DashMap<String, Arc<Semaphore>>,
    total: Arc<Semaphore>,
}

/// Permission to hold one connection to one agent.
pub(super) struct Slot {
    _total: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

impl Limits {
    pub(super) fn new(per_host: usize, total: usize) -> Self {
        Self {
            per_host,
            hosts: DashMap::new(),
            total: Arc::new(Semaphore::new(total)),
        }
    }

    /// Waits for a slot to `host` (its `host:port`). The host's permit
    /// comes first, so that commands queued behind one busy agent do not
    /// hold overall slots that other agents could use.
    pub(super) async fn slot(&self, host: &str) -> Slot {
        let host_limit = match self.hosts.get(host) {
            Some(limit) => Arc::clone(&limit),
            None => Arc::clone(
                &self
                    .hosts
                    .entry(host.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
            ),
        };
        let host = host_limit
            .acquire_owned()
            .await
            .expect("the limits never close");
        let total = Arc::clone(&self.total)
            .acquire_owned()
            .await
            .expect("the limits never close");
        Slot {
            _total: total,
            _host: host,
        }
    }
}
