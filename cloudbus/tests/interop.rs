//! Cross-language: a Python client written from `docs/wire-protocol.md`
//! alone (`tests/interop/pika_client.py`, on pika) joins a Rust node's bus
//! on the real broker as a foreign node, calls the Rust node, answers its
//! call, and exchanges events with it.
//!
//! Needs RabbitMQ (CLOUDBUS_AMQP_URL, by default the local one) and a
//! Python 3 with pika: CLOUDBUS_INTEROP_PYTHON, else the venv that
//! `scripts/test.sh` makes in `target/interop-venv`, else `python3`. A
//! missing broker, Python or pika fails this test; it never skips.

mod broker;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use broker::*;
use cloudbus::{Bus, ErrorCode, Event, Message, NodeId, Ping, Request, Service};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

macro_rules! message {
    ($name:ident = $ty:literal { $($field:ident : $t:ty),* $(,)? }) => {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        struct $name { $($field: $t),* }
        impl Message for $name { const TYPE: &'static str = $ty; }
    };
}

message!(Echo = "interop.Echo" { text: String });
message!(EchoReply = "interop.EchoReply" { text: String, source: NodeId, traceparent: Option<String> });
impl Request for Echo {
    type Reply = EchoReply;
}
message!(PingMe = "interop.PingMe" {});
message!(PingedYou = "interop.PingedYou" { node: NodeId, services: Vec<String>, version: String });
impl Request for PingMe {
    type Reply = PingedYou;
}
message!(PublishPlease = "interop.PublishPlease" { token: String });
message!(Published = "interop.Published" { token: String });
impl Request for PublishPlease {
    type Reply = Published;
}
message!(FromRust = "interop.FromRust" { token: String });
impl Event for FromRust {}
message!(FromPython = "interop.FromPython" { token: String });
impl Event for FromPython {}
message!(Note = "interop.Note" { text: String });

/// What the Rust service saw: (message type, sender node, text).
type Seen = (&'static str, NodeId, String);

/// The service the Python client calls.
fn interop_service(seen: mpsc::UnboundedSender<Seen>) -> Service {
    let on_note = seen.clone();
    Service::builder("interop", ())
        .on_request(move |req: Echo, ctx| {
            let _ = seen.send((Echo::TYPE, ctx.source(), req.text.clone()));
            async move {
                if req.text == "fail" {
                    return Err(ErrorCode::new("interop.REFUSED", "refused on purpose")
                        .with_details(json!({"text": "fail"}))
                        .with_cause(ErrorCode::new("interop.CAUSE", "the reason")));
                }
                Ok(EchoReply {
                    text: req.text,
                    source: ctx.source(),
                    traceparent: ctx.header("traceparent").map(str::to_string),
                })
            }
        })
        .on_request(|_: PingMe, ctx| async move {
            // The caller is a node too: call its built-in service back.
            let pong = ctx
                .bus()
                .call(Ping {})
                .node(ctx.source())
                .timeout(Duration::from_secs(10))
                .await?;
            Ok(PingedYou {
                node: pong.node,
                services: pong.services,
                version: pong.version,
            })
        })
        .on_request(|req: PublishPlease, ctx| async move {
            ctx.bus()
                .publish(FromRust {
                    token: req.token.clone(),
                })
                .await?;
            Ok(Published { token: req.token })
        })
        .on_message(move |note: Note, ctx| {
            let _ = on_note.send((Note::TYPE, ctx.source(), note.text));
            async { Ok(()) }
        })
        .build()
}

/// The interpreter that runs the client, and a clear failure if it cannot
/// run or has no pika.
fn python() -> String {
    let python = std::env::var("CLOUDBUS_INTEROP_PYTHON").unwrap_or_else(|_| {
        let venv = workspace().join("target/interop-venv/bin/python3");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".to_string()
        }
    });
    let how = "the interop test needs Python 3 with pika: run scripts/test.sh (it makes \
               target/interop-venv), or `python3 -m pip install pika`, or set \
               CLOUDBUS_INTEROP_PYTHON to an interpreter that has pika";
    let probe = Command::new(&python)
        .args(["-c", "import pika"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}`: {e}; {how}"));
    assert!(
        probe.status.success(),
        "`{python}` cannot import pika ({}); {how}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    python
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Kills the client if the test ends before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the client to its end: exit status, stdout, stderr.
async fn run_client(python: &str, args: &[String]) -> (std::process::ExitStatus, String, String) {
    let script = workspace().join("tests/interop/pika_client.py");
    let mut child = KillOnDrop(
        Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{python} {}`: {e}", script.display())),
    );
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read_all(Box::new(child.0.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.0.stderr.take().unwrap()));
    // The client closes its stdout when it exits; it bounds each of its
    // own waits, so this limit is only a backstop.
    let limit = Duration::from_secs(150);
    let Ok(stdout) = tokio::time::timeout(limit, stdout).await else {
        panic!("the Python client did not finish within {limit:?}");
    };
    let stdout = stdout.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .expect("waiting for the Python client");
    (status, stdout, stderr)
}

async fn within<T>(what: &str, f: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 20 s"))
}

#[tokio::test]
async fn a_python_client_speaks_the_documented_protocol() {
    let python = python();
    let name = unique_bus("interop");
    let _cleanup = delete_bus_on_panic(&name);
    let bus = Bus::builder()
        .name(&name)
        .amqp(url())
        .build()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {}: {e}", url()));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    bus.register(interop_service(seen_tx)).await.unwrap();
    let mut from_python = bus.subscribe::<FromPython>().await.unwrap();
    let token = uuid::Uuid::new_v4().simple().to_string();

    let (status, stdout, stderr) = run_client(
        &python,
        &[
            "--url".into(),
            url(),
            "--bus".into(),
            name.clone(),
            "--node".into(),
            bus.node_id().to_string(),
            "--token".into(),
            token.clone(),
            "--timeout".into(),
            "10".into(),
        ],
    )
    .await;
    let transcript = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    println!("the Python client ({status}):\n{transcript}");
    assert!(
        status.success(),
        "the Python client failed ({status}):\n{transcript}"
    );

    // Every line is JSON; every check ran and passed.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON: {l:?} ({e})\n{transcript}"))
        })
        .collect();
    let checks: HashMap<&str, &Value> = lines
        .iter()
        .filter_map(|l| Some((l["check"].as_str()?, l)))
        .collect();
    for check in [
        "node",
        "ping",
        "echo",
        "app_error",
        "unknown_type",
        "no_such_service",
        "rust_pings_us",
        "event_from_rust",
        "membership",
        "message",
        "event_to_rust",
    ] {
        let line = checks
            .get(check)
            .unwrap_or_else(|| panic!("check `{check}` did not run\n{transcript}"));
        assert_eq!(line["ok"], true, "check `{check}` failed\n{transcript}");
    }
    assert_eq!(
        lines.last().unwrap()["summary"]["failed"],
        json!([]),
        "{transcript}"
    );
    let python_node: NodeId = checks["node"]["node"].as_str().unwrap().parse().unwrap();
    assert_ne!(python_node, bus.node_id());
    assert_eq!(
        checks["no_such_service"]["means"],
        "cloudbus.NO_SUCH_SERVICE"
    );

    // What the Rust side saw of the Python node.
    let event = within("the Python event", from_python.recv_with_envelope())
        .await
        .expect("subscription open");
    assert_eq!(event.event.token, token);
    assert_eq!(event.envelope.source, python_node);
    let mut got = Vec::new();
    while !got.iter().any(|(kind, _, _)| *kind == Note::TYPE) {
        got.push(within("the Python messages", seen.recv()).await.unwrap());
    }
    assert!(
        got.contains(&(Echo::TYPE, python_node, "hello from python".to_string())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Note::TYPE, python_node, token.clone())),
        "{got:?}"
    );

    bus.shutdown().await;
    // The client deleted its own queues; the node deleted the rest.
    assert_eq!(queue_names(&name), Vec::<String>::new());
    delete_bus(&name).await;
}
