//! Callers waiting for replies from other nodes, by request id.

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::{Body, ErrorCode, MessageId, NodeId};

pub(crate) type Outcome = Result<Body, ErrorCode>;

struct Waiter {
    tx: oneshot::Sender<Outcome>,
    node: NodeId,
}

/// A sharded map, so callers on different cores rarely touch the same lock.
#[derive(Default)]
pub(crate) struct Pending {
    waiters: DashMap<MessageId, Waiter>,
}

/// Removes the waiter when the caller stops waiting for any reason (reply,
/// timeout, or its future dropped), so nothing leaks.
pub(crate) struct PendingGuard<'a> {
    pending: &'a Pending,
    id: MessageId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.waiters.remove(&self.id);
    }
}

impl Pending {
    pub(crate) fn register(
        &self,
        id: MessageId,
        node: NodeId,
    ) -> (PendingGuard<'_>, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(id, Waiter { tx, node });
        (PendingGuard { pending: self, id }, rx)
    }

    /// Hands an outcome to its caller; `false` when nobody waits any more.
    pub(crate) fn complete(&self, id: MessageId, outcome: Outcome) -> bool {
        match self.waiters.remove(&id) {
            Some((_, waiter)) => waiter.tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Fails every caller waiting on `node` (it left or died).
    #[allow(dead_code)]
    pub(crate) fn fail_node(&self, node: NodeId, error: &ErrorCode) -> usize {
        let ids: Vec<MessageId> = self
            .waiters
            .iter()
            .filter(|w| w.value().node == node)
            .map(|w| *w.key())
            .collect();
        ids.into_iter()
            .filter(|id| self.complete(*id, Err(error.clone())))
            .count()
    }

    /// Fails every waiting caller.
    pub(crate) fn fail_all(&self, error: &ErrorCode) {
        let ids: Vec<MessageId> = self.waiters.iter().map(|w| *w.key()).collect();
        for id in ids {
            self.complete(id, Err(error.clone()));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_caller_leaves_no_entry_and_its_reply_counts_as_late() {
        let pending = Pending::default();
        let id = MessageId::random();
        {
            let (_guard, _rx) = pending.register(id, NodeId::random());
            assert_eq!(pending.len(), 1);
        }
        assert_eq!(pending.len(), 0);
        assert!(!pending.complete(id, Err(ErrorCode::internal("late"))));
    }

    #[tokio::test]
    async fn a_duplicate_reply_is_refused_and_the_first_one_counts() {
        let pending = Pending::default();
        let id = MessageId::random();
        let (_guard, rx) = pending.register(id, NodeId::random());
        assert!(pending.complete(id, Err(ErrorCode::internal("first"))));
        assert!(!pending.complete(id, Err(ErrorCode::internal("second"))));
        assert_eq!(rx.await.unwrap().unwrap_err().description(), "first");
    }

    #[tokio::test]
    async fn failing_a_node_reaches_only_its_callers() {
        let pending = Pending::default();
        let (dead, alive) = (NodeId::random(), NodeId::random());
        let (_g1, rx1) = pending.register(MessageId::random(), dead);
        let (_g2, mut rx2) = pending.register(MessageId::random(), alive);
        let err = ErrorCode::new(crate::codes::NODE_UNAVAILABLE, "gone");
        assert_eq!(pending.fail_node(dead, &err), 1);
        assert_eq!(rx1.await.unwrap().unwrap_err(), err);
        assert!(rx2.try_recv().is_err());
    }
}
