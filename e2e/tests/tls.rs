//! TLS end to end, against real processes with certificates made here by openssl: PostgreSQL with
//! `ssl = on` checked `VerifyFull`, and a witness etcd that requires client certificates and a
//! password. A good setup is healthy and fails over through TLS; each bad one is reported naming
//! the spec field and the fix, and never promotes anything.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::events::v1::Event;
use kube::{api::ListParams, Api};
use understudy::crd::{conditions, ConditionStatus, DisasterRecoveryPair, PostgresTls, PostgresTlsMode};
use understudy_e2e::{
    bed::Bed,
    pair::{secret, verify_full, Automatic, Failover, Pair},
    sandbox::certs::Ca,
    support::{self, condition, wait_for},
};

/// Automatic, quick probes.
fn fast(f: Failover) -> Failover {
    f.mode(Automatic)
        .probe_interval("500ms")
        .probe_timeout("500ms")
        .failure_threshold(3)
        .max_lag_bytes("16Mi")
}

async fn events(bed: &Bed) -> Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(bed.client.clone(), &bed.ns).list(&ListParams::default()).await?.items)
}

/// understudy's sessions on a server as (ssl, TLS version), read from `pg_stat_ssl`.
fn understudy_sessions(server: &understudy_e2e::sandbox::postgres::PgServer) -> Result<Vec<String>> {
    Ok(server
        .psql(
            "SELECT s.ssl || ' ' || coalesce(s.version, '-') FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'understudy'",
        )?
        .lines()
        .map(str::to_string)
        .collect())
}

/// No secret material anywhere the operator looks: status, Events.
async fn assert_no_secret_material(bed: &Bed, pairs: &[DisasterRecoveryPair]) -> Result<()> {
    let tls = bed.tls.as_ref().expect("a TLS bed");
    let key_line = tls.client.key.lines().nth(1).unwrap_or_default().to_string();
    let server_key_line = tls.server.key.lines().nth(1).unwrap_or_default().to_string();
    let mut haystack = serde_json::to_string(&events(bed).await?)?;
    for p in pairs {
        haystack.push_str(&serde_json::to_string(
            &bed.api().get(&p.metadata.name.clone().unwrap_or_default()).await?.status,
        )?);
    }
    for (what, needle) in [
        ("the witness password", tls.root_password.as_str()),
        ("the PostgreSQL password", bed.pg.password.as_str()),
        ("the client key", key_line.as_str()),
        ("the server key", server_key_line.as_str()),
    ] {
        assert!(needle.len() > 8, "{what} is a real needle");
        assert!(!haystack.contains(needle), "{what} leaked into status or Events");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_full_pair_is_healthy_and_fails_over_through_tls() -> Result<()> {
    let (mut bed, _ctl) = Bed::with_tls_pair("tls", fast).await?;
    let api = bed.api();
    assert_eq!(
        condition(&api.get("chat").await?, conditions::READY).map(|c| c.0),
        Some(ConditionStatus::True)
    );
    // The server says understudy's sessions are encrypted (the sandbox also accepts plaintext).
    let sessions = understudy_sessions(&bed.pg.primary)?;
    assert!(!sessions.is_empty(), "understudy holds a probe connection to the primary");
    assert!(
        sessions.iter().all(|s| s.starts_with("true TLSv1.")),
        "every understudy session uses TLS: {sessions:?}"
    );
    // SCRAM with channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point) over understudy's TLS
    // connector: a connection that requires it succeeds (a connector without it fails this).
    let tls = bed.tls.as_ref().expect("a TLS bed");
    let material = understudy::pg::tls::Material {
        mode: PostgresTlsMode::VerifyFull,
        ca: Some(tls.ca.cert.clone()),
        client: None,
    };
    let config = understudy::pg::tls::client_config(&material).map_err(|(_, e)| anyhow::anyhow!(e))?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(bed.pg.primary.port)
        .dbname("postgres")
        .user(&bed.pg.user)
        .password(&bed.pg.password)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let (client, conn) = cfg.connect(understudy::pg::tls::make_connect(config)).await?;
    let conn = tokio::spawn(conn);
    assert_eq!(client.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
    drop(client);
    let _ = conn.await;

    bed.pg.primary.kill9();
    let drp = bed.wait_transition_finished("chat", Duration::from_secs(40)).await?;
    let st = drp.status.clone().unwrap_or_default();
    let t = st.last_transition.clone().expect("transition");
    assert_eq!(st.current_primary.as_deref(), Some("west"));
    assert_eq!((t.trigger.as_str(), t.epoch.0), ("Automatic", 1));
    for s in &t.steps {
        let want = if s.name == "Fence" { "Skipped" } else { "Succeeded" };
        assert_eq!(s.outcome.map(|o| o.as_str()), Some(want), "{s:?}");
    }
    // The epoch went through the TLS witness with its password; etcdctl reads it with the client cert.
    assert!(
        bed.witness_epoch("chat")?.starts_with("1 "),
        "etcd holds epoch 1: {}",
        bed.witness_epoch("chat")?
    );
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "f");
    assert_eq!(bed.pg.standby.timeline()?, 2, "exactly one promotion");
    assert_eq!(bed.pg.standby.psql("SELECT epoch FROM understudy_epoch")?.trim(), "1");
    let sessions = understudy_sessions(&bed.pg.standby)?;
    assert!(
        !sessions.is_empty() && sessions.iter().all(|s| s.starts_with("true TLSv1.")),
        "understudy talks to the new primary over TLS: {sessions:?}"
    );
    assert_no_secret_material(&bed, &[drp]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_misconfigurations_are_named_and_never_fail_over() -> Result<()> {
    let bed = Bed::start_tls("tlsbad").await?;
    let _ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
    let rogue = tokio::task::spawn_blocking(|| Ca::new("rogue-ca")).await??;
    support::put_secret(&bed.client, &bed.ns, "rogue-ca", &[("ca.crt", &rogue.cert)]).await?;
    support::put_secret(&bed.client, &bed.ns, "garbage-ca", &[("ca.crt", "this is not a certificate")])
        .await?;
    let client = &bed.tls.as_ref().expect("TLS bed").client;
    support::put_secret(&bed.client, &bed.ns, "half-client", &[("tls.crt", &client.cert)]).await?;
    let pgb_port = bed.pgb.port;

    // (pair, edit of the pair, condition, reason, needles in the message); on a TLS bed each site
    // starts with `verify_full("pg-ca")`.
    type Edit = Box<dyn Fn(Pair) -> Pair>;
    let cases: Vec<(&str, Edit, &str, &str, Vec<&str>)> = vec![
        (
            "wrong-ca",
            Box::new(|p| p.each_site(|s| s.postgres.tls = Some(verify_full("rogue-ca")))),
            conditions::PRIMARY_HEALTHY,
            "TlsHandshakeFailed",
            vec!["spec.sites[0].postgres.tls.caSecret", "not issued by the CA"],
        ),
        (
            "wrong-host",
            // The certificate names IP 127.0.0.1 only; `localhost` reaches the same server. Every
            // host of the pair says `localhost`, PgBouncer's console too.
            Box::new(|p| {
                p.each_site(|s| s.postgres.host = "localhost".into())
                    .pg_bouncer(|b| b.host = "localhost".into())
            }),
            conditions::PRIMARY_HEALTHY,
            "TlsHandshakeFailed",
            vec!["spec.sites[0].postgres.host", "not valid for \"localhost\""],
        ),
        (
            // PgBouncer here has no TLS: a server that only speaks plaintext.
            "plaintext",
            Box::new(move |p| {
                p.site("east", |s| {
                    s.postgres.port = pgb_port;
                    s.postgres.database = "app".into();
                    s.postgres.tls = Some(PostgresTls {
                        mode: PostgresTlsMode::Require,
                        ca_secret: None,
                        client_cert_secret: None,
                    });
                })
            }),
            conditions::PRIMARY_HEALTHY,
            "TlsHandshakeFailed",
            vec!["spec.sites[0].postgres.tls", "does not accept TLS"],
        ),
        (
            "missing-ca",
            Box::new(|p| p.site("east", |s| s.postgres.tls = Some(verify_full("nope")))),
            conditions::SECRETS_RESOLVED,
            "SecretMissing",
            vec!["spec.sites[0].postgres.tls.caSecret", "not found"],
        ),
        (
            "bad-pem",
            Box::new(|p| p.site("east", |s| s.postgres.tls = Some(verify_full("garbage-ca")))),
            conditions::SECRETS_RESOLVED,
            "TlsConfigInvalid",
            vec!["spec.sites[0].postgres.tls.caSecret", "no PEM certificate"],
        ),
        (
            "half-client",
            Box::new(|p| {
                p.site("east", |s| {
                    s.postgres.tls = Some(PostgresTls {
                        client_cert_secret: Some(secret("half-client")),
                        ..verify_full("pg-ca")
                    })
                })
            }),
            conditions::SECRETS_RESOLVED,
            "SecretKeyMissing",
            vec!["spec.sites[0].postgres.tls.clientCertSecret", "has no key \"tls.key\""],
        ),
    ];
    for (name, edit, _, _, _) in &cases {
        let pair = edit(bed.pair(name).failover(fast));
        assert_ne!(pair.to_value(), bed.pair(name).failover(fast).to_value(), "{name}: the edit applies");
        pair.create(&bed.client, &bed.ns).await?;
    }
    let api = bed.api();
    for (name, _, cond, reason, needles) in &cases {
        let res = wait_for(
            &format!("{name}: {cond}/{reason} naming {needles:?}"),
            Duration::from_secs(30),
            || async {
                Ok(condition(&api.get(name).await?, cond)
                    .is_some_and(|(_, r, m)| r == *reason && needles.iter().all(|n| m.contains(n))))
            },
        )
        .await;
        if let Err(e) = res {
            anyhow::bail!("{e:#}\nconditions: {:?}", api.get(name).await?.status.map(|s| s.conditions));
        }
        let msg = condition(&api.get(name).await?, cond).map(|c| c.2).unwrap_or_default();
        eprintln!("{name}: {cond}/{reason}: {msg}");
    }
    // Every probe of a misconfigured site keeps failing the same way; none of it counts as a failure.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut pairs = Vec::new();
    for (name, _, _, reason, needles) in &cases {
        let drp = api.get(name).await?;
        let st = drp.status.clone().unwrap_or_default();
        assert!(
            st.sites.iter().all(|s| s.consecutive_failures == 0),
            "{name}: no failed probe counted: {:?}",
            st.sites
        );
        assert!(st.last_transition.is_none() && st.epoch.0 == 0, "{name}: nothing started");
        assert!(
            bed.witness
                .etcdctl(&["get", &format!("/understudy/{}/{name}/epoch", bed.ns), "--print-value-only"])?
                .trim()
                .is_empty(),
            "{name}: no epoch taken"
        );
        let evs = events(&bed).await?;
        assert!(
            evs.iter().any(|e| e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
                && e.note.as_deref().is_some_and(|n| needles.iter().all(|x| n.contains(x)))),
            "{name}: a Warning Event {reason} names the field"
        );
        pairs.push(drp);
    }
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t", "nothing promoted");
    assert_no_secret_material(&bed, &pairs).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_witness_certificate_or_password_blocks_a_real_failover_naming_the_field() -> Result<()> {
    let mut bed = Bed::start_tls("tlswitness").await?;
    let _ctl = support::RunningController::start(bed.client.clone(), &bed.ns);
    let tls = bed.tls.as_ref().expect("TLS bed");
    let (witness_ca, client_cert) = (tls.ca.cert.clone(), tls.client.cert.clone());
    let rogue_client =
        tokio::task::spawn_blocking(|| Ca::new("rogue-client-ca")?.issue("root", &[], true)).await??;
    support::put_secret(
        &bed.client,
        &bed.ns,
        "rogue-client",
        &[("ca.crt", &witness_ca), ("tls.crt", &rogue_client.cert), ("tls.key", &rogue_client.key)],
    )
    .await?;
    support::put_secret(
        &bed.client,
        &bed.ns,
        "wrong-auth",
        &[("username", "root"), ("password", "not-the-password")],
    )
    .await?;
    support::put_secret(
        &bed.client,
        &bed.ns,
        "bad-key",
        &[("ca.crt", &witness_ca), ("tls.crt", &client_cert), ("tls.key", "-----BEGIN PRIVATE KEY-----\n")],
    )
    .await?;
    let cases: Vec<(&str, Pair, Vec<&str>)> = vec![
        (
            "bad-cert",
            bed.pair("bad-cert").witness(|w| w.tls_secret = Some(secret("rogue-client"))),
            vec!["spec.coordination.etcd.tlsSecret"],
        ),
        (
            "bad-pass",
            bed.pair("bad-pass").witness(|w| w.auth_secret = Some(secret("wrong-auth"))),
            vec!["spec.coordination.etcd.authSecret", "check its username and password"],
        ),
        (
            "bad-key",
            bed.pair("bad-key").witness(|w| w.tls_secret = Some(secret("bad-key"))),
            vec!["spec.coordination.etcd.tlsSecret", "key tls.key"],
        ),
    ];
    for (_, pair, _) in &cases {
        pair.clone().failover(fast).create(&bed.client, &bed.ns).await?;
    }
    let api = bed.api();
    // PostgreSQL is fine, so each pair is healthy; then the primary dies for real.
    for (name, _, _) in &cases {
        bed.wait_healthy(name).await?;
    }
    bed.pg.primary.kill9();
    for (name, _, needles) in &cases {
        let res = wait_for(
            &format!("{name}: FailoverBlocked/WitnessUnavailable"),
            Duration::from_secs(30),
            || async {
                Ok(condition(&api.get(name).await?, conditions::FAILOVER_BLOCKED).is_some_and(|(s, r, m)| {
                    s == ConditionStatus::True
                        && r == "WitnessUnavailable"
                        && needles.iter().all(|n| m.contains(n))
                }))
            },
        )
        .await;
        if let Err(e) = res {
            anyhow::bail!("{e:#}\nconditions: {:?}", api.get(name).await?.status.map(|s| s.conditions));
        }
        let msg =
            condition(&api.get(name).await?, conditions::FAILOVER_BLOCKED).map(|c| c.2).unwrap_or_default();
        eprintln!("{name}: FailoverBlocked/WitnessUnavailable: {msg}");
    }
    let mut pairs = Vec::new();
    for (name, _, _) in &cases {
        let drp = api.get(name).await?;
        assert_eq!(drp.status.as_ref().map(|s| s.epoch.0), Some(0), "{name}: no epoch taken");
        pairs.push(drp);
    }
    let evs = events(&bed).await?;
    assert!(
        evs.iter().any(|e| e.type_.as_deref() == Some("Warning")
            && e.reason.as_deref() == Some("WitnessUnavailable")
            && e.note.as_deref().is_some_and(|n| n.contains("spec.coordination.etcd.authSecret"))),
        "a Warning Event names authSecret"
    );
    assert_eq!(bed.pg.standby.psql("SELECT pg_is_in_recovery()")?.trim(), "t", "nothing promoted");
    assert_no_secret_material(&bed, &pairs).await?;
    Ok(())
}
