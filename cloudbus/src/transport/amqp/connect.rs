//! What `amqprs` needs to open a connection to one broker URL.
//!
//! The URL is read here rather than by `amqprs`'s own parser (behind its
//! `urispec` feature), which neither percent-decodes the vhost nor refuses
//! a bad heartbeat and knows no CA of ours. It is read as `lapin` and the
//! AMQP URI spec read it, but a URL that cannot mean what its author wrote
//! is refused up front rather than connecting somewhere else.

use std::sync::{Arc, OnceLock};

use amqprs::connection::OpenConnectionArguments;
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::redact;
use crate::{ErrorCode, codes};

/// The heartbeat asked for when the URL names none (or 0, which `lapin`
/// also read as "none"). `amqprs` settles on the smaller non-zero one of
/// the broker's proposal and ours, so the largest value lets the broker
/// decide, as with `lapin` (RabbitMQ proposes 60 s). Asking for 0 would do
/// the same, except against a broker that proposes 0: `amqprs` has no
/// "no heartbeat" mode and would then spin and drop the connection, while
/// 65535 s is as good as none.
const BROKER_HEARTBEAT: u16 = u16::MAX;

/// The longest vhost AMQP can carry (a short string); `amqprs` would panic
/// opening the connection with a longer one.
const MAX_VHOST: usize = 255;

/// Everything amqprs needs to open a connection to one broker URL
/// (`amqp://user:pass@host:port/vhost?heartbeat=N`, or `amqps://`). For
/// `amqps` the broker's certificate must chain to a platform root or to a
/// certificate of `tls_ca_pem`, and name the URL's host; `amqp` ignores
/// `tls_ca_pem`. Errors are `cloudbus.INVALID_ARGUMENT` and quote the URL
/// only redacted.
pub(crate) fn arguments(
    url: &str,
    tls_ca_pem: Option<&str>,
    connection_name: &str,
) -> Result<OpenConnectionArguments, ErrorCode> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not quoted: `redact` finds no URL, so no password, in it.
        return Err(ErrorCode::new(
            codes::INVALID_ARGUMENT,
            "a broker URL is not an amqp:// or amqps:// URL",
        ));
    };
    let bad = |why: &str| {
        ErrorCode::new(
            codes::INVALID_ARGUMENT,
            format!("broker URL {}: {why}", shown(url)),
        )
    };
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "amqp" => (false, 5672),
        "amqps" => (true, 5671),
        _ => return Err(bad("the scheme is neither amqp nor amqps")),
    };
    let rest = rest.split_once('#').map_or(rest, |(rest, _)| rest);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));

    // The user info ends at the last `@`, as `redact` reads it. Nothing
    // of it is ever quoted: a malformed URL may have put the password
    // anywhere in it.
    let (userinfo, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let or_guest = |text: &str, what: &str| match text {
        "" => Ok("guest".to_string()),
        text => decode(text).ok_or_else(|| bad(&format!("the {what} has a bad %-escape"))),
    };
    let credentials = SecurityCredentials::new_plain(
        &or_guest(user, "user name")?,
        &or_guest(password, "password")?,
    );

    // An IPv6 host keeps its brackets, so that amqprs's `host:port` is a
    // socket address; the TLS name is the bare address.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            (&host_port[..addr.len() + 2], after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    let host = decode(host).ok_or_else(|| bad("the host has a bad %-escape"))?;
    let port = match port {
        None | Some("") => default_port,
        Some(port) => port
            .parse()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };

    let vhost = match path {
        "" => "/".to_string(),
        path => decode(path).ok_or_else(|| bad("the vhost has a bad %-escape"))?,
    };
    if vhost.len() > MAX_VHOST {
        return Err(bad("the vhost is longer than 255 bytes"));
    }

    let mut heartbeat = BROKER_HEARTBEAT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // amqprs takes the broker's frame and channel limits and has no
        // connect timeout of its own; these are checked as `lapin` checked
        // them, so that a URL it refused is still refused.
        let valid = match key {
            "heartbeat" => match value.parse::<u16>() {
                Ok(0) => true,
                // amqprs beats every heartbeat/2 whole seconds: never
                // sleeping at 1 s.
                Ok(1) => return Err(bad("heartbeat=1 is too short; use 0 or 2 and up")),
                Ok(seconds) => {
                    heartbeat = seconds;
                    true
                }
                Err(_) => false,
            },
            "channel_max" => value.parse::<u16>().is_ok(),
            "frame_max" => value.parse::<u32>().is_ok(),
            "connection_timeout" => value.parse::<u64>().is_ok(),
            _ => true,
        };
        if !valid {
            return Err(bad(&format!("`{key}` is not a number in range")));
        }
    }

    let mut args = OpenConnectionArguments::new(&host, port, "", "");
    args.credentials(credentials)
        .virtual_host(&vhost)
        .heartbeat(heartbeat)
        .connection_name(connection_name)
        // amqprs only checks the scheme against the presence of TLS.
        .scheme(if tls { "amqps" } else { "amqp" });
    if tls {
        let domain = host.trim_start_matches('[').trim_end_matches(']');
        args.tls_adaptor(tls_adaptor(domain, tls_ca_pem).map_err(|why| bad(&why))?);
    }
    Ok(args)
}

/// The URL as an error may quote it: redacted, after escaping what
/// `redact` takes for the end of a URL in a list or in prose, so that a
/// password holding one is hidden whole.
fn shown(url: &str) -> String {
    let mut one = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            ',' | ' ' | '\n' | '\t' | '"' | '\'' => one.push_str(&format!("%{:02X}", c as u32)),
            c => one.push(c),
        }
    }
    redact(&one)
}

/// A connector that trusts the platform's roots and `ca_pem`, and checks
/// that the broker's certificate names `domain`.
fn tls_adaptor(domain: &str, ca_pem: Option<&str>) -> Result<TlsAdaptor, String> {
    ServerName::try_from(domain).map_err(|_| "the host is not a valid TLS name".to_string())?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(platform_roots().iter().cloned());
    if let Some(pem) = ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the CA certificate is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the CA PEM holds no certificate".to_string());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        }
    }
    // An explicit provider: the process may have installed no default.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS version to offer: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsAdaptor::new(
        TlsConnector::from(Arc::new(config)),
        domain.to_string(),
    ))
}

/// The platform's root certificates, read once: every reconnection would
/// otherwise read the system store again. Some may fail to load (a stray
/// file in a certificate directory); the rest are still trusted.
fn platform_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some platform root certificates did not load");
        }
        found.certs
    })
}

/// Percent-decodes `text`, or `None` for a `%` not followed by two hex
/// digits or a result that is not UTF-8 (where `lapin` would have passed
/// the text through as it was).
fn decode(text: &str) -> Option<String> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    let mut bytes = text.bytes();
    let mut out = Vec::with_capacity(text.len());
    while let Some(byte) = bytes.next() {
        out.push(match byte {
            b'%' => (digit(bytes.next()?)? * 16 + digit(bytes.next()?)?) as u8,
            byte => byte,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqprs::connection::Connection;

    fn ok(url: &str) -> OpenConnectionArguments {
        arguments(url, None, "test").unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn plain(user: &str, password: &str) -> SecurityCredentials {
        SecurityCredentials::new_plain(user, password)
    }

    #[test]
    fn a_url_gives_host_port_vhost_credentials_and_name() {
        let args = ok("amqp://u%40x:p%3Aw%2F@rabbit-1:5673/prod%2fa?heartbeat=10");
        assert_eq!(args.get_host(), "rabbit-1");
        assert_eq!(args.get_port(), 5673);
        assert_eq!(args.get_virtual_host(), "prod/a");
        assert!(*args.get_credentials() == plain("u@x", "p:w/"));
        assert_eq!(args.get_heartbeat(), 10);
        assert_eq!(args.get_connection_name(), Some("test"));
        assert_eq!(args.get_scheme(), Some("amqp"));
        assert_eq!(ok("amqp://h/%2f").get_virtual_host(), "/");
    }

    #[test]
    fn what_a_url_leaves_out_has_the_spec_defaults() {
        for url in ["amqp://h", "amqp://h/", "amqp://@h:/", "amqp://:@h"] {
            let args = ok(url);
            assert_eq!(args.get_port(), 5672, "{url}");
            assert_eq!(args.get_virtual_host(), "/", "{url}");
            assert!(*args.get_credentials() == plain("guest", "guest"), "{url}");
            assert_eq!(args.get_heartbeat(), BROKER_HEARTBEAT, "{url}");
        }
        assert!(*ok("amqp://bob@h").get_credentials() == plain("bob", "guest"));
        let args = ok("amqps://h");
        assert_eq!(args.get_port(), 5671);
        assert_eq!(args.get_scheme(), Some("amqps"));
        // 0 leaves the heartbeat to the broker, as with lapin; unknown
        // and merely checked parameters change nothing.
        let args = ok("amqp://h?heartbeat=0&channel_max=9&frame_max=4096&connection_timeout=5&x=y");
        assert_eq!(args.get_heartbeat(), BROKER_HEARTBEAT);
    }

    #[test]
    fn an_ipv6_host_keeps_its_brackets() {
        let args = ok("amqp://[::1]:5680/v");
        assert_eq!((args.get_host(), args.get_port()), ("[::1]", 5680));
        assert_eq!(ok("amqps://[::1]").get_port(), 5671);
    }

    #[test]
    fn a_bad_url_is_an_invalid_argument_that_hides_the_password() {
        for url in [
            "http://u:s3cret@h/",
            "u:s3cret@h",
            "amqp://u:s3cret@h:0/",
            "amqp://u:s3cret@h:65536/",
            "amqp://u:s3cret@h:port/",
            "amqp://u:s3cret@[::1/",
            "amqp://u:s3cret@/vh",
            "amqp://u:s3cret@h/%2",
            "amqp://u:s3cret@h/%zz",
            "amqp://u:s3cret@h/%ff",
            "amqp://u%4:s3cret@h/",
            "amqp://u:s3cret%@h/",
            "amqp://u:s3cret/x@h/",
            "amqp://u:s3c,ret@h:0/",
            "amqp://u:s3c ret@h:0/",
            "amqp://u:s3c'ret\"@h:0/",
            "amqp://u:s3cret@h/?heartbeat=x",
            "amqp://u:s3cret@h/?heartbeat=-1",
            "amqp://u:s3cret@h/?heartbeat=65536",
            "amqp://u:s3cret@h/?heartbeat=1",
            "amqp://u:s3cret@h/?frame_max=big",
            &format!("amqp://u:s3cret@h/{}", "v".repeat(256)),
            "amqps://u:s3cret@bad_host!/",
        ] {
            let err = arguments(url, None, "t")
                .err()
                .unwrap_or_else(|| panic!("{url}"));
            assert!(err.is(codes::INVALID_ARGUMENT), "{url}: {err}");
            assert!(!err.to_string().contains("s3c"), "{url}: {err}");
        }
    }

    #[test]
    fn amqps_verifies_with_platform_roots_and_the_given_cas() {
        assert!(ok("amqp://h").get_tls_adaptor().is_none());
        assert!(ok("amqps://h").get_tls_adaptor().is_some());
        let two = format!("{}{}", ca().0, ca().0);
        let args = arguments("amqps://h", Some(&two), "t").unwrap();
        assert!(args.get_tls_adaptor().is_some());
        // A plain URL needs no CA, and a bad one is not even read.
        assert!(
            arguments("amqp://h", Some("junk"), "t")
                .unwrap()
                .get_tls_adaptor()
                .is_none()
        );

        let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for pem in ["", "not PEM", truncated, garbage, &ca().1] {
            let err = arguments("amqps://u:s3cret@h", Some(pem), "t")
                .err()
                .unwrap();
            assert!(err.is(codes::INVALID_ARGUMENT), "{pem:?}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    /// A self-signed CA as PEM, and its private key's PEM (no certificate).
    fn ca() -> (String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn the_arguments_open_a_connection_to_the_local_broker() {
        let args = arguments("amqp://guest:guest@127.0.0.1:5672/%2f", None, "t").unwrap();
        let connection = Connection::open(&args).await.unwrap();
        // The broker's heartbeat, not ours.
        assert!((1..BROKER_HEARTBEAT).contains(&connection.heartbeat()));
        assert_eq!(connection.connection_name(), "t");
        connection.close().await.unwrap();
    }

    /// How amqprs reports what the broker refuses. A refused login is not
    /// told apart from a dropped connection: amqprs does not announce
    /// `authentication_failure_close`, so RabbitMQ just closes the socket
    /// (after its 3 s delay).
    #[tokio::test]
    async fn what_the_broker_refuses_is_an_error() {
        use amqprs::error::Error;
        let open = |url: &'static str| async move {
            Connection::open(&arguments(url, None, "t").unwrap())
                .await
                .err()
                .unwrap()
        };
        let err = open("amqp://guest:wrong-s3cret@127.0.0.1:5672/%2f").await;
        assert!(matches!(err, Error::NetworkError(_)), "{err}");
        assert!(!err.to_string().contains("s3c"), "{err}");
        let err = open("amqp://guest:guest@127.0.0.1:5672/no-such-vhost").await;
        assert!(matches!(err, Error::ConnectionOpenError(_)), "{err}");
        assert!(err.to_string().contains("NOT_ALLOWED"), "{err}");
    }
}
