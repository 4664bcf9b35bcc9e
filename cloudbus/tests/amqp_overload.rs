//! Overload on the real broker: 10,000 concurrent requests to a slow
//! service. The node holds no more than its concurrency (the broker keeps
//! the rest), every request ends with a reply or a TIMEOUT, no queue is
//! created, and the node still answers `cloudbus.Ping` at once.

mod broker;
mod common;

use std::future::IntoFuture;
use std::time::Duration;

use broker::*;
use cloudbus::{Ping, Service, codes};
use common::*;

const LIMIT: usize = 8;
const REQUESTS: u32 = 10_000;

/// `(queue, ready, unacknowledged)` for every queue of the bus.
fn queues(bus: &str) -> Vec<(String, u64, u64)> {
    listing(
        &[
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ],
        bus,
    )
    .iter()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (
            f[0].to_string(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_to_a_slow_service_all_end_and_memory_stays_bounded() {
    let name = format!(
        "t-overload-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (caller, server) = (node(&name).await, node(&name).await);
    let busy = Gauge::default();
    let saturated = std::sync::Arc::new(tokio::sync::Notify::new());
    server
        .register(
            Service::builder("slow", ())
                .concurrency(LIMIT)
                .on_request({
                    let (busy, saturated) = (busy.clone(), saturated.clone());
                    move |w: Work, _| {
                        let (busy, saturated) = (busy.clone(), saturated.clone());
                        async move {
                            let _inside = busy.enter();
                            if busy.max() >= LIMIT {
                                saturated.notify_one();
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await; // the work
                            Ok(Done { n: w.n })
                        }
                    }
                })
                .build(),
        )
        .await
        .unwrap();
    let names = |rows: Vec<(String, u64, u64)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    let before = names(queues(&name));
    let slow_queue = format!("{name}.message.slow.{}", server.node_id());

    // Every fourth caller is impatient: its request times out, in the
    // queue or at the caller, and must end as TIMEOUT, not hang.
    let load = futures::future::join_all((0..REQUESTS).map(|n| {
        let timeout = if n % 4 == 0 {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(120)
        };
        caller
            .call(Work {
                key: String::new(),
                n,
            })
            .service("slow")
            .node(server.node_id())
            .timeout(timeout)
            .into_future()
    }));
    let observe = async {
        // Wait until the server is saturated, then look at it under load.
        saturated.notified().await;
        let pong = caller
            .call(Ping {})
            .node(server.node_id())
            .timeout(Duration::from_secs(10))
            .await;
        let still_loaded = caller.pending_calls();
        let bus = name.clone();
        let sample = tokio::task::spawn_blocking(move || queues(&bus))
            .await
            .unwrap();
        (pong, still_loaded, sample)
    };
    let (outcomes, (pong, still_loaded, sample)) = futures::join!(load, observe);

    assert_eq!(
        pong.unwrap().node,
        server.node_id(),
        "Ping is answered under load"
    );
    assert!(
        still_loaded > 0,
        "the Ping was answered while the load was still running"
    );
    let (_, _, unacked) = sample.iter().find(|r| r.0 == slow_queue).unwrap().clone();
    assert!(
        unacked <= LIMIT as u64,
        "the node held {unacked} messages, more than its prefetch {LIMIT}"
    );
    assert_eq!(names(sample), before, "no queue appears under load");
    assert!(busy.max() <= LIMIT, "at most {LIMIT} handlers ran at once");

    let (mut ok, mut timed_out) = (0, 0);
    for (n, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(done) => {
                assert_eq!(done.n, n as u32);
                ok += 1;
            }
            Err(e) if e.is(codes::TIMEOUT) && n % 4 == 0 => timed_out += 1,
            Err(e) => panic!("request {n} ended with {e}"),
        }
    }
    assert_eq!(ok + timed_out, REQUESTS);
    assert!(ok >= REQUESTS * 3 / 4, "every patient caller got its reply");
    assert_eq!(caller.pending_calls(), 0);
    assert_eq!(names(queues(&name)), before);

    caller.shutdown().await;
    server.shutdown().await;
    delete_bus(&name).await;
}
