//! A black-holed endpoint: accepts TCP connections on 127.0.0.1 and never reads nor answers
//! (the connections stay open until it is dropped). It counts the connections it accepted, the
//! only thing a client can make it see.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The running black hole. Dropping it stops accepting (accepted connections end with the
/// runtime).
pub struct BlackHole {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<Notify>,
}

impl BlackHole {
    /// Binds an ephemeral port and starts accepting.
    pub async fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(Notify::new());
        let (count, stopped) = (accepted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    connection = listener.accept() => {
                        if let Ok((stream, _)) = connection {
                            count.fetch_add(1, Ordering::SeqCst);
                            held.push(stream);
                        }
                    }
                    _ = stopped.notified() => return,
                }
            }
        });
        BlackHole {
            addr,
            accepted,
            stop,
        }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}
