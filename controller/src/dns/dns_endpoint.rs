//! ExternalDNS `DNSEndpoint` (externaldns.k8s.io/v1alpha1): understudy owns one object per record
//! and server-side applies its single endpoint; ExternalDNS publishes it.

use std::collections::BTreeMap;

use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    Api, Client,
};

use crate::{
    crd::{DnsEndpointRecord, EPOCH_ANNOTATION},
    secrets::short_api_error,
};

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
) -> Result<Option<(Vec<String>, i64)>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource());
    let obj = api
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("DNSEndpoint {ns}/{}: {}", r.name, short_api_error(&e)))?;
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
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource());
    let record_type = if target.contains(':') { "AAAA" } else { "A" };
    let mut obj = DynamicObject::new(&r.name, &resource()).data(serde_json::json!({
        "spec": { "endpoints": [ { "dnsName": r.dns_name, "recordType": record_type, "targets": [target], "recordTTL": r.ttl } ] }
    }));
    obj.metadata.annotations = Some(BTreeMap::from([(EPOCH_ANNOTATION.to_string(), epoch.to_string())]));
    api.patch(&r.name, &PatchParams::apply("understudy").force(), &Patch::Apply(&obj))
        .await
        .map_err(|e| format!("DNSEndpoint {ns}/{}: {}", r.name, short_api_error(&e)))?;
    Ok(())
}
