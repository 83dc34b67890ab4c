//! Building a rejoin Job from the site's template: its name, labels, owner, the hook's variables
//! (credentials only as Secret references), and understudy's defaults never overriding the template.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use serde_json::json;

use super::{build, job_name, label_value, outcome, DEFAULT_TTL_SECONDS};
use crate::{
    crd::{test_spec, DisasterRecoveryPair, Epoch},
    reconcile::rejoin::hook::{HookCall, HookError},
};

/// The pair `chat` in namespace `team` with a uid, as the API server stores it.
fn pair(name: &str) -> DisasterRecoveryPair {
    let mut drp = test_spec().pair(name);
    drp.metadata.namespace = Some("team".into());
    drp.metadata.uid = Some("8d3e0c1a-5f2b-4c8e-9a77-0123456789ab".into());
    drp
}

fn call(attempt: i32) -> HookCall {
    HookCall { site: "east".into(), epoch: Epoch(4), primary: "west".into(), rewind: true, attempt }
}

/// A realistic template: an init container, a container with its own variables.
fn template() -> serde_json::Value {
    json!({
        "template": {
            "metadata": { "labels": { "app": "pg-rejoin" } },
            "spec": {
                "serviceAccountName": "pg-rejoin",
                "initContainers": [ { "name": "wait", "image": "busybox:1.36", "command": ["true"] } ],
                "containers": [ {
                    "name": "rejoin",
                    "image": "postgres:15",
                    "command": ["/scripts/rejoin.sh"],
                    "env": [
                        { "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" },
                        { "name": "UNDERSTUDY_SITE", "value": "spoofed" }
                    ],
                    "volumeMounts": [ { "name": "data", "mountPath": "/var/lib/postgresql/data" } ]
                } ],
                "volumes": [ { "name": "data", "persistentVolumeClaim": { "claimName": "data-pg-east-0" } } ]
            }
        }
    })
}

fn env_of(job: &Job, container: usize) -> Vec<serde_json::Value> {
    let v = serde_json::to_value(job).expect("job json");
    v["spec"]["template"]["spec"]["containers"][container]["env"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_job_is_named_labelled_and_owned_by_the_pair() {
    let job = build(&pair("chat"), &template(), Duration::from_secs(120), &call(2)).expect("a job");
    assert_eq!(job.metadata.name.as_deref(), Some("chat-rejoin-east-e4-a2"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("team"));
    let labels = job.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("dr.understudy.dev/pair", "chat"),
        ("dr.understudy.dev/site", "east"),
        ("dr.understudy.dev/epoch", "4"),
        ("dr.understudy.dev/attempt", "2"),
        ("app.kubernetes.io/managed-by", "understudy"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    let owners = job.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    let o = &owners[0];
    assert_eq!(
        (o.api_version.as_str(), o.kind.as_str(), o.name.as_str(), o.uid.as_str(), o.controller),
        (
            "dr.understudy.dev/v1alpha1",
            "DisasterRecoveryPair",
            "chat",
            "8d3e0c1a-5f2b-4c8e-9a77-0123456789ab",
            Some(true)
        )
    );
    // The Pod carries the labels too (kubectl logs -l dr.understudy.dev/pair=chat), beside its own.
    let pod_labels =
        job.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
    let pod_labels = pod_labels.unwrap_or_default();
    assert_eq!(pod_labels.get("app").map(String::as_str), Some("pg-rejoin"));
    assert_eq!(pod_labels.get("dr.understudy.dev/site").map(String::as_str), Some("east"));
    // Distinct attempts and epochs, distinct Jobs.
    let other = build(&pair("chat"), &template(), Duration::from_secs(120), &call(3)).expect("a job");
    assert_eq!(other.metadata.name.as_deref(), Some("chat-rejoin-east-e4-a3"));
}

#[test]
fn every_container_gets_the_variables_and_the_credentials_only_as_secret_references() {
    let job = build(&pair("chat"), &template(), Duration::from_secs(120), &call(1)).expect("a job");
    let env = env_of(&job, 0);
    let get = |name: &str| -> Vec<&serde_json::Value> { env.iter().filter(|e| e["name"] == name).collect() };
    for (name, value) in [
        ("UNDERSTUDY_SITE", "east"),
        ("UNDERSTUDY_EPOCH", "4"),
        ("UNDERSTUDY_PRIMARY_HOST", "pg-west"),
        ("UNDERSTUDY_PRIMARY_PORT", "5432"),
        ("UNDERSTUDY_REWIND", "1"),
        ("PGDATA", "/var/lib/postgresql/data/pgdata"),
    ] {
        let found = get(name);
        assert_eq!(found.len(), 1, "{name} once: {env:?}");
        assert_eq!(found[0]["value"], value, "{name}");
    }
    for (name, key) in [("UNDERSTUDY_PRIMARY_USER", "username"), ("UNDERSTUDY_PRIMARY_PASSWORD", "password")]
    {
        let found = get(name);
        assert_eq!(found.len(), 1, "{name}");
        assert!(found[0].get("value").is_none(), "{name} holds no literal: {:?}", found[0]);
        assert_eq!(
            found[0]["valueFrom"]["secretKeyRef"],
            json!({ "name": "pg", "key": key, "optional": false }),
            "{name}: the new primary's credentials Secret"
        );
    }
    // Init containers get them too.
    let v = serde_json::to_value(&job).expect("json");
    let init =
        v["spec"]["template"]["spec"]["initContainers"][0]["env"].as_array().cloned().unwrap_or_default();
    assert!(init.iter().any(|e| e["name"] == "UNDERSTUDY_PRIMARY_PASSWORD" && e["valueFrom"].is_object()));
    assert!(init.iter().any(|e| e["name"] == "UNDERSTUDY_SITE" && e["value"] == "east"));
    // No password anywhere: the only `value`s are the literals above.
    let text = v.to_string();
    assert!(!text.to_lowercase().contains("\"password\":"), "{text}");
}

#[test]
fn defaults_fill_what_the_template_leaves_out_and_never_override_it() {
    let job = build(&pair("chat"), &template(), Duration::from_secs(90), &call(1)).expect("a job");
    let spec = job.spec.expect("spec");
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(90), "the hook's timeout");
    assert_eq!(spec.ttl_seconds_after_finished, Some(DEFAULT_TTL_SECONDS));
    let pod = spec.template.spec.expect("pod");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.service_account_name.as_deref(), Some("pg-rejoin"), "the template's own fields stay");

    let mut set = template();
    set["backoffLimit"] = json!(2);
    set["activeDeadlineSeconds"] = json!(600);
    set["ttlSecondsAfterFinished"] = json!(300);
    set["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    let spec =
        build(&pair("chat"), &set, Duration::from_secs(90), &call(1)).expect("a job").spec.expect("spec");
    assert_eq!(
        (spec.backoff_limit, spec.active_deadline_seconds, spec.ttl_seconds_after_finished),
        (Some(2), Some(600), Some(300))
    );
    assert_eq!(spec.template.spec.and_then(|p| p.restart_policy).as_deref(), Some("OnFailure"));
}

#[test]
fn long_or_odd_names_are_cut_and_hashed_into_a_dns_label() {
    let dns_label = |s: &str| {
        s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let long = "a".repeat(80);
    let a = job_name(&long, "east", Epoch(7), 1);
    let b = job_name(&long, "east", Epoch(7), 2);
    assert!(dns_label(&a) && dns_label(&b), "{a} {b}");
    assert_ne!(a, b, "attempts stay distinct after hashing");
    assert_eq!(a, job_name(&long, "east", Epoch(7), 1), "deterministic");
    assert!(a.starts_with("aaaa"), "{a}");
    // A pair name with dots (a DNS subdomain, not a label).
    let dotted = job_name("chat.prod", "east", Epoch(1), 1);
    assert!(dns_label(&dotted), "{dotted}");
    assert_ne!(dotted, job_name("chat-prod", "east", Epoch(1), 1), "no collision with the dashed name");
    assert_eq!(job_name("chat-prod", "east", Epoch(1), 1), "chat-prod-rejoin-east-e1-a1");
    // Exactly 63 characters is kept as is.
    let fits = format!("{}-rejoin-east-e1-a1", "p".repeat(63 - "-rejoin-east-e1-a1".len()));
    assert_eq!(job_name(&fits[..fits.len() - "-rejoin-east-e1-a1".len()], "east", Epoch(1), 1), fits);
    // A long pair name as a label value.
    let v = label_value(&"x.".repeat(60));
    assert!(v.len() <= 63 && v.ends_with(|c: char| c.is_ascii_alphanumeric()), "{v}");
    let built = build(&pair(&long), &template(), Duration::from_secs(60), &call(1)).expect("a job");
    assert_eq!(built.metadata.name, Some(job_name(&long, "east", Epoch(4), 1)));
    assert!(built.metadata.labels.unwrap_or_default().values().all(|v| v.len() <= 63));
}

#[test]
fn a_template_that_is_not_a_job_spec_fails_naming_the_field() {
    let bad =
        json!({ "template": { "spec": { "containers": [ { "name": "r", "image": "pg", "env": "x" } ] } } });
    let e = build(&pair("chat"), &bad, Duration::from_secs(60), &call(1)).expect_err("not a JobSpec");
    assert!(matches!(e, HookError::JobTemplate { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("spec.sites[*].rejoin.job.template.spec.containers[0].env: invalid type"),
        "{text}"
    );

    let empty = json!({ "template": { "spec": { "containers": [] } } });
    let e = build(&pair("chat"), &empty, Duration::from_secs(60), &call(1)).expect_err("no container");
    assert_eq!(
        e.to_string(),
        "spec.sites[*].rejoin.job.template.spec.containers: empty: give at least one container"
    );
}

#[test]
fn the_outcome_is_read_from_the_terminal_conditions_only() {
    let with = |conds: &[(&str, &str, &str)]| {
        let mut job = Job::default();
        job.metadata.name = Some("chat-rejoin-east-e1-a1".into());
        job.status = Some(JobStatus {
            conditions: Some(
                conds
                    .iter()
                    .map(|(t, reason, message)| JobCondition {
                        type_: (*t).into(),
                        status: "True".into(),
                        reason: Some((*reason).into()),
                        message: Some((*message).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        job
    };
    assert!(outcome(&Job::default()).is_none(), "no status yet");
    assert!(outcome(&with(&[("FailureTarget", "BackoffLimitExceeded", "x")])).is_none(), "not terminal yet");
    assert!(outcome(&with(&[("SuccessCriteriaMet", "CompletionsReached", "x")])).is_none());
    let done = outcome(&with(&[("SuccessCriteriaMet", "", ""), ("Complete", "", "")]));
    assert_eq!(done.and_then(Result::ok).as_deref(), Some("Job chat-rejoin-east-e1-a1 completed"));
    let failed = outcome(&with(&[
        ("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    ]));
    let e = failed.and_then(Result::err).expect("failed");
    assert_eq!(
        e.to_string(),
        "Job chat-rejoin-east-e1-a1 failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
}

#[test]
fn the_examples_template_builds_a_job() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rejoin-job/pair.yaml");
    let text = std::fs::read_to_string(path).expect("examples/rejoin-job/pair.yaml");
    let mut drp: DisasterRecoveryPair = serde_yaml::from_str(&text).expect("the example is a pair");
    let spec = serde_json::to_value(&drp.spec).expect("spec as JSON");
    if let Err(e) = crate::crd::DisasterRecoveryPairSpec::validate_cel(&spec, None) {
        panic!("the example passes every rule: {e:?}");
    }
    drp.metadata.uid = Some("u-1".into());
    let east = drp.spec.sites[0].rejoin.clone().expect("east rejoins");
    let template = east.job.expect("by a Job");
    let call =
        HookCall { site: "east".into(), epoch: Epoch(3), primary: "west".into(), rewind: true, attempt: 1 };
    let job = build(&drp, &template, east.timeout.into(), &call).expect("a Job");
    assert_eq!(job.metadata.name.as_deref(), Some("orders-rejoin-east-e3-a1"));
    let spec = job.spec.expect("spec");
    assert_eq!(spec.active_deadline_seconds, Some(600));
    let pod = spec.template.spec.expect("pod");
    let all: Vec<_> = pod.init_containers.iter().flatten().chain(pod.containers.iter()).collect();
    assert_eq!(all.len(), 4);
    for c in all {
        let env = c.env.clone().unwrap_or_default();
        let pw = env.iter().find(|e| e.name == "UNDERSTUDY_PRIMARY_PASSWORD").expect("password variable");
        let r = pw.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()).expect("secretKeyRef");
        assert_eq!(
            (r.name.as_str(), r.key.as_str(), pw.value.as_deref()),
            ("orders-pg-admin", "password", None)
        );
    }
    assert_eq!(drp.spec.sites[1].rejoin.clone().and_then(|r| r.command).map(|c| c.len()), Some(1));
}
