//! One builder for the pairs the unit tests use (tests only). `test_spec()` is the plain pair:
//! `east` (primary) and `west`, each a PostgreSQL server at `pg-<site>:5432` with its credentials
//! in Secret `pg`, and every other field at the default an omitted field decodes to (`Manual`
//! mode, failureThreshold 3, maxLagBytes 16Mi, cooldown 10m, no witness, nothing to rewrite,
//! recycle or flip). Each `with_*` method changes one thing, so a test says only what matters to it.

use super::{
    duration, DisasterRecoveryPair, DisasterRecoveryPairSpec, EtcdWitness, FailoverMode, FailoverPolicy,
    PostgresEndpoint, SecretRef, Site,
};

/// The plain test pair's spec (see the module).
pub fn test_spec() -> DisasterRecoveryPairSpec {
    DisasterRecoveryPairSpec {
        primary: "east".into(),
        sites: vec![site("east"), site("west")],
        failover: FailoverPolicy::default(),
        data_source: vec![],
        recycle: vec![],
        dns: vec![],
        activate: vec![],
        coordination: None,
        objectives: None,
        drills: None,
    }
}

fn site(name: &str) -> Site {
    Site {
        name: name.into(),
        postgres: PostgresEndpoint {
            host: format!("pg-{name}"),
            port: 5432,
            database: "postgres".into(),
            credentials_secret: SecretRef { name: "pg".into() },
            tls: None,
        },
        data_source_secret: None,
        health: None,
        rejoin: None,
        fence_hook: None,
        dns_target: None,
    }
}

/// A Go duration (`1s`, `10m`) as the spec holds it.
fn go(text: &str) -> kube::core::Duration {
    duration::parse(text).unwrap_or_else(|e| panic!("test duration: {e}"))
}

impl DisasterRecoveryPairSpec {
    /// `spec.failover.mode`.
    pub fn with_mode(mut self, mode: FailoverMode) -> Self {
        self.failover.mode = mode;
        self
    }

    /// `spec.failover.failureThreshold`.
    pub fn with_failure_threshold(mut self, n: i32) -> Self {
        self.failover.failure_threshold = n;
        self
    }

    /// `spec.failover.maxLagBytes`, a quantity (`1Mi`).
    pub fn with_max_lag(mut self, quantity: &str) -> Self {
        self.failover.max_lag_bytes =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(quantity.into());
        self
    }

    /// `spec.failover.probeInterval` and `probeTimeout`.
    pub fn with_probes(mut self, interval: &str, timeout: &str) -> Self {
        self.failover.probe_interval = go(interval);
        self.failover.probe_timeout = Some(go(timeout));
        self
    }

    /// `spec.failover.catchUpTimeout`.
    pub fn with_catch_up_timeout(mut self, timeout: &str) -> Self {
        self.failover.catch_up_timeout = go(timeout);
        self
    }

    /// `spec.failover.cooldown`.
    pub fn with_cooldown(mut self, cooldown: &str) -> Self {
        self.failover.cooldown = go(cooldown);
        self
    }

    /// `spec.coordination.etcd` with one endpoint, every other witness field at its default.
    pub fn with_witness(mut self, endpoint: &str) -> Self {
        self.coordination = Some(super::Coordination {
            etcd: Some(EtcdWitness {
                endpoints: vec![endpoint.into()],
                prefix: "/understudy".into(),
                tls_secret: None,
                auth_secret: None,
                lease_ttl: go("10s"),
            }),
        });
        self
    }

    /// `spec.sites[*].postgres.database` of both sites.
    pub fn with_database(mut self, database: &str) -> Self {
        for s in &mut self.sites {
            s.postgres.database = database.into();
        }
        self
    }

    /// Changes the site named `name` (its port, its DNS target, its rejoin hook, …).
    pub fn with_site(mut self, name: &str, change: impl FnOnce(&mut Site)) -> Self {
        let s = self.sites.iter_mut().find(|s| s.name == name).unwrap_or_else(|| panic!("no site {name}"));
        change(s);
        self
    }

    /// A pair `name` in namespace `ns` with this spec, at generation 1, without a status.
    pub fn pair(self, name: &str) -> DisasterRecoveryPair {
        let mut drp = DisasterRecoveryPair::new(name, self);
        drp.metadata.namespace = Some("ns".into());
        drp.metadata.generation = Some(1);
        drp
    }
}

#[test]
fn the_builder_spells_what_an_omitted_field_decodes_to() {
    let decoded: DisasterRecoveryPairSpec = serde_json::from_value(serde_json::json!({
        "primary": "east",
        "sites": [
            { "name": "east", "postgres": { "host": "pg-east", "credentialsSecret": { "name": "pg" } } },
            { "name": "west", "postgres": { "host": "pg-west", "credentialsSecret": { "name": "pg" } } }
        ]
    }))
    .expect("spec");
    assert_eq!(test_spec(), decoded);
    let decoded: DisasterRecoveryPairSpec = serde_json::from_value(serde_json::json!({
        "primary": "east",
        "sites": [
            { "name": "east", "postgres": { "host": "pg-east", "credentialsSecret": { "name": "pg" } } },
            { "name": "west", "postgres": { "host": "pg-west", "credentialsSecret": { "name": "pg" } } }
        ],
        "failover": { "mode": "Approve", "failureThreshold": 5, "maxLagBytes": "1Mi", "cooldown": "1m" },
        "coordination": { "etcd": { "endpoints": ["http://w:2379"] } }
    }))
    .expect("spec");
    let built = test_spec()
        .with_mode(FailoverMode::Approve)
        .with_failure_threshold(5)
        .with_max_lag("1Mi")
        .with_cooldown("1m")
        .with_witness("http://w:2379");
    assert_eq!(built, decoded);
}
