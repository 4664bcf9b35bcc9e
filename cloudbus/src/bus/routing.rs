//! Routing: which handler a message goes to — a service on this node, or
//! the same service on another node — from the addressing a sender chose.
//! The rules are a pure function of what the node knows, so they are unit
//! tested here without a bus.

use std::time::Duration;

use tokio::time::Instant;

use crate::{ErrorCode, NodeId, codes};

/// Where a message goes.
pub(crate) enum Target<L> {
    /// A service registered on this node (its runtime).
    Local(L),
    /// The service's queue on this or another node, through the transport.
    Remote(NodeId),
}

/// What routing needs to know about this node and its cluster.
pub(crate) struct Situation<'a, L, Departed, Pick> {
    pub(crate) here: NodeId,
    /// Whether the bus has a transport to other nodes.
    pub(crate) transport: bool,
    /// Whether a service on this node is called in process (no broker hop)
    /// even when the bus has a transport.
    pub(crate) local_shortcut: bool,
    /// The service's runtime on this node, if it runs here.
    pub(crate) local: Option<L>,
    /// Whether a node has left or died.
    pub(crate) departed: &'a Departed,
    /// Another live node that runs the service: round robin, each node
    /// starting at a random member so that one-shot callers spread out.
    pub(crate) pick: &'a Pick,
}

/// The routing rules (DESIGN §4): a named node is used as given (unless it
/// is gone); otherwise the service here, else one of the nodes that run it,
/// in turn (each caller's turns start at a random one of them).
pub(crate) fn resolve<L, Departed, Pick>(
    service: &str,
    node: Option<NodeId>,
    situation: Situation<'_, L, Departed, Pick>,
) -> Result<Target<L>, ErrorCode>
where
    Departed: Fn(NodeId) -> bool,
    Pick: Fn(&str) -> Option<NodeId>,
{
    let Situation {
        here,
        transport,
        local_shortcut,
        local,
        departed,
        pick,
    } = situation;
    match node {
        Some(node) if node != here => {
            if departed(node) {
                Err(ErrorCode::new(
                    codes::NODE_UNAVAILABLE,
                    format!("node {node} has left the cluster or is dead"),
                ))
            } else if transport {
                Ok(Target::Remote(node))
            } else {
                Err(ErrorCode::new(
                    codes::NODE_UNAVAILABLE,
                    format!("node {node} cannot be reached: this bus has no transport"),
                ))
            }
        }
        _ => match local {
            Some(runtime) if local_shortcut || !transport => Ok(Target::Local(runtime)),
            Some(_) => Ok(Target::Remote(here)),
            None if node.is_some() => Err(ErrorCode::no_such_service(service)),
            None => match pick(service) {
                Some(there) if transport && there != here => Ok(Target::Remote(there)),
                _ => Err(ErrorCode::no_such_service(service)),
            },
        },
    }
}

/// What "no timeout" amounts to: longer than any process lives.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The instant `timeout` from now; a timeout too large to add to the clock
/// means "as long as it takes". The one deadline rule of every path.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + FOREVER.min(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        transport: bool,
        local_shortcut: bool,
        local: bool,
        departed: Option<NodeId>,
        pick: Option<NodeId>,
    }

    impl Default for Case {
        fn default() -> Self {
            Self {
                transport: true,
                local_shortcut: true,
                local: false,
                departed: None,
                pick: None,
            }
        }
    }

    /// Routes with `case` from node `here`: `Ok(None)` is local delivery.
    fn route(here: NodeId, node: Option<NodeId>, case: Case) -> Result<Option<NodeId>, String> {
        let departed = |n| case.departed == Some(n);
        let pick = |_: &str| case.pick;
        let situation = Situation {
            here,
            transport: case.transport,
            local_shortcut: case.local_shortcut,
            local: case.local.then_some(()),
            departed: &departed,
            pick: &pick,
        };
        match resolve("vm", node, situation) {
            Ok(Target::Local(())) => Ok(None),
            Ok(Target::Remote(node)) => Ok(Some(node)),
            Err(error) => Err(error.code().to_string()),
        }
    }

    #[test]
    fn a_local_service_is_called_in_process_unless_the_shortcut_is_off() {
        let here = NodeId::random();
        let local = || Case {
            local: true,
            ..Case::default()
        };
        assert_eq!(route(here, None, local()), Ok(None));
        assert_eq!(route(here, Some(here), local()), Ok(None));
        let no_shortcut = Case {
            local_shortcut: false,
            ..local()
        };
        assert_eq!(route(here, None, no_shortcut), Ok(Some(here)));
        let embedded = Case {
            transport: false,
            local_shortcut: false,
            ..local()
        };
        assert_eq!(route(here, None, embedded), Ok(None));
    }

    #[test]
    fn a_named_node_is_used_unless_it_is_gone_or_unreachable() {
        let (here, there) = (NodeId::random(), NodeId::random());
        let local = Case {
            local: true,
            ..Case::default()
        };
        assert_eq!(route(here, Some(there), local), Ok(Some(there)));
        let gone = Case {
            departed: Some(there),
            ..Case::default()
        };
        assert_eq!(
            route(here, Some(there), gone),
            Err(codes::NODE_UNAVAILABLE.to_string())
        );
        let embedded = Case {
            transport: false,
            ..Case::default()
        };
        assert_eq!(
            route(here, Some(there), embedded),
            Err(codes::NODE_UNAVAILABLE.to_string())
        );
    }

    #[test]
    fn without_the_service_here_another_node_that_runs_it_is_picked() {
        let (here, there) = (NodeId::random(), NodeId::random());
        let elsewhere = Case {
            pick: Some(there),
            ..Case::default()
        };
        assert_eq!(route(here, None, elsewhere), Ok(Some(there)));
        assert_eq!(
            route(here, None, Case::default()),
            Err(codes::NO_SUCH_SERVICE.to_string())
        );
        // Named as this node, but it does not run here: no other node is tried.
        let named_here = Case {
            pick: Some(there),
            ..Case::default()
        };
        assert_eq!(
            route(here, Some(here), named_here),
            Err(codes::NO_SUCH_SERVICE.to_string())
        );
        let embedded = Case {
            transport: false,
            pick: Some(there),
            ..Case::default()
        };
        assert_eq!(
            route(here, None, embedded),
            Err(codes::NO_SUCH_SERVICE.to_string())
        );
    }

    #[test]
    fn a_huge_timeout_means_forever_not_a_panic() {
        let soon = deadline_after(Duration::from_millis(5));
        assert!(soon > Instant::now());
        let never = deadline_after(Duration::MAX);
        assert!(never > Instant::now() + Duration::from_secs(50 * 365 * 86_400));
    }
}
