//! Reading referenced Secrets. Errors name the Secret and the key and say how to fix it; they never
//! carry a value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// Why a referenced Secret could not be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} (referenced by {field}) not found: create it with keys {keys}")]
    Missing { namespace: String, name: String, field: String, keys: String },
    #[error("Secret {namespace}/{name} (referenced by {field}) has no key {key:?}: add it")]
    KeyMissing { namespace: String, name: String, field: String, key: String },
    #[error("Secret {namespace}/{name} key {key:?} (referenced by {field}) is not UTF-8 text")]
    NotText { namespace: String, name: String, field: String, key: String },
    #[error("reading Secret {namespace}/{name} (referenced by {field}): {reason}")]
    Api { namespace: String, name: String, field: String, reason: String },
}

impl SecretError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        use crate::crd::conditions::reasons;
        match self {
            SecretError::Missing { .. } | SecretError::Api { .. } => reasons::SECRET_MISSING,
            SecretError::KeyMissing { .. } | SecretError::NotText { .. } => reasons::SECRET_KEY_MISSING,
        }
    }
}

/// A Secret's data as text, keyed by data key. Deliberately not `Debug`: it holds credentials.
pub struct SecretData(BTreeMap<String, String>);

/// Reads Secrets of one namespace.
#[derive(Clone)]
pub struct Secrets {
    api: Api<Secret>,
    namespace: String,
}

impl Secrets {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), namespace: namespace.to_string() }
    }

    /// Fetches Secret `name` and checks that it has every key in `keys`; `field` is the spec path
    /// that references it, for the error message.
    pub async fn get(&self, name: &str, keys: &[&str], field: &str) -> Result<SecretData, SecretError> {
        let secret = self.fetch(name).await.map_err(|e| SecretError::Api {
            namespace: self.namespace.clone(),
            name: name.into(),
            field: field.into(),
            reason: short_api_error(&e),
        })?;
        let Some(secret) = secret else {
            return Err(SecretError::Missing {
                namespace: self.namespace.clone(),
                name: name.into(),
                field: field.into(),
                keys: keys.join(", "),
            });
        };
        let mut out = BTreeMap::new();
        let data = secret.data.unwrap_or_default();
        let string_data = secret.string_data.unwrap_or_default();
        for key in keys {
            let value = match (data.get(*key), string_data.get(*key)) {
                (Some(bytes), _) => String::from_utf8(bytes.0.clone()).map_err(|_| SecretError::NotText {
                    namespace: self.namespace.clone(),
                    name: name.into(),
                    field: field.into(),
                    key: (*key).into(),
                })?,
                (None, Some(s)) => s.clone(),
                (None, None) => {
                    return Err(SecretError::KeyMissing {
                        namespace: self.namespace.clone(),
                        name: name.into(),
                        field: field.into(),
                        key: (*key).into(),
                    })
                }
            };
            out.insert((*key).to_string(), value);
        }
        Ok(SecretData(out))
    }
}

/// How long a read Secret (or its absence) is reused. Every pair reads several Secrets on every
/// probe round; without this, a thousand pairs probing every second cost thousands of API reads a
/// second (measured by `make bench`). A rotated credential or a newly created Secret is seen within
/// this time.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

type Cache =
    std::sync::Mutex<std::collections::HashMap<(String, String), (std::time::Instant, Option<Secret>)>>;

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// One lock per Secret being read: when a cached Secret expires, the hundreds of pairs that read it
/// in the same second wait for one API read instead of each sending its own.
type Inflight =
    std::sync::Mutex<std::collections::HashMap<(String, String), std::sync::Arc<tokio::sync::Mutex<()>>>>;

fn inflight() -> &'static Inflight {
    static INFLIGHT: std::sync::OnceLock<Inflight> = std::sync::OnceLock::new();
    INFLIGHT.get_or_init(Default::default)
}

/// The cached Secret `key`, when it is fresh.
fn cached(key: &(String, String)) -> Option<Option<Secret>> {
    let c = cache().lock().ok()?;
    c.get(key).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, s)| s.clone())
}

impl Secrets {
    async fn fetch(&self, name: &str) -> Result<Option<Secret>, kube::Error> {
        let key = (self.namespace.clone(), name.to_string());
        if let Some(s) = cached(&key) {
            return Ok(s);
        }
        let lock = match inflight().lock() {
            Ok(mut m) => {
                if m.len() > 50_000 {
                    m.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
                }
                m.entry(key.clone()).or_default().clone()
            }
            Err(_) => Default::default(),
        };
        let _reading = lock.lock().await;
        // Another round read it while this one waited.
        if let Some(s) = cached(&key) {
            return Ok(s);
        }
        let s = self.api.get_opt(name).await?;
        if let Ok(mut c) = cache().lock() {
            if c.len() > 50_000 {
                c.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            }
            c.insert(key, (std::time::Instant::now(), s.clone()));
        }
        Ok(s)
    }

    /// Forgets every cached Secret of this namespace (an explicit request such as a dry-run deserves
    /// fresh reads).
    pub fn invalidate_all(&self) {
        if let Ok(mut c) = cache().lock() {
            c.retain(|(ns, _), _| *ns != self.namespace);
        }
    }

    /// Forgets a cached Secret (after understudy itself rewrote it).
    pub fn invalidate(&self, name: &str) {
        if let Ok(mut c) = cache().lock() {
            c.remove(&(self.namespace.clone(), name.to_string()));
        }
    }
}

impl SecretData {
    /// The value of a key that `Secrets::get` checked.
    pub fn value(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or_default()
    }
}

/// An API error as a short string without request bodies (which could echo data back).
pub fn short_api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        other => other.to_string().chars().take(200).collect(),
    }
}
