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
use understudy::crd::{conditions, ConditionStatus, DisasterRecoveryPair};
use understudy_e2e::{
    bed::{Bed, APP_TOKEN},
    pair::{mattermost_config_target, secret, secret_key, secret_target, Automatic, Failover, Manual, Pair},
    support::{self, condition, wait_for},
};

/// A pair document with `spec_tail` replacing the failover policy and everything after it.
fn doc(name: &str, sites: &str, spec_tail: &str) -> String {
    format!("apiVersion: dr.understudy.dev/v1alpha1\nkind: DisasterRecoveryPair\nmetadata: {{ name: {name} }}\nspec:\n  primary: east\n  sites:\n{sites}{spec_tail}")
}

/// The failover policy of the pairs whose references are bad: Manual, quick probes.
fn manual(f: Failover) -> Failover {
    f.mode(Manual).probe_interval("500ms")
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
        (doc("dupds", SITES, "  dataSource: [ { secretKey: { name: a, key: b } }, { secretKey: { name: a, key: b } } ]\n"), "spec.dataSource: a target is listed twice"),
        (doc("dupcm", SITES, "  dataSource: [ { configMapKey: { name: c, key: d, jsonPointer: /x } }, { secretKey: { name: a, key: b } }, { configMapKey: { name: c, key: d, jsonPointer: /x } } ]\n"), "spec.dataSource: a target is listed twice"),
        (doc("probetiming", SITES, "  failover: { probeInterval: 200ms, probeTimeout: 2s }\n"), "spec.failover.probeTimeout must not exceed spec.failover.probeInterval"),
        (doc("leasedefault", SITES, "  coordination: { etcd: { endpoints: ['http://w:2379'], leaseTTL: 3s } }\n"), "spec.coordination.etcd.leaseTTL must be at least 4 × spec.failover.probeTimeout"),
        (doc("tlsclient", "  - { name: east, postgres: { host: a, credentialsSecret: { name: s }, tls: { mode: Disable, clientCertSecret: { name: c } } } }\n  - { name: west, postgres: { host: b, credentialsSecret: { name: s } } }\n", ""), "spec.sites[0].postgres.tls"),
        (doc("objrto", SITES, "  objectives: { rto: 0s }\n"), "spec.objectives.rto must be between 1s and 24h"),
        (doc("drillevery", SITES, "  drills: { every: 10m }\n"), "spec.drills.every must be at least 1h"),
        (doc("drillwindow", SITES, "  drills: { every: 168h, window: { start: '25:00', duration: 1h } }\n"), "spec.drills.window.start"),
        (doc("drilllen", SITES, "  drills: { window: { start: '02:00', duration: 48h } }\n"), "spec.drills.window.duration must be between 1m and 24h"),
        (doc("drillret", SITES, "  drills: { returnTimeout: 1s }\n"), "spec.drills.returnTimeout must be between 10s and 24h"),
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
    // A TSIG secret cut short (not a whole base64 group) and one too short to be a key.
    for (name, secret) in [("trunc-tsig", "c2VjcmV0LWtleS1jdXQtc2hvcnQtaGVyZ"), ("short-tsig", "aGVsbG8h")] {
        support::put_secret(
            &bed.client,
            &bed.ns,
            name,
            &[("name", &bed.key_name()), ("algorithm", "hmac-sha256"), ("secret", secret)],
        )
        .await?;
    }

    // (pair name, edit of the pair, condition type, needle in its message)
    type Edit = Box<dyn Fn(Pair) -> Pair>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "missing-secret",
            Box::new(|p| p.each_site(|s| s.postgres.credentials_secret = secret("nope"))),
            conditions::SECRETS_RESOLVED,
            "spec.sites[0].postgres.credentialsSecret",
        ),
        (
            "missing-key",
            Box::new(|p| p.each_site(|s| s.postgres.credentials_secret = secret("half-admin"))),
            conditions::SECRETS_RESOLVED,
            "has no key \"password\"",
        ),
        (
            "bad-pointer",
            Box::new(|p| p.config_map_target(|c| c.json_pointer = "/SqlSettings/DataSauce".into())),
            conditions::READY_FOR_FAILOVER,
            "spec.dataSource[0].configMapKey.jsonPointer",
        ),
        (
            "not-json",
            Box::new(|p| p.config_map_target(|c| c.name = "not-json".into())),
            conditions::READY_FOR_FAILOVER,
            "is not JSON",
        ),
        (
            "wrong-tsig",
            Box::new(|p| p.rfc2136(|r| r.tsig_secret = secret("bad-tsig"))),
            conditions::READY_FOR_FAILOVER,
            "TSIG",
        ),
        (
            "md5-tsig",
            Box::new(|p| p.rfc2136(|r| r.tsig_secret = secret("tsig-md5"))),
            conditions::READY_FOR_FAILOVER,
            "tsigSecret.algorithm",
        ),
        (
            "trunc-tsig",
            Box::new(|p| p.rfc2136(|r| r.tsig_secret = secret("trunc-tsig"))),
            conditions::READY_FOR_FAILOVER,
            "tsigSecret.secret: not valid base64",
        ),
        (
            "short-tsig",
            Box::new(|p| p.rfc2136(|r| r.tsig_secret = secret("short-tsig"))),
            conditions::READY_FOR_FAILOVER,
            "the key is 6 bytes long",
        ),
        // A closed port instead of the DNS server's.
        (
            "dns-down",
            Box::new(|p| p.rfc2136(|r| r.server = "127.0.0.1:9".into())),
            conditions::READY_FOR_FAILOVER,
            "spec.dns[0].rfc2136",
        ),
        (
            "bad-quantity",
            Box::new(|p| p.failover(|f| f.max_lag_bytes("16MB"))),
            conditions::LAG_WITHIN_BUDGET,
            "spec.failover.maxLagBytes",
        ),
        (
            "no-dns-target",
            Box::new(|p| p.site("west", |s| s.dns_target = None)),
            conditions::READY_FOR_FAILOVER,
            "no dnsTarget",
        ),
    ];
    for (name, edit, _, _) in &cases {
        edit(bed.pair(name).failover(manual)).create(&bed.client, &bed.ns).await?;
    }
    let api = bed.api();
    for (name, _, cond, needle) in &cases {
        let res = wait_for(&format!("{name}: {cond} names {needle}"), Duration::from_secs(30), || async {
            Ok(condition(&api.get(name).await?, cond)
                .is_some_and(|(s, _, m)| s != ConditionStatus::True && m.contains(needle)))
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
    bed.pair("chat")
        .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
        .create(&bed.client, &bed.ns)
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

/// Bad input, round two (issue 11): each case on the real API server with the controller running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_two_every_refusal_names_its_cause_and_nothing_is_half_done() -> Result<()> {
    let bed = Bed::start("round2").await?;
    let _ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
    let api = bed.api();
    let dynapi: Api<kube::api::DynamicObject> = Api::namespaced_with(
        bed.client.clone(),
        &bed.ns,
        &kube::api::ApiResource::erase::<DisasterRecoveryPair>(&()),
    );

    // 1. `maxLagBytes: null` is stored as the default (the schema no longer allows null), and the
    //    pair is reconciled.
    let mut raw = bed.pair("nulllag").failover(manual).to_value();
    raw["spec"]["failover"]["maxLagBytes"] = serde_json::Value::Null;
    let obj: kube::api::DynamicObject = serde_json::from_value(raw)?;
    dynapi.create(&Default::default(), &obj).await?;
    assert_eq!(api.get("nulllag").await?.spec.failover.max_lag_bytes.0, "16Mi");

    // 2. DataSource targets [Secret, ConfigMap]: a ConfigMap that a longer DSN would push over the
    //    1 MiB limit, and an immutable one. Both are refused before anything is written, and
    //    ReadyForFailover says so beforehand.
    let long_dsn = format!("{}&application_name={}", bed.dsn("west"), "w".repeat(200));
    support::put_secret(&bed.client, &bed.ns, "dsn-west-long", &[("dsn", &long_dsn)]).await?;
    for name in ["db-big", "db-imm"] {
        support::put_secret(&bed.client, &bed.ns, name, &[("dsn", &bed.dsn("east"))]).await?;
    }
    let doc = |pad: usize| {
        format!(
            "{{\"SqlSettings\":{{\"DataSource\":{}}},\"JobSettings\":{{\"RunScheduler\":true}},\"Padding\":\"{}\"}}",
            serde_json::to_string(&bed.dsn("east")).unwrap_or_default(),
            "p".repeat(pad)
        )
    };
    let short = doc(0).len();
    let big_doc = doc((1 << 20) - short - 64);
    let cms: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &bed.ns);
    for (name, body, immutable) in
        [("big-config", big_doc.clone(), None), ("imm-config", doc(10), Some(true))]
    {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some([("config.json".to_string(), body)].into()),
            immutable,
            ..Default::default()
        };
        cms.create(&Default::default(), &cm).await?;
    }
    let with_targets = |pair: &str, secret: &str, cm: &str| {
        bed.pair(pair)
            .failover(manual)
            .site("west", |s| s.data_source_secret = Some(secret_key("dsn-west-long", "dsn")))
            .data_source([secret_target(secret, "dsn"), mattermost_config_target(cm)])
    };
    with_targets("bigcm", "db-big", "big-config").create(&bed.client, &bed.ns).await?;
    with_targets("immcm", "db-imm", "imm-config").create(&bed.client, &bed.ns).await?;
    for (pair, needle) in [("bigcm", "1048576"), ("immcm", "the API server refuses the write (422)")] {
        wait_for(
            &format!("{pair}: ReadyForFailover names the ConfigMap"),
            Duration::from_secs(30),
            || async {
                Ok(condition(&api.get(pair).await?, conditions::READY_FOR_FAILOVER).is_some_and(
                    |(s, _, m)| {
                        s == ConditionStatus::False
                            && m.contains("spec.dataSource[1].configMapKey")
                            && m.contains(needle)
                    },
                ))
            },
        )
        .await?;
    }

    // 3. A token acts once, forever: dry-run d1, d2, then d1 again.
    for t in ["d1", "d2"] {
        bed.annotate("nulllag", "dr.understudy.dev/dry-run", t).await?;
        wait_for(&format!("dry-run {t}"), Duration::from_secs(20), || async {
            Ok(api.get("nulllag").await?.status.and_then(|s| s.dry_run).is_some_and(|d| d.token == t))
        })
        .await?;
    }
    let d2_at = api.get("nulllag").await?.status.and_then(|s| s.dry_run).map(|d| d.at);
    bed.annotate("nulllag", "dr.understudy.dev/dry-run", "d1").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = api.get("nulllag").await?.status.and_then(|s| s.dry_run);
    assert_eq!(after.as_ref().map(|d| d.token.as_str()), Some("d2"), "d1 must not run a second time");
    assert_eq!(after.map(|d| d.at), d2_at);

    // 4. Each refusal keeps its own message: in the LastCommand condition and in its own Event.
    let events: Api<Event> = Api::namespaced(bed.client.clone(), &bed.ns);
    let cases = [("s1", "east", "already serves"), ("s2", "north", "names no site")];
    for (token, to, needle) in cases {
        let patch = serde_json::json!({ "metadata": { "annotations": {
            "dr.understudy.dev/switchover-to": to, "dr.understudy.dev/switchover": token } } });
        api.patch("nulllag", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        wait_for(&format!("LastCommand says {needle}"), Duration::from_secs(20), || async {
            Ok(condition(&api.get("nulllag").await?, conditions::LAST_COMMAND).is_some_and(|(s, _, m)| {
                s == ConditionStatus::False && m.contains(needle) && m.contains(token)
            }))
        })
        .await?;
    }
    wait_for("one Event per refusal, each with its own text", Duration::from_secs(20), || async {
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("nulllag")
                    && e.reason.as_deref() == Some("SwitchoverRejected")
            })
            .filter_map(|e| e.note)
            .collect();
        Ok(cases.iter().all(|(_, _, needle)| notes.iter().any(|n| n.contains(needle))))
    })
    .await?;

    // 5. A 10 KB value: refused with the reason first, stored bounded.
    let long = "x".repeat(10_240);
    bed.annotate("nulllag", "dr.understudy.dev/failover", &long).await?;
    wait_for("the long value refused", Duration::from_secs(20), || async {
        Ok(condition(&api.get("nulllag").await?, conditions::LAST_COMMAND)
            .is_some_and(|(_, _, m)| m.contains("not a token") && m.contains("(10240 bytes)")))
    })
    .await?;
    let handled = api.get("nulllag").await?.status.map(|s| s.handled).unwrap_or_default();
    let kept = handled.get("dr.understudy.dev/failover").cloned().unwrap_or_default();
    assert!(
        kept.len() < 120 && kept.contains("sha256:"),
        "status keeps a bounded form: {} bytes",
        kept.len()
    );

    // 6. A pair deleted mid-transition says what it leaves undone.
    bed.pair("midway").failover(manual).create(&bed.client, &bed.ns).await?;
    wait_for("midway has a status", Duration::from_secs(20), || async {
        Ok(api.get("midway").await?.status.is_some())
    })
    .await?;
    let now = jiff::Timestamp::now().to_string();
    let step = |name: &str, done: bool| understudy::crd::StepRecord {
        name: name.into(),
        started_at: done.then(|| now.clone()),
        finished_at: done.then(|| now.clone()),
        outcome: done.then_some(understudy::crd::StepOutcome::Succeeded),
        ..Default::default()
    };
    // The journal claims an epoch the witness does not hold, so the executor stops before Promote.
    wait_for("a journal written under the controller", Duration::from_secs(20), || async {
        let mut drp = api.get("midway").await?;
        let mut st = drp.status.clone().unwrap_or_default();
        st.last_transition = Some(understudy::crd::Transition {
            trigger: understudy::crd::Trigger::Forced,
            kind: understudy::crd::TransitionKind::Failover,
            from: "east".into(),
            to: "west".into(),
            epoch: understudy::crd::Epoch(1),
            id: "other/1/west".into(),
            started_at: now.clone(),
            steps: vec![step("TakeEpoch", true), step("Promote", false), step("FlipDns", false)],
            ..Default::default()
        });
        drp.status = Some(st);
        drp.metadata.managed_fields = None;
        Ok(api.replace_status("midway", &Default::default(), &drp).await.is_ok())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.delete("midway", &Default::default()).await?;
    wait_for("DeletedMidTransition names what is left", Duration::from_secs(20), || async {
        Ok(events.list(&ListParams::default()).await?.items.into_iter().any(|e| {
            e.reason.as_deref() == Some("DeletedMidTransition")
                && e.note.is_some_and(|n| n.contains("NOT done Promote, FlipDns"))
        }))
    })
    .await?;

    // 7. Last (it promotes west): a forced failover of the pair whose ConfigMap is immutable
    //    stops at RewriteDataSource with nothing written; the Secret listed first keeps east's DSN.
    bed.annotate("immcm", "dr.understudy.dev/failover", "f1").await?;
    wait_for("RewriteDataSource refused before any write", Duration::from_secs(40), || async {
        let t = api.get("immcm").await?.status.and_then(|s| s.last_transition);
        Ok(t.and_then(|t| t.steps.into_iter().find(|s| s.name == "RewriteDataSource")).is_some_and(|s| {
            s.finished_at.is_none()
                && s.message
                    .unwrap_or_default()
                    .contains("nothing was written: spec.dataSource[1].configMapKey")
        }))
    })
    .await?;
    assert_eq!(bed.secret_value("db-imm", "dsn").await?, bed.dsn("east"), "the Secret was not rewritten");
    assert_eq!(bed.config_map_value("imm-config", "config.json").await?, doc(10));
    assert_eq!(bed.config_map_value("big-config", "config.json").await?, big_doc);
    Ok(())
}

/// A pair deleted and created again under its name continues from the witness's epoch (issue 11):
/// before, every failover of the new pair was refused as "another controller acted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_created_again_continues_from_the_witness_epoch() -> Result<()> {
    let (bed, _ctl) = Bed::with_pair("again", manual).await?;
    let api = bed.api();
    bed.annotate("chat", "dr.understudy.dev/failover", "f1").await?;
    bed.wait_epoch_finished("chat", 1, Duration::from_secs(40)).await?;
    bed.wait_rejoined("chat", Duration::from_secs(60)).await?;
    api.delete("chat", &Default::default()).await?;
    wait_for("the pair gone", Duration::from_secs(20), || async { Ok(api.get_opt("chat").await?.is_none()) })
        .await?;
    bed.pair("chat").failover(manual).create(&bed.client, &bed.ns).await?;
    wait_for("the witness's epoch and primary adopted", Duration::from_secs(40), || async {
        let st = api.get("chat").await?.status.unwrap_or_default();
        Ok(st.epoch.0 == 1 && st.current_primary.as_deref() == Some("west"))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(bed.client.clone(), &bed.ns);
    let adopted = events.list(&ListParams::default()).await?.items.into_iter().any(|e| {
        e.reason.as_deref() == Some("EpochAdopted") && e.note.is_some_and(|n| n.contains("epoch 1"))
    });
    assert!(adopted, "an EpochAdopted Event says what happened");
    bed.annotate("chat", "dr.understudy.dev/failover", "f2").await?;
    let drp = bed.wait_epoch_finished("chat", 2, Duration::from_secs(40)).await?;
    let st = drp.status.unwrap_or_default();
    assert_eq!(st.current_primary.as_deref(), Some("east"));
    assert_eq!(st.last_transition.and_then(|t| t.outcome).map(|o| o.as_str()), Some("Completed"));
    assert!(bed.witness_epoch("chat")?.starts_with("2 "), "{}", bed.witness_epoch("chat")?);
    Ok(())
}

/// Two controllers started with the same `--site` for one pair: the second finds the first's
/// registration in the witness and says so (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_with_the_same_site_is_reported() -> Result<()> {
    let bed = Bed::start("dupsite").await?;
    bed.pair("chat").failover(manual).create(&bed.client, &bed.ns).await?;
    let _first = bed.controller_process("east", &[])?;
    bed.wait_healthy("chat").await?;
    let _second = bed.controller_process("east", &[])?;
    let events: Api<Event> = Api::namespaced(bed.client.clone(), &bed.ns);
    // Reported once the first one's registration is seen renewed (a readiness round is 30 s).
    wait_for("DuplicateSiteController", Duration::from_secs(100), || async {
        Ok(events.list(&ListParams::default()).await?.items.into_iter().any(|e| {
            e.reason.as_deref() == Some("DuplicateSiteController")
                && e.note.is_some_and(|n| n.contains("another controller runs with --site east"))
        }))
    })
    .await?;
    let registered = bed.witness.etcdctl(&[
        "get",
        &format!("/understudy/{}/chat/controllers/east", bed.ns),
        "--print-value-only",
    ])?;
    assert!(registered.trim().starts_with("east@"), "the first controller's registration: {registered}");
    Ok(())
}
