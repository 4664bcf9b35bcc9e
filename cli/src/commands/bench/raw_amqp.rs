//! What the raw `amqprs` programs share: a connection to the broker URL,
//! read as the bus's transport reads it (so `amqps://` works too), and
//! channels with the default callbacks.

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::Connection;
use cloudbus::transport::amqp::connection_arguments;

/// Opens a connection to the broker at `url` (`amqp://user:pass@host:port/vhost`).
pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    let args = connection_arguments(url, None, "cloudbus bench (raw baseline)")?;
    let conn = Connection::open(&args).await?;
    conn.register_callback(DefaultConnectionCallback).await?;
    Ok(conn)
}

/// Opens a channel that answers the broker's flow and cancel requests.
pub async fn channel(conn: &Connection) -> anyhow::Result<Channel> {
    let channel = conn.open_channel(None).await?;
    channel.register_callback(DefaultChannelCallback).await?;
    Ok(channel)
}
