//! A real axum server on 127.0.0.1 for the server-layer tests: `AxumServer::start(router)`
//! serves `router` (with `ConnectInfo<SocketAddr>`) on an ephemeral port until dropped.
//!
//! Needs the `axum` dev-dependency, which the layer crates do not have, so it is not in
//! `mod.rs`: include it with `#[path = "common/axum.rs"] mod axum_server;`.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running axum server. Dropping it shuts it down gracefully.
pub struct AxumServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl AxumServer {
    /// Serves `router` on `127.0.0.1:0`.
    pub async fn start(router: ::axum::Router) -> AxumServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = ::axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        AxumServer {
            addr,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for AxumServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
