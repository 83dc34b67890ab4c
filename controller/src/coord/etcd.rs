//! The etcd witness: epoch compare-and-swap. Only this module talks to etcd.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};

use super::{decode_epoch, encode_epoch, Swap};

/// Why the witness could not decide.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to the etcd witness at {endpoints}: {reason}")]
    Connect { endpoints: String, reason: String },
    #[error("etcd witness transaction on {key}: {reason}")]
    Txn { key: String, reason: String },
}

/// A connection to the witness for one pair.
pub struct Witness {
    client: Client,
    key: String,
}

impl Witness {
    /// Connects within `timeout`. `prefix`/`namespace`/`name` make the pair's key space.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Witness, Error> {
        let opts = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout);
        let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| Error::Connect {
                endpoints: endpoints.join(","),
                reason: format!("no answer within {timeout:?}"),
            })?
            .map_err(|e| Error::Connect { endpoints: endpoints.join(","), reason: e.to_string() })?;
        let key = format!("{}/{namespace}/{name}/epoch", prefix.trim_end_matches('/'));
        Ok(Witness { client, key })
    }

    /// The epoch etcd holds (0 when the key does not exist yet).
    pub async fn epoch(&mut self) -> Result<(i64, String, String), Error> {
        let resp = self
            .client
            .get(self.key.as_str(), None)
            .await
            .map_err(|e| Error::Txn { key: self.key.clone(), reason: e.to_string() })?;
        Ok(resp.kvs().first().and_then(|kv| kv.value_str().ok()).and_then(decode_epoch).unwrap_or((
            0,
            String::new(),
            String::new(),
        )))
    }

    /// Moves the epoch from `from` to `from + 1` for `holder`'s transition `transition`, in one
    /// transaction: compare the current value (or absence, when `from` is 0), then put. A retry of
    /// the same transition after a crash finds its own value and counts as won.
    pub async fn swap(&mut self, from: i64, holder: &str, transition: &str) -> Result<Swap, Error> {
        let to = from + 1;
        let new = encode_epoch(to, holder, transition);
        let (cur_epoch, cur_holder, cur_transition) = self.epoch().await?;
        if cur_epoch == to && cur_holder == holder && cur_transition == transition {
            return Ok(Swap::Won);
        }
        if cur_epoch != from {
            return Ok(Swap::Lost { epoch: cur_epoch, holder: cur_holder });
        }
        let cmp = if from == 0 && cur_holder.is_empty() {
            Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                self.key.as_str(),
                CompareOp::Equal,
                encode_epoch(from, &cur_holder, &cur_transition),
            )
        };
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(self.key.as_str(), new, None)]);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(|e| Error::Txn { key: self.key.clone(), reason: e.to_string() })?;
        if resp.succeeded() {
            return Ok(Swap::Won);
        }
        let (epoch, holder, _) = self.epoch().await?;
        Ok(Swap::Lost { epoch, holder })
    }
}
