//! The bus side of membership: announcing this node, listening to the
//! others, and failing the callers of nodes that die or leave.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use super::{Bus, BusInner};
use crate::cluster::{
    self, Announcement, Change, ClusterView, DiscoverNodes, NodeHeartbeat, NodeJoined, NodeLeft,
};
use crate::{Body, Envelope, ErrorCode, Kind, Message, NodeId, codes};

/// How long the calls waiting on a node that left gracefully may still
/// get the replies it sent before its goodbye.
const LEFT_GRACE: Duration = Duration::from_millis(500);

impl Bus {
    /// The cluster as this node sees it now: live members, their services,
    /// the hash ring. On the embedded bus, just this node.
    pub fn cluster(&self) -> ClusterView {
        self.inner.members.view()
    }

    /// Follows the cluster: the value changes whenever a member joins,
    /// leaves, dies or changes its services, so that work assigned by the
    /// ring (which node tracks which host, say) moves at once, not at the
    /// next poll. Read the new state with [`Bus::cluster`].
    pub fn cluster_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.members.changes()
    }

    /// Waits until the cluster satisfies `ready` (re-checked on every
    /// change of members or their services) and returns that view, or
    /// `cloudbus.TIMEOUT` after `timeout`.
    ///
    /// Tools use it to learn the cluster before they route: an observer
    /// asks every member for a heartbeat when it starts, and all of them
    /// answer within one heartbeat interval.
    pub async fn wait_for_cluster(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&ClusterView) -> bool,
    ) -> Result<ClusterView, ErrorCode> {
        let mut changes = self.inner.members.changes();
        let wait = async {
            loop {
                changes.borrow_and_update();
                let view = self.cluster();
                if ready(&view) {
                    return Ok(view);
                }
                if changes.changed().await.is_err() {
                    return Err(ErrorCode::shutting_down());
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(ErrorCode::new(
                    codes::TIMEOUT,
                    format!("the cluster did not reach the expected state within {timeout:?}"),
                ))
            })
    }

    /// Waits until the cluster view stays unchanged for `quiet` (giving up
    /// at `limit`) and returns it. Members answer an observer's discovery
    /// request at once when it starts, so a tool that needs the whole
    /// cluster (to find a resource's owner, say) waits for the answers to
    /// stop coming, not for a full heartbeat interval.
    pub async fn settled_cluster(&self, quiet: Duration, limit: Duration) -> ClusterView {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.inner.members.changes();
        changes.borrow_and_update();
        if self.cluster().is_empty() {
            // Nobody yet: wait for the first answer, as long as allowed.
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return self.cluster();
            }
        }
        loop {
            let until = deadline.min(tokio::time::Instant::now() + quiet);
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) if tokio::time::Instant::now() < deadline => continue,
                _ => return self.cluster(),
            }
        }
    }

    /// Joins the cluster: listens to membership events, announces this
    /// node (or, for an observer, asks the members to), and keeps
    /// heartbeats and failure detection running until shutdown.
    pub(crate) async fn start_membership(&self) -> Result<(), ErrorCode> {
        self.bind_api_event(cluster::PATTERN).await?;
        let task = tokio::spawn(heartbeats(
            Arc::downgrade(&self.inner),
            self.inner.wake.clone(),
            self.inner.members.config.interval,
        ));
        *self
            .inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        if self.inner.members.config.member {
            let joined = NodeJoined(self.announcement());
            self.publish_membership(NodeJoined::TYPE, Body::new(joined))
                .await
        } else {
            let discover = DiscoverNodes {
                node: self.inner.node,
            };
            self.publish_membership(DiscoverNodes::TYPE, Body::new(discover))
                .await
        }
    }

    /// Says goodbye after in-flight work is done, so nobody's call to this
    /// node is failed while it could still be answered.
    pub(crate) async fn stop_membership(&self) {
        if let Some(task) = self
            .inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        if !self.inner.members.config.member {
            return;
        }
        if let Some(transport) = &self.inner.transport {
            let left = NodeLeft {
                node: self.inner.node,
            };
            let envelope = Envelope::new(Kind::Event, NodeLeft::TYPE, self.inner.node);
            let sent = match Body::new(left).to_json() {
                Ok(body) => transport.publish(&envelope, body).await,
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                tracing::warn!(%error, "could not announce that this node leaves");
            }
        }
    }

    /// This node's services changed: tell the others now, not at the next beat.
    pub(crate) fn services_changed(&self) {
        if self.inner.members.config.member {
            self.inner.members.observe(&self.announcement());
            self.inner.wake.notify_one();
        }
    }

    /// A membership event from another node.
    pub(crate) fn on_membership(&self, type_name: &str, body: &[u8]) {
        let outcome = match type_name {
            NodeHeartbeat::TYPE => {
                serde_json::from_slice(body).map(|NodeHeartbeat(a)| self.seen(&a, false))
            }
            NodeJoined::TYPE => {
                serde_json::from_slice(body).map(|NodeJoined(a)| self.seen(&a, true))
            }
            DiscoverNodes::TYPE => serde_json::from_slice(body).map(|_: DiscoverNodes| {
                self.inner.wake.notify_one();
            }),
            NodeLeft::TYPE => serde_json::from_slice(body).map(|left: NodeLeft| {
                self.left(left.node);
            }),
            _ => Ok(()),
        };
        if let Err(error) = outcome {
            self.inner.stats.malformed.inc();
            tracing::warn!(type_name, %error, "unreadable membership event; ignored");
        }
    }

    fn seen(&self, announcement: &Announcement, joined: bool) {
        if announcement.node == self.inner.node {
            return;
        }
        if self.inner.members.observe(announcement) == Change::Joined {
            tracing::info!(node = %announcement.node, services = ?announcement.services, "node joined");
        }
        if joined {
            // The newcomer learns about this node now, not a beat later.
            self.inner.wake.notify_one();
        }
    }

    /// A member that stopped gracefully: it answered what it took before
    /// saying so, but its last replies travel on another queue than its
    /// goodbye and may arrive a moment after it. It is gone for routing at
    /// once; the calls still waiting on it fail after [`LEFT_GRACE`]
    /// unless their reply arrives first.
    fn left(&self, node: NodeId) {
        if !self.inner.members.remove(node) {
            return;
        }
        tracing::info!(%node, "node left the cluster");
        let bus = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(LEFT_GRACE).await;
            if let Some(inner) = bus.upgrade() {
                let error = ErrorCode::new(
                    codes::NODE_UNAVAILABLE,
                    format!("node {node} left the cluster without answering"),
                );
                let failed = inner.pending.fail_node(node, &error);
                if failed > 0 {
                    tracing::warn!(%node, failed_calls = failed, "calls to a node that left failed");
                }
            }
        });
    }

    /// Forgets a member and fails the calls waiting on it; `false` if it
    /// was not known.
    fn gone(&self, node: NodeId, why: &str) -> bool {
        if !self.inner.members.remove(node) {
            return false;
        }
        let error = ErrorCode::new(codes::NODE_UNAVAILABLE, format!("node {node} {why}"));
        let failed = self.inner.pending.fail_node(node, &error);
        tracing::warn!(%node, failed_calls = failed, "node {why}");
        true
    }

    fn announcement(&self) -> Announcement {
        self.inner
            .members
            .announcement(self.services(), self.broker())
    }

    async fn publish_membership(
        &self,
        type_name: &'static str,
        body: Body,
    ) -> Result<(), ErrorCode> {
        let envelope = Envelope::new(Kind::Event, type_name, self.inner.node);
        self.publish_envelope(envelope, body).await
    }

    async fn beat(&self) {
        if !self.inner.members.config.member {
            return;
        }
        let beat = NodeHeartbeat(self.announcement());
        let envelope = Envelope::new(Kind::Event, NodeHeartbeat::TYPE, self.inner.node);
        self.inner.members.beat_sent(envelope.id);
        if let Err(error) = self.publish_envelope(envelope, Body::new(beat)).await {
            tracing::debug!(%error, "heartbeat not sent");
        }
    }
}

/// Beats once per interval (and whenever woken), and declares dead the
/// nodes that went silent. Holds the bus weakly: it never keeps it alive.
async fn heartbeats(bus: Weak<BusInner>, wake: Arc<Notify>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let ticked = tokio::select! {
            _ = ticks.tick() => true,
            () = wake.notified() => false,
        };
        let Some(inner) = bus.upgrade() else { return };
        let bus = Bus { inner };
        if bus.is_shut_down() {
            return;
        }
        bus.beat().await;
        if ticked {
            let misses = bus.inner.members.config.misses;
            for node in bus.inner.members.silent() {
                if bus.gone(
                    node,
                    &format!("is dead: no heartbeat in {misses} intervals"),
                ) {
                    bus.inner.stats.members_dead.inc();
                }
            }
        }
    }
}
