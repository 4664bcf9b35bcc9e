//! A TCP proxy between a node and the broker that a test can cut, stall
//! and restore at will: the deterministic way to lose a connection.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

struct State {
    /// New connections are refused.
    down: bool,
    /// Bytes stop flowing towards the broker while connections stay open.
    stalled_up: watch::Sender<bool>,
    /// Bytes stop flowing from the broker while connections stay open.
    stalled_down: watch::Sender<bool>,
    links: Vec<AbortHandle>,
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            down: false,
            stalled_up: watch::Sender::new(false),
            stalled_down: watch::Sender::new(false),
            links: Vec::new(),
        }));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (up, down) = {
                        let state = state.lock().unwrap();
                        if state.down {
                            drop(client); // refused: the broker is "unreachable"
                            continue;
                        }
                        (state.stalled_up.subscribe(), state.stalled_down.subscribe())
                    };
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, up),
                            pump(server_read, client_write, down),
                        );
                    });
                    state.lock().unwrap().links.push(link.abort_handle());
                }
            }
        });
        Proxy { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.down = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    /// Keeps every connection open but lets no byte through: a network
    /// that silently stops delivering.
    pub fn stall(&self) {
        let state = self.state.lock().unwrap();
        state.stalled_up.send_replace(true);
        state.stalled_down.send_replace(true);
    }

    /// Lets bytes through to the broker but none back: what the node sends
    /// arrives, the broker's answers (confirms, deliveries) do not.
    pub fn stall_downstream(&self) {
        self.state.lock().unwrap().stalled_down.send_replace(true);
    }

    /// Accepts connections and moves bytes again.
    pub fn restore(&self) {
        let mut state = self.state.lock().unwrap();
        state.down = false;
        state.stalled_up.send_replace(false);
        state.stalled_down.send_replace(false);
    }
}

/// Copies one direction, holding bytes back while stalled.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
