//! `agent-http`: commands to a host agent over HTTP on loopback, through
//! `cloudbus-agent`, against raw reqwest posting the same JSON to a bare
//! axum handler. `sync` is answered in the response; `callback` is accepted
//! with 202 and completed by a callback, so it costs two HTTP exchanges and
//! its baseline is still one synchronous POST.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use cloudbus::ErrorCode;
use cloudbus_agent::{Agent, AgentClient, Command, CommandHandler, Mode};
use serde::{Deserialize, Serialize};

use super::measure::{Sample, closed_loop};
use super::messages::{Echo, EchoReply, answer};

/// [`Echo`] sent as a command answered in the response.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SyncEcho(Echo);

/// [`Echo`] sent as a command completed by callback.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct CallbackEcho(Echo);

impl Command for SyncEcho {
    const PATH: &'static str = "/bench/sync";
    type Response = EchoReply;
}

impl Command for CallbackEcho {
    const PATH: &'static str = "/bench/callback";
    const MODE: Mode = Mode::Callback;
    type Response = EchoReply;
}

struct Host;

impl CommandHandler<SyncEcho> for Host {
    async fn handle(&self, cmd: SyncEcho) -> Result<EchoReply, ErrorCode> {
        Ok(answer(cmd.0))
    }
}

impl CommandHandler<CallbackEcho> for Host {
    async fn handle(&self, cmd: CallbackEcho) -> Result<EchoReply, ErrorCode> {
        Ok(answer(cmd.0))
    }
}

/// Measures `mode` ("sync" or "callback") at `level` commands in flight to
/// one agent, then the raw baseline.
pub async fn run(
    level: usize,
    callback: bool,
    duration: Duration,
) -> anyhow::Result<(Sample, Sample)> {
    let agent = Agent::builder(Host)
        .command::<SyncEcho>()
        .command::<CallbackEcho>()
        .build()?
        .bind("127.0.0.1:0")
        .await?;
    let client = AgentClient::builder()
        .per_host_limit(level)
        .max_connections(level)
        .start()
        .await?;
    let url = agent.url();
    let sample = closed_loop(level, duration, {
        let (client, url) = (client.clone(), url.clone());
        move |i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let echo = Echo::new(i as u64, 1);
                if callback {
                    client.call(&url, CallbackEcho(echo)).await?;
                } else {
                    client.call(&url, SyncEcho(echo)).await?;
                }
                Ok(())
            }
        }
    })
    .await?;
    client.shutdown();
    agent.shutdown().await?;

    // The baseline: the same JSON both ways, no outcome wrapper, no limits.
    let router = Router::new().route(
        "/echo",
        post(|body: axum::body::Bytes| async move {
            let req: Echo = serde_json::from_slice(&body).unwrap_or_else(|_| Echo::new(0, 1));
            serde_json::to_vec(&answer(req)).unwrap_or_default()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let raw_url = format!("http://{}/echo", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(level)
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    let baseline = closed_loop(level, duration, move |i| {
        let (http, url) = (http.clone(), raw_url.clone());
        async move {
            let body = serde_json::to_vec(&Echo::new(i as u64, 1))?;
            let answer = http.post(url).body(body).send().await?.bytes().await?;
            let _: EchoReply = serde_json::from_slice(&answer)?;
            Ok(())
        }
    })
    .await?;
    server.abort();
    Ok((sample, baseline))
}
