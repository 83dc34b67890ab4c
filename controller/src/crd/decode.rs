//! Reading one stored object into the typed pair, on its own. The watch lists and watches raw
//! objects, so an object the API server accepted but these types cannot read (a schema from
//! another version of understudy, a field edited by hand into a shape the types never knew) is
//! reported on that object alone and skipped, never failing the list that carries every other pair.

use kube::api::DynamicObject;

use super::DisasterRecoveryPair;

/// Why a stored object cannot be read, naming the field as a path from the object's root.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Undecodable {
    /// Such as `spec.failover.maxLagBytes` or `spec.sites[0].postgres.port`.
    pub field: String,
    /// What serde found there, such as `invalid type: null, expected a string`.
    pub reason: String,
}

/// Reads `obj` as a pair, or says which field cannot be read and why. The spec and status are read
/// straight from the stored JSON (no copy of the whole object: this runs on every round of every pair).
pub fn decode(obj: &DynamicObject) -> Result<DisasterRecoveryPair, Undecodable> {
    let part = |name: &str| obj.data.get(name).filter(|v| !v.is_null());
    let spec = part("spec").ok_or_else(|| Undecodable { field: "spec".into(), reason: "missing".into() })?;
    let mut drp =
        DisasterRecoveryPair::new(&obj.metadata.name.clone().unwrap_or_default(), read("spec", spec)?);
    drp.metadata = obj.metadata.clone();
    drp.status = part("status").map(|v| read("status", v)).transpose()?;
    Ok(drp)
}

/// Reads one part of the object (`root`, empty for the whole object), naming a failing field from
/// the object's root. serde's messages carry no values from the document beyond short type names
/// and quoted scalars, cut at 300 characters (Secrets are never part of the pair anyway).
fn read<T: serde::de::DeserializeOwned>(root: &str, v: &serde_json::Value) -> Result<T, Undecodable> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at_root = path == "." || path.is_empty();
        let field = match (root.is_empty(), at_root) {
            (true, true) => "the object".to_string(),
            (true, false) => path,
            (false, true) => root.to_string(),
            (false, false) => format!("{root}.{path}"),
        };
        let reason: String = e.into_inner().to_string().chars().take(300).collect();
        Undecodable { field, reason }
    })
}

/// `decode` for a JSON value of the whole object.
pub fn from_value(value: serde_json::Value) -> Result<DisasterRecoveryPair, Undecodable> {
    read("", &value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(spec_failover: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "dr.understudy.dev/v1alpha1",
            "kind": "DisasterRecoveryPair",
            "metadata": { "name": "p", "namespace": "n" },
            "spec": {
                "primary": "east",
                "sites": [
                    { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } } },
                    { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } }
                ],
                "failover": spec_failover
            }
        })
    }

    fn dynamic(v: serde_json::Value) -> Result<DisasterRecoveryPair, Undecodable> {
        decode(&serde_json::from_value::<DynamicObject>(v).expect("a dynamic object"))
    }

    #[test]
    fn decoding_the_stored_object_agrees_with_reading_it_whole() {
        let mut v = pair(json!({ "maxLagBytes": 1024 }));
        v["status"] = json!({ "epoch": 2, "currentPrimary": "west" });
        let (a, b) = (dynamic(v.clone()).expect("decodes"), from_value(v).expect("reads"));
        assert_eq!((a.spec, a.status, a.metadata), (b.spec, b.status, b.metadata));
        let mut bad = pair(json!({ "failureThreshold": "three" }));
        assert_eq!(dynamic(bad.clone()).expect_err("bad").field, "spec.failover.failureThreshold");
        bad["spec"]["failover"] = json!({});
        bad["status"] = json!({ "epoch": "many" });
        assert_eq!(dynamic(bad).expect_err("bad status").field, "status.epoch");
    }

    #[test]
    fn a_null_or_whole_number_quantity_reads_as_the_schema_allows() {
        let p = from_value(pair(json!({ "maxLagBytes": null }))).expect("null is the default");
        assert_eq!(p.spec.failover.max_lag_bytes.0, "16Mi");
        let p = from_value(pair(json!({ "maxLagBytes": 1048576 }))).expect("int-or-string");
        assert_eq!(p.spec.failover.max_lag_bytes.0, "1048576");
        let p = from_value(pair(json!({ "maxLagBytes": "0" }))).expect("string");
        assert_eq!(p.spec.failover.max_lag_bytes.0, "0");
    }

    #[test]
    fn an_unreadable_field_is_named_by_its_path() {
        let e = from_value(pair(json!({ "failureThreshold": "three" }))).expect_err("a string");
        assert_eq!(e.field, "spec.failover.failureThreshold");
        assert!(e.reason.contains("invalid type"), "{e}");
        let mut v = pair(json!({}));
        v["spec"]["sites"][1]["postgres"]["port"] = json!("x");
        let e = from_value(v).expect_err("port");
        assert_eq!(e.field, "spec.sites[1].postgres.port");
        let mut v = pair(json!({}));
        v["status"] = json!({ "epoch": "many" });
        assert_eq!(from_value(v).expect_err("status").field, "status.epoch");
    }
}
