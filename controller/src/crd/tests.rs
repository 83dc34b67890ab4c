//! The API's own rules, checked without an API server: defaults, CEL rules (evaluated locally by
//! kube's CEL feature, the same expressions the API server runs) and the checked-in CRD's freshness.

use serde_json::json;

use super::*;

fn spec(overrides: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "primary": "east",
        "sites": [
            { "name": "east", "postgres": { "host": "a", "port": 5432, "database": "postgres", "credentialsSecret": { "name": "s" } } },
            { "name": "west", "postgres": { "host": "b", "port": 5432, "database": "postgres", "credentialsSecret": { "name": "s" } } }
        ],
        "failover": { "mode": "Manual", "probeInterval": "1s", "probeTimeout": "1s", "failureThreshold": 3, "maxLagBytes": "16Mi", "cooldown": "10m" }
    });
    merge(&mut base, overrides);
    base
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn cel_errors(v: &serde_json::Value) -> String {
    match DisasterRecoveryPairSpec::validate_cel(v, None) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn a_valid_spec_passes_every_rule() {
    assert_eq!(cel_errors(&spec(json!({}))), "");
    let with_etcd = spec(
        json!({ "failover": { "mode": "Automatic" }, "coordination": { "etcd": { "endpoints": ["http://w:2379"] } } }),
    );
    assert_eq!(cel_errors(&with_etcd), "");
}

#[test]
fn a_lease_shorter_than_four_probe_timeouts_is_rejected() {
    let pair = |ttl: &str, timeout: &str| {
        spec(json!({
            "failover": { "mode": "Automatic", "probeTimeout": timeout },
            "coordination": { "etcd": { "endpoints": ["http://w:2379"], "leaseTTL": ttl } }
        }))
    };
    assert_eq!(cel_errors(&pair("10s", "1s")), "");
    assert_eq!(cel_errors(&pair("4s", "1s")), "");
    assert_eq!(cel_errors(&pair("2s", "500ms")), "");
    for (ttl, timeout) in [("3s", "1s"), ("10s", "2600ms"), ("2s", "501ms")] {
        let e = cel_errors(&pair(ttl, timeout));
        assert!(
            e.contains("spec.coordination.etcd.leaseTTL must be at least 4 × spec.failover.probeTimeout"),
            "{ttl} {timeout}: {e}"
        );
        // The run-time check agrees with the rule.
        let d = |s: &str| -> std::time::Duration {
            s.parse::<kube::core::Duration>().expect("a duration").into()
        };
        assert!(crate::coord::Timing::new(d(ttl), d(timeout)).is_err());
    }
}

#[test]
fn cross_field_rules_reject_with_the_field_named() {
    let dup = spec(json!({ "sites": [
        { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } } },
        { "name": "east", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } } ] }));
    assert!(
        cel_errors(&dup).contains("spec.sites: the two sites need distinct names"),
        "{}",
        cel_errors(&dup)
    );

    let nowhere = spec(json!({ "primary": "north" }));
    assert!(cel_errors(&nowhere).contains("spec.primary must name one of"), "{}", cel_errors(&nowhere));

    let auto = spec(json!({ "failover": { "mode": "Automatic" } }));
    assert!(cel_errors(&auto).contains("requires spec.coordination.etcd"), "{}", cel_errors(&auto));

    let auto_no_etcd = spec(json!({ "failover": { "mode": "Automatic" }, "coordination": {} }));
    assert!(cel_errors(&auto_no_etcd).contains("requires spec.coordination.etcd"));
}

#[test]
fn defaults_fill_a_minimal_spec() {
    let minimal = json!({
        "primary": "east",
        "sites": [
            { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } } },
            { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } }
        ]
    });
    let s: DisasterRecoveryPairSpec = serde_json::from_value(minimal).expect("minimal spec parses");
    assert_eq!(s.failover.mode, FailoverMode::Manual, "the safe default acts only on command");
    assert_eq!(s.failover.failure_threshold, 3);
    assert_eq!(std::time::Duration::from(s.failover.probe_interval), std::time::Duration::from_secs(1));
    assert_eq!(s.failover.max_lag_bytes.0, "16Mi");
    assert_eq!(s.sites[1].postgres.port, 5432);
    assert_eq!(s.sites[1].postgres.database, "postgres");
}

#[test]
fn the_schema_carries_docs_bounds_and_rules() {
    let crd =
        serde_json::to_value(<DisasterRecoveryPair as kube::CustomResourceExt>::crd()).expect("crd json");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["sites"]["minItems"], 2);
    assert_eq!(spec["properties"]["sites"]["maxItems"], 2);
    assert_eq!(spec["properties"]["failover"]["properties"]["failureThreshold"]["minimum"], 1.0);
    assert!(spec["x-kubernetes-validations"].as_array().is_some_and(|r| r.len() == 5));
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "drp");
    assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    // Every property has a description (kubectl explain).
    fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                let here = format!("{path}.{k}");
                if p.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, p, missing);
                if let Some(items) = p.get("items") {
                    walk(&here, items, missing);
                }
            }
        }
    }
    let mut missing = Vec::new();
    walk("spec", spec, &mut missing);
    walk(
        "status",
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"],
        &mut missing,
    );
    assert!(missing.is_empty(), "fields without a doc comment: {missing:?}");
}

#[test]
fn the_checked_in_crd_is_fresh() {
    let checked_in = include_str!("../../../crds/dr.understudy.dev_disasterrecoverypairs.yaml");
    let generated = crd_yaml().expect("crd yaml");
    assert!(checked_in == generated, "crds/ is stale: run `make crds` and commit the result");
}

#[test]
fn the_checked_in_reference_is_fresh() {
    let checked_in = include_str!("../../../docs/crd-reference.md");
    assert!(
        checked_in == reference_markdown(),
        "docs/crd-reference.md is stale: run `make docs` and commit the result"
    );
    assert!(checked_in.contains("| `spec.failover.failureThreshold` | integer | `3` |"));
}

#[test]
fn a_rejoin_hook_is_exactly_one_of_a_command_and_a_job() {
    let errors = |v: serde_json::Value| match RejoinHook::validate_cel(&v, None) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    };
    let job =
        json!({ "template": { "spec": { "containers": [ { "name": "r", "image": "postgres:15" } ] } } });
    assert_eq!(errors(json!({ "command": ["rejoin.sh"], "timeout": "2m" })), "");
    assert_eq!(errors(json!({ "job": job.clone(), "timeout": "2m" })), "");
    for both_or_none in
        [json!({ "command": ["rejoin.sh"], "job": job, "timeout": "2m" }), json!({ "timeout": "2m" })]
    {
        let e = errors(both_or_none.clone());
        assert!(
            e.contains(
                "spec.sites[*].rejoin: set exactly one of command (a program the controller runs itself"
            ),
            "{both_or_none}: {e}"
        );
    }
    // Within a whole pair too, and both forms decode.
    let pair = spec(json!({ "sites": [
        { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } },
          "rejoin": { "job": { "template": { "spec": { "containers": [ { "name": "r", "image": "pg" } ] } } } } },
        { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } },
          "rejoin": { "command": ["rejoin.sh"] } } ] }));
    assert_eq!(cel_errors(&pair), "");
    let s: DisasterRecoveryPairSpec = serde_json::from_value(pair).expect("both forms decode");
    let (east, west) = (s.sites[0].rejoin.clone().expect("east"), s.sites[1].rejoin.clone().expect("west"));
    assert!(east.command.is_none() && east.job.is_some());
    assert_eq!((west.command, west.job), (Some(vec!["rejoin.sh".to_string()]), None));
    assert_eq!(std::time::Duration::from(east.timeout), std::time::Duration::from_secs(120));
}

#[test]
fn postgres_tls_rules_name_the_field() {
    let errors = |v: serde_json::Value| match PostgresTls::validate_cel(&v, None) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    };
    assert!(
        errors(json!({ "mode": "VerifyFull" })).contains("spec.sites[*].postgres.tls.caSecret is required")
    );
    assert!(errors(json!({ "mode": "Require", "caSecret": { "name": "c", "key": "ca.crt" } }))
        .contains("is not used by Disable or Require"));
    assert!(errors(json!({ "mode": "Disable", "clientCertSecret": { "name": "c" } }))
        .contains("clientCertSecret needs a mode other than Disable"));
    assert_eq!(errors(json!({ "mode": "VerifyCA", "caSecret": { "name": "c", "key": "ca.crt" } })), "");
    assert_eq!(errors(json!({ "mode": "Require", "clientCertSecret": { "name": "c" } })), "");
    let t: PostgresTls = serde_json::from_value(json!({ "caSecret": { "name": "c", "key": "ca.crt" } }))
        .expect("tls without a mode parses");
    assert_eq!(t.mode, PostgresTlsMode::VerifyFull, "the default checks the certificate and the name");
}

#[test]
fn the_example_pair_parses_and_passes_every_rule() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/examples/mattermost-pair.yaml");
    let text = std::fs::read_to_string(path).expect("crds/examples/mattermost-pair.yaml");
    let drp: DisasterRecoveryPair =
        serde_yaml::from_str(&text).expect("the example is a DisasterRecoveryPair");
    let spec = serde_json::to_value(&drp.spec).expect("spec as JSON");
    assert_eq!(cel_errors(&spec), "");
    let etcd = drp.spec.coordination.and_then(|c| c.etcd).expect("the example has a witness");
    crate::coord::Timing::new(etcd.lease_ttl.into(), drp.spec.failover.probe_timeout())
        .expect("the example's timing holds");
}

#[test]
fn a_probe_timeout_longer_than_the_interval_is_rejected_and_capped_at_run_time() {
    let policy =
        |interval: &str, timeout: &str| json!({ "probeInterval": interval, "probeTimeout": timeout });
    let errors = |v: &serde_json::Value| match FailoverPolicy::validate_cel(v, None) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    };
    assert_eq!(errors(&policy("1s", "1s")), "");
    assert_eq!(errors(&policy("500ms", "200ms")), "");
    assert!(
        errors(&policy("200ms", "2s"))
            .contains("spec.failover.probeTimeout must not exceed spec.failover.probeInterval"),
        "{}",
        errors(&policy("200ms", "2s"))
    );
    assert_eq!(
        errors(&json!({ "probeInterval": "200ms" })),
        "",
        "an unset timeout defaults below the interval"
    );
    // Run time: an object stored before the rule is capped and reported.
    let stored: DisasterRecoveryPairSpec = serde_json::from_value(spec(
        json!({ "failover": { "probeInterval": "200ms", "probeTimeout": "2s" } }),
    ))
    .expect("spec");
    assert_eq!(stored.failover.effective_probe_timeout(), std::time::Duration::from_millis(200));
    assert!(stored.problems()[0].contains("spec.failover.probeTimeout"), "{:?}", stored.problems());
    let unset: DisasterRecoveryPairSpec = serde_json::from_value(json!({
        "primary": "east",
        "sites": [
            { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } } },
            { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } }
        ],
        "failover": { "probeInterval": "300ms" }
    }))
    .expect("spec");
    assert_eq!(unset.failover.probe_timeout(), std::time::Duration::from_millis(300));
    assert!(unset.problems().is_empty());
}

#[test]
fn a_lease_is_checked_against_the_default_probe_timeout_too() {
    let pair = |ttl: &str| {
        let mut v =
            spec(json!({ "coordination": { "etcd": { "endpoints": ["http://w:2379"], "leaseTTL": ttl } } }));
        v["failover"].as_object_mut().expect("failover").remove("probeTimeout");
        v
    };
    assert_eq!(cel_errors(&pair("4s")), "");
    assert!(cel_errors(&pair("3s")).contains("leaseTTL must be at least 4 ×"), "{}", cel_errors(&pair("3s")));
}

#[test]
fn a_data_source_target_listed_twice_is_rejected() {
    let ds = |targets: serde_json::Value| spec(json!({ "dataSource": targets }));
    let secret = json!({ "secretKey": { "name": "mm", "key": "dsn" } });
    let cm = |ptr: &str| json!({ "configMapKey": { "name": "c", "key": "config.json", "jsonPointer": ptr } });
    let msg = "spec.dataSource: a target is listed twice";
    assert!(cel_errors(&ds(json!([secret, secret]))).contains(msg));
    assert!(cel_errors(&ds(json!([cm("/A"), secret, cm("/A")]))).contains(msg));
    // Two keys of one Secret, two pointers into one ConfigMap key: merged into one write each.
    assert_eq!(cel_errors(&ds(json!([secret, { "secretKey": { "name": "mm", "key": "dsn2" } }]))), "");
    assert_eq!(cel_errors(&ds(json!([cm("/A"), cm("/B"), secret]))), "");
}

#[test]
fn a_site_entry_is_acted_on_by_its_own_site_only_and_a_shared_one_by_both() {
    use super::acts_here;
    assert!(acts_here(Some("east"), Some("east")));
    assert!(!acts_here(Some("east"), Some("west")));
    assert!(
        acts_here(None, Some("west")),
        "a shared entry is acted on by the controller that runs the transition"
    );
    assert!(acts_here(Some("east"), None), "a controller without --site acts for both sites");
    let mut spec: super::DisasterRecoveryPairSpec = serde_json::from_value(serde_json::json!({
        "primary": "east",
        "sites": [
            { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } } },
            { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } }
        ],
        "recycle": [ { "site": "north", "http": { "url": "http://x" } } ]
    }))
    .expect("spec");
    let problems = spec.problems();
    assert!(problems.iter().any(|p| p.contains("\"north\"") && p.contains("spec.sites")), "{problems:?}");
    spec.recycle[0].site = Some("west".into());
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
}

#[test]
fn replication_defaults_to_async_and_its_knobs_belong_to_sync_preferred() {
    let errors = |v: serde_json::Value| match FailoverPolicy::validate_cel(&v, None) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    };
    assert_eq!(errors(json!({ "replication": "SyncPreferred", "syncDegradeAfter": "10s" })), "");
    assert_eq!(errors(json!({ "replication": "SyncPreferred", "degradedFailover": "Allow" })), "");
    assert_eq!(errors(json!({ "replication": "Sync" })), "");
    assert_eq!(errors(json!({ "degradedFailover": "Refuse" })), "", "the default is fine anywhere");
    for bad in
        [json!({ "replication": "Sync", "syncDegradeAfter": "10s" }), json!({ "syncDegradeAfter": "10s" })]
    {
        assert!(
            errors(bad.clone()).contains(
                "spec.failover.syncDegradeAfter applies only to spec.failover.replication SyncPreferred"
            ),
            "{bad}: {}",
            errors(bad.clone())
        );
    }
    assert!(errors(json!({ "replication": "Sync", "degradedFailover": "Allow" }))
        .contains("spec.failover.degradedFailover applies only to spec.failover.replication SyncPreferred"));
    // Existing pairs are unchanged: Async by default, and the fields are not even serialized.
    let s: DisasterRecoveryPairSpec = serde_json::from_value(spec(json!({}))).expect("spec");
    assert_eq!(s.failover.replication, ReplicationMode::Async);
    assert_eq!(s.failover.sync_degrade_after(), std::time::Duration::from_secs(10));
    let out = serde_json::to_value(&s.failover).expect("json");
    assert!(out.get("replication").is_none() && out.get("degradedFailover").is_none(), "{out}");
}

#[test]
fn a_fence_hook_names_its_field_when_invalid_and_defaults_its_timeout() {
    let with_hook = |hook: serde_json::Value| {
        spec(json!({ "sites": [
            { "name": "east", "postgres": { "host": "a", "credentialsSecret": { "name": "s" } }, "fenceHook": hook },
            { "name": "west", "postgres": { "host": "b", "credentialsSecret": { "name": "s" } } } ] }))
    };
    let ok = with_hook(json!({ "command": ["/hooks/fence.sh", "--site", "east"], "timeout": "20s" }));
    assert_eq!(cel_errors(&ok), "");
    let e = cel_errors(&with_hook(json!({ "command": [""] })));
    assert!(e.contains("spec.sites[*].fenceHook.command[0] (the program) must not be empty"), "{e}");
    for t in ["500ms", "11m"] {
        let e = cel_errors(&with_hook(json!({ "command": ["/f"], "timeout": t })));
        assert!(e.contains("spec.sites[*].fenceHook.timeout must be between 1s and 10m"), "{t}: {e}");
    }
    let spec: DisasterRecoveryPairSpec =
        serde_json::from_value(with_hook(json!({ "command": ["/f"] }))).expect("a spec with a fence hook");
    let hook = spec.sites[0].fence_hook.clone().expect("fenceHook");
    assert_eq!(std::time::Duration::from(hook.timeout), std::time::Duration::from_secs(30));
    // The schema bounds the argv (1..=32 entries).
    let crd = serde_json::to_string(&DisasterRecoveryPair::crd()).expect("crd");
    assert!(crd.contains("fenceHook"), "fenceHook missing from the CRD");
}
