//! What the command-line tests share: a unique bus per test on the real
//! broker (CLOUDBUS_AMQP_URL, default the local one), `cloudbus` processes
//! whose output lines can be waited for, and removing a bus's exchanges.

#![allow(dead_code)] // Each test file uses its own part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn url() -> String {
    std::env::var("CLOUDBUS_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

pub fn unique_bus(test: &str) -> String {
    format!(
        "t-cli-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// `cloudbus` on `bus`, with no log level or collector from the
/// environment of whoever runs the tests.
pub fn cloudbus(bus: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudbus"));
    cmd.env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env("CLOUDBUS_AMQP_URL", url())
        .env("CLOUDBUS_BUS", bus);
    cmd
}

/// Runs a command to its end.
pub fn run(bus: &str, args: &[&str]) -> Output {
    cloudbus(bus).args(args).output().expect("cloudbus runs")
}

pub fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A long-running `cloudbus` process whose output lines we can wait for.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, in order.
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(bus: &str, args: &[&str]) -> Running {
        let mut child = cloudbus(bus)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cloudbus starts");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `text` and returns it.
    pub fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?} in {WAIT:?}; got: {:#?}", self.seen),
            }
        }
    }

    /// The node id a `cloudbus node` logged when it started.
    pub fn node_id(&mut self) -> String {
        let line = self.wait_for("node started");
        let at = line.find("node=").expect("the start line names the node") + 5;
        line[at..at + 32].to_string()
    }

    /// Sends the process a signal (`-TERM`, `-KILL`…).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns whether it succeeded,
    /// keeping what it printed last.
    pub fn wait(&mut self) -> bool {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status.success()
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it:
    /// whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.signal("-TERM");
        self.wait()
    }
}

/// The rows of a `rabbitmqctl` listing that belong to `bus`, sorted.
pub fn rabbitmqctl(args: &[&str], bus: &str) -> Vec<String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .args(["-q", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl must be installed next to the broker");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{bus}.")))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes what the bus left on the broker: the durable exchanges, which
/// outlive the nodes, and the queues of nodes a test killed on purpose.
pub fn remove_exchanges(bus: &str) {
    let queues = rabbitmqctl(&["list_queues", "name"], bus);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let conn = lapin::Connection::connect(&url(), Default::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
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
    });
}

/// Removes the bus's exchanges when the test ends, however it ends:
/// declare it before the processes, so it runs after they are gone.
pub struct Exchanges(pub String);

impl Drop for Exchanges {
    fn drop(&mut self) {
        remove_exchanges(&self.0);
    }
}
