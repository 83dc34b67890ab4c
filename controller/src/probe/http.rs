//! The HTTP health probe: GET each URL; the site passes when every check answers 2xx in time.

use std::time::Duration;

use super::Outcome;
use crate::crd::HttpCheck;

/// Runs every check of a site; the first failure is reported.
pub async fn probe(client: &reqwest::Client, checks: &[HttpCheck], timeout: Duration) -> Outcome<()> {
    for check in checks {
        let res = client.get(&check.url).timeout(timeout).send().await;
        match res {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => return Outcome::Down(format!("GET {} answered {}", redact(&check.url), r.status())),
            Err(e) if e.is_timeout() => {
                return Outcome::Down(format!(
                    "GET {}: no answer within {}ms",
                    redact(&check.url),
                    timeout.as_millis()
                ))
            }
            Err(e) => {
                use std::error::Error as _;
                let cause = e.source().map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
                return Outcome::Down(format!("GET {}: {}", redact(&check.url), cause));
            }
        }
    }
    Outcome::Up(())
}

/// The URL without user info or query string, which may carry credentials.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_credentials_and_query() {
        assert_eq!(
            redact("https://u:p@chat.example.com/api/v4/system/ping?token=x"),
            "https://chat.example.com/api/v4/system/ping"
        );
        assert_eq!(redact("not a url"), "<invalid url>");
    }
}
