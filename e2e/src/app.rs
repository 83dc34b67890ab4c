//! A stand-in for the application's HTTP side (Mattermost is not installable here): it answers
//! `GET /api/v4/system/ping` like Mattermost does, and counts `POST /api/v4/database/recycle` calls
//! that carry the expected bearer token. Plain HTTP/1.1 on loopback, one request per connection.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// A running app endpoint.
pub struct App {
    pub port: u16,
    /// Recycle calls with the right token.
    pub recycles: Arc<AtomicU64>,
    /// Recycle calls with a missing or wrong token (answered 401).
    pub unauthorized: Arc<AtomicU64>,
    /// When false, the ping answers 503.
    pub healthy: Arc<AtomicBool>,
    token: String,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn start(token: &str) -> Result<App> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (recycles, unauthorized, healthy) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
        let task = serve(listener, &recycles, &unauthorized, &healthy, token);
        Ok(App { port, token: token.into(), recycles, unauthorized, healthy, task })
    }

    /// Stops listening (connections are refused, as on a lost host) until `restart`.
    pub fn stop(&mut self) {
        self.task.abort();
    }

    /// Listens again on the same port, with the same counters.
    pub async fn restart(&mut self) -> Result<()> {
        self.task.abort();
        let task_done = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task_done.await;
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await?;
        self.task = serve(listener, &self.recycles, &self.unauthorized, &self.healthy, &self.token);
        Ok(())
    }
}

fn serve(
    listener: TcpListener,
    recycles: &Arc<AtomicU64>,
    unauthorized: &Arc<AtomicU64>,
    healthy: &Arc<AtomicBool>,
    token: &str,
) -> tokio::task::JoinHandle<()> {
    let (r, u, h, token) =
        (recycles.clone(), unauthorized.clone(), healthy.clone(), format!("Bearer {token}"));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (r, u, h, token) = (r.clone(), u.clone(), h.clone(), token.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let first = req.lines().next().unwrap_or_default().to_string();
                let auth = req.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_string())
                });
                let (code, body) = if first.starts_with("GET /api/v4/system/ping") {
                    if h.load(Ordering::SeqCst) {
                        ("200 OK", r#"{"status":"OK"}"#)
                    } else {
                        ("503 Service Unavailable", r#"{"status":"UNHEALTHY"}"#)
                    }
                } else if first.starts_with("POST /api/v4/database/recycle") {
                    if auth.as_deref() == Some(token.as_str()) {
                        r.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", r#"{"status":"OK"}"#)
                    } else {
                        u.fetch_add(1, Ordering::SeqCst);
                        ("401 Unauthorized", r#"{"id":"api.context.session_expired.app_error"}"#)
                    }
                } else {
                    ("404 Not Found", "{}")
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    })
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}
