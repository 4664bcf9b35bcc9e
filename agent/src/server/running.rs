//! An agent serving on its own listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Agent, Shared};
use crate::stats::AgentStats;

/// An agent accepting connections; stop it with [`RunningAgent::shutdown`].
pub struct RunningAgent {
    addr: SocketAddr,
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
        let listener = listener.tap_io(move |tcp| {
            counted.stats.connections.increment();
            // Commands and callbacks are small: send them at once.
            let _ = tcp.set_nodelay(true);
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, self.router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        RunningAgent {
            addr,
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

    /// The base URL management nodes send commands to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
