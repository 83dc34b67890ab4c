//! Test pairs as typed `DisasterRecoveryPair`s: one builder instead of hand-written YAML. A pair
//! starts from the sandbox's parts (`Pair::on` for a bare PostgreSQL pair, `Bed::pair` for the full
//! bed) and a test says only what it changes:
//!
//! ```no_run
//! # use understudy_e2e::{bed::Bed, pair::Automatic};
//! # async fn example(bed: &Bed) -> anyhow::Result<()> {
//! bed.pair("chat")
//!     .failover(|f| f.mode(Automatic).probe_interval("500ms").failure_threshold(3))
//!     .lease_ttl("4s")
//!     .create(&bed.client, &bed.ns)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Edits take the controller's own types (`site("west", |s| s.dns_target = None)`,
//! `rfc2136(|r| r.tsig_secret = secret("bad-tsig"))`), so a pair holds only what the API can.
//! Deliberately invalid documents are not built here: they stay raw in their tests (`to_value`
//! gives a valid pair's JSON to spoil one field of).

use anyhow::{Context as _, Result};
use kube::{
    api::{Patch, PatchParams, PostParams},
    core::Duration,
    Api, Client,
};
pub use understudy::crd::FailoverMode::{self, Approve, Automatic, Manual};
use understudy::crd::{
    ConfigMapJsonKey, Coordination, DataSourceTarget, DisasterRecoveryPair, DisasterRecoveryPairSpec,
    DnsRecord, EtcdWitness, FailoverPolicy, PerSiteValue, PgBouncerRecycler, PostgresEndpoint, PostgresTls,
    PostgresTlsMode, Recycler, Rfc2136Record, SecretKeyRef, SecretRef, Site,
};

use crate::sandbox::PgPair;

/// A pair being built; `build` or `create` it when done.
#[derive(Clone, Debug)]
pub struct Pair(DisasterRecoveryPair);

impl Pair {
    /// Sites `east` (the primary) and `west` on these servers, the default failover policy
    /// (Manual, probes every 1s), and nothing else.
    pub fn new(name: &str, east: PostgresEndpoint, west: PostgresEndpoint) -> Pair {
        let site = |name: &str, postgres| Site {
            name: name.into(),
            postgres,
            data_source_secret: None,
            health: None,
            rejoin: None,
            fence_hook: None,
            dns_target: None,
        };
        Pair(DisasterRecoveryPair::new(
            name,
            DisasterRecoveryPairSpec {
                primary: "east".into(),
                sites: vec![site("east", east), site("west", west)],
                failover: FailoverPolicy::default(),
                data_source: Vec::new(),
                recycle: Vec::new(),
                dns: Vec::new(),
                activate: Vec::new(),
                coordination: None,
                objectives: None,
                drills: None,
            },
        ))
    }

    /// A pair on `pg` (east = its primary server, west = its standby), both logging in with
    /// `credentials_secret`, each site with its DSN in `dsn-<site>` (as `support::pair_secrets`
    /// writes them) and a DNS target (east 127.0.0.11, west 127.0.0.12). Default failover policy.
    pub fn on(name: &str, pg: &PgPair, credentials_secret: &str) -> Pair {
        let endpoint = |port| postgres("127.0.0.1", port, credentials_secret);
        Pair::new(name, endpoint(pg.primary.port), endpoint(pg.standby.port)).each_site(|s| {
            s.data_source_secret = Some(secret_key(&format!("dsn-{}", s.name), "dsn"));
            s.dns_target = Some(if s.name == "east" { "127.0.0.11" } else { "127.0.0.12" }.into());
        })
    }

    /// `Pair::on` with the Secrets `support::pair_secrets_prefixed(…, prefix)` writes.
    pub fn on_prefixed(name: &str, pg: &PgPair, prefix: &str) -> Pair {
        Pair::on(name, pg, &format!("{prefix}pg-admin"))
            .each_site(|s| s.data_source_secret = Some(secret_key(&format!("{prefix}dsn-{}", s.name), "dsn")))
    }

    /// The same pair under another name.
    pub fn name(mut self, name: &str) -> Pair {
        self.0.metadata.name = Some(name.into());
        self
    }

    /// Edits `spec.failover`: `.failover(|f| f.mode(Automatic).probe_interval("500ms"))`.
    pub fn failover(mut self, edit: impl FnOnce(Failover) -> Failover) -> Pair {
        self.0.spec.failover = edit(Failover(self.0.spec.failover)).0;
        self
    }

    /// Edits the site named `name`.
    pub fn site(mut self, name: &str, edit: impl FnOnce(&mut Site)) -> Pair {
        let site = self.0.spec.sites.iter_mut().find(|s| s.name == name);
        edit(site.unwrap_or_else(|| panic!("the pair has no site {name}")));
        self
    }

    /// Edits both sites alike.
    pub fn each_site(mut self, edit: impl FnMut(&mut Site)) -> Pair {
        self.0.spec.sites.iter_mut().for_each(edit);
        self
    }

    /// Replaces `spec.dataSource`.
    pub fn data_source(mut self, targets: impl IntoIterator<Item = DataSourceTarget>) -> Pair {
        self.0.spec.data_source = targets.into_iter().collect();
        self
    }

    /// Replaces `spec.recycle`.
    pub fn recycle(mut self, recyclers: impl IntoIterator<Item = Recycler>) -> Pair {
        self.0.spec.recycle = recyclers.into_iter().collect();
        self
    }

    /// Replaces `spec.dns`.
    pub fn dns(mut self, records: impl IntoIterator<Item = DnsRecord>) -> Pair {
        self.0.spec.dns = records.into_iter().collect();
        self
    }

    /// Replaces `spec.activate`.
    pub fn activate(mut self, workloads: impl IntoIterator<Item = understudy::crd::Activation>) -> Pair {
        self.0.spec.activate = workloads.into_iter().collect();
        self
    }

    /// Edits the first `configMapKey` target of `spec.dataSource`.
    pub fn config_map_target(mut self, edit: impl FnOnce(&mut ConfigMapJsonKey)) -> Pair {
        let key = self.0.spec.data_source.iter_mut().find_map(|t| t.config_map_key.as_mut());
        edit(key.expect("the pair has a configMapKey target"));
        self
    }

    /// Edits the first PgBouncer of `spec.recycle`.
    pub fn pg_bouncer(mut self, edit: impl FnOnce(&mut PgBouncerRecycler)) -> Pair {
        let pgb = self.0.spec.recycle.iter_mut().find_map(|r| r.pg_bouncer.as_mut());
        edit(pgb.expect("the pair recycles a PgBouncer"));
        self
    }

    /// Edits the first RFC 2136 record of `spec.dns`.
    pub fn rfc2136(mut self, edit: impl FnOnce(&mut Rfc2136Record)) -> Pair {
        let record = self.0.spec.dns.iter_mut().find_map(|d| d.rfc2136.as_mut());
        edit(record.expect("the pair has an RFC 2136 record"));
        self
    }

    /// Sets the etcd witness (`spec.coordination.etcd`); `None` removes it.
    pub fn set_witness(mut self, witness: Option<EtcdWitness>) -> Pair {
        self.0.spec.coordination = witness.map(|w| Coordination { etcd: Some(w) });
        self
    }

    /// Edits the etcd witness.
    pub fn witness(mut self, edit: impl FnOnce(&mut EtcdWitness)) -> Pair {
        let w = self.0.spec.coordination.as_mut().and_then(|c| c.etcd.as_mut());
        edit(w.expect("the pair has an etcd witness"));
        self
    }

    /// The witness's `leaseTTL` (`"4s"`).
    pub fn lease_ttl(self, ttl: &str) -> Pair {
        self.witness(|w| w.lease_ttl = duration(ttl))
    }

    /// Edits anything else of the spec.
    pub fn spec(mut self, edit: impl FnOnce(&mut DisasterRecoveryPairSpec)) -> Pair {
        edit(&mut self.0.spec);
        self
    }

    pub fn build(self) -> DisasterRecoveryPair {
        self.0
    }

    /// The pair as JSON, for a test that sends a deliberately odd variant of it raw.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("a pair serializes")
    }

    /// Server-side applies the pair in namespace `ns`: creates it, or updates its spec to this one
    /// (the status is left alone).
    pub async fn apply(&self, client: &Client, ns: &str) -> Result<DisasterRecoveryPair> {
        let name = self.0.metadata.name.clone().unwrap_or_default();
        Api::<DisasterRecoveryPair>::namespaced(client.clone(), ns)
            .patch(&name, &PatchParams::apply("understudy-e2e").force(), &Patch::Apply(&self.0))
            .await
            .with_context(|| format!("apply pair {name}"))
    }

    /// Creates the pair in namespace `ns`.
    pub async fn create(self, client: &Client, ns: &str) -> Result<DisasterRecoveryPair> {
        let name = self.0.metadata.name.clone().unwrap_or_default();
        Api::<DisasterRecoveryPair>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &self.0)
            .await
            .with_context(|| format!("create pair {name}"))
    }
}

/// `spec.failover` being edited; each setter takes the value as a user writes it.
#[derive(Clone, Debug)]
pub struct Failover(pub FailoverPolicy);

impl Failover {
    pub fn mode(mut self, mode: FailoverMode) -> Failover {
        self.0.mode = mode;
        self
    }

    /// `probeInterval` (`"500ms"`).
    pub fn probe_interval(mut self, d: &str) -> Failover {
        self.0.probe_interval = duration(d);
        self
    }

    /// `probeTimeout` (`"500ms"`).
    pub fn probe_timeout(mut self, d: &str) -> Failover {
        self.0.probe_timeout = Some(duration(d));
        self
    }

    pub fn failure_threshold(mut self, n: i32) -> Failover {
        self.0.failure_threshold = n;
        self
    }

    /// `maxLagBytes`, a quantity (`"16Mi"`).
    pub fn max_lag_bytes(mut self, q: &str) -> Failover {
        self.0.max_lag_bytes = k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.into());
        self
    }

    /// `catchUpTimeout` (`"2s"`).
    pub fn catch_up_timeout(mut self, d: &str) -> Failover {
        self.0.catch_up_timeout = duration(d);
        self
    }

    /// `cooldown` (`"10m"`).
    pub fn cooldown(mut self, d: &str) -> Failover {
        self.0.cooldown = duration(d);
        self
    }

    /// `replication` (`Async`, `SyncPreferred`, `Sync`).
    pub fn replication(mut self, mode: understudy::crd::ReplicationMode) -> Failover {
        self.0.replication = mode;
        self
    }

    /// `syncDegradeAfter` (`"3s"`).
    pub fn sync_degrade_after(mut self, d: &str) -> Failover {
        self.0.sync_degrade_after = Some(duration(d));
        self
    }
}

/// A Go duration as the CRD takes it (`"500ms"`, `"2m"`); panics on a malformed one.
pub fn duration(d: &str) -> Duration {
    understudy::crd::duration::parse(d).unwrap_or_else(|e| panic!("duration {d:?}: {e}"))
}

/// A PostgreSQL server, database `postgres`, plaintext.
pub fn postgres(host: &str, port: u16, credentials_secret: &str) -> PostgresEndpoint {
    PostgresEndpoint {
        host: host.into(),
        port,
        database: "postgres".into(),
        credentials_secret: secret(credentials_secret),
        tls: None,
    }
}

/// `VerifyFull` against the CA in key `ca.crt` of Secret `ca_secret`.
pub fn verify_full(ca_secret: &str) -> PostgresTls {
    PostgresTls {
        mode: PostgresTlsMode::VerifyFull,
        ca_secret: Some(secret_key(ca_secret, "ca.crt")),
        client_cert_secret: None,
    }
}

/// A Secret by name.
pub fn secret(name: &str) -> SecretRef {
    SecretRef { name: name.into() }
}

/// A key of a Secret.
pub fn secret_key(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef { name: name.into(), key: key.into() }
}

/// A DataSource target: the whole value of a Secret key.
pub fn secret_target(name: &str, key: &str) -> DataSourceTarget {
    DataSourceTarget { site: None, secret_key: Some(secret_key(name, key)), config_map_key: None }
}

/// A DataSource target: Mattermost's `config.json` in ConfigMap `name` (the DSN at
/// `/SqlSettings/DataSource`, and the job scheduler running only on the serving site).
pub fn mattermost_config_target(name: &str) -> DataSourceTarget {
    DataSourceTarget {
        site: None,
        secret_key: None,
        config_map_key: Some(ConfigMapJsonKey {
            name: name.into(),
            key: "config.json".into(),
            json_pointer: "/SqlSettings/DataSource".into(),
            per_site: vec![PerSiteValue {
                json_pointer: "/JobSettings/RunScheduler".into(),
                values: [("east".to_string(), "true".to_string()), ("west".to_string(), "false".to_string())]
                    .into(),
            }],
        }),
    }
}
