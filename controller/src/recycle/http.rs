//! The HTTP recycler: one request (e.g. Mattermost `POST /api/v4/database/recycle`) with an optional
//! bearer token; any 2xx is success.

use std::time::Duration;

use crate::{crd::HttpRecycler, probe::http::redact};

/// A failed call; the URL is redacted and the token never appears.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {reason}")]
pub struct Error {
    pub method: String,
    pub url: String,
    pub reason: String,
}

/// Sends the request.
pub async fn call(
    client: &reqwest::Client,
    r: &HttpRecycler,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(), Error> {
    let fail = |reason: String| Error { method: r.method.clone(), url: redact(&r.url), reason };
    let method =
        reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|_| fail("invalid method".into()))?;
    let mut req = client.request(method, &r.url).timeout(timeout);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| {
        use std::error::Error as _;
        fail(e.source().map(|s| s.to_string()).unwrap_or_else(|| {
            if e.is_timeout() {
                "timed out".into()
            } else {
                "request failed".into()
            }
        }))
    })?;
    if !resp.status().is_success() {
        return Err(fail(format!("answered {}", resp.status())));
    }
    Ok(())
}
