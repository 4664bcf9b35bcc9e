//! TLS for agents: the agent serves HTTPS from a certificate and key, may
//! accept only clients with a certificate from a given CA (mutual TLS,
//! which can replace the shared bearer token), and management nodes
//! trust a private CA and may present a client certificate. A node's
//! callback listener may serve HTTPS too, which agents verify against
//! the public roots and a private CA. Everything is PEM, as operators
//! have it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudbus::{ErrorCode, codes};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn invalid(what: String) -> ErrorCode {
    ErrorCode::new(codes::INVALID_ARGUMENT, what)
}

/// A client for callbacks: the public roots, and `node_ca_pem` for nodes
/// whose callback listener has a certificate from a private CA; with an
/// identity (key and certificate chain, PEM), presented to listeners that
/// want mutual TLS.
pub(crate) fn callback_client(
    node_ca_pem: Option<&str>,
    identity_pem: Option<&str>,
) -> Result<reqwest::Client, ErrorCode> {
    ensure_provider();
    let mut http = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .no_proxy();
    if let Some(pem) = node_ca_pem {
        http = trusting(http, pem, "node CA")?;
    }
    if let Some(pem) = identity_pem {
        http = presenting(http, pem, "the agent's callback certificate and key")?;
    }
    http.build()
        .map_err(|e| invalid(format!("cannot build the callback HTTP client: {e}")))
}

/// `http`, also trusting the CA certificates of `pem`; `what` names the CA
/// in errors.
pub(crate) fn trusting(
    mut http: reqwest::ClientBuilder,
    pem: &str,
    what: &str,
) -> Result<reqwest::ClientBuilder, ErrorCode> {
    for cert in certificates(pem, what)? {
        let cert = reqwest::Certificate::from_der(&cert)
            .map_err(|e| invalid(format!("the {what} is not usable: {e}")))?;
        http = http.add_root_certificate(cert);
    }
    Ok(http)
}

/// `http`, presenting `identity_pem` (private key and certificate chain)
/// to servers that ask for a client certificate; `what` names it in errors.
pub(crate) fn presenting(
    http: reqwest::ClientBuilder,
    identity_pem: &str,
    what: &str,
) -> Result<reqwest::ClientBuilder, ErrorCode> {
    let identity = reqwest::Identity::from_pem(identity_pem.as_bytes())
        .map_err(|e| invalid(format!("{what} are not usable: {e}")))?;
    Ok(http.identity(identity))
}

/// Makes aws-lc-rs the process's TLS provider unless one is set: the HTTP
/// client asks for the process default, and the build has exactly one
/// provider (lapin's), which rustls installs only when asked.
pub(crate) fn ensure_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way one is installed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn certificates(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ErrorCode> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the {what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("the {what} holds no certificate")));
    }
    Ok(certs)
}

/// The server side of an agent or of a node's callback listener (`who`):
/// its certificate and key, and the CA its clients' certificates must come
/// from, when it wants them.
pub(crate) fn server_config(
    who: &str,
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, ErrorCode> {
    let chain = certificates(cert_pem, &format!("{who} certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| invalid(format!("the {who}'s private key is not valid PEM: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("no TLS version to offer: {e}")))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "client CA")? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("the client CA is not usable: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(format!("the client CA is not usable: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        invalid(format!(
            "the {who} certificate and key do not go together: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener handing out TLS connections whose handshake is done.
/// Handshakes run side by side on their own tasks, so a client that
/// stalls in its handshake holds up nobody else.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        on_connect: impl Fn(&TcpStream) + Send + 'static,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                // Once the server is gone, so is the listening socket.
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: wait a moment, go on.
                        tracing::warn!(%error, "cannot accept a TLS connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                on_connect(&tcp);
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "a TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "a TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(Self { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
