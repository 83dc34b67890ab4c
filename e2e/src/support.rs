//! Helpers shared by the end-to-end tests and the demo: one control plane per process, a fresh
//! namespace per test, the CRD applied through the real API server, the controller run in-process,
//! and polling with a deadline.

use std::{future::Future, sync::OnceLock, time::Duration};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ByteString,
};
use kube::{
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    Api, Client, CustomResourceExt,
};
use understudy::crd::{ConditionStatus, DisasterRecoveryPair};

use crate::sandbox::{random_hex, ControlPlane, PgPair};

/// The control plane shared by every test of this process, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| match ControlPlane::start() {
        Ok(cp) => cp,
        Err(e) => panic!("start the real control plane: {e:#}"),
    })
}

/// A client of the shared control plane with the CRD applied and established.
pub async fn client_with_crd() -> Result<Client> {
    let cp = tokio::task::spawn_blocking(control_plane).await?;
    let client = cp.client().await?;
    apply_crd(&client).await?;
    Ok(client)
}

/// Server-side applies the generated CRD and waits until it is Established.
pub async fn apply_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = DisasterRecoveryPair::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(&name, &PatchParams::apply("understudy-e2e").force(), &Patch::Apply(&crd))
        .await
        .context("apply the DisasterRecoveryPair CRD")?;
    wait_for("CRD Established", Duration::from_secs(30), || async {
        let c = crds.get(&name).await?;
        Ok(c.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await
}

/// Creates a namespace with a random suffix.
pub async fn namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = format!("{prefix}-{}", &random_hex(4));
    create_namespace(client, &name).await?;
    Ok(name)
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Creates (or replaces) an Opaque Secret with the given string data.
pub async fn put_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| ((*k).to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("understudy-e2e").force(), &Patch::Apply(&secret))
        .await?;
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Ok(true)`, failing after `timeout` with the last error.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller running in-process, scoped to one namespace; stopped on drop.
pub struct RunningController {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The controller's metrics, as its `/metrics` would serve them.
    pub metrics: understudy::metrics::Metrics,
}

impl RunningController {
    pub fn start(client: Client, ns: &str) -> RunningController {
        init_logging();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = understudy::reconcile::Options {
            namespace: Some(ns.into()),
            instance: format!("e2e-{ns}"),
            leadership: understudy::replica_lease::Leadership::always(),
            ..Default::default()
        };
        let metrics = opts.metrics.clone();
        let task = tokio::spawn(understudy::reconcile::run(client, opts, async move {
            let _ = rx.await;
        }));
        RunningController { stop: Some(tx), task: Some(task), metrics }
    }

    /// Stops the controller and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Secrets for a pair backed by `pg`: admin credentials for both sites (`pg-admin`) and a DSN per site.
pub async fn pair_secrets(client: &Client, ns: &str, pg: &PgPair) -> Result<()> {
    pair_secrets_prefixed(client, ns, pg, "").await
}

/// `pair_secrets` under names starting with `prefix` (`<prefix>pg-admin`, `<prefix>dsn-<site>`), so
/// that several PostgreSQL pairs can live in one namespace (`Pair::on_prefixed` refers to them).
pub async fn pair_secrets_prefixed(client: &Client, ns: &str, pg: &PgPair, prefix: &str) -> Result<()> {
    put_secret(
        client,
        ns,
        &format!("{prefix}pg-admin"),
        &[("username", &pg.user), ("password", &pg.password)],
    )
    .await?;
    for (site, port) in [("east", pg.primary.port), ("west", pg.standby.port)] {
        let dsn = format!("postgres://{}:{}@127.0.0.1:{port}/postgres?sslmode=disable", pg.user, pg.password);
        put_secret(client, ns, &format!("{prefix}dsn-{site}"), &[("dsn", &dsn)]).await?;
    }
    Ok(())
}

/// The condition `type_` of a pair, as (status, reason, message).
pub fn condition(drp: &DisasterRecoveryPair, type_: &str) -> Option<(ConditionStatus, String, String)> {
    drp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

/// A short random suffix for object names.
pub fn pair_name_suffix() -> String {
    random_hex(3)
}

/// Controller logs in tests: captured per test by the harness, shown for failing tests.
/// `RUST_LOG` overrides the default filter.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "understudy=info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_test_writer().try_init();
}
