//! ExternalDNS `DNSEndpoint` (externaldns.k8s.io/v1alpha1): understudy owns one object per record
//! and server-side applies its single endpoint; ExternalDNS publishes it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    Api, Client,
};

use crate::{
    crd::{DnsEndpointRecord, EPOCH_ANNOTATION},
    secrets::short_api_error,
};

/// A DNSEndpoint the API server would not read or write.
#[derive(Debug, thiserror::Error)]
#[error("DNSEndpoint {ns}/{name}: {reason}")]
pub struct Error {
    pub ns: String,
    pub name: String,
    pub reason: String,
}

fn api_err(ns: &str, r: &DnsEndpointRecord, e: &kube::Error) -> Error {
    Error { ns: ns.into(), name: r.name.clone(), reason: short_api_error(e) }
}

/// The `DNSEndpoint` provider of `spec.dns[j].dnsEndpoint`.
pub struct DnsEndpoint {
    index: usize,
    spec: DnsEndpointRecord,
    client: Client,
    ns: String,
}

impl DnsEndpoint {
    pub fn new(index: usize, spec: &DnsEndpointRecord, env: &super::Env) -> DnsEndpoint {
        DnsEndpoint { index, spec: spec.clone(), client: env.client.clone(), ns: env.ns.clone() }
    }

    fn field(&self) -> String {
        format!("spec.dns[{}].dnsEndpoint", self.index)
    }
}

#[async_trait]
impl super::DnsProvider for DnsEndpoint {
    fn describe(&self) -> String {
        format!("DNSEndpoint {}", self.spec.name)
    }

    /// Refuses an object stamped with a newer epoch; applies only when the target differs.
    async fn point_at(&self, to: &super::Target<'_>, epoch: i64) -> Result<String, super::Error> {
        let field = self.field();
        let cur = current(&self.client, &self.ns, &self.spec)
            .await
            .map_err(|source| super::Error::Endpoint { field: field.clone(), source })?;
        if let Some((_, held)) = &cur {
            if *held > epoch {
                return Err(super::Error::Stale {
                    field,
                    name: self.spec.name.clone(),
                    held: *held,
                    ours: epoch,
                });
            }
        }
        if cur.map(|(t, _)| t) != Some(vec![to.text.to_string()]) {
            apply(&self.client, &self.ns, &self.spec, to.text, epoch)
                .await
                .map_err(|source| super::Error::Endpoint { field, source })?;
        }
        Ok(format!("DNSEndpoint {} → {}", self.spec.name, to.text))
    }

    async fn check(&self) -> Result<(), super::Error> {
        current(&self.client, &self.ns, &self.spec)
            .await
            .map(drop)
            .map_err(|source| super::Error::Endpoint { field: self.field(), source })
    }
}

/// The DNSEndpoint API resource.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// The target the object points at now, if it exists.
pub async fn current(
    client: &Client,
    ns: &str,
    r: &DnsEndpointRecord,
) -> Result<Option<(Vec<String>, i64)>, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource());
    let obj = api.get_opt(&r.name).await.map_err(|e| api_err(ns, r, &e))?;
    Ok(obj.map(|o| {
        let targets = o.data["spec"]["endpoints"][0]["targets"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let epoch = o
            .metadata
            .annotations
            .and_then(|a| a.get(EPOCH_ANNOTATION).and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        (targets, epoch)
    }))
}

/// Points the record at `target`, stamped with `epoch`.
pub async fn apply(
    client: &Client,
    ns: &str,
    r: &DnsEndpointRecord,
    target: &str,
    epoch: i64,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource());
    let record_type = if target.contains(':') { "AAAA" } else { "A" };
    let mut obj = DynamicObject::new(&r.name, &resource()).data(serde_json::json!({
        "spec": { "endpoints": [ { "dnsName": r.dns_name, "recordType": record_type, "targets": [target], "recordTTL": r.ttl } ] }
    }));
    obj.metadata.annotations = Some(BTreeMap::from([(EPOCH_ANNOTATION.to_string(), epoch.to_string())]));
    api.patch(&r.name, &PatchParams::apply("understudy").force(), &Patch::Apply(&obj))
        .await
        .map_err(|e| api_err(ns, r, &e))?;
    Ok(())
}
