//! Security on the real broker: an authentication interceptor refusing
//! bad session tokens across nodes, one virtual host per deployment, and
//! credentials that never show up in errors.

mod broker;
mod common;

use std::collections::HashSet;
use std::time::Duration;

use broker::*;
use cloudbus::{Body, Bus, Envelope, ErrorCode, Interceptor, Ping, codes};
use common::*;

/// Accepts `echo` requests only with a known `session` header.
struct RequireSession(HashSet<&'static str>);

impl Interceptor for RequireSession {
    fn before_deliver(&self, envelope: &Envelope, _body: &Body) -> Result<(), ErrorCode> {
        if envelope.service_name() != "echo" {
            return Ok(());
        }
        match envelope.headers.get("session") {
            Some(token) if self.0.contains(token) => Ok(()),
            Some(_) => Err(ErrorCode::new(
                "auth.INVALID_SESSION",
                "the session token is not valid",
            )),
            None => Err(ErrorCode::new(
                "auth.NO_SESSION",
                "a session token is required",
            )),
        }
    }
}

#[tokio::test]
async fn an_interceptor_refuses_a_bad_session_token_with_a_clear_error() {
    let name = unique_bus("auth");
    let _cleanup = delete_bus_on_panic(&name);
    let server = Bus::builder()
        .name(&name)
        .amqp(url())
        .interceptor(RequireSession(HashSet::from(["s3cr3t-session"])))
        .build()
        .await
        .unwrap();
    server.register(echo_service()).await.unwrap();
    let client = Bus::builder()
        .name(&name)
        .amqp(url())
        .build()
        .await
        .unwrap();
    let to = server.node_id();
    let echo = || Echo { text: "hi".into() };

    let ok = client
        .call(echo())
        .node(to)
        .header("session", "s3cr3t-session")
        .await
        .unwrap();
    assert_eq!(ok.text, "hi");
    let err = client
        .call(echo())
        .node(to)
        .header("session", "forged")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "auth.INVALID_SESSION");
    assert_eq!(err.description(), "the session token is not valid");
    let err = client.call(echo()).node(to).await.unwrap_err();
    assert_eq!(err.code(), "auth.NO_SESSION");
    // Other services are not affected.
    client.call(Ping {}).node(to).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
    delete_bus(&name).await;
}

#[tokio::test]
async fn each_deployment_can_have_its_own_virtual_host() {
    let vhost = unique_bus("vhost");
    let _vhost_cleanup = delete_vhost_on_panic(&vhost);
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let base = url();
    let root = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(root, _)| root);
    let isolated = format!("{root}/{vhost}");
    let name = unique_bus("bus");
    let _cleanup = delete_bus_on_panic(&name);
    let a = Bus::builder()
        .name(&name)
        .amqp(&isolated)
        .build()
        .await
        .unwrap();
    let b = Bus::builder()
        .name(&name)
        .amqp(&isolated)
        .build()
        .await
        .unwrap();
    b.register(echo_service()).await.unwrap();
    let reply = a
        .call(Echo {
            text: "in vhost".into(),
        })
        .node(b.node_id())
        .await
        .unwrap();
    assert_eq!(reply.node, b.node_id().to_string());
    // The same bus name in another virtual host is another bus.
    let outsider = Bus::builder()
        .name(&name)
        .amqp(&base)
        .build()
        .await
        .unwrap();
    let err = outsider
        .call(Echo { text: "x".into() })
        .node(b.node_id())
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    for bus in [a, b, outsider] {
        bus.shutdown().await;
    }
    delete_bus_at(&base, &name).await;
    rabbitmqctl(&["delete_vhost", &vhost]);
}

#[tokio::test]
async fn wrong_credentials_fail_clearly_without_showing_the_password() {
    let base = url();
    let (_, rest) = base.split_once('@').expect("the URL names a user");
    let bad = format!("amqp://guest:not-the-password@{rest}");
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        Bus::builder().name(unique_bus("creds")).amqp(bad).build(),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    assert!(
        !format!("{err} {err:?}").contains("not-the-password"),
        "{err:?}"
    );
    assert!(err.to_string().contains("guest:***@"), "{err}");
}
