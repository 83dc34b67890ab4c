//! Hardening against bad input and leaks, against the real sandbox: a table of bad pairs that the
//! API server rejects naming the field, a table of bad references the controller reports naming the
//! field and the fix, a bad target that fails the rewrite before anything is written, and no secret
//! value anywhere in logs, Events, status or metrics.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};
use understudy::crd::{conditions, DisasterRecoveryPair};
use understudy_e2e::{
    bed::{Bed, APP_TOKEN},
    support::{self, condition, wait_for},
};

/// A pair document with `spec_tail` replacing the failover policy and everything after it.
fn doc(name: &str, sites: &str, spec_tail: &str) -> String {
    format!("apiVersion: dr.understudy.dev/v1alpha1\nkind: DisasterRecoveryPair\nmetadata: {{ name: {name} }}\nspec:\n  primary: east\n  sites:\n{sites}{spec_tail}")
}

const SITES: &str = "  - { name: east, postgres: { host: a, credentialsSecret: { name: s } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_rejects_bad_pairs_naming_the_field() -> Result<()> {
    let client = support::client_with_crd().await?;
    let ns = support::namespace(&client, "badapi").await?;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<DisasterRecoveryPair>(&()),
    );
    let long = "h".repeat(300);
    let cases: Vec<(String, &str)> = vec![
        (doc("dup", "  - { name: east, postgres: { host: a, credentialsSecret: { name: s } } }\n  - { name: east, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites"),
        (doc("one", "  - { name: east, postgres: { host: a, credentialsSecret: { name: s } } }\n", ""), "spec.sites"),
        (doc("three", &format!("{SITES}  - {{ name: north, postgres: {{ host: c, credentialsSecret: {{ name: s }} }} }}\n"), ""), "spec.sites"),
        (doc("nowhere", SITES, "").replace("primary: east", "primary: north"), "spec.primary"),
        (doc("auto", SITES, "  failover: { mode: Automatic }\n"), "spec.failover.mode"),
        (doc("mode", SITES, "  failover: { mode: Sometimes }\n"), "spec.failover.mode"),
        (doc("neg", SITES, "  failover: { failureThreshold: -1 }\n"), "spec.failover.failureThreshold"),
        (doc("zero", SITES, "  failover: { failureThreshold: 0 }\n"), "spec.failover.failureThreshold"),
        (doc("huge", SITES, "  failover: { failureThreshold: 1000 }\n"), "spec.failover.failureThreshold"),
        (doc("fast", SITES, "  failover: { probeInterval: 1ms }\n"), "spec.failover.probeInterval"),
        (doc("garbage", SITES, "  failover: { probeInterval: soon }\n"), "spec.failover.probeInterval"),
        (doc("slowprobe", SITES, "  failover: { probeTimeout: 2m }\n"), "spec.failover.probeTimeout"),
        (doc("catchup", SITES, "  failover: { catchUpTimeout: 0s }\n"), "spec.failover.catchUpTimeout"),
        (doc("port0", "  - { name: east, postgres: { host: a, port: 0, credentialsSecret: { name: s } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.port"),
        (doc("port70k", "  - { name: east, postgres: { host: a, port: 70000, credentialsSecret: { name: s } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.port"),
        (doc("unicode", "  - { name: östra, postgres: { host: a, credentialsSecret: { name: s } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", "").replace("primary: east", "primary: östra"), "spec.sites[0].name"),
        (doc("upper", "  - { name: East, postgres: { host: a, credentialsSecret: { name: s } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", "").replace("primary: east", "primary: East"), "spec.sites[0].name"),
        (doc("emptyhost", "  - { name: east, postgres: { host: '', credentialsSecret: { name: s } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.host"),
        (doc("longhost", &format!("  - {{ name: east, postgres: {{ host: {long}, credentialsSecret: {{ name: s }} }} }}\n  - {{ name: west, postgres: {{ host: b, credentialsSecret: {{ name: s }} }} }}\n"), ""), "spec.sites[0].postgres.host"),
        (doc("nosecret", "  - { name: east, postgres: { host: a } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.credentialsSecret"),
        (doc("ds2", SITES, "  dataSource: [ { secretKey: { name: a, key: b }, configMapKey: { name: c, key: d, jsonPointer: /x } } ]\n"), "spec.dataSource[0]"),
        (doc("ds0", SITES, "  dataSource: [ {} ]\n"), "spec.dataSource[0]"),
        (doc("ptr", SITES, "  dataSource: [ { configMapKey: { name: c, key: d, jsonPointer: SqlSettings/DataSource } } ]\n"), "spec.dataSource[0].configMapKey.jsonPointer"),
        (doc("rec0", SITES, "  recycle: [ {} ]\n"), "spec.recycle[0]"),
        (doc("rec2", SITES, "  recycle: [ { http: { url: 'http://x/' }, rolloutRestart: { kind: Deployment, name: m } } ]\n"), "spec.recycle[0]"),
        (doc("method", SITES, "  recycle: [ { http: { url: 'http://x/', method: FETCH } } ]\n"), "spec.recycle[0].http.method"),
        (doc("ftp", SITES, "  recycle: [ { http: { url: 'ftp://x/' } } ]\n"), "spec.recycle[0].http.url"),
        (doc("kind", SITES, "  recycle: [ { rolloutRestart: { kind: DaemonSet, name: m } } ]\n"), "spec.recycle[0].rolloutRestart.kind"),
        (doc("dns2", SITES, "  dns: [ { rfc2136: { server: 'x:53', zone: z, name: n, tsigSecret: { name: t } }, dnsEndpoint: { name: e, dnsName: d } } ]\n"), "spec.dns[0]"),
        (doc("ttl0", SITES, "  dns: [ { rfc2136: { server: 'x:53', zone: z, name: n, ttl: 0, tsigSecret: { name: t } } } ]\n"), "spec.dns[0].rfc2136.ttl"),
        (doc("lease", SITES, "  coordination: { etcd: { endpoints: ['http://w:2379'], leaseTTL: 1s } }\n"), "spec.coordination.etcd.leaseTTL"),
        (doc("leasetiming", SITES, "  failover: { probeInterval: 5s, probeTimeout: 5s }\n  coordination: { etcd: { endpoints: ['http://w:2379'], leaseTTL: 10s } }\n"), "spec.coordination.etcd.leaseTTL must be at least 4 × spec.failover.probeTimeout"),
        (doc("noetcd", SITES, "  coordination: { etcd: { endpoints: [] } }\n"), "spec.coordination.etcd.endpoints"),
        (doc("tlsnoca", "  - { name: east, postgres: { host: a, credentialsSecret: { name: s }, tls: { mode: VerifyFull } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.tls"),
        (doc("tlsmode", "  - { name: east, postgres: { host: a, credentialsSecret: { name: s }, tls: { mode: Prefer } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.tls.mode"),
        (doc("tlsclient", "  - { name: east, postgres: { host: a, credentialsSecret: { name: s }, tls: { mode: Disable, clientCertSecret: { name: c } } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.tls"),
    ];
    assert!(cases.len() >= 25);
    for (yaml, field) in &cases {
        let v: serde_json::Value = serde_yaml::from_str(yaml)?;
        let obj: kube::api::DynamicObject = serde_json::from_value(v)?;
        let err =
            api.create(&Default::default(), &obj).await.expect_err(&format!("must be rejected: {yaml}"));
        let msg = err.to_string();
        assert!(msg.contains(field), "the rejection names {field}: {msg}");
    }
    eprintln!("{} bad pairs rejected by the API server, each naming its field", cases.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_are_reported_naming_the_field_and_nothing_is_written_half_way() -> Result<()> {
    let bed = Bed::start("badref").await?;
    let _ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
    let base = bed.pair_yaml("PAIR", "mode: Manual, probeInterval: 500ms");
    let cms: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &bed.ns);
    // Fixtures for the cases.
    support::put_secret(&bed.client, &bed.ns, "half-admin", &[("username", "postgres")]).await?;
    support::put_secret(
        &bed.client,
        &bed.ns,
        "bad-tsig",
        &[
            ("name", &bed.key_name()),
            ("algorithm", "hmac-sha256"),
            ("secret", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc="),
        ],
    )
    .await?;
    support::put_secret(
        &bed.client,
        &bed.ns,
        "tsig-md5",
        &[("name", &bed.key_name()), ("algorithm", "hmac-md5"), ("secret", "aGVsbG8=")],
    )
    .await?;
    let notjson = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some("not-json".into()), ..Default::default() },
        data: Some(
            [("config.json".to_string(), "SqlSettings:\n  DataSource: yaml, not json\n".to_string())].into(),
        ),
        ..Default::default()
    };
    cms.patch("not-json", &PatchParams::apply("e2e").force(), &Patch::Apply(&notjson)).await?;

    // (pair name, edit of the YAML, condition type, needle in its message)
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "missing-secret",
            Box::new(|y: &str| {
                y.replace("credentialsSecret: { name: pg-admin }", "credentialsSecret: { name: nope }")
            }),
            conditions::SECRETS_RESOLVED,
            "spec.sites[0].postgres.credentialsSecret",
        ),
        (
            "missing-key",
            Box::new(|y: &str| {
                y.replace("credentialsSecret: { name: pg-admin }", "credentialsSecret: { name: half-admin }")
            }),
            conditions::SECRETS_RESOLVED,
            "has no key \"password\"",
        ),
        (
            "bad-pointer",
            Box::new(|y: &str| {
                y.replace("jsonPointer: /SqlSettings/DataSource", "jsonPointer: /SqlSettings/DataSauce")
            }),
            conditions::READY_FOR_FAILOVER,
            "spec.dataSource[0].configMapKey.jsonPointer",
        ),
        (
            "not-json",
            Box::new(|y: &str| y.replace("name: mattermost-config", "name: not-json")),
            conditions::READY_FOR_FAILOVER,
            "is not JSON",
        ),
        (
            "wrong-tsig",
            Box::new(|y: &str| y.replace("tsigSecret: { name: dns-tsig }", "tsigSecret: { name: bad-tsig }")),
            conditions::READY_FOR_FAILOVER,
            "TSIG",
        ),
        (
            "md5-tsig",
            Box::new(|y: &str| y.replace("tsigSecret: { name: dns-tsig }", "tsigSecret: { name: tsig-md5 }")),
            conditions::READY_FOR_FAILOVER,
            "tsigSecret.algorithm",
        ),
        // The DNS server's port is swapped for a closed one below.
        (
            "dns-down",
            Box::new(|y: &str| y.to_string()),
            conditions::READY_FOR_FAILOVER,
            "spec.dns[0].rfc2136",
        ),
        (
            "bad-quantity",
            Box::new(|y: &str| {
                y.replace(
                    "mode: Manual, probeInterval: 500ms",
                    "mode: Manual, probeInterval: 500ms, maxLagBytes: 16MB",
                )
            }),
            conditions::LAG_WITHIN_BUDGET,
            "spec.failover.maxLagBytes",
        ),
        (
            "no-dns-target",
            Box::new(|y: &str| y.replace("dnsTarget: 127.0.0.12", "")),
            conditions::READY_FOR_FAILOVER,
            "no dnsTarget",
        ),
    ];
    let dns_port = bed.bind.port.to_string();
    for (name, edit, _, _) in &cases {
        let mut yaml = edit(&base.replace("PAIR", name));
        if *name == "dns-down" {
            yaml = yaml.replace(&format!("127.0.0.1:{dns_port}"), "127.0.0.1:9");
        }
        support::create_pair(&bed.client, &bed.ns, &yaml).await?;
    }
    let api = bed.api();
    for (name, _, cond, needle) in &cases {
        let res = wait_for(&format!("{name}: {cond} names {needle}"), Duration::from_secs(30), || async {
            Ok(condition(&api.get(name).await?, cond)
                .is_some_and(|(s, _, m)| s != "True" && m.contains(needle)))
        })
        .await;
        if let Err(e) = res {
            panic!("{e:#}: {:?}", condition(&api.get(name).await?, cond));
        }
    }
    eprintln!("{} bad references reported, each naming its field", cases.len());

    // A forced failover of the bad-pointer pair: the plan fails before anything is written — the
    // Secret target (listed after the ConfigMap) keeps east's DSN, the ConfigMap is untouched.
    let before = bed.config_map_value("mattermost-config", "config.json").await?;
    bed.annotate("bad-pointer", "dr.understudy.dev/failover", "f1").await?;
    wait_for("RewriteDataSource failing on the pointer", Duration::from_secs(30), || async {
        let t = api.get("bad-pointer").await?.status.and_then(|s| s.last_transition);
        Ok(t.and_then(|t| t.steps.into_iter().find(|s| s.name == "RewriteDataSource")).is_some_and(|s| {
            s.attempts >= 1
                && s.finished_at.is_none()
                && s.message.unwrap_or_default().contains("spec.dataSource[0].configMapKey.jsonPointer")
        }))
    })
    .await?;
    assert_eq!(
        bed.secret_value("mattermost-db", "dsn").await?,
        bed.dsn("east"),
        "nothing rewritten half-way"
    );
    assert_eq!(bed.config_map_value("mattermost-config", "config.json").await?, before);
    // The controller is alive and still serving the other pairs.
    assert!(api.get("missing-key").await?.status.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_in_logs_events_status_or_metrics() -> Result<()> {
    let mut bed = Bed::start("leak").await?;
    support::create_pair(
        &bed.client,
        &bed.ns,
        &bed.pair_yaml("chat", "mode: Automatic, probeInterval: 500ms, failureThreshold: 3"),
    )
    .await?;
    let port = understudy_e2e::sandbox::proc::free_port()?;
    let ctl = bed.controller_process_with(
        "west",
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--log",
            "debug,hyper=info,kube=info,tower=info,h2=info,rustls=info",
        ],
        &[],
    )?;
    bed.wait_healthy("chat").await?;
    // Exercise every credential: probes, a dry-run (TSIG check, PgBouncer console), a failover
    // (promote, DataSource, PgBouncer, HTTP recycle with the token, DNS), and the rejoin.
    bed.annotate("chat", "dr.understudy.dev/dry-run", "d1").await?;
    let api = bed.api();
    wait_for("dry-run", Duration::from_secs(15), || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.dry_run).is_some())
    })
    .await?;
    bed.pg.primary.kill9();
    bed.wait_transition_finished("chat", Duration::from_secs(30)).await?;

    let secrets = [
        bed.pg.password.clone(),
        bed.pgb.admin_password.clone(),
        bed.bind.key_secret.clone(),
        APP_TOKEN.to_string(),
    ];
    let log = std::fs::read_to_string(&ctl.log)?;
    let events = serde_json::to_string(
        &Api::<Event>::namespaced(bed.client.clone(), &bed.ns).list(&ListParams::default()).await?.items,
    )?;
    let status = serde_json::to_string(&api.get("chat").await?.status)?;
    let metrics = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()?;
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(
        log.lines().count() > 20 && events.len() > 1000 && metrics.contains("understudy_epoch"),
        "there is material to check"
    );
    for (what, text) in [("log", &log), ("events", &events), ("status", &status), ("metrics", &metrics)] {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret value leaked into the {what}");
        }
    }
    // JSON logs carry the pair on reconcile lines.
    let json_lines: Vec<serde_json::Value> =
        log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(json_lines.len() * 10 >= log.lines().count() * 9, "--log-format json writes JSON lines");
    let promote = json_lines.iter().find(|l| l["step"] == "Promote").cloned();
    assert!(
        promote.is_some_and(|l| l["span"]["drp"] == "chat" && l["epoch"] == 1),
        "step lines carry the pair, the step and the epoch"
    );
    Ok(())
}
