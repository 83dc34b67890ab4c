//! Foundation behaviours against the real sandbox: a kube-apiserver built from Go modules, a
//! PostgreSQL 15 streaming pair, PgBouncer, BIND9 with TSIG and a witness etcd.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::events::v1::Event;
use kube::{api::ListParams, Api};
use understudy::crd::{conditions, ConditionStatus, DisasterRecoveryPair, Phase};
use understudy_e2e::{
    pair::{Failover, Manual, Pair},
    sandbox::{Bind, PgBouncer, PgPair, Witness},
    support::{self, condition, wait_for, RunningController},
};

const T: Duration = Duration::from_secs(30);

/// The failover policy of the pairs on a bare PostgreSQL pair: Manual, quick probes.
fn probing(f: Failover) -> Failover {
    f.mode(Manual).probe_interval("500ms").probe_timeout("500ms").failure_threshold(3).max_lag_bytes("16Mi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_components_are_real() -> Result<()> {
    let cp = tokio::task::spawn_blocking(support::control_plane).await?;
    eprintln!("kube-apiserver {} at {}", cp.version, cp.url);
    assert!(cp.version.starts_with("v1."), "apiserver reports a real version, got {}", cp.version);

    // BIND9: a TSIG-signed update moves the answer; a wrong key is refused and changes nothing.
    let bind = tokio::task::spawn_blocking(|| {
        Bind::start("example.test", &[("chat", "127.0.0.11".parse().expect("ip"))])
    })
    .await??;
    assert_eq!(bind.dig("chat")?, vec!["127.0.0.11"]);
    bind.nsupdate_a("chat", "127.0.0.12", &bind.key_secret)?;
    assert_eq!(bind.dig("chat")?, vec!["127.0.0.12"]);
    let wrong = "c2VjcmV0LXRoYXQtaXMtd3Jvbmctc2VjcmV0LXRoYXQtaXMtd3Jvbmc=";
    let err = bind.nsupdate_a("chat", "127.0.0.13", wrong).expect_err("a wrong TSIG key must be refused");
    assert!(
        err.to_string().to_lowercase().contains("badsig") || err.to_string().contains("NOTAUTH"),
        "{err}"
    );
    assert_eq!(bind.dig("chat")?, vec!["127.0.0.12"]);

    // PostgreSQL pair + PgBouncer: a write through PgBouncer reaches the standby by streaming.
    let (pg, pgb) = tokio::task::spawn_blocking(|| -> Result<(PgPair, PgBouncer)> {
        let pg = PgPair::start("components")?;
        let pgb = PgBouncer::start("app", pg.primary.port, &pg.user, &pg.password)?;
        Ok((pg, pgb))
    })
    .await??;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(pgb.port).dbname("app").user(&pg.user).password(&pg.password);
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)").await?;
    assert_eq!(pg.primary.psql("SELECT pg_is_in_recovery()")?.trim(), "f");
    assert_eq!(pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");
    wait_for("row replicated to the standby", T, || async {
        Ok(pg.standby.psql("SELECT coalesce(sum(v), 0) FROM t").map(|s| s.trim() == "42").unwrap_or(false))
    })
    .await?;

    // Witness etcd: v3 KV works.
    let w = tokio::task::spawn_blocking(Witness::start).await??;
    w.etcdctl(&["put", "/understudy/probe", "ok"])?;
    assert!(w.etcdctl(&["get", "/understudy/probe", "--print-value-only"])?.contains("ok"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_is_accepted_and_bad_pairs_are_rejected_naming_the_field() -> Result<()> {
    let client = support::client_with_crd().await?;
    let ns = support::namespace(&client, "crd").await?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);
    let base = |primary: &str, names: (&str, &str), failover: &str, extra: &str| {
        format!(
            "apiVersion: dr.understudy.dev/v1alpha1\nkind: DisasterRecoveryPair\nmetadata: {{ name: p{} }}\nspec:\n  primary: {primary}\n  sites:\n\
             \x20 - {{ name: {}, postgres: {{ host: a, credentialsSecret: {{ name: s }} }} }}\n\
             \x20 - {{ name: {}, postgres: {{ host: b, credentialsSecret: {{ name: s }} }} }}\n  failover: {failover}\n{extra}",
            support::pair_name_suffix(),
            names.0,
            names.1
        )
    };
    // A valid pair is accepted and defaults are filled in by the schema.
    let ok: DisasterRecoveryPair =
        serde_yaml::from_str(&base("east", ("east", "west"), "{ mode: Manual }", ""))?;
    let ok = api.create(&Default::default(), &ok).await?;
    assert_eq!(ok.spec.failover.failure_threshold, 3);
    assert_eq!(ok.spec.sites[0].postgres.port, 5432);

    let cases = [
        (base("east", ("east", "east"), "{ mode: Manual }", ""), "distinct names"),
        (base("north", ("east", "west"), "{ mode: Manual }", ""), "spec.primary must name one of spec.sites"),
        (base("east", ("east", "west"), "{ mode: Automatic }", ""), "requires spec.coordination.etcd"),
        (base("east", ("east", "west"), "{ failureThreshold: -1 }", ""), "failureThreshold"),
        (base("east", ("east", "west"), "{ probeInterval: 1ms }", ""), "probeInterval"),
        (base("east", ("east", "west"), "{ mode: Sometimes }", ""), "mode"),
        (
            base("east", ("east", "west"), "{ mode: Manual }", "  dataSource: [ {} ]\n"),
            "set exactly one of secretKey and configMapKey",
        ),
    ];
    for (yaml, needle) in cases {
        let drp: DisasterRecoveryPair = match serde_yaml::from_str(&yaml) {
            Ok(d) => d,
            // Values our own types cannot even hold (an unknown enum variant) are sent raw.
            Err(_) => {
                let raw: serde_json::Value = serde_yaml::from_str(&yaml)?;
                let dynapi: Api<kube::api::DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &ns,
                    &kube::api::ApiResource::erase::<DisasterRecoveryPair>(&()),
                );
                let obj: kube::api::DynamicObject = serde_json::from_value(raw)?;
                let err = dynapi.create(&Default::default(), &obj).await.expect_err("must be rejected");
                assert!(err.to_string().contains(needle), "expected {needle:?} in: {err}");
                continue;
            }
        };
        let err =
            api.create(&Default::default(), &drp).await.expect_err(&format!("must be rejected: {needle}"));
        let msg = err.to_string();
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
        assert!(msg.contains("spec."), "the message names the field: {msg}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_lag_and_it_grows_while_replay_is_paused() -> Result<()> {
    let client = support::client_with_crd().await?;
    let ns = support::namespace(&client, "lag").await?;
    let pg = tokio::task::spawn_blocking(|| PgPair::start("lag")).await??;
    support::pair_secrets(&client, &ns, &pg).await?;
    let _ctl = RunningController::start(client.clone(), &ns);
    Pair::on("chat", &pg, "pg-admin").failover(probing).create(&client, &ns).await?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);

    wait_for("pair Healthy with the standby streaming", T, || async {
        let d = api.get("chat").await?;
        let st = d.status.clone().unwrap_or_default();
        Ok(st.phase == Some(Phase::Healthy)
            && st.current_primary.as_deref() == Some("east")
            && condition(&d, conditions::STANDBY_STREAMING).map(|c| c.0) == Some(ConditionStatus::True)
            && st.replication_lag_bytes.is_some())
    })
    .await?;

    pg.standby.psql("SELECT pg_wal_replay_pause()")?;
    pg.primary
        .psql("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")?;
    let first = wait_lag_above(&api, 1 << 20).await?;
    pg.primary.psql("INSERT INTO filler SELECT g, repeat('y', 200) FROM generate_series(1, 20000) g")?;
    let second = wait_lag_above(&api, first + (1 << 20)).await?;
    assert!(second > first, "lag grows while replay is paused: {first} then {second}");

    pg.standby.psql("SELECT pg_wal_replay_resume()")?;
    wait_for("lag back under 64 KiB after resume", T, || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.replication_lag_bytes).is_some_and(|l| l < 65536))
    })
    .await?;
    Ok(())
}

async fn wait_lag_above(api: &Api<DisasterRecoveryPair>, bytes: i64) -> Result<i64> {
    wait_for(&format!("lag above {bytes} bytes"), T, || async {
        Ok(api.get("chat").await?.status.and_then(|s| s.replication_lag_bytes).unwrap_or(0) > bytes)
    })
    .await?;
    Ok(api.get("chat").await?.status.and_then(|s| s.replication_lag_bytes).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_primary_flips_its_health_condition() -> Result<()> {
    let client = support::client_with_crd().await?;
    let ns = support::namespace(&client, "down").await?;
    let mut pg = tokio::task::spawn_blocking(|| PgPair::start("down")).await??;
    support::pair_secrets(&client, &ns, &pg).await?;
    let _ctl = RunningController::start(client.clone(), &ns);
    Pair::on("chat", &pg, "pg-admin").failover(probing).create(&client, &ns).await?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);
    wait_for("primary healthy", T, || async {
        Ok(condition(&api.get("chat").await?, conditions::PRIMARY_HEALTHY).map(|c| c.0)
            == Some(ConditionStatus::True))
    })
    .await?;

    let stopped = std::time::Instant::now();
    pg.primary.stop();
    // probeInterval 500ms x failureThreshold 3: PrimaryDown within a few intervals.
    wait_for("PrimaryHealthy False/PrimaryDown", Duration::from_secs(15), || async {
        let d = api.get("chat").await?;
        Ok(condition(&d, conditions::PRIMARY_HEALTHY)
            .is_some_and(|c| c.0 == ConditionStatus::False && c.1 == "PrimaryDown"))
    })
    .await?;
    eprintln!("primary down reported {:?} after stop", stopped.elapsed());
    let d = api.get("chat").await?;
    let st = d.status.clone().unwrap_or_default();
    assert_eq!(st.phase, Some(Phase::Degraded));
    let east = st.sites.iter().find(|s| s.name == "east").expect("east site status");
    assert!(!east.reachable);
    assert!(east.consecutive_failures >= 3);
    assert!(east.current_lsn.is_some(), "the last known LSN of the dead primary is kept");
    // Manual mode: nothing was promoted.
    assert_eq!(pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t");

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    wait_for("a Warning Event with reason PrimaryDown", T, || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PrimaryDown") && e.type_.as_deref() == Some("Warning")))
    })
    .await?;

    pg.primary.start()?;
    wait_for("primary healthy again", T, || async {
        Ok(condition(&api.get("chat").await?, conditions::PRIMARY_HEALTHY).map(|c| c.0)
            == Some(ConditionStatus::True))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_and_recovers_when_created() -> Result<()> {
    let client = support::client_with_crd().await?;
    let ns = support::namespace(&client, "secret").await?;
    let pg = tokio::task::spawn_blocking(|| PgPair::start("secret")).await??;
    support::pair_secrets(&client, &ns, &pg).await?;
    let _ctl = RunningController::start(client.clone(), &ns);
    Pair::on("chat", &pg, "pg-late").failover(probing).create(&client, &ns).await?;
    let api: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);

    wait_for("SecretsResolved False naming the Secret and the field", T, || async {
        let d = api.get("chat").await?;
        Ok(condition(&d, conditions::SECRETS_RESOLVED).is_some_and(|(s, r, m)| {
            s == ConditionStatus::False
                && r == "SecretMissing"
                && m.contains(&format!("{ns}/pg-late"))
                && m.contains("spec.sites[0].postgres.credentialsSecret")
                && m.contains("username, password")
        }))
    })
    .await?;
    let d = api.get("chat").await?;
    assert_eq!(condition(&d, conditions::PRIMARY_HEALTHY).map(|c| c.0), Some(ConditionStatus::Unknown));
    let st = d.status.clone().unwrap_or_default();
    assert!(st.sites.iter().all(|s| s.consecutive_failures == 0), "a missing Secret is not a probe failure");

    // A Secret without the password key: named precisely.
    support::put_secret(&client, &ns, "pg-late", &[("username", &pg.user)]).await?;
    wait_for("SecretKeyMissing naming the key", T, || async {
        let d = api.get("chat").await?;
        Ok(condition(&d, conditions::SECRETS_RESOLVED)
            .is_some_and(|(_, r, m)| r == "SecretKeyMissing" && m.contains("\"password\"")))
    })
    .await?;

    support::put_secret(&client, &ns, "pg-late", &[("username", &pg.user), ("password", &pg.password)])
        .await?;
    wait_for("recovered: Secrets resolved and pair Healthy", T, || async {
        let d = api.get("chat").await?;
        Ok(condition(&d, conditions::SECRETS_RESOLVED).map(|c| c.0) == Some(ConditionStatus::True)
            && d.status.and_then(|s| s.phase) == Some(Phase::Healthy))
    })
    .await?;
    // The password never appears in status.
    let raw = serde_json::to_string(&api.get("chat").await?.status)?;
    assert!(!raw.contains(&pg.password), "status must not contain the password");
    Ok(())
}
