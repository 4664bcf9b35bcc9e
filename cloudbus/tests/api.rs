//! The user-facing API: messages declared with `#[derive(Message)]`,
//! services whose handlers are their `#[handlers]` methods (events
//! included), and calls that are `'static` futures with explicit
//! cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudbus::prelude::*;
use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{ReplyStyle, TypeStatistics};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.StartVm", reply = VmStarted, api_event)]
struct StartVm {
    uuid: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmStarted", event)]
struct VmStarted {
    uuid: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.GetVm", reply = VmInfo)]
struct GetVm {
    uuid: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmInfo")]
struct VmInfo {
    uuid: String,
    handled_by: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.Forget")]
struct Forget {
    uuid: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.HostDown", event)]
struct HostDown {
    host: String,
    n: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "billing.Charge", service = "ledger")]
struct Charge {
    cents: u64,
}

#[test]
fn derive_message_implements_the_message_kinds() {
    assert_eq!(<StartVm as Message>::TYPE, "vm.StartVm");
    assert_eq!(<StartVm as Message>::service(), "vm");
    assert_eq!(<StartVm as Request>::STYLE, ReplyStyle::ApiEvent);
    assert_eq!(<GetVm as Request>::STYLE, ReplyStyle::Reply);
    fn is_event<E: Event>() {}
    is_event::<VmStarted>();
    is_event::<HostDown>();
    // The reply type is the one named in the attribute.
    fn reply_of<R: Request<Reply = VmInfo>>() {}
    reply_of::<GetVm>();
    assert_eq!(<Charge as Message>::service(), "ledger");
}

/// A service whose state declares every kind of handler.
#[derive(Default)]
struct Vms {
    node: String,
    forgotten: AtomicUsize,
    seen_down: AtomicUsize,
    /// Handlers running right now, and the most seen at once.
    running: AtomicUsize,
    most: AtomicUsize,
    /// Event handlers wait here when given permits to wait for.
    gate: Option<Arc<Semaphore>>,
}

impl Vms {
    fn enter(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }
}

#[handlers]
impl Vms {
    #[sync_key(format!("vm-{}", req.uuid))]
    async fn get(&self, req: GetVm, _ctx: Context) -> Result<VmInfo, ErrorCode> {
        if req.uuid.is_empty() {
            return Err(ErrorCode::new("vm.NOT_FOUND", "no VM without a uuid"));
        }
        Ok(VmInfo {
            uuid: req.uuid,
            handled_by: self.node.clone(),
        })
    }

    async fn forget(&self, _msg: Forget, _ctx: Context) -> Result<(), ErrorCode> {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn start(&self, req: StartVm, _ctx: Context, reply: ReplyPort<VmStarted>) {
        tokio::spawn(async move { reply.reply(VmStarted { uuid: req.uuid }).await });
    }

    #[event]
    async fn host_down(&self, ev: HostDown, _ctx: Context) -> Result<(), ErrorCode> {
        self.enter();
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        assert!(ev.host != "boom", "host {} blew up", ev.host);
        self.seen_down.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn stats_of(bus: &Bus, type_name: &str) -> TypeStatistics {
    bus.statistics()
        .into_iter()
        .find(|s| s.type_name == type_name)
        .unwrap_or_else(|| panic!("no statistics for {type_name}"))
}

#[tokio::test]
async fn every_handler_of_a_handlers_block_is_registered() {
    let service = Service::new("vm", Vms::default());
    let mut types: Vec<_> = service.handled_types().collect();
    types.sort();
    assert_eq!(
        types,
        ["host.HostDown", "vm.Forget", "vm.GetVm", "vm.StartVm"]
    );

    let bus = Bus::embedded();
    let vms = Arc::new(Vms {
        node: "n1".into(),
        ..Vms::default()
    });
    bus.register(Service::new("vm", SharedVms(vms.clone())))
        .await
        .unwrap();
    let info = bus.call(GetVm { uuid: "v1".into() }).await.unwrap();
    assert_eq!(info.handled_by, "n1");
    let err = bus.call(GetVm { uuid: "".into() }).await.unwrap_err();
    assert_eq!(err.code(), "vm.NOT_FOUND");
    let started = bus.call(StartVm { uuid: "v2".into() }).await.unwrap();
    assert_eq!(started.uuid, "v2");
    bus.send(Forget { uuid: "v1".into() }).await.unwrap();
    bus.shutdown().await;
    assert_eq!(vms.forgotten.load(Ordering::SeqCst), 1);
}

/// The same handlers over shared state, so a test can look at it.
struct SharedVms(Arc<Vms>);

#[handlers]
impl SharedVms {
    async fn get(&self, req: GetVm, ctx: Context) -> Result<VmInfo, ErrorCode> {
        self.0.get(req, ctx).await
    }

    async fn forget(&self, msg: Forget, ctx: Context) -> Result<(), ErrorCode> {
        self.0.forget(msg, ctx).await
    }

    async fn start(&self, req: StartVm, ctx: Context, reply: ReplyPort<VmStarted>) {
        self.0.start(req, ctx, reply).await
    }

    #[event]
    async fn host_down(&self, ev: HostDown, ctx: Context) -> Result<(), ErrorCode> {
        self.0.host_down(ev, ctx).await
    }
}

#[tokio::test]
async fn a_service_handles_events_within_its_concurrency_limit() {
    let bus = Bus::embedded();
    let gate = Arc::new(Semaphore::new(0));
    let vms = Arc::new(Vms {
        gate: Some(gate.clone()),
        ..Vms::default()
    });
    bus.register(
        Service::builder("vm", SharedVms(vms.clone()))
            .concurrency(2)
            .build(),
    )
    .await
    .unwrap();
    for n in 0..10 {
        bus.publish(HostDown {
            host: format!("h{n}"),
            n,
        })
        .await
        .unwrap();
    }
    // Two run, held at the gate; the rest wait for a permit.
    while vms.running.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(vms.most.load(Ordering::SeqCst), 2);
    gate.add_permits(10);
    // A graceful stop handles every event the service had taken.
    bus.shutdown().await;
    assert_eq!(vms.seen_down.load(Ordering::SeqCst), 10);
    assert_eq!(vms.most.load(Ordering::SeqCst), 2);
    assert_eq!(stats_of(&bus, "host.HostDown").count, 10);
}

#[tokio::test]
async fn a_panicking_event_handler_is_counted_and_the_service_lives_on() {
    let bus = Bus::embedded();
    let vms = Arc::new(Vms::default());
    bus.register(Service::new("vm", SharedVms(vms.clone())))
        .await
        .unwrap();
    for host in ["h1", "boom", "h2"] {
        bus.publish(HostDown {
            host: host.into(),
            n: 0,
        })
        .await
        .unwrap();
    }
    bus.shutdown().await;
    assert_eq!(vms.seen_down.load(Ordering::SeqCst), 2);
    let stats = stats_of(&bus, "host.HostDown");
    assert_eq!((stats.count, stats.errors), (3, 1));
}

#[tokio::test]
async fn events_reach_a_service_in_publishing_order_and_stop_when_it_is_removed() {
    let broker = MemoryBroker::new();
    let publisher = Bus::builder()
        .name("api-events")
        .transport(broker.transport())
        .build()
        .await
        .unwrap();
    let handler = Bus::builder()
        .name("api-events")
        .transport(broker.transport())
        .build()
        .await
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(Notify::new());
    let (seen, finished) = (order.clone(), done.clone());
    handler
        .register(
            Service::builder("watch", ())
                .concurrency(1)
                .on_event(move |ev: HostDown, _| {
                    let (seen, finished) = (seen.clone(), finished.clone());
                    async move {
                        let mut seen = seen.lock().unwrap();
                        seen.push(ev.n);
                        if seen.len() == 50 {
                            finished.notify_one();
                        }
                        Ok(())
                    }
                })
                .build(),
        )
        .await
        .unwrap();
    assert!(
        broker
            .event_bindings("api-events", handler.node_id())
            .contains(&"host.HostDown".to_string())
    );
    for n in 0..50 {
        publisher
            .publish(HostDown {
                host: "h".into(),
                n,
            })
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), done.notified())
        .await
        .expect("every event handled on the other node");
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());

    handler.unregister("watch").await.unwrap();
    assert!(
        !broker
            .event_bindings("api-events", handler.node_id())
            .contains(&"host.HostDown".to_string()),
        "the service's binding goes with it"
    );
    publisher.shutdown().await;
    handler.shutdown().await;
}

#[tokio::test]
async fn calls_and_sends_are_static_send_futures() {
    let bus = Bus::embedded();
    bus.register(Service::new("vm", Vms::default()))
        .await
        .unwrap();
    // Spawned as they are: no borrow of the bus outlives this scope.
    let call = tokio::spawn(bus.call(GetVm { uuid: "v1".into() }));
    let send = tokio::spawn(bus.send(Forget { uuid: "v1".into() }));
    assert_eq!(call.await.unwrap().unwrap().uuid, "v1");
    send.await.unwrap().unwrap();
    let raw = tokio::spawn(bus.call_json("vm.GetVm", r#"{"uuid":"v3"}"#));
    assert!(
        String::from_utf8_lossy(&raw.await.unwrap().unwrap()).contains("v3"),
        "raw calls too"
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn only_calls_made_cancellable_are_cancelled_in_process() {
    let bus = Bus::embedded();
    let entered = Arc::new(Notify::new());
    let hold = entered.clone();
    bus.register(
        Service::builder("slow", ())
            .on_request(move |_: GetVm, _| {
                let hold = hold.clone();
                async move {
                    hold.notify_one();
                    std::future::pending::<Result<VmInfo, ErrorCode>>().await
                }
            })
            .build(),
    )
    .await
    .unwrap();

    // Knowing the id is not enough: nothing registered this call.
    let plain = bus
        .call(GetVm { uuid: "a".into() })
        .service("slow")
        .timeout(Duration::from_millis(300));
    let id = plain.id();
    let plain = tokio::spawn(plain);
    entered.notified().await;
    assert!(!bus.cancel(id, None));
    assert!(plain.await.unwrap().unwrap_err().is(codes::TIMEOUT));

    let (call, cancel) = bus
        .call(GetVm { uuid: "b".into() })
        .service("slow")
        .cancellable();
    assert_eq!(cancel.id(), call.id());
    let waiting = tokio::spawn(call);
    entered.notified().await;
    assert!(cancel.cancel_with(ErrorCode::new("ops.ABORTED", "operator said so")));
    assert_eq!(waiting.await.unwrap().unwrap_err().code(), "ops.ABORTED");
    assert!(!cancel.cancel(), "nothing waits any more");
}
