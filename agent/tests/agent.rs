//! Agents and the agent client over real HTTP on loopback.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use cloudbus::{ErrorCode, codes as bus_codes};
use cloudbus_agent::wire::{CALLBACK_PATH, CALLBACK_URL_HEADER, TASK_ID_HEADER};
use cloudbus_agent::{Agent, AgentClient, Command, CommandHandler, Mode, RunningAgent, codes};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

/// Reads the host's facts: answered in the HTTP response.
#[derive(Serialize, Deserialize)]
struct GetFacts {
    /// Waits for the test to release it first.
    gated: bool,
}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Facts {
    name: String,
    cpus: u32,
}
impl Command for GetFacts {
    const PATH: &'static str = "/host/facts";
    type Response = Facts;
}

/// Boots a VM: accepted at once, completed by callback.
#[derive(Serialize, Deserialize)]
struct Boot {
    uuid: String,
    gated: bool,
}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Booted {
    uuid: String,
    host: String,
}
impl Command for Boot {
    const PATH: &'static str = "/vm/boot";
    const MODE: Mode = Mode::Callback;
    type Response = Booted;
}

/// Fails the way the test asks.
#[derive(Serialize, Deserialize)]
struct Fail {
    panic: bool,
}
impl Command for Fail {
    const PATH: &'static str = "/fail";
    type Response = ();
}

/// A simulated host whose gated commands tell the test they started and
/// then wait for a permit.
struct Host {
    name: String,
    started: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl Host {
    async fn gate(&self, gated: bool) {
        if gated {
            let _ = self.started.send(());
            self.release.acquire().await.expect("never closed").forget();
        }
    }
}

impl CommandHandler<GetFacts> for Host {
    async fn handle(&self, cmd: GetFacts) -> Result<Facts, ErrorCode> {
        self.gate(cmd.gated).await;
        Ok(Facts {
            name: self.name.clone(),
            cpus: 8,
        })
    }
}

impl CommandHandler<Boot> for Host {
    async fn handle(&self, cmd: Boot) -> Result<Booted, ErrorCode> {
        self.gate(cmd.gated).await;
        Ok(Booted {
            uuid: cmd.uuid,
            host: self.name.clone(),
        })
    }
}

impl CommandHandler<Fail> for Host {
    async fn handle(&self, cmd: Fail) -> Result<(), ErrorCode> {
        if cmd.panic {
            panic!("the simulated hypervisor crashed");
        }
        Err(ErrorCode::new(
            "host.DISK_FULL",
            "no space left on /var/lib",
        ))
    }
}

struct Simulated {
    agent: RunningAgent,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
}

async fn agent(name: &str) -> Simulated {
    limited_agent(name, None).await
}

/// A simulated agent running at most `limit` commands at once, if given.
async fn limited_agent(name: &str, limit: Option<usize>) -> Simulated {
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let host = Host {
        name: name.into(),
        started: started_tx,
        release: Arc::clone(&release),
    };
    let mut builder = Agent::builder(host)
        .command::<GetFacts>()
        .command::<Boot>()
        .command::<Fail>();
    if let Some(limit) = limit {
        builder = builder.max_concurrent(limit);
    }
    let agent = builder
        .build()
        .expect("valid agent")
        .bind("127.0.0.1:0")
        .await
        .expect("bind on loopback");
    Simulated {
        agent,
        started,
        release,
    }
}

/// Starts a boot that waits for the test's permit, in its own task.
fn gated_boot(
    client: &AgentClient,
    sim: &Simulated,
    uuid: &str,
) -> tokio::task::JoinHandle<Result<Booted, ErrorCode>> {
    let (client, url) = (client.clone(), sim.agent.url());
    let cmd = Boot {
        uuid: uuid.into(),
        gated: true,
    };
    tokio::spawn(async move { client.call(&url, cmd).await })
}

/// A boot that does not wait for the test.
fn quick_boot(uuid: &str) -> Boot {
    Boot {
        uuid: uuid.into(),
        gated: false,
    }
}

/// Serves `router` on a free loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn client() -> AgentClient {
    AgentClient::builder()
        .timeout(Duration::from_secs(20))
        .start()
        .await
        .expect("client starts")
}

#[tokio::test]
async fn a_sync_command_is_answered_in_the_response() {
    let sim = agent("host-1").await;
    let client = client().await;
    let facts = client
        .call(&sim.agent.url(), GetFacts { gated: false })
        .await
        .expect("facts");
    assert_eq!(
        facts,
        Facts {
            name: "host-1".into(),
            cpus: 8
        }
    );
    assert_eq!(sim.agent.stats().commands.get(), 1);
    assert_eq!(sim.agent.stats().callbacks_sent.get(), 0);
    assert_eq!(client.stats().sent.get(), 1);
    assert_eq!(client.stats().failed.get(), 0);
}

#[tokio::test]
async fn a_callback_command_is_completed_by_a_callback_to_the_node() {
    let mut sim = agent("host-2").await;
    let client = client().await;
    let call = gated_boot(&client, &sim, "vm-1");
    sim.started.recv().await.expect("the boot started");
    assert!(!call.is_finished(), "the command waits for its callback");
    sim.release.add_permits(1);
    let booted = call.await.expect("no panic").expect("booted");
    assert_eq!(
        booted,
        Booted {
            uuid: "vm-1".into(),
            host: "host-2".into()
        }
    );
    assert_eq!(client.awaiting_callbacks(), 0);
    assert_eq!(client.stats().callbacks.get(), 1);
    let stats = std::sync::Arc::clone(sim.agent.stats());
    sim.agent.shutdown().await.expect("clean shutdown");
    assert_eq!(stats.callbacks_sent.get(), 1);
    assert_eq!(stats.callbacks_failed.get(), 0);
}

/// The agent's side of the callback protocol, checked with a raw HTTP
/// client and a callback endpoint of the test's own.
#[tokio::test]
async fn an_agent_answers_202_at_once_and_posts_the_outcome_later() {
    let mut sim = agent("host-3").await;
    let (tx, mut callbacks) = mpsc::unbounded_channel::<(String, String)>();
    let endpoint = Router::new().route(
        "/done",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let task = headers[TASK_ID_HEADER].to_str().unwrap_or("").to_owned();
            tx.send((task, body)).expect("test waits");
            async { StatusCode::OK }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let done = format!("http://{}/done", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, endpoint).await });

    let http = reqwest::Client::new();
    let accepted = http
        .post(format!("{}/vm/boot", sim.agent.url()))
        .header(TASK_ID_HEADER, "task-42")
        .header(CALLBACK_URL_HEADER, &done)
        .body(r#"{"uuid":"vm-9","gated":true}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(
        accepted.text().await.expect("body"),
        r#"{"accepted":"task-42"}"#
    );
    // Accepted while the work had not finished: it is still gated.
    sim.started.recv().await.expect("started");
    sim.release.add_permits(1);
    let (task, body) = callbacks.recv().await.expect("a callback");
    assert_eq!(task, "task-42");
    assert_eq!(body, r#"{"reply":{"uuid":"vm-9","host":"host-3"}}"#);
}

#[tokio::test]
async fn agent_errors_keep_their_code_and_a_panic_is_internal() {
    let sim = agent("host-4").await;
    let client = client().await;
    let err = client
        .call(&sim.agent.url(), Fail { panic: false })
        .await
        .expect_err("fails");
    assert_eq!(err.code(), "host.DISK_FULL");
    assert_eq!(err.description(), "no space left on /var/lib");
    let err = client
        .call(&sim.agent.url(), Fail { panic: true })
        .await
        .expect_err("panics");
    assert_eq!(err.code(), bus_codes::INTERNAL);
    assert!(err.description().contains("/fail"), "{err}");
    // The agent survives its handler's panic.
    client
        .call(&sim.agent.url(), GetFacts { gated: false })
        .await
        .expect("still serving");
    assert_eq!(client.stats().failed.get(), 2);
}

#[tokio::test]
async fn an_agent_that_is_down_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let client = client().await;
    for err in [
        client
            .call(&url, GetFacts { gated: false })
            .await
            .expect_err("down"),
        client.call(&url, quick_boot("v")).await.expect_err("down"),
    ] {
        assert_eq!(err.code(), codes::UNREACHABLE, "{err}");
        assert!(err.description().contains(&url), "{err}");
    }
    assert_eq!(client.stats().unreachable.get(), 2);
    assert_eq!(client.awaiting_callbacks(), 0, "nothing left waiting");
}

#[tokio::test]
async fn a_slow_sync_agent_times_out() {
    let mut sim = agent("host-5").await;
    let client = client().await;
    let err = client
        .call(&sim.agent.url(), GetFacts { gated: true })
        .timeout(Duration::from_millis(200))
        .await
        .expect_err("too slow");
    assert_eq!(err.code(), bus_codes::TIMEOUT, "{err}");
    sim.started.recv().await.expect("it had started");
    assert_eq!(client.stats().timeouts.get(), 1);
    sim.release.add_permits(1);
}

#[tokio::test]
async fn a_callback_after_the_timeout_is_refused_and_counted() {
    let mut sim = agent("host-6").await;
    let client = client().await;
    let err = client
        .call(
            &sim.agent.url(),
            Boot {
                uuid: "late".into(),
                gated: true,
            },
        )
        .timeout(Duration::from_millis(200))
        .await
        .expect_err("too slow");
    assert_eq!(err.code(), bus_codes::TIMEOUT, "{err}");
    assert_eq!(
        client.awaiting_callbacks(),
        0,
        "the timed-out task is forgotten"
    );
    sim.started.recv().await.expect("it had started");
    sim.release.add_permits(1);
    // Shutting the agent down waits for its callback to have been tried.
    let stats = Arc::clone(sim.agent.stats());
    sim.agent.shutdown().await.expect("clean shutdown");
    assert_eq!(stats.callbacks_failed.get(), 1, "refused, not retried");
    assert_eq!(client.stats().late_callbacks.get(), 1);
}

/// Serves `answer` at `/host/facts` and `/vm/boot` as a broken agent would.
async fn broken_agent(status: StatusCode, answer: &'static str) -> String {
    let router = Router::new()
        .route("/host/facts", post(move || async move { (status, answer) }))
        .route("/vm/boot", post(move || async move { (status, answer) }));
    serve(router).await
}

#[tokio::test]
async fn malformed_responses_are_bad_responses() {
    let client = client().await;
    for (status, body) in [
        (StatusCode::OK, "this is not json"),
        (StatusCode::OK, r#"{"reply":{"name":7}}"#),
        (StatusCode::OK, r#"{"something":"else"}"#),
        (StatusCode::BAD_GATEWAY, "<html>proxy error</html>"),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"reply":{"name":"h","cpus":1}}"#,
        ),
    ] {
        let url = broken_agent(status, body).await;
        let err = client
            .call(&url, GetFacts { gated: false })
            .await
            .expect_err("malformed");
        assert_eq!(err.code(), codes::BAD_RESPONSE, "{status} {body}: {err}");
        assert!(err.description().contains("/host/facts"), "{err}");
        // A callback command needs 202 Accepted, and nothing stays waiting.
        let err = client
            .call(&url, quick_boot("v"))
            .await
            .expect_err("not accepted");
        assert_eq!(err.code(), codes::BAD_RESPONSE, "{status} {body}: {err}");
    }
    assert_eq!(client.awaiting_callbacks(), 0);
}

#[tokio::test]
async fn a_malformed_callback_body_is_a_bad_response() {
    let client = client().await;
    // An agent that accepts, then calls back with garbage.
    let http = reqwest::Client::new();
    let router = Router::new().route(
        "/vm/boot",
        post(move |headers: axum::http::HeaderMap| {
            let http = http.clone();
            let task = headers[TASK_ID_HEADER].to_str().expect("ascii").to_owned();
            let url = headers[CALLBACK_URL_HEADER]
                .to_str()
                .expect("ascii")
                .to_owned();
            tokio::spawn(async move {
                http.post(url)
                    .header(TASK_ID_HEADER, task)
                    .body("{\"reply\": 12}")
                    .send()
                    .await
            });
            async { (StatusCode::ACCEPTED, "{}") }
        }),
    );
    let url = serve(router).await;
    let err = client
        .call(&url, quick_boot("v"))
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), codes::BAD_RESPONSE, "{err}");
}

#[tokio::test]
async fn an_agent_refuses_bad_requests_with_codes() {
    let sim = agent("host-7").await;
    let http = reqwest::Client::new();
    let base = sim.agent.url();
    let cases = [
        ("/nowhere", "{}", vec![], 404, codes::NO_SUCH_COMMAND),
        ("/host/facts", "{not json", vec![], 400, codes::BAD_COMMAND),
        (
            "/host/facts",
            r#"{"gated":"yes"}"#,
            vec![],
            400,
            codes::BAD_COMMAND,
        ),
        (
            "/vm/boot",
            r#"{"uuid":"v","gated":false}"#,
            vec![(TASK_ID_HEADER, "t1")],
            400,
            codes::BAD_COMMAND,
        ),
        (
            "/vm/boot",
            r#"{"uuid":"v","gated":false}"#,
            vec![(TASK_ID_HEADER, "t1"), (CALLBACK_URL_HEADER, "ftp://x/")],
            400,
            codes::BAD_COMMAND,
        ),
    ];
    for (path, body, headers, status, code) in cases {
        let mut request = http.post(format!("{base}{path}")).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let outcome: serde_json::Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("json");
        assert_eq!(outcome["error"]["code"], code, "{path} {body}: {outcome}");
    }
}

#[tokio::test]
async fn building_an_agent_refuses_bad_paths_and_duplicates() {
    #[derive(Serialize, Deserialize)]
    struct Bad;
    impl Command for Bad {
        const PATH: &'static str = "vm/{id}";
        type Response = ();
    }
    impl CommandHandler<Bad> for Host {
        async fn handle(&self, _: Bad) -> Result<(), ErrorCode> {
            Ok(())
        }
    }
    let host = || Host {
        name: "h".into(),
        started: mpsc::unbounded_channel().0,
        release: Arc::new(Semaphore::new(0)),
    };
    let err = Agent::builder(host())
        .command::<Bad>()
        .build()
        .err()
        .expect("bad path");
    assert_eq!(err.code(), bus_codes::INVALID_ARGUMENT);
    let err = Agent::builder(host())
        .command::<GetFacts>()
        .command::<GetFacts>()
        .build()
        .err()
        .expect("duplicate");
    assert!(err.description().contains("/host/facts"), "{err}");
}

#[tokio::test]
async fn bad_agent_addresses_are_invalid_arguments() {
    let client = client().await;
    for url in ["", "not a url", "ftp://host:21", "http://"] {
        let err = client
            .call(url, GetFacts { gated: false })
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), bus_codes::INVALID_ARGUMENT, "{url:?}: {err}");
    }
}

#[tokio::test]
async fn the_callback_endpoint_refuses_strangers() {
    let client = client().await;
    let http = reqwest::Client::new();
    let no_task = http
        .post(client.callback_url())
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(no_task.status(), StatusCode::BAD_REQUEST);
    let unknown = http
        .post(client.callback_url())
        .header(TASK_ID_HEADER, "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(client.stats().late_callbacks.get(), 1);
    assert!(client.callback_url().ends_with(CALLBACK_PATH));
}

#[tokio::test]
async fn shutting_the_client_down_fails_commands_waiting_for_callbacks() {
    let mut sim = agent("host-8").await;
    let client = client().await;
    let call = gated_boot(&client, &sim, "v");
    sim.started.recv().await.expect("started");
    // The 202 may still be in flight; the task is registered before sending.
    assert_eq!(client.awaiting_callbacks(), 1);
    client.shutdown();
    let err = call.await.expect("no panic").expect_err("shut down");
    assert_eq!(err.code(), bus_codes::SHUTTING_DOWN, "{err}");
    sim.release.add_permits(1);
}

#[tokio::test]
async fn a_dropped_command_leaves_nothing_waiting() {
    let mut sim = agent("host-9").await;
    let client = client().await;
    let call = gated_boot(&client, &sim, "v");
    sim.started.recv().await.expect("started");
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    assert_eq!(client.awaiting_callbacks(), 0);
    sim.release.add_permits(1);
}

/// Many simulated hosts on loopback, many commands at once: every command
/// completes, and each agent sees no more connections than the client's
/// per-host limit, because connections are reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_commands_to_a_hundred_agents() {
    const AGENTS: usize = 100;
    const COMMANDS: usize = 2_000;
    const PER_HOST: usize = 4;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(agent(&format!("host-{i}")).await);
    }
    let urls: Vec<String> = agents.iter().map(|a| a.agent.url()).collect();
    let client = AgentClient::builder()
        .per_host_limit(PER_HOST)
        .max_connections(64)
        .timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("client");
    let commands = (0..COMMANDS).map(|i| {
        let client = client.clone();
        let url = urls[i % AGENTS].clone();
        async move {
            if i % 2 == 0 {
                let facts = client.call(&url, GetFacts { gated: false }).await?;
                Ok::<_, ErrorCode>(facts.name)
            } else {
                let uuid = format!("vm-{i}");
                let booted = client
                    .call(
                        &url,
                        Boot {
                            uuid: uuid.clone(),
                            gated: false,
                        },
                    )
                    .await?;
                assert_eq!(booted.uuid, uuid);
                Ok(booted.host)
            }
        }
    });
    let results = futures::future::join_all(commands.map(tokio::spawn)).await;
    for (i, result) in results.into_iter().enumerate() {
        let host = result.expect("no panic").expect("every command completes");
        assert_eq!(host, format!("host-{}", i % AGENTS), "command {i}");
    }
    assert_eq!(client.stats().sent.get(), COMMANDS as u64);
    assert_eq!(client.stats().failed.get(), 0);
    assert_eq!(client.stats().callbacks.get(), (COMMANDS / 2) as u64);
    assert_eq!(client.awaiting_callbacks(), 0);
    for (i, sim) in agents.iter().enumerate() {
        let stats = sim.agent.stats();
        assert_eq!(stats.commands.get(), (COMMANDS / AGENTS) as u64);
        let connections = stats.connections.get();
        assert!(
            (1..=PER_HOST as u64).contains(&connections),
            "agent {i} accepted {connections} connections for {} commands",
            COMMANDS / AGENTS
        );
    }
}

/// A node driving a fleet keeps no idle connection: each command has its
/// own, closed after it, and its callback listener asks agents to close
/// theirs too, so its sockets stay within `max_connections`.
#[tokio::test]
async fn without_idle_connections_every_command_connects_and_nothing_stays_open() {
    let sim = agent("fleet-host").await;
    let client = AgentClient::builder()
        .idle_per_host(0)
        .start()
        .await
        .expect("client");
    for _ in 0..5 {
        client
            .call(&sim.agent.url(), GetFacts { gated: false })
            .await
            .unwrap();
    }
    assert_eq!(sim.agent.stats().connections.get(), 5, "none reused");
    let answer = reqwest::Client::new()
        .post(client.callback_url())
        .header(TASK_ID_HEADER, "67e55044-10b1-426f-9247-bb680e5fe0c8")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert_eq!(answer.headers()["connection"], "close");
    // With the default, the same commands share one connection.
    let pooled = agent("pooled-host").await;
    let client = AgentClient::builder().start().await.expect("client");
    for _ in 0..5 {
        client
            .call(&pooled.agent.url(), GetFacts { gated: false })
            .await
            .unwrap();
    }
    assert_eq!(pooled.agent.stats().connections.get(), 1, "reused");
}

#[tokio::test]
async fn an_agent_with_a_token_serves_only_callers_that_carry_it() {
    let host = Host {
        name: "secure".into(),
        started: mpsc::unbounded_channel().0,
        release: Arc::new(Semaphore::new(0)),
    };
    let agent = Agent::builder(host)
        .command::<GetFacts>()
        .command::<Boot>()
        .bearer_token("s3cret")
        .build()
        .expect("valid agent")
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = agent.url();
    for client in [
        client().await,
        AgentClient::builder()
            .bearer_token("wrong")
            .start()
            .await
            .expect("client"),
    ] {
        let err = client
            .call(&url, GetFacts { gated: false })
            .await
            .expect_err("no token");
        assert_eq!(err.code(), codes::UNAUTHORIZED, "{err}");
        let boot = quick_boot("v");
        let err = client.call(&url, boot).await.expect_err("no token");
        assert_eq!(err.code(), codes::UNAUTHORIZED, "{err}");
        assert_eq!(client.awaiting_callbacks(), 0);
    }
    let trusted = AgentClient::builder()
        .bearer_token("s3cret")
        .start()
        .await
        .expect("client");
    assert!(!format!("{:?}", AgentClient::builder().bearer_token("s3cret")).contains("s3cret"));
    let facts = trusted
        .call(&url, GetFacts { gated: false })
        .await
        .expect("authorized");
    assert_eq!(facts.name, "secure");
    let boot = quick_boot("v");
    assert_eq!(
        trusted.call(&url, boot).await.expect("booted").host,
        "secure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_at_most_its_limit_of_commands_at_once() {
    let mut sim = limited_agent("small", Some(2)).await;
    // Two management nodes, each allowed 8 commands in flight to it.
    let nodes = [client().await, client().await];
    let url = sim.agent.url();
    let commands: Vec<_> = (0..8)
        .map(|i| {
            let (client, url) = (nodes[i % 2].clone(), url.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    client.call(&url, GetFacts { gated: true }).await.map(drop)
                } else {
                    let boot = Boot {
                        uuid: format!("vm-{i}"),
                        gated: true,
                    };
                    client.call(&url, boot).await.map(drop)
                }
            })
        })
        .collect();
    // Two run; the other six wait for a slot, not for the gate.
    for _ in 0..2 {
        sim.started.recv().await.expect("started");
    }
    assert_eq!(sim.agent.stats().running_now(), 2);
    sim.release.add_permits(8);
    for done in futures::future::join_all(commands).await {
        done.expect("no panic").expect("every command completes");
    }
    let stats = Arc::clone(sim.agent.stats());
    sim.agent.shutdown().await.expect("clean shutdown");
    assert_eq!(stats.commands.get(), 8);
    assert_eq!(stats.peak_running(), 2, "never more than the limit");

    let err = Agent::builder(Host {
        name: "none".into(),
        started: mpsc::unbounded_channel().0,
        release: Arc::new(Semaphore::new(0)),
    })
    .max_concurrent(0)
    .build()
    .err()
    .expect("a limit of 0 is refused");
    assert_eq!(err.code(), bus_codes::INVALID_ARGUMENT);
}

/// A command sent while handling a bus message carries that message's
/// trace and task context as HTTP headers.
#[tokio::test]
async fn commands_sent_from_a_bus_handler_carry_its_trace_and_task_context() {
    use cloudbus::{Bus, Context, Message, Request, Service};

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Probe {
        agent: String,
    }
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Probed {
        name: String,
    }
    impl Message for Probe {
        const TYPE: &'static str = "host.Probe";
    }
    impl Message for Probed {
        const TYPE: &'static str = "host.Probed";
    }
    impl Request for Probe {
        type Reply = Probed;
    }

    let (tx, mut seen) = mpsc::unbounded_channel::<axum::http::HeaderMap>();
    let stub = Router::new().route(
        "/host/facts",
        post(move |headers: axum::http::HeaderMap| {
            tx.send(headers).expect("test waits");
            async { r#"{"reply":{"name":"h","cpus":1}}"# }
        }),
    );
    let url = serve(stub).await;
    let client = client().await;
    let bus = Bus::embedded();
    bus.register(
        Service::builder("host", ())
            .on_request(move |probe: Probe, _: Context| {
                let client = client.clone();
                async move {
                    let facts = client.call(&probe.agent, GetFacts { gated: false }).await?;
                    Ok(Probed { name: facts.name })
                }
            })
            .build(),
    )
    .await
    .expect("registered");
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let facts = bus
        .call(Probe { agent: url })
        .header("traceparent", trace)
        .context("user", "alice")
        .await
        .expect("answered");
    assert_eq!(facts.name, "h");
    let headers = seen.recv().await.expect("the stub was called");
    assert_eq!(headers["traceparent"], trace);
    assert_eq!(headers["ctx-user"], "alice");
    bus.shutdown().await;
}

/// A command's trace and task context reach its handler as values it can
/// read, and come back with its callback, so that one trace runs from the
/// API call to the host and back.
#[tokio::test]
async fn the_handler_reads_the_callers_context_and_the_callback_carries_it_back() {
    #[derive(Serialize, Deserialize)]
    struct Inspect {}
    impl Command for Inspect {
        const PATH: &'static str = "/inspect";
        const MODE: Mode = Mode::Callback;
        type Response = (Option<String>, Option<String>);
    }
    struct Inspector;
    impl CommandHandler<Inspect> for Inspector {
        async fn handle(&self, _: Inspect) -> Result<(Option<String>, Option<String>), ErrorCode> {
            let ctx = cloudbus_agent::command_context().expect("inside a handler");
            Ok((
                ctx.traceparent().map(str::to_owned),
                ctx.value("user").map(str::to_owned),
            ))
        }
    }
    assert!(cloudbus_agent::command_context().is_none(), "none outside");
    let agent = Agent::builder(Inspector)
        .command::<Inspect>()
        .build()
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (tx, mut callbacks) = mpsc::unbounded_channel::<(axum::http::HeaderMap, String)>();
    let endpoint = Router::new().route(
        "/done",
        post(move |headers: axum::http::HeaderMap, body: String| {
            tx.send((headers, body)).expect("test waits");
            async { StatusCode::OK }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let done = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, endpoint).await });
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let accepted = reqwest::Client::new()
        .post(format!("{}/inspect", agent.url()))
        .header(TASK_ID_HEADER, "task-7")
        .header(CALLBACK_URL_HEADER, &done)
        .header("traceparent", trace)
        .header("ctx-user", "alice")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let (headers, body) = callbacks.recv().await.expect("a callback");
    assert_eq!(
        body,
        format!(r#"{{"reply":["{trace}","alice"]}}"#),
        "the handler read both"
    );
    assert_eq!(headers["traceparent"], trace);
    assert_eq!(headers["ctx-user"], "alice");
    agent.shutdown().await.unwrap();
}
