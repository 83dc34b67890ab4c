//! DataSource targets: where the application reads its DSN. A rewrite is planned in full first (every
//! target read, every pointer resolved, every new document computed) and only then written, so a
//! bad target fails the step before anything changed. Writes use the object's `resourceVersion`
//! (optimistic lock) and stamp the epoch annotation; an object already stamped with a higher epoch
//! is never overwritten, so a stale leader's late write is refused.

pub mod jsonptr;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    ByteString,
};
use kube::{api::PostParams, Api, Client};

use crate::{
    crd::{DisasterRecoveryPairSpec, EPOCH_ANNOTATION},
    secrets::{short_api_error, Secrets},
};

/// Why a DataSource target cannot be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Target { field: String, reason: String },
    #[error(
        "{field}: {kind} {name} carries epoch {held}, newer than ours ({ours}); a newer transition owns it"
    )]
    Stale { field: String, kind: &'static str, name: String, held: i64, ours: i64 },
}

/// One planned write.
pub enum Write {
    Secret { field: String, object: Box<Secret> },
    ConfigMap { field: String, object: Box<ConfigMap> },
}

/// Reads every target and computes its new content for `site` at `epoch`. Targets already right are
/// left out, so an empty plan means "nothing to do".
pub async fn plan(
    client: &Client,
    ns: &str,
    spec: &DisasterRecoveryPairSpec,
    site: &str,
    epoch: i64,
) -> Result<Vec<Write>, Error> {
    if spec.data_source.is_empty() {
        return Ok(vec![]);
    }
    let (idx, s) = spec.sites.iter().enumerate().find(|(_, s)| s.name == site).ok_or_else(|| {
        Error::Target { field: "spec.sites".into(), reason: format!("no site named {site}") }
    })?;
    let dsn_ref = s.data_source_secret.as_ref().ok_or_else(|| Error::Target {
        field: format!("spec.sites[{idx}].dataSourceSecret"),
        reason: format!("site {site} has no dataSourceSecret but spec.dataSource lists targets; add the Secret holding {site}'s DSN"),
    })?;
    let secrets = Secrets::new(client.clone(), ns);
    let dsn = secrets
        .get(&dsn_ref.name, &[&dsn_ref.key], &format!("spec.sites[{idx}].dataSourceSecret"))
        .await
        .map_err(|e| Error::Target {
            field: format!("spec.sites[{idx}].dataSourceSecret"),
            reason: e.to_string(),
        })?
        .value(&dsn_ref.key)
        .to_string();

    let mut writes = Vec::new();
    for (i, target) in spec.data_source.iter().enumerate() {
        if let Some(k) = &target.secret_key {
            let field = format!("spec.dataSource[{i}].secretKey");
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            let mut obj = api.get_opt(&k.name).await.map_err(|e| api_err(&field, &e))?.ok_or_else(|| {
                Error::Target {
                    field: field.clone(),
                    reason: format!(
                        "Secret {ns}/{} not found: create it (the key {:?} is written by understudy)",
                        k.name, k.key
                    ),
                }
            })?;
            check_epoch(&field, "Secret", &k.name, obj.metadata.annotations.as_ref(), epoch)?;
            let data = obj.data.get_or_insert_with(BTreeMap::new);
            if data.get(&k.key).map(|v| v.0.as_slice()) == Some(dsn.as_bytes()) {
                continue;
            }
            data.insert(k.key.clone(), ByteString(dsn.as_bytes().to_vec()));
            stamp(&mut obj.metadata, epoch);
            writes.push(Write::Secret { field, object: Box::new(obj) });
        }
        if let Some(c) = &target.config_map_key {
            let field = format!("spec.dataSource[{i}].configMapKey");
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let mut obj = api.get_opt(&c.name).await.map_err(|e| api_err(&field, &e))?.ok_or_else(|| {
                Error::Target { field: field.clone(), reason: format!("ConfigMap {ns}/{} not found", c.name) }
            })?;
            check_epoch(&field, "ConfigMap", &c.name, obj.metadata.annotations.as_ref(), epoch)?;
            let doc = obj.data.as_ref().and_then(|d| d.get(&c.key)).ok_or_else(|| Error::Target {
                field: format!("{field}.key"),
                reason: format!("ConfigMap {ns}/{} has no key {:?}", c.name, c.key),
            })?;
            let mut new_doc =
                jsonptr::splice(doc, &c.json_pointer, &serde_json::Value::String(dsn.clone())).map_err(
                    |e| Error::Target { field: format!("{field}.jsonPointer"), reason: e.to_string() },
                )?;
            for (j, ps) in c.per_site.iter().enumerate() {
                let Some(text) = ps.values.get(site) else { continue };
                let vfield = format!("{field}.perSite[{j}].values.{site}");
                let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Target {
                    field: vfield.clone(),
                    reason: format!("not a JSON value ({e}); quote strings, e.g. '\"x\"'"),
                })?;
                new_doc = jsonptr::splice(&new_doc, &ps.json_pointer, &value).map_err(|e| Error::Target {
                    field: format!("{field}.perSite[{j}].jsonPointer"),
                    reason: e.to_string(),
                })?;
            }
            if &new_doc == doc {
                continue;
            }
            obj.data.get_or_insert_with(BTreeMap::new).insert(c.key.clone(), new_doc);
            stamp(&mut obj.metadata, epoch);
            writes.push(Write::ConfigMap { field, object: Box::new(obj) });
        }
    }
    Ok(writes)
}

/// Writes a plan. Each write carries the `resourceVersion` it was planned from: a concurrent change
/// makes it fail (409) and the step is planned again.
pub async fn apply(client: &Client, ns: &str, writes: Vec<Write>) -> Result<usize, Error> {
    let n = writes.len();
    for w in writes {
        match w {
            Write::Secret { field, object } => {
                let name = object.metadata.name.clone().unwrap_or_default();
                Secrets::new(client.clone(), ns).invalidate(&name);
                Api::<Secret>::namespaced(client.clone(), ns)
                    .replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| api_err(&field, &e))?;
            }
            Write::ConfigMap { field, object } => {
                let name = object.metadata.name.clone().unwrap_or_default();
                Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| api_err(&field, &e))?;
            }
        }
    }
    Ok(n)
}

fn api_err(field: &str, e: &kube::Error) -> Error {
    Error::Target { field: field.into(), reason: short_api_error(e) }
}

fn check_epoch(
    field: &str,
    kind: &'static str,
    name: &str,
    annotations: Option<&BTreeMap<String, String>>,
    ours: i64,
) -> Result<(), Error> {
    let held =
        annotations.and_then(|a| a.get(EPOCH_ANNOTATION)).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    if held > ours {
        return Err(Error::Stale { field: field.into(), kind, name: name.into(), held, ours });
    }
    Ok(())
}

fn stamp(meta: &mut kube::api::ObjectMeta, epoch: i64) {
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(EPOCH_ANNOTATION.into(), epoch.to_string());
    meta.managed_fields = None;
}
