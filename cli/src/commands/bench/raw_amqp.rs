//! What the raw `amqprs` programs share: a connection from an AMQP URI,
//! with its parts percent-decoded as the URI spec says, and channels with
//! the default callbacks.

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;

/// Opens a connection to the broker at `url` (`amqp://user:pass@host:port/vhost`).
pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    let conn = Connection::open(&arguments(url)?).await?;
    conn.register_callback(DefaultConnectionCallback).await?;
    Ok(conn)
}

/// Opens a channel that answers the broker's flow and cancel requests.
pub async fn channel(conn: &Connection) -> anyhow::Result<Channel> {
    let channel = conn.open_channel(None).await?;
    channel.register_callback(DefaultChannelCallback).await?;
    Ok(channel)
}

/// `amqprs` parses the URI but takes its vhost, user and password verbatim,
/// so the bus's default `.../%2f` would name a vhost "%2f": they are decoded
/// here.
fn arguments(url: &str) -> anyhow::Result<OpenConnectionArguments> {
    let mut args = OpenConnectionArguments::try_from(url)?;
    let Some((_, rest)) = url.split_once("://") else {
        return Ok(args);
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        // As `amqprs` has it: no password is "guest".
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, "guest"));
        args.credentials(SecurityCredentials::new_plain(
            &percent_decoded(user),
            &percent_decoded(password),
        ));
    }
    let vhost = path.split(['?', '#']).next().unwrap_or_default();
    if !vhost.is_empty() {
        args.virtual_host(&percent_decoded(vhost));
    }
    Ok(args)
}

fn percent_decoded(s: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(((hi << 4) | lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_parts_are_percent_decoded() {
        let args = arguments("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(args.get_virtual_host(), "/");
        assert_eq!(args.get_host(), "127.0.0.1");
        assert_eq!(args.get_port(), 5672);
        let args = arguments("amqp://u%40x:p%3Aw@broker/prod%2Fa?heartbeat=10").unwrap();
        assert_eq!(args.get_virtual_host(), "prod/a");
        assert!(*args.get_credentials() == SecurityCredentials::new_plain("u@x", "p:w"));
        assert_eq!(args.get_heartbeat(), 10);
        // Without a vhost segment the default "/" stands.
        assert_eq!(arguments("amqp://broker").unwrap().get_virtual_host(), "/");
        assert_eq!(arguments("amqp://broker/").unwrap().get_virtual_host(), "/");
        assert_eq!(percent_decoded("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
