//! Agents over TLS, with a CA made in the test: a good certificate is
//! served and verified; an unknown CA and a certificate for another host
//! are refused; with mutual TLS, a node without a certificate from the
//! agent's client CA is refused in the handshake and one with it served.
//! A node's callback listener serves HTTPS: an agent that trusts its CA
//! sends the result back, one that does not keeps it.

use std::time::Duration;

use cloudbus::ErrorCode;
use cloudbus_agent::{Agent, AgentClient, Command, CommandHandler, Mode, RunningAgent, codes};
use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Hello {}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Hi {
    host: String,
}
impl Command for Hello {
    const PATH: &'static str = "/hello";
    type Response = Hi;
}

struct Host;
impl CommandHandler<Hello> for Host {
    async fn handle(&self, _: Hello) -> Result<Hi, ErrorCode> {
        Ok(Hi {
            host: "secure-host".into(),
        })
    }
}

/// A long command: answered `202` at once, its result sent back later.
#[derive(Serialize, Deserialize)]
struct Boot {}
impl Command for Boot {
    const PATH: &'static str = "/boot";
    const MODE: Mode = Mode::Callback;
    type Response = Hi;
}

impl CommandHandler<Boot> for Host {
    async fn handle(&self, _: Boot) -> Result<Hi, ErrorCode> {
        Ok(Hi {
            host: "booted".into(),
        })
    }
}

/// A private CA.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (host names or IP addresses) and its key.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

async fn agent(cert: &(String, String), client_ca: Option<&Ca>) -> RunningAgent {
    let mut agent = Agent::builder(Host)
        .command::<Hello>()
        .tls_pem(&cert.0, &cert.1);
    if let Some(ca) = client_ca {
        agent = agent.client_ca_pem(ca.pem());
    }
    agent.build().unwrap().bind("127.0.0.1:0").await.unwrap()
}

async fn hello(client: &AgentClient, url: &str) -> Result<Hi, ErrorCode> {
    client.call(url, Hello {}).await
}

#[tokio::test]
async fn a_good_certificate_from_a_trusted_ca_is_served_over_https() {
    let ca = Ca::new();
    let agent = agent(&ca.issue(&["127.0.0.1"]), None).await;
    assert!(agent.url().starts_with("https://"), "{}", agent.url());
    let client = AgentClient::builder()
        .tls_ca_pem(ca.pem())
        .start()
        .await
        .unwrap();
    assert_eq!(
        hello(&client, &agent.url()).await.unwrap().host,
        "secure-host"
    );
    // Plain HTTP to a TLS agent does not get through either.
    let plain = agent.url().replace("https://", "http://");
    let err = hello(&client, &plain).await.unwrap_err();
    assert!(err.is(codes::UNREACHABLE), "{err}");
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_ca_and_a_certificate_for_another_host_are_refused() {
    let (ca, stranger) = (Ca::new(), Ca::new());
    let agent_ok = agent(&ca.issue(&["127.0.0.1"]), None).await;
    // A node that trusts another CA only.
    let client = AgentClient::builder()
        .tls_ca_pem(stranger.pem())
        .start()
        .await
        .unwrap();
    let err = hello(&client, &agent_ok.url()).await.unwrap_err();
    assert!(err.is(codes::UNREACHABLE), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the error says why: {err}"
    );
    // The right CA, but the certificate names another host.
    let elsewhere = agent(&ca.issue(&["agent.example.com"]), None).await;
    let client = AgentClient::builder()
        .tls_ca_pem(ca.pem())
        .start()
        .await
        .unwrap();
    let err = hello(&client, &elsewhere.url()).await.unwrap_err();
    assert!(err.is(codes::UNREACHABLE), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    agent_ok.shutdown().await.unwrap();
    elsewhere.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_mutual_tls_only_nodes_with_a_certificate_from_the_client_ca_are_served() {
    let (server_ca, client_ca) = (Ca::new(), Ca::new());
    let agent = agent(&server_ca.issue(&["127.0.0.1"]), Some(&client_ca)).await;
    let without = AgentClient::builder()
        .tls_ca_pem(server_ca.pem())
        .start()
        .await
        .unwrap();
    let err = hello(&without, &agent.url()).await.unwrap_err();
    assert!(err.is(codes::UNREACHABLE), "{err}");
    // A certificate, but from another CA.
    let (cert, key) = server_ca.issue(&["node-1"]);
    let wrong = AgentClient::builder()
        .tls_ca_pem(server_ca.pem())
        .tls_identity_pem(&cert, &key)
        .start()
        .await
        .unwrap();
    let err = hello(&wrong, &agent.url()).await.unwrap_err();
    assert!(err.is(codes::UNREACHABLE), "{err}");
    let (cert, key) = client_ca.issue(&["node-1"]);
    let with = AgentClient::builder()
        .tls_ca_pem(server_ca.pem())
        .tls_identity_pem(&cert, &key)
        .start()
        .await
        .unwrap();
    assert_eq!(
        hello(&with, &agent.url()).await.unwrap().host,
        "secure-host"
    );
    agent.shutdown().await.unwrap();
}

/// A plain-HTTP agent that sends callbacks, trusting `node_ca` for them
/// and presenting `identity` (certificate and key) when given.
async fn booting_agent(node_ca: Option<&Ca>, identity: Option<&(String, String)>) -> RunningAgent {
    let mut agent = Agent::builder(Host).command::<Boot>();
    if let Some(ca) = node_ca {
        agent = agent.node_ca_pem(ca.pem());
    }
    if let Some((cert, key)) = identity {
        agent = agent.callback_identity_pem(cert, key);
    }
    agent.build().unwrap().bind("127.0.0.1:0").await.unwrap()
}

/// Runs a callback command at `agent` until the agent has given up
/// sending its callback; the command's own wait is dropped then.
async fn callback_given_up(client: &AgentClient, agent: &RunningAgent) {
    let call = tokio::spawn({
        let (client, url) = (client.clone(), agent.url());
        async move { client.call(&url, Boot {}).await }
    });
    tokio::time::timeout(Duration::from_secs(20), async {
        while agent.stats().callbacks_failed.get() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the agent gave up sending its callback");
    call.abort();
    assert_eq!(agent.stats().callbacks_sent.get(), 0);
}

#[tokio::test]
async fn callbacks_come_back_over_https_only_to_a_node_the_agent_verified() {
    let node_ca = Ca::new();
    let (cert, key) = node_ca.issue(&["127.0.0.1"]);
    let client = AgentClient::builder()
        .callback_tls_pem(&cert, &key)
        .start()
        .await
        .unwrap();
    assert!(
        client.callback_url().starts_with("https://127.0.0.1:"),
        "{}",
        client.callback_url()
    );
    let trusting = booting_agent(Some(&node_ca), None).await;
    let booted = client.call(&trusting.url(), Boot {}).await.unwrap();
    assert_eq!(booted.host, "booted");
    assert_eq!(client.stats().callbacks.get(), 1);

    // An agent that knows only the public roots keeps the result: it
    // cannot verify the node's certificate.
    let stranger = booting_agent(None, None).await;
    callback_given_up(&client, &stranger).await;
    assert_eq!(
        client.stats().callbacks.get(),
        1,
        "the stranger's result never came"
    );
    trusting.shutdown().await.unwrap();
    stranger.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_mutual_tls_on_callbacks_a_node_takes_results_only_from_agents_of_its_ca() {
    let (node_ca, agent_ca) = (Ca::new(), Ca::new());
    let (cert, key) = node_ca.issue(&["127.0.0.1"]);
    let client = AgentClient::builder()
        .callback_tls_pem(&cert, &key)
        .callback_client_ca_pem(agent_ca.pem())
        .start()
        .await
        .unwrap();
    let named = booting_agent(Some(&node_ca), Some(&agent_ca.issue(&["host-1"]))).await;
    assert_eq!(
        client.call(&named.url(), Boot {}).await.unwrap().host,
        "booted"
    );
    // No certificate, or one from another CA: refused in the handshake.
    let anonymous = booting_agent(Some(&node_ca), None).await;
    callback_given_up(&client, &anonymous).await;
    let foreign = booting_agent(Some(&node_ca), Some(&node_ca.issue(&["host-2"]))).await;
    callback_given_up(&client, &foreign).await;
    assert_eq!(client.stats().callbacks.get(), 1);
    for agent in [named, anonymous, foreign] {
        agent.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn bad_tls_settings_are_refused_with_clear_errors() {
    let err = Agent::builder(Host)
        .command::<Hello>()
        .tls_pem("not a certificate", "not a key")
        .build()
        .err()
        .unwrap();
    assert!(err.is(cloudbus::codes::INVALID_ARGUMENT), "{err}");
    let err = Agent::builder(Host)
        .command::<Hello>()
        .client_ca_pem(Ca::new().pem())
        .build()
        .err()
        .unwrap();
    assert!(err.description().contains("tls_pem"), "{err}");
    let err = AgentClient::builder()
        .tls_ca_pem("garbage")
        .start()
        .await
        .err()
        .unwrap();
    assert!(err.is(cloudbus::codes::INVALID_ARGUMENT), "{err}");
    let err = AgentClient::builder()
        .callback_tls_pem("not a certificate", "not a key")
        .start()
        .await
        .err()
        .unwrap();
    assert!(err.description().contains("callback listener"), "{err}");
    // A listener serving HTTPS behind an http:// URL would reach nobody.
    let (cert, key) = Ca::new().issue(&["127.0.0.1"]);
    let err = AgentClient::builder()
        .callback_tls_pem(&cert, &key)
        .callback_url("http://127.0.0.1:7071")
        .start()
        .await
        .err()
        .unwrap();
    assert!(err.description().contains("https"), "{err}");
    let err = Agent::builder(Host)
        .command::<Hello>()
        .node_ca_pem("garbage")
        .build()
        .err()
        .unwrap();
    assert!(err.description().contains("node CA"), "{err}");
    let err = AgentClient::builder()
        .callback_client_ca_pem(Ca::new().pem())
        .start()
        .await
        .err()
        .unwrap();
    assert!(err.description().contains("callback_tls_pem"), "{err}");
    let err = Agent::builder(Host)
        .command::<Hello>()
        .callback_identity_pem("not a certificate", "not a key")
        .build()
        .err()
        .unwrap();
    assert!(err.description().contains("callback certificate"), "{err}");
}
