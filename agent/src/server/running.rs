//! An agent serving on its own listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Agent, Shared};
use crate::stats::AgentStats;
use crate::tls::TlsListener;

/// An agent accepting connections; stop it with [`RunningAgent::shutdown`].
pub struct RunningAgent {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<io::Result<()>>,
}

impl Agent {
    /// Listens on `addr` (port 0 picks a free one) and serves in the
    /// background.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<RunningAgent> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.serve(listener))
    }

    /// Serves on a listener the caller already bound.
    pub fn serve(self, listener: TcpListener) -> RunningAgent {
        let addr = listener
            .local_addr()
            .expect("a bound TCP listener has an address");
        let shared = Arc::clone(&self.shared);
        let counted = Arc::clone(&self.shared);
        let on_connect = move |tcp: &TcpStream| {
            counted.stats.connections.increment();
            // Commands and callbacks are small: send them at once.
            let _ = tcp.set_nodelay(true);
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let tls = self.tls.is_some();
        let server = match self.tls {
            Some(config) => {
                let listener = TlsListener::new(listener, config, on_connect)
                    .expect("a bound TCP listener has an address");
                tokio::spawn(async move {
                    axum::serve(listener, self.router)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
            None => {
                let listener = listener.tap_io(move |tcp| on_connect(tcp));
                tokio::spawn(async move {
                    axum::serve(listener, self.router)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
        };
        RunningAgent {
            addr,
            tls,
            shared,
            stop: Some(stop),
            server,
        }
    }
}

impl RunningAgent {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL management nodes send commands to: `https://` when
    /// the agent serves TLS (by IP address: a certificate for it must
    /// name that address, or use the host name it was issued for).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// What the agent has done so far; clone it to read it after shutdown.
    pub fn stats(&self) -> &Arc<AgentStats> {
        &self.shared.stats
    }

    /// Stops accepting, answers the requests in progress, and waits for
    /// commands accepted for callback to finish and call back.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.server).await;
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        served.map_err(io::Error::other)?
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.server.abort();
    }
}
