//! `amqps://`: the node speaks TLS to the broker and verifies its
//! certificate. A TLS terminator inside the test (with a CA made on the
//! spot) stands in front of the plain local broker.

mod broker;
mod common;

use std::sync::Arc;
use std::time::Duration;

use broker::*;
use cloudbus::transport::amqp::{AmqpConfig, AmqpTransport};
use cloudbus::{Bus, Ping, codes};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const WAIT: Duration = Duration::from_secs(20);

/// A CA, and a TLS listener for `localhost` with a certificate it signed
/// that forwards to the broker. Returns the CA's PEM and the port.
async fn tls_terminator() -> (String, u16) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return; // the client refused our certificate
                };
                if let Ok(mut broker) = TcpStream::connect(broker_addr()).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    });
    (ca.pem(), port)
}

async fn build(bus: &str, config: AmqpConfig) -> Result<Bus, cloudbus::ErrorCode> {
    tokio::time::timeout(
        WAIT,
        Bus::builder()
            .name(bus)
            .transport(AmqpTransport::with_config(config))
            .build(),
    )
    .await
    .expect("connecting never hangs")
}

#[tokio::test]
async fn a_node_on_amqps_talks_to_a_node_on_plain_amqp() {
    let (ca, port) = tls_terminator().await;
    let name = unique_bus("tls");
    let _cleanup = delete_bus_on_panic(&name);
    let tls_url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let secure = build(&name, AmqpConfig::new(&tls_url).tls_ca_pem(ca.clone()))
        .await
        .unwrap();
    let plain = build(&name, AmqpConfig::new(url())).await.unwrap();
    let pong = secure.call(Ping {}).node(plain.node_id()).await.unwrap();
    assert_eq!(pong.node, plain.node_id());
    let pong = plain.call(Ping {}).node(secure.node_id()).await.unwrap();
    assert_eq!(pong.node, secure.node_id());
    secure.shutdown().await;
    plain.shutdown().await;

    // The certificate is verified: an unknown CA or a name the
    // certificate does not carry is refused with a clear error.
    let err = build(&name, AmqpConfig::new(&tls_url)).await.unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let wrong_host = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let err = build(&name, AmqpConfig::new(wrong_host).tls_ca_pem(ca))
        .await
        .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    delete_bus(&name).await;
}
