//! Whole-bus behaviour on the embedded (in-process) bus.

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudbus::{
    Body, Bus, Context, Envelope, ErrorCode, Interceptor, ReplyPort, Service, SyncKey, codes,
};
use common::*;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

async fn bus_with(service: Service) -> Bus {
    let bus = Bus::embedded();
    bus.register(service).await.unwrap();
    bus
}

#[tokio::test]
async fn call_returns_the_typed_reply() {
    let bus = bus_with(echo_service()).await;
    let reply = bus.call(echo("hi")).await.unwrap();
    assert_eq!(reply.text, "hi");
    assert_eq!(reply.node, bus.node_id().to_string());
}

#[tokio::test]
async fn handler_error_comes_back_with_its_code_and_details() {
    let bus = bus_with(echo_service()).await;
    let err = bus.call(echo("fail")).await.unwrap_err();
    assert_eq!(err.code(), "echo.FAILED");
    assert_eq!(err.details()["why"], "test");
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_and_the_service_lives_on() {
    let bus = bus_with(echo_service()).await;
    let err = bus.call(echo("panic")).await.unwrap_err();
    assert!(err.is(codes::INTERNAL), "{err}");
    assert!(err.description().contains("asked to panic"), "{err}");
    assert_eq!(bus.call(echo("after")).await.unwrap().text, "after");
}

#[tokio::test(start_paused = true)]
async fn unknown_service_fails_at_once_not_after_the_timeout() {
    let bus = Bus::embedded();
    let started = Instant::now();
    let err = bus
        .call(echo("x"))
        .timeout(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let err = bus
        .send(Note {
            key: "k".into(),
            n: 1,
        })
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
}

#[tokio::test]
async fn a_type_the_service_does_not_handle_is_unknown_message() {
    let bus = bus_with(echo_service()).await;
    let err = bus
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("echo")
        .await
        .unwrap_err();
    assert!(err.is(codes::UNKNOWN_MESSAGE), "{err}");
    assert!(err.description().contains("work.Work"), "{err}");
}

/// Never answers until the gate opens.
struct Stuck(Arc<Semaphore>);

#[cloudbus::handlers]
impl Stuck {
    async fn echo(&self, req: Echo, _ctx: Context) -> Result<EchoReply, ErrorCode> {
        let _permit = self.0.acquire().await.unwrap();
        Ok(EchoReply {
            text: req.text,
            node: String::new(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_reply_after_the_timeout_is_dropped_and_counted() {
    let gate = Arc::new(Semaphore::new(0));
    let bus = bus_with(Service::builder("echo", Stuck(gate.clone())).build()).await;
    let started = Instant::now();
    let err = bus
        .call(echo("slow"))
        .timeout(Duration::from_millis(250))
        .await
        .unwrap_err();
    assert!(err.is(codes::TIMEOUT), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(bus.counters().timeouts.get(), 1);
    assert_eq!(bus.counters().late_replies.get(), 0);
    gate.add_permits(1);
    bus.shutdown().await; // drains the handler, which then replies too late
    assert_eq!(bus.counters().late_replies.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_applies_when_a_call_sets_none() {
    let bus = Bus::builder()
        .default_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    bus.register(Service::builder("echo", Stuck(Arc::new(Semaphore::new(0)))).build())
        .await
        .unwrap();
    let started = Instant::now();
    let err = bus.call(echo("x")).await.unwrap_err();
    assert!(err.is(codes::TIMEOUT));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(1));
}

/// Answers later from another task, or never.
struct Later;

#[cloudbus::handlers]
impl Later {
    async fn echo(&self, req: Echo, _ctx: Context, reply: ReplyPort<EchoReply>) {
        match req.text.as_str() {
            "forget" => drop(reply),
            "panic" => panic!("deferred panic"),
            _ => {
                tokio::spawn(async move {
                    reply
                        .reply(EchoReply {
                            text: req.text,
                            node: "later".into(),
                        })
                        .await
                });
            }
        }
    }
}

#[tokio::test]
async fn a_deferred_reply_from_another_task_reaches_the_caller() {
    let bus = bus_with(Service::new("echo", Later)).await;
    assert_eq!(bus.call(echo("x")).await.unwrap().node, "later");
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_never_replies_gives_no_reply_at_once() {
    let bus = bus_with(Service::new("echo", Later)).await;
    let started = Instant::now();
    let err = bus
        .call(echo("forget"))
        .timeout(Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_REPLY), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = bus.call(echo("panic")).await.unwrap_err();
    assert!(err.is(codes::INTERNAL), "{err}");
    assert_eq!(bus.call(echo("ok")).await.unwrap().text, "ok");
}

#[tokio::test]
async fn registering_two_services_with_one_name_is_an_error() {
    let bus = bus_with(echo_service()).await;
    let err = bus.register(echo_service()).await.unwrap_err();
    assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    assert!(err.description().contains("already registered"), "{err}");
}

#[tokio::test]
async fn bad_service_definitions_are_refused_with_clear_errors() {
    let bus = Bus::embedded();
    for name in ["", "Echo", "9lives", "a.b", "cloudbus"] {
        let service = Service::builder(name, ())
            .on_request(|r: Echo, _| async move {
                Ok(EchoReply {
                    text: r.text,
                    node: String::new(),
                })
            })
            .build();
        let err = bus.register(service).await.unwrap_err();
        assert!(err.is(codes::INVALID_ARGUMENT), "{name}: {err}");
    }
    let twice = Service::builder("echo", ())
        .on_request(|r: Echo, _| async move {
            Ok(EchoReply {
                text: r.text,
                node: String::new(),
            })
        })
        .on_request(|r: Echo, _| async move {
            Ok(EchoReply {
                text: r.text,
                node: String::new(),
            })
        })
        .build();
    let err = bus.register(twice).await.unwrap_err();
    assert!(err.description().contains("twice"), "{err}");
    let zero = Service::builder("zero", ()).concurrency(0).build();
    assert!(bus.register(zero).await.is_err());
    assert_eq!(bus.services(), vec!["cloudbus".to_string()]);
}

#[tokio::test]
async fn call_all_keeps_request_order_and_the_parallelism_limit() {
    let gauge = Gauge::default();
    let g = gauge.clone();
    let bus = bus_with(
        Service::builder("work", ())
            .on_request(move |req: Work, _| {
                let g = g.clone();
                async move {
                    let _inside = g.enter();
                    // Later requests finish first, so order must come from call_all.
                    for _ in 0..(20 - req.n) {
                        tokio::task::yield_now().await;
                    }
                    Ok(Done { n: req.n })
                }
            })
            .build(),
    )
    .await;
    let requests = (0..20).map(|n| Work {
        key: String::new(),
        n,
    });
    let replies = bus.call_all(requests, 4).await;
    let ns: Vec<u32> = replies.into_iter().map(|r| r.unwrap().n).collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
    assert!(gauge.max() <= 4, "max in flight {}", gauge.max());
    assert!(gauge.max() >= 2, "requests were not sent in parallel");
}

#[tokio::test]
async fn a_service_never_runs_more_handlers_than_its_concurrency_limit() {
    let gauge = Gauge::default();
    let g = gauge.clone();
    let bus = bus_with(
        Service::builder("work", ())
            .on_request(move |req: Work, _| {
                let g = g.clone();
                async move {
                    let _inside = g.enter();
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                    Ok(Done { n: req.n })
                }
            })
            .concurrency(3)
            .build(),
    )
    .await;
    let calls = (0..30).map(|n| {
        bus.call(Work {
            key: String::new(),
            n,
        })
        .into_future()
    });
    let replies = futures::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(gauge.max(), 3);
}

/// Records the order in which notes are handled, per key.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, u32)>>>,
    gauge: Gauge,
    level: usize,
}

#[cloudbus::handlers]
impl Recorder {
    #[sync_key(SyncKey::new(note.key.clone()).with_level(self.level))]
    async fn note(&self, note: Note, _ctx: Context) -> Result<(), ErrorCode> {
        let _inside = self.gauge.enter();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.seen.lock().unwrap().push((note.key, note.n));
        Ok(())
    }
}

#[tokio::test]
async fn messages_with_one_sync_key_run_one_at_a_time_in_arrival_order() {
    let recorder = Recorder {
        level: 1,
        ..Default::default()
    };
    let bus = bus_with(Service::new("work", recorder.clone())).await;
    for n in 0..100 {
        bus.send(Note {
            key: "vm-1".into(),
            n,
        })
        .await
        .unwrap();
    }
    bus.shutdown().await;
    let seen: Vec<u32> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    assert_eq!(recorder.gauge.max(), 1);
}

#[tokio::test]
async fn different_sync_keys_run_concurrently_each_in_order() {
    let recorder = Recorder {
        level: 1,
        ..Default::default()
    };
    let bus = bus_with(Service::new("work", recorder.clone())).await;
    for n in 0..50 {
        for key in ["a", "b", "c"] {
            bus.send(Note { key: key.into(), n }).await.unwrap();
        }
    }
    bus.shutdown().await;
    let seen = recorder.seen.lock().unwrap().clone();
    for key in ["a", "b", "c"] {
        let order: Vec<u32> = seen
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>(), "key {key}");
    }
    assert!(recorder.gauge.max() > 1, "keys did not run concurrently");
    assert!(recorder.gauge.max() <= 3);
}

#[tokio::test]
async fn a_sync_level_above_one_allows_that_many_at_once() {
    let recorder = Recorder {
        level: 2,
        ..Default::default()
    };
    let bus = bus_with(Service::new("work", recorder.clone())).await;
    for n in 0..40 {
        bus.send(Note {
            key: "host-1".into(),
            n,
        })
        .await
        .unwrap();
    }
    bus.shutdown().await;
    assert_eq!(recorder.seen.lock().unwrap().len(), 40);
    assert_eq!(recorder.gauge.max(), 2);
}

#[tokio::test]
async fn a_failing_plain_message_is_counted_and_the_sender_is_not_told() {
    let bus = bus_with(
        Service::builder("work", ())
            .on_message(|_: Note, _| async { Err(ErrorCode::new("work.BAD", "no")) })
            .build(),
    )
    .await;
    bus.send(Note {
        key: "k".into(),
        n: 1,
    })
    .await
    .unwrap();
    bus.shutdown().await;
    assert_eq!(bus.counters().message_errors.get(), 1);
}

#[tokio::test]
async fn every_matching_subscriber_gets_its_own_copy() {
    let bus = Bus::embedded();
    let mut typed_a = bus.subscribe::<VmStateChanged>().await.unwrap();
    let mut typed_b = bus.subscribe::<VmStateChanged>().await.unwrap();
    let mut one_word = bus.subscribe_pattern("vm.*").await.unwrap();
    let mut everything = bus.subscribe_pattern("#").await.unwrap();
    let mut hosts = bus.subscribe_pattern("host.*").await.unwrap();

    let event = VmStateChanged {
        uuid: "v1".into(),
        state: "Running".into(),
    };
    bus.publish(event.clone()).await.unwrap();
    bus.publish(HostDown { host: "h1".into() }).await.unwrap();

    assert_eq!(typed_a.recv().await.unwrap(), event);
    assert_eq!(typed_b.recv().await.unwrap(), event);
    let raw = one_word.recv().await.unwrap();
    assert_eq!(raw.envelope.type_name, "vm.StateChanged");
    assert_eq!(raw.envelope.source, bus.node_id());
    assert_eq!(raw.decode::<VmStateChanged>().unwrap(), event);
    assert_eq!(
        everything.recv().await.unwrap().envelope.type_name,
        "vm.StateChanged"
    );
    assert_eq!(
        everything.recv().await.unwrap().envelope.type_name,
        "host.Down"
    );
    // host.* saw only the host event: it is the first thing it receives.
    assert_eq!(
        hosts
            .recv()
            .await
            .unwrap()
            .decode::<HostDown>()
            .unwrap()
            .host,
        "h1"
    );
}

#[tokio::test]
async fn after_unsubscribing_no_more_events_arrive() {
    let bus = Bus::embedded();
    let gone = bus.subscribe::<HostDown>().await.unwrap();
    let mut kept = bus.subscribe::<HostDown>().await.unwrap();
    gone.unsubscribe().await;
    bus.publish(HostDown { host: "h1".into() }).await.unwrap();
    assert_eq!(kept.recv().await.unwrap().host, "h1");
    assert_eq!(bus.counters().events_dropped.get(), 0);
}

#[tokio::test]
async fn a_subscriber_that_does_not_keep_up_misses_events_counted_and_publishers_never_wait() {
    let bus = Bus::builder()
        .subscription_capacity(2)
        .build()
        .await
        .unwrap();
    let mut slow = bus.subscribe::<HostDown>().await.unwrap();
    for i in 0..5 {
        bus.publish(HostDown {
            host: format!("h{i}"),
        })
        .await
        .unwrap();
    }
    assert_eq!(slow.lagged(), 3);
    assert_eq!(bus.counters().events_dropped.get(), 3);
    assert_eq!(slow.recv().await.unwrap().host, "h0");
    assert_eq!(slow.recv().await.unwrap().host, "h1");
}

#[tokio::test]
async fn bad_subscription_patterns_are_refused() {
    let bus = Bus::embedded();
    for bad in ["", "vm..x", "vm*", "a.#b"] {
        let err = bus.subscribe_pattern(bad).await.err().unwrap();
        assert!(err.is(codes::INVALID_ARGUMENT), "{bad}: {err}");
    }
}

struct VmApi;

#[cloudbus::handlers]
impl VmApi {
    async fn start_vm(&self, req: StartVm, _ctx: Context) -> Result<VmStarted, ErrorCode> {
        if req.uuid == "missing" {
            return Err(ErrorCode::new("vm.NOT_FOUND", "no such VM"));
        }
        Ok(VmStarted {
            uuid: req.uuid,
            host: "h1".into(),
        })
    }
}

#[tokio::test]
async fn a_non_blocking_api_answers_the_caller_and_every_subscriber_with_one_event() {
    let bus = bus_with(Service::new("vm", VmApi)).await;
    let mut auditor = bus.subscribe_pattern("vm.#").await.unwrap();
    let started = bus.call(StartVm { uuid: "v1".into() }).await.unwrap();
    assert_eq!(started.host, "h1");
    let seen = auditor.recv().await.unwrap();
    assert_eq!(seen.envelope.type_name, "vm.VmStarted");
    assert!(
        seen.envelope.api_id.is_some(),
        "API event carries the request id"
    );
    assert_eq!(seen.decode::<VmStarted>().unwrap(), started);
}

#[tokio::test]
async fn a_failed_non_blocking_api_is_an_error_reply_and_publishes_no_event() {
    let bus = bus_with(Service::new("vm", VmApi)).await;
    let mut auditor = bus.subscribe_pattern("vm.#").await.unwrap();
    let err = bus
        .call(StartVm {
            uuid: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "vm.NOT_FOUND");
    // Events from one publisher arrive in order: had the API published,
    // its event would come before this marker.
    let marker = VmStateChanged {
        uuid: "marker".into(),
        state: String::new(),
    };
    bus.publish(marker.clone()).await.unwrap();
    assert_eq!(
        auditor
            .recv()
            .await
            .unwrap()
            .decode::<VmStateChanged>()
            .unwrap(),
        marker
    );
}

/// Stamps a header on the way out, checks it on the way in, and refuses
/// one event type.
struct Auth {
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl Interceptor for Auth {
    fn before_send(&self, envelope: &mut Envelope, _body: &Body) -> Result<(), ErrorCode> {
        self.calls.lock().unwrap().push("send");
        if envelope.headers.get("session").is_none() {
            envelope.headers.insert("session", "default");
        }
        Ok(())
    }

    fn before_deliver(&self, envelope: &Envelope, body: &Body) -> Result<(), ErrorCode> {
        self.calls.lock().unwrap().push("deliver");
        assert!(
            matches!(body, Body::Value(_)),
            "in process, bodies are not serialized"
        );
        match envelope.headers.get("session") {
            Some("bad") => Err(ErrorCode::new("auth.BAD_SESSION", "session rejected")),
            _ => Ok(()),
        }
    }

    fn before_publish(&self, envelope: &mut Envelope, _body: &Body) -> Result<(), ErrorCode> {
        self.calls.lock().unwrap().push("publish");
        if envelope.type_name == "host.Down" {
            return Err(ErrorCode::new(
                "auth.FORBIDDEN",
                "may not publish host.Down",
            ));
        }
        envelope.headers.insert("published-by", "test");
        Ok(())
    }
}

#[tokio::test]
async fn interceptors_run_before_send_delivery_and_publish() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let bus = Bus::builder()
        .interceptor(Auth {
            calls: calls.clone(),
        })
        .build()
        .await
        .unwrap();
    bus.register(
        Service::builder("echo", ())
            .on_request(|req: Echo, ctx: Context| async move {
                Ok(EchoReply {
                    text: ctx.header("session").unwrap_or("none").to_string(),
                    node: req.text,
                })
            })
            .build(),
    )
    .await
    .unwrap();

    assert_eq!(bus.call(echo("x")).await.unwrap().text, "default");
    let err = bus
        .call(echo("x"))
        .header("session", "bad")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "auth.BAD_SESSION");
    assert_eq!(bus.counters().rejected.get(), 1);

    let mut events = bus.subscribe_pattern("#").await.unwrap();
    let err = bus
        .publish(HostDown { host: "h".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "auth.FORBIDDEN");
    bus.publish(VmStateChanged {
        uuid: "v".into(),
        state: "s".into(),
    })
    .await
    .unwrap();
    let event = events.recv().await.unwrap();
    assert_eq!(event.envelope.type_name, "vm.StateChanged");
    assert_eq!(event.envelope.headers.get("published-by"), Some("test"));
    assert_eq!(
        *calls.lock().unwrap(),
        ["send", "deliver", "send", "deliver", "publish", "publish"]
    );
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_work_then_refuses_new_work() {
    let gate = Arc::new(Semaphore::new(0));
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let handler_gate = gate.clone();
    let bus = bus_with(
        Service::builder("echo", ())
            .on_request(move |req: Echo, _| {
                let (gate, entered) = (handler_gate.clone(), entered_tx.clone());
                async move {
                    entered.send(()).unwrap();
                    let _open = gate.acquire().await.unwrap();
                    Ok(EchoReply {
                        text: req.text,
                        node: String::new(),
                    })
                }
            })
            .build(),
    )
    .await;
    let mut events = bus.subscribe::<HostDown>().await.unwrap();
    let caller = tokio::spawn({
        let bus = bus.clone();
        async move { bus.call(echo("in flight")).await }
    });
    entered.recv().await.unwrap();
    let shutdown = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    // Shutdown cannot finish while the handler is stuck.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!shutdown.is_finished());
    gate.add_permits(1);
    shutdown.await.unwrap();
    assert_eq!(caller.await.unwrap().unwrap().text, "in flight");
    assert!(bus.is_shut_down());
    let err = bus.call(echo("late")).await.unwrap_err();
    assert!(err.is(codes::SHUTTING_DOWN), "{err}");
    assert!(
        events.recv().await.is_none(),
        "subscriptions end at shutdown"
    );
}

#[tokio::test]
async fn ping_answers_with_the_node_and_its_services() {
    let bus = bus_with(echo_service()).await;
    let pong = bus.call(cloudbus::Ping {}).await.unwrap();
    assert_eq!(pong.node, bus.node_id());
    assert_eq!(pong.services, ["cloudbus", "echo"]);
}

#[tokio::test]
async fn unregistering_a_service_makes_it_unknown_and_it_can_come_back() {
    let bus = bus_with(echo_service()).await;
    bus.unregister("echo").await.unwrap();
    let err = bus.call(echo("x")).await.unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE));
    assert!(bus.unregister("echo").await.is_err());
    bus.register(echo_service()).await.unwrap();
    assert_eq!(bus.call(echo("back")).await.unwrap().text, "back");
}

#[tokio::test]
async fn shutdown_lets_in_flight_handlers_call_their_own_service() {
    let gate = Arc::new(Semaphore::new(0));
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let handler_gate = gate.clone();
    let bus = bus_with(
        Service::builder("work", ())
            .on_request(move |req: Work, ctx: Context| {
                let (gate, entered) = (handler_gate.clone(), entered_tx.clone());
                async move {
                    if req.n == 0 {
                        return Ok(Done { n: 0 });
                    }
                    entered.send(()).unwrap();
                    let _open = gate.acquire().await.unwrap();
                    // Re-enters the same service while shutdown waits for it.
                    let inner = ctx.bus().call(Work { key: req.key, n: 0 }).await?;
                    Ok(Done { n: req.n + inner.n })
                }
            })
            .concurrency(2)
            .build(),
    )
    .await;
    let caller = tokio::spawn({
        let bus = bus.clone();
        async move {
            bus.call(Work {
                key: String::new(),
                n: 7,
            })
            .timeout(Duration::from_secs(3600))
            .await
        }
    });
    entered.recv().await.unwrap();
    let shutdown = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    // A nested call while shutdown waits: this would deadlock if shutdown
    // blocked new arrivals (for instance by taking every permit).
    shutdown.await.unwrap();
    assert_eq!(caller.await.unwrap().unwrap().n, 7);
}

#[tokio::test]
async fn a_huge_timeout_means_wait_as_long_as_it_takes_not_a_panic() {
    let bus = bus_with(echo_service()).await;
    let reply = bus
        .call(echo("patient"))
        .timeout(Duration::MAX)
        .await
        .unwrap();
    assert_eq!(reply.text, "patient");
    let err = bus
        .call(echo("x"))
        .timeout(Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.is(codes::TIMEOUT), "{err}");
}

#[tokio::test]
async fn what_the_wire_cannot_carry_is_refused_before_sending() {
    let bus = Bus::embedded();
    bus.register(echo_service()).await.unwrap();
    let long_type = format!("echo.{}", "E".repeat(300));
    let err = bus.call_json(long_type.clone(), "{}").await.unwrap_err();
    assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    let err = bus.publish_json(long_type, "{}").await.unwrap_err();
    assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    for key in ["cb-kind", ""] {
        let err = bus.call(echo("x")).header(key, "v").await.unwrap_err();
        assert!(err.is(codes::INVALID_ARGUMENT), "{key:?}: {err}");
    }
    let long_service = "s".repeat(101);
    let err = bus
        .register(
            Service::builder(long_service, ())
                .on_request(|e: Echo, _| async move {
                    Ok(EchoReply {
                        text: e.text,
                        node: String::new(),
                    })
                })
                .build(),
        )
        .await
        .unwrap_err();
    assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    let err = Bus::builder()
        .name("b".repeat(65))
        .build()
        .await
        .unwrap_err();
    assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    // Ordinary headers still travel.
    assert_eq!(
        bus.call(echo("ok"))
            .header("session", "s")
            .await
            .unwrap()
            .text,
        "ok"
    );
}

#[tokio::test]
async fn statistics_count_every_handled_message_with_its_handling_time() {
    let bus = Bus::embedded();
    bus.register(echo_service()).await.unwrap();
    for i in 0..25 {
        bus.call(echo(&i.to_string())).await.unwrap();
    }
    let _ = bus.call(echo("fail")).await.unwrap_err();
    let stats = bus.statistics();
    let echo_stats = stats.iter().find(|s| s.type_name == "echo.Echo").unwrap();
    assert_eq!(echo_stats.service, "echo");
    assert_eq!(echo_stats.count, 26, "errors are handled messages too");
    assert_eq!(echo_stats.errors, 1);
    assert_eq!(
        echo_stats.histogram.iter().sum::<u64>(),
        26,
        "every one is in a bucket"
    );
    assert_eq!(
        echo_stats.histogram.len(),
        cloudbus::TypeStatistics::HISTOGRAM_BOUNDS_US.len() + 1
    );
    assert!(echo_stats.min_us <= echo_stats.avg_us && echo_stats.avg_us <= echo_stats.max_us);
    // The same numbers over the bus, from the built-in service.
    let reply = bus.call(cloudbus::GetStatistics {}).await.unwrap();
    assert_eq!(reply.node, bus.node_id());
    let over_bus = reply
        .types
        .iter()
        .find(|s| s.type_name == "echo.Echo")
        .unwrap();
    assert_eq!(over_bus.count, 26);
    let ping = reply
        .types
        .iter()
        .find(|s| s.type_name == "cloudbus.Ping")
        .unwrap();
    assert_eq!(ping.count, 0);
    assert_eq!((ping.min_us, ping.avg_us, ping.max_us), (0, 0, 0));
    // The failure is among the recent errors an operator sees.
    let recent = bus.recent_errors();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].type_name, "echo.Echo");
    assert_eq!(recent[0].code, "echo.FAILED");
}
