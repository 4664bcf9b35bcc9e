//! An observer (a command-line tool, a gateway) runs the built-in
//! `cloudbus` service only for its replies: its built-in requests go to a
//! member of the bus, never to itself.

use std::time::Duration;

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, Ping, codes};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_observer_asks_a_member_not_itself() {
    let broker = MemoryBroker::new();
    let member = Bus::builder()
        .transport(broker.transport())
        .heartbeat_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let observer = Bus::builder()
        .transport(broker.transport())
        .observer()
        .build()
        .await
        .unwrap();
    observer
        .wait_for_cluster(WAIT, |view| view.len() == 1)
        .await
        .unwrap();

    let pong = observer.call(Ping {}).await.unwrap();
    assert_eq!(pong.node, member.node_id(), "a member answered");
    // Named, the observer still answers for itself; a member answers its
    // own built-in requests itself, as before.
    let own = observer
        .call(Ping {})
        .node(observer.node_id())
        .await
        .unwrap();
    assert_eq!(own.node, observer.node_id());
    assert_eq!(member.call(Ping {}).await.unwrap().node, member.node_id());

    member.shutdown().await;
    observer
        .wait_for_cluster(WAIT, |view| view.is_empty())
        .await
        .unwrap();
    let error = observer.call(Ping {}).await.unwrap_err();
    assert!(error.is(codes::NODE_UNAVAILABLE), "{error}");
    observer.shutdown().await;
}
