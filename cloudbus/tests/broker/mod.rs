//! What every test against the real broker needs: where it is, a bus name
//! of its own (so tests run in parallel without seeing each other), what
//! `rabbitmqctl` says, and cleaning up the durable exchanges afterwards.
//! A broker that cannot be reached fails these tests; they never skip.
#![allow(dead_code)]

/// `CLOUDBUS_AMQP_URL`, by default the local broker.
pub fn url() -> String {
    std::env::var("CLOUDBUS_AMQP_URL")
        .unwrap_or_else(|_| cloudbus::transport::amqp::DEFAULT_URL.to_string())
}

/// The broker's `host:port`, for proxies that stand in front of it.
pub fn broker_addr() -> String {
    let host = std::env::var("CLOUDBUS_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("CLOUDBUS_AMQP_PORT").unwrap_or_else(|_| "5672".into());
    format!("{host}:{port}")
}

/// A bus name no other test uses.
pub fn unique_bus(test: &str) -> String {
    format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs `rabbitmqctl` and returns its output; it must succeed.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed next to the broker");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of a `rabbitmqctl list_*` command that belong to `bus`, sorted.
pub fn listing(args: &[&str], bus: &str) -> Vec<String> {
    let mut args = args.to_vec();
    args.extend(["-q", "--no-table-headers"]);
    let mut rows: Vec<String> = rabbitmqctl(&args)
        .lines()
        .filter(|l| l.starts_with(&format!("{bus}.")))
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// The names of the bus's queues, sorted.
pub fn queue_names(bus: &str) -> Vec<String> {
    listing(&["list_queues", "name"], bus)
}

/// Removes what the bus left on the broker at `url`: queues a test left
/// behind on purpose (a killed node's) and the durable exchanges.
pub async fn delete_bus_at(url: &str, bus: &str) {
    let conn = lapin::Connection::connect(url, Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queues = tokio::task::spawn_blocking({
        let bus = bus.to_string();
        move || queue_names(&bus)
    })
    .await
    .unwrap();
    for queue in queues {
        channel
            .queue_delete(queue.into(), Default::default())
            .await
            .unwrap();
    }
    for ex in ["P2P", "BROADCAST"] {
        channel
            .exchange_delete(format!("{bus}.{ex}").into(), Default::default())
            .await
            .unwrap();
    }
    conn.close(200, "done".into()).await.unwrap();
}

/// Deletes an exchange on the default broker, as an operator might.
pub async fn delete_exchange(exchange: &str) {
    let conn = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .exchange_delete(exchange.into(), Default::default())
        .await
        .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// Removes one binding on the default broker, as an operator might.
pub async fn unbind(queue: &str, exchange: &str, key: &str) {
    let conn = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_unbind(
            queue.into(),
            exchange.into(),
            key.into(),
            Default::default(),
        )
        .await
        .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

/// [`delete_bus_at`] on the default broker.
pub async fn delete_bus(bus: &str) {
    delete_bus_at(&url(), bus).await;
}

/// Runs its cleanup if the test panics on the way, so that a failed test
/// leaves the shared broker as it found it too (a passing test cleans up
/// in the open, where a failing cleanup fails the test). The cleanup runs
/// on a thread of its own: a panic there is not a panic while panicking,
/// and it may start a runtime of its own.
pub struct OnPanic<F: FnOnce() + Send + 'static>(Option<F>);

impl<F: FnOnce() + Send + 'static> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take().filter(|_| std::thread::panicking()) {
            let _ = std::thread::spawn(cleanup).join();
        }
    }
}

/// Deletes what `bus` declared on the default broker if the test panics:
/// declare it right after the bus name.
#[must_use = "the cleanup runs when this guard is dropped"]
pub fn delete_bus_on_panic(bus: &str) -> OnPanic<impl FnOnce() + Send + 'static> {
    let bus = bus.to_string();
    OnPanic(Some(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(delete_bus(&bus));
    }))
}

/// Deletes a virtual host the test added if the test panics.
#[must_use = "the cleanup runs when this guard is dropped"]
pub fn delete_vhost_on_panic(vhost: &str) -> OnPanic<impl FnOnce() + Send + 'static> {
    let vhost = vhost.to_string();
    OnPanic(Some(move || {
        rabbitmqctl(&["delete_vhost", &vhost]);
    }))
}

/// The given `list_queues` columns of one queue, tab-separated, if it exists.
#[allow(dead_code)]
pub fn queue_columns(queue: &str, columns: &[&str]) -> Option<String> {
    let bus = queue.split(".message.").next().unwrap();
    let args: Vec<&str> = ["list_queues", "name"]
        .iter()
        .chain(columns)
        .copied()
        .collect();
    listing(&args, bus)
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{queue}\t")).map(str::to_string))
}

/// Waits up to `within` until `rabbitmqctl list_queues` shows `column` of
/// `queue` as `value` (rabbitmqctl blocks, so it runs aside); panics with
/// `what` when it does not.
pub async fn until_queue_shows(
    queue: &str,
    column: &str,
    value: &str,
    within: std::time::Duration,
    what: &str,
) {
    tokio::time::timeout(within, async {
        loop {
            let (q, c) = (queue.to_string(), column.to_string());
            let shown = tokio::task::spawn_blocking(move || queue_columns(&q, &[c.as_str()]))
                .await
                .unwrap();
            if shown.as_deref() == Some(value) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{queue}: {what}"));
}

/// A node of `bus` on the test broker, with defaults.
#[allow(dead_code)]
pub async fn node(bus: &str) -> cloudbus::Bus {
    cloudbus::Bus::builder()
        .name(bus)
        .amqp(url())
        .build()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {}: {e}", url()))
}
