//! The clusters: one client per kubeconfig context, each read with its own short timeout so that a
//! cluster that does not answer is shown as unreachable instead of failing the whole command.

use std::time::{Duration, Instant};

use kube::{
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use understudy::crd::DisasterRecoveryPair;

use crate::{
    exit::{Exit, Failure},
    Global,
};

/// One cluster, as a context names it.
#[derive(Clone)]
pub struct Cluster {
    pub context: String,
    pub namespace: String,
    pub api: Api<DisasterRecoveryPair>,
    pub client: Client,
    pub timeout: Duration,
}

/// What one cluster answered.
#[derive(Clone)]
pub struct Read {
    pub context: String,
    pub namespace: String,
    /// `Ok(None)`: the cluster answered that there is no such pair.
    pub pair: Result<Option<DisasterRecoveryPair>, String>,
    pub took: Duration,
}

impl Read {
    pub fn found(&self) -> Option<&DisasterRecoveryPair> {
        self.pair.as_ref().ok().and_then(Option::as_ref)
    }
}

/// Clients for the given contexts (the current context when none is given).
pub async fn connect(g: &Global) -> Result<Vec<Cluster>, Failure> {
    let kc = match &g.kubeconfig {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    }
    .map_err(|e| Failure::new(Exit::Unreachable, format!("cannot read the kubeconfig: {e}")))?;
    let contexts = if g.contexts.is_empty() {
        vec![kc.current_context.clone().ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                "the kubeconfig has no current context: pass --context (one per cluster)",
            )
        })?]
    } else {
        g.contexts.clone()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for context in contexts {
        if !seen.insert(context.clone()) {
            return Err(Failure::new(Exit::Usage, format!("--context {context} is given twice")));
        }
        if !kc.contexts.iter().any(|c| c.name == context) {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "the kubeconfig has no context {context:?}; it has: {}",
                    kc.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let opts = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
        let mut cfg = Config::from_custom_kubeconfig(kc.clone(), &opts)
            .await
            .map_err(|e| Failure::new(Exit::Unreachable, format!("context {context}: {e}")))?;
        cfg.connect_timeout = Some(g.request_timeout);
        cfg.read_timeout = Some(g.request_timeout);
        cfg.write_timeout = Some(g.request_timeout);
        let namespace = g.namespace.clone().unwrap_or_else(|| cfg.default_namespace.clone());
        let client = Client::try_from(cfg)
            .map_err(|e| Failure::new(Exit::Unreachable, format!("context {context}: {e}")))?;
        out.push(Cluster {
            api: Api::namespaced(client.clone(), &namespace),
            client,
            context,
            namespace,
            timeout: g.request_timeout,
        });
    }
    Ok(out)
}

impl Cluster {
    /// The pair in this cluster, within the timeout.
    pub async fn read(&self, name: &str) -> Read {
        let t0 = Instant::now();
        let pair = match tokio::time::timeout(self.timeout, self.api.get_opt(name)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(short_error(&e)),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        Read { context: self.context.clone(), namespace: self.namespace.clone(), pair, took: t0.elapsed() }
    }

    /// Sets (`Some`) or removes (`None`) annotations with a merge patch.
    pub async fn annotate(&self, name: &str, kv: &[(&str, Option<&str>)]) -> Result<(), String> {
        let ann: serde_json::Map<String, serde_json::Value> = kv
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.map_or(serde_json::Value::Null, Into::into)))
            .collect();
        let patch = serde_json::json!({ "metadata": { "annotations": ann } });
        let pp = PatchParams::default();
        match tokio::time::timeout(self.timeout, self.api.patch(name, &pp, &Patch::Merge(&patch))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(short_error(&e)),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// Reads the pair from every cluster at once.
pub async fn read_all(clusters: &[Cluster], name: &str) -> Vec<Read> {
    futures::future::join_all(clusters.iter().map(|c| c.read(name))).await
}

fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => {
            // The innermost cause says what happened (connection refused, certificate, DNS).
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg = s.to_string();
                src = s.source();
            }
            msg
        }
    }
}
