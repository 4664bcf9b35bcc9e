//! The local RabbitMQ cluster of `scripts/rabbitmq-cluster.sh`: the test
//! command starts it before the tests and stops it after them, apart from
//! the broker at 5672. Tests that need it fail loudly when it is not
//! running; they never skip.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Tests that kill broker nodes take turns (nextest also runs them in one
/// test group; this holds under `cargo test` too).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The running cluster: its nodes' URLs, and the script that controls it.
pub struct RabbitCluster {
    script: PathBuf,
    urls: Vec<String>,
}

impl RabbitCluster {
    /// The cluster the test command started, with every node running.
    pub async fn get() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("scripts")
            .join("rabbitmq-cluster.sh");
        let urls = run(&script, &["urls"]).unwrap_or_else(|error| {
            panic!(
                "no local RabbitMQ cluster: {error}\n\
                 scripts/test.sh starts one; to run this test alone, \
                 `scripts/rabbitmq-cluster.sh start` first (and `stop` after)"
            )
        });
        let cluster = Self {
            script,
            urls: urls.trim().split(',').map(str::to_string).collect(),
        };
        assert!(cluster.urls.len() >= 3, "the cluster needs 3 nodes: {urls}");
        // A test that failed half-way may have left a node down.
        for node in 1..=cluster.urls.len() {
            cluster.start_node(node).await;
        }
        cluster
    }

    /// Node `i`'s URL (nodes count from 1).
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i - 1]
    }

    /// A list of the given nodes' URLs, in that order.
    pub fn list(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|&i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s address as the bus reports it (`host:port/vhost`).
    pub fn address(&self, i: usize) -> String {
        let url = self.url(i);
        url[url.rfind('@').map_or(0, |at| at + 1)..].to_string()
    }

    /// Kills node `i`'s process with SIGKILL and returns once it is gone.
    pub async fn kill(&self, i: usize) {
        self.script(&["kill", &i.to_string()]).await;
    }

    /// Starts node `i` (again) and returns once it serves; a running node
    /// is left as it is.
    pub async fn start_node(&self, i: usize) {
        self.script(&["start-node", &i.to_string()]).await;
    }

    /// `rabbitmqctl` against a running node of the cluster.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["ctl"];
        all.extend_from_slice(args);
        self.script(&all).await
    }

    /// Removes what a test's bus left on the cluster: its queues (those of
    /// nodes that did not stop gracefully) and its durable exchanges.
    pub async fn delete_bus(&self, bus: &str) {
        let queues = self.ctl(&["list_queues", "name", "-s"]).await;
        let prefix = format!("{bus}.");
        for queue in queues.lines().filter(|q| q.starts_with(&prefix)) {
            self.ctl(&["delete_queue", queue]).await;
        }
        for exchange in ["P2P", "BROADCAST"] {
            let conn = lapin::Connection::connect(self.url(1), Default::default())
                .await
                .expect("node 1 of the cluster serves");
            let channel = conn.create_channel().await.unwrap();
            channel
                .exchange_delete(format!("{bus}.{exchange}").into(), Default::default())
                .await
                .unwrap();
        }
    }

    async fn script(&self, args: &[&str]) -> String {
        let (script, args): (PathBuf, Vec<String>) = (
            self.script.clone(),
            args.iter().map(|a| a.to_string()).collect(),
        );
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&script, &args).unwrap_or_else(|error| panic!("{error}"))
        })
        .await
        .unwrap()
    }
}

fn run(script: &PathBuf, args: &[&str]) -> Result<String, String> {
    let out = Command::new(script)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?} failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
