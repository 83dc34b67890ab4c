//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process and its leader
//! loop are alive) and `/readyz` (the controller's watch has started). Plain HTTP/1.1, one request
//! per connection, no request bodies: small enough to read in one sitting.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Flags the endpoints report.
#[derive(Clone, Default)]
pub struct Health {
    pub ready: Arc<AtomicBool>,
    pub alive: Arc<AtomicBool>,
}

/// Serves on a bound listener until the process exits.
pub async fn serve(listener: TcpListener, metrics: Metrics, health: Health) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin endpoint listening");
    }
    loop {
        let (mut sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "admin accept");
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
                "/healthz" if health.alive.load(Ordering::SeqCst) => ("200 OK", "text/plain", "ok\n".into()),
                "/healthz" => ("503 Service Unavailable", "text/plain", "leader loop stopped\n".into()),
                "/readyz" if health.ready.load(Ordering::SeqCst) => ("200 OK", "text/plain", "ok\n".into()),
                "/readyz" => ("503 Service Unavailable", "text/plain", "not ready\n".into()),
                _ => ("404 Not Found", "text/plain", "not found\n".into()),
            };
            let head = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
