//! The HTTP recycler: one request (e.g. Mattermost `POST /api/v4/database/recycle`) with an optional
//! bearer token; any 2xx is success.

use std::time::Duration;

use async_trait::async_trait;

use super::{Env, NewPrimary};
use crate::{crd::HttpRecycler, probe::http::redact, secrets::Secrets};

/// The HTTP recycler of `spec.recycle[i].http`.
pub struct Http {
    index: usize,
    spec: HttpRecycler,
    client: reqwest::Client,
    secrets: Secrets,
    timeout: Duration,
}

impl Http {
    pub fn new(index: usize, spec: &HttpRecycler, env: &Env) -> Http {
        Http {
            index,
            spec: spec.clone(),
            client: env.http.clone(),
            secrets: env.secrets.clone(),
            timeout: env.timeout,
        }
    }

    fn field(&self) -> String {
        format!("spec.recycle[{}].http", self.index)
    }
}

#[async_trait]
impl super::Recycler for Http {
    fn describe(&self) -> String {
        format!("{} {}", self.spec.method, redact(&self.spec.url))
    }

    async fn recycle(&self, _to: &NewPrimary<'_>) -> Result<String, super::Error> {
        let field = self.field();
        let token = match &self.spec.token_secret {
            Some(t) => Some(self.secrets.get(&t.name, &["token"], &format!("{field}.tokenSecret")).await?),
            None => None,
        };
        call(&self.client, &self.spec, token.as_ref().map(|t| t.value("token")), self.timeout)
            .await
            .map_err(|source| super::Error::Http { field, source })?;
        Ok(self.describe())
    }

    /// The endpoint accepts TCP connections (nothing is sent: a call would recycle).
    async fn check(&self) -> Result<(), super::Error> {
        let url = redact(&self.spec.url);
        let Some((host, port)) = reqwest::Url::parse(&self.spec.url)
            .ok()
            .and_then(|u| Some((u.host_str()?.to_string(), u.port_or_known_default()?)))
        else {
            return Err(super::Error::HttpNoHost { field: self.field(), url });
        };
        match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(super::Error::HttpUnreachable { field: self.field(), url }),
        }
    }
}

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
