//! DataSource targets: where the application reads its DSN. A rewrite is planned in full first (every
//! target read, every pointer resolved, every new document computed, targets in one object merged),
//! then proven with a server-side dry run of every write, and only then written, so a target that
//! would be refused fails the step before anything changed. Writes use the object's `resourceVersion`
//! (optimistic lock) and stamp the epoch annotation; an object already stamped with a higher epoch
//! is never overwritten, so a stale leader's late write is refused.

pub mod jsonptr;

use std::collections::BTreeMap;

use async_trait::async_trait;
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
    /// The target, its document or its Secret must be fixed (missing, no such key, a pointer
    /// that does not resolve, too large, refused by validation or RBAC).
    #[error("{field}: {reason}")]
    Target { field: String, reason: String },
    /// The API server did not answer, or the object changed while being rewritten.
    #[error("{field}: {reason}")]
    Api { field: String, reason: String },
    #[error(
        "{field}: {kind} {name} carries epoch {held}, newer than ours ({ours}); a newer transition owns it"
    )]
    Stale { field: String, kind: &'static str, name: String, held: i64, ours: i64 },
}

/// The DataSource port: points every `spec.dataSource` target at a site's DSN.
#[async_trait]
pub trait DataSourceWriter: Send + Sync {
    /// Plans, proves (dry run) and writes the rewrite of every target to `site` at `epoch`.
    async fn rewrite(
        &self,
        spec: &DisasterRecoveryPairSpec,
        site: &str,
        epoch: i64,
    ) -> Result<Rewrite, RewriteError>;
}

/// What a rewrite did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// `spec.dataSource` lists no target.
    NoTargets,
    /// Every target already pointed at the site.
    AlreadyRight,
    /// `objects` objects holding `targets` targets were written.
    Rewrote { objects: usize, targets: usize },
}

/// Why a rewrite stopped.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// Planning or the dry run refused a target: nothing was written.
    #[error("nothing was written: {0}")]
    NothingWritten(Error),
    /// A write failed after the dry run (a concurrent change): planned again on the next attempt.
    #[error(transparent)]
    Write(Error),
}

impl RewriteError {
    /// The target's own error.
    pub fn target(&self) -> &Error {
        match self {
            RewriteError::NothingWritten(e) | RewriteError::Write(e) => e,
        }
    }
}

/// The real DataSource writer: `plan`, `check`, `apply` against the API server.
pub struct KubeDataSource {
    pub client: Client,
    pub ns: String,
    /// The controller's site: it writes its own site's targets and the shared ones.
    pub here: Option<String>,
}

#[async_trait]
impl DataSourceWriter for KubeDataSource {
    async fn rewrite(
        &self,
        spec: &DisasterRecoveryPairSpec,
        site: &str,
        epoch: i64,
    ) -> Result<Rewrite, RewriteError> {
        if spec.data_source.is_empty() {
            return Ok(Rewrite::NoTargets);
        }
        let plan = plan(&self.client, &self.ns, spec, site, epoch, self.here.as_deref())
            .await
            .map_err(RewriteError::NothingWritten)?;
        if plan.is_empty() {
            return Ok(Rewrite::AlreadyRight);
        }
        check(&self.client, &self.ns, &plan).await.map_err(RewriteError::NothingWritten)?;
        let objects = apply(&self.client, &self.ns, plan).await.map_err(RewriteError::Write)?;
        let targets = spec
            .data_source
            .iter()
            .filter(|t| crate::crd::acts_here(t.site.as_deref(), self.here.as_deref()))
            .count();
        Ok(Rewrite::Rewrote { objects, targets })
    }
}

/// One planned write: a whole object, with the spec fields of every target it carries.
pub enum Write {
    Secret { field: String, object: Box<Secret> },
    ConfigMap { field: String, object: Box<ConfigMap> },
}

impl Write {
    fn field(&self) -> &str {
        match self {
            Write::Secret { field, .. } | Write::ConfigMap { field, .. } => field,
        }
    }
}

/// Kubernetes refuses a Secret or ConfigMap whose data adds up to more than this (`1 MiB`).
pub const MAX_OBJECT_DATA: usize = 1 << 20;

/// Reads every target and computes its new content for `site` at `epoch`. Targets in the same
/// object are merged into one write (a Secret's keys, a ConfigMap key's pointers), so a failover
/// never races itself on one object; objects already right are left out, so an empty plan means
/// "nothing to do". Nothing is written here; `check` then proves the plan acceptable.
pub async fn plan(
    client: &Client,
    ns: &str,
    spec: &DisasterRecoveryPairSpec,
    site: &str,
    epoch: i64,
    here: Option<&str>,
) -> Result<Vec<Write>, Error> {
    if !spec.data_source.iter().any(|t| crate::crd::acts_here(t.site.as_deref(), here)) {
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
        .map_err(|e| {
            let (field, reason) = (format!("spec.sites[{idx}].dataSourceSecret"), e.to_string());
            match e {
                crate::secrets::SecretError::Api { .. } => Error::Api { field, reason },
                _ => Error::Target { field, reason },
            }
        })?
        .value(&dsn_ref.key)
        .to_string();

    // Objects in the order their first target appears; each read once.
    let mut secret_objs: Vec<(String, Vec<String>, Secret, bool)> = Vec::new(); // (name, fields, object, changed)
    let mut cm_objs: Vec<(String, Vec<String>, ConfigMap, bool)> = Vec::new();
    for (i, target) in spec.data_source.iter().enumerate() {
        if !crate::crd::acts_here(target.site.as_deref(), here) {
            continue;
        }
        if let Some(k) = &target.secret_key {
            let field = format!("spec.dataSource[{i}].secretKey");
            let at = match secret_objs.iter().position(|(n, ..)| *n == k.name) {
                Some(at) => at,
                None => {
                    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
                    let obj =
                        api.get_opt(&k.name).await.map_err(|e| api_err(&field, &e))?.ok_or_else(|| {
                            Error::Target {
                                field: field.clone(),
                                reason: format!(
                                "Secret {ns}/{} not found: create it (the key {:?} is written by understudy)",
                                k.name, k.key
                            ),
                            }
                        })?;
                    check_epoch(&field, "Secret", &k.name, obj.metadata.annotations.as_ref(), epoch)?;
                    secret_objs.push((k.name.clone(), vec![], obj, false));
                    secret_objs.len() - 1
                }
            };
            let (_, fields, obj, changed) = &mut secret_objs[at];
            fields.push(field);
            let data = obj.data.get_or_insert_with(BTreeMap::new);
            if data.get(&k.key).map(|v| v.0.as_slice()) != Some(dsn.as_bytes()) {
                data.insert(k.key.clone(), ByteString(dsn.as_bytes().to_vec()));
                *changed = true;
            }
        }
        if let Some(c) = &target.config_map_key {
            let field = format!("spec.dataSource[{i}].configMapKey");
            let at = match cm_objs.iter().position(|(n, ..)| *n == c.name) {
                Some(at) => at,
                None => {
                    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                    let obj =
                        api.get_opt(&c.name).await.map_err(|e| api_err(&field, &e))?.ok_or_else(|| {
                            Error::Target {
                                field: field.clone(),
                                reason: format!("ConfigMap {ns}/{} not found", c.name),
                            }
                        })?;
                    check_epoch(&field, "ConfigMap", &c.name, obj.metadata.annotations.as_ref(), epoch)?;
                    cm_objs.push((c.name.clone(), vec![], obj, false));
                    cm_objs.len() - 1
                }
            };
            let (_, fields, obj, changed) = &mut cm_objs[at];
            fields.push(field.clone());
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
            if &new_doc != doc {
                obj.data.get_or_insert_with(BTreeMap::new).insert(c.key.clone(), new_doc);
                *changed = true;
            }
        }
    }

    let mut writes = Vec::new();
    for (name, fields, mut obj, changed) in secret_objs {
        let field = fields.join(", ");
        let size: usize = obj.data.iter().flatten().map(|(_, v)| v.0.len()).sum::<usize>()
            + obj.string_data.iter().flatten().map(|(_, v)| v.len()).sum::<usize>();
        too_large(&field, "Secret", ns, &name, size)?;
        if changed {
            stamp(&mut obj.metadata, epoch);
            writes.push(Write::Secret { field, object: Box::new(obj) });
        }
    }
    for (name, fields, mut obj, changed) in cm_objs {
        let field = fields.join(", ");
        // Counted as the API server counts: the values of data and binaryData.
        let size: usize = obj.data.iter().flatten().map(|(_, v)| v.len()).sum::<usize>()
            + obj.binary_data.iter().flatten().map(|(_, v)| v.0.len()).sum::<usize>();
        too_large(&field, "ConfigMap", ns, &name, size)?;
        if changed {
            stamp(&mut obj.metadata, epoch);
            writes.push(Write::ConfigMap { field, object: Box::new(obj) });
        }
    }
    Ok(writes)
}

fn too_large(field: &str, kind: &str, ns: &str, name: &str, size: usize) -> Result<(), Error> {
    if size > MAX_OBJECT_DATA {
        return Err(Error::Target {
            field: field.into(),
            reason: format!(
                "{kind} {ns}/{name} would hold {size} bytes of data after the rewrite, over Kubernetes' limit of \
                 {MAX_OBJECT_DATA} bytes, so the write would be refused: make the document smaller or move \
                 the DSN to its own object"
            ),
        });
    }
    Ok(())
}

/// Proves a plan acceptable without changing anything: every write is sent as a server-side dry
/// run (size limits, validation, admission, permissions), all at once. Run before the first real
/// write, so a target that would be refused fails the step while every target is unchanged, and
/// by the readiness checks, so `ReadyForFailover` says so beforehand.
pub async fn check(client: &Client, ns: &str, writes: &[Write]) -> Result<(), Error> {
    let dry = PostParams { dry_run: true, ..Default::default() };
    let results = futures::future::join_all(writes.iter().map(|w| {
        let dry = &dry;
        async move {
            let res = match w {
                Write::Secret { object, .. } => Api::<Secret>::namespaced(client.clone(), ns)
                    .replace(&object.metadata.name.clone().unwrap_or_default(), dry, object)
                    .await
                    .map(drop),
                Write::ConfigMap { object, .. } => Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .replace(&object.metadata.name.clone().unwrap_or_default(), dry, object)
                    .await
                    .map(drop),
            };
            res.map_err(|e| refused(w.field(), &e))
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Writes a plan that `check` accepted. Each write carries the `resourceVersion` it was planned
/// from: a concurrent change makes it fail (409) and the step is planned again.
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
                    .map_err(|e| refused(&field, &e))?;
            }
            Write::ConfigMap { field, object } => {
                let name = object.metadata.name.clone().unwrap_or_default();
                Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| refused(&field, &e))?;
            }
        }
    }
    Ok(n)
}

/// A refused write in words: the API server's own message for a validation failure (it names the
/// limit or rule and never echoes data values), a hint for the usual others.
fn refused(field: &str, e: &kube::Error) -> Error {
    let reason = match e {
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            format!(
                "the API server refuses the write ({}): {}",
                s.code,
                s.message.chars().take(400).collect::<String>()
            )
        }
        kube::Error::Api(s) if s.code == 403 => format!(
            "the controller may not update it ({}): grant its service account get and update on this object",
            s.code
        ),
        kube::Error::Api(s) if s.code == 409 => {
            let reason =
                format!("changed while being rewritten ({}); planned again on the next attempt", s.code);
            return Error::Api { field: field.into(), reason };
        }
        _ => return api_err(field, e),
    };
    Error::Target { field: field.into(), reason }
}

fn api_err(field: &str, e: &kube::Error) -> Error {
    Error::Api { field: field.into(), reason: short_api_error(e) }
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
