//! The `DisasterRecoveryPair` spec: what an SRE declares. Types only; nothing here talks to anything.
//! Every field carries a doc comment because it becomes `kubectl explain`. Cross-field rules that the
//! OpenAPI schema alone cannot express are CEL rules (`x-kubernetes-validations`), so the API server
//! rejects a bad pair at `kubectl apply` time with a message naming the field.

use kube::{core::Duration, CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::DisasterRecoveryPairStatus;

// The printer columns repeat `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
/// A primary PostgreSQL site and its standby, and everything understudy must change to move the
/// application from one to the other: the DataSource, the connection recyclers and the DNS records.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dr.understudy.dev",
    version = "v1alpha1",
    kind = "DisasterRecoveryPair",
    shortname = "drp",
    namespaced,
    doc = "A PostgreSQL primary site, its streaming standby, and what understudy moves between them on failover.",
    status = "DisasterRecoveryPairStatus",
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary",
        description = "The site serving writes"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Healthy, Degraded, FailingOver, ..."
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.replicationLagBytes",
        description = "Standby replay lag in bytes"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        description = "Fencing token; +1 per promotion"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    cel,
    validation = Rule::new("size(self.sites) != 2 || self.sites[0].name != self.sites[1].name")
        .message("spec.sites: the two sites need distinct names").field_path(".sites"),
    validation = Rule::new("self.sites.exists(s, s.name == self.primary)")
        .message("spec.primary must name one of spec.sites[*].name").field_path(".primary"),
    validation = Rule::new("(!has(self.dataSource) || self.dataSource.all(e, !has(e.site) || self.sites.exists(s, s.name == e.site))) && (!has(self.recycle) || self.recycle.all(e, !has(e.site) || self.sites.exists(s, s.name == e.site))) && (!has(self.dns) || self.dns.all(e, !has(e.site) || self.sites.exists(s, s.name == e.site))) && (!has(self.activate) || self.activate.all(e, self.sites.exists(s, s.name == e.site)))")
        .message("spec.dataSource[*].site, spec.recycle[*].site, spec.dns[*].site and spec.activate[*].site must name a site in spec.sites (or, except for activate, be left out for an entry shared by both sites)")
        .field_path(".sites"),
    validation = Rule::new("!has(self.failover) || !has(self.failover.mode) || self.failover.mode != 'Automatic' || (has(self.coordination) && has(self.coordination.etcd))")
        .message("spec.failover.mode Automatic requires spec.coordination.etcd: without a witness two sites cannot tell a partition from a dead peer; add an etcd witness or use mode Manual or Approve")
        .field_path(".failover.mode"),
    // The cross-site timing inequality (coord::Timing): the primary site fences itself at leaseTTL/2
    // and needs up to probeTimeout for it, with probeTimeout to spare before the lease can expire.
    validation = Rule::new("!has(self.coordination) || !has(self.coordination.etcd) || !has(self.coordination.etcd.leaseTTL) || duration(self.coordination.etcd.leaseTTL) >= duration(has(self.failover) && has(self.failover.probeTimeout) ? self.failover.probeTimeout : '1s') + duration(has(self.failover) && has(self.failover.probeTimeout) ? self.failover.probeTimeout : '1s') + duration(has(self.failover) && has(self.failover.probeTimeout) ? self.failover.probeTimeout : '1s') + duration(has(self.failover) && has(self.failover.probeTimeout) ? self.failover.probeTimeout : '1s')")
        .message("spec.coordination.etcd.leaseTTL must be at least 4 × spec.failover.probeTimeout, so that the primary site fences itself (after leaseTTL/2, within probeTimeout) before the standby can promote: raise leaseTTL or lower probeTimeout")
        .field_path(".coordination.etcd.leaseTTL"),
)]
#[serde(rename_all = "camelCase")]
pub struct DisasterRecoveryPairSpec {
    /// The site that should serve writes when the pair is first created. After a failover or
    /// switchover, `status.currentPrimary` is the truth; understudy never rewrites the spec.
    #[schemars(length(min = 1, max = 63))]
    pub primary: String,

    /// Exactly two sites: the primary and its streaming standby.
    #[schemars(length(min = 2, max = 2))]
    pub sites: Vec<Site>,

    /// When and how understudy fails over.
    #[serde(default)]
    pub failover: FailoverPolicy,

    /// Where the application reads its database connection string. Every target is rewritten to the
    /// new primary's DSN (`sites[*].dataSourceSecret`) on failover. Targets in the same object
    /// (a Secret's keys, a ConfigMap key's pointers) are written together in one update; the same
    /// Secret key, or the same ConfigMap key and pointer, may appear only once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, !has(a.secretKey) || self.exists_one(b, has(b.secretKey) && b.secretKey.name == a.secretKey.name && b.secretKey.key == a.secretKey.key && (has(a.site) ? a.site : '') == (has(b.site) ? b.site : ''))) && self.all(a, !has(a.configMapKey) || self.exists_one(b, has(b.configMapKey) && b.configMapKey.name == a.configMapKey.name && b.configMapKey.key == a.configMapKey.key && b.configMapKey.jsonPointer == a.configMapKey.jsonPointer && (has(a.site) ? a.site : '') == (has(b.site) ? b.site : '')))")
        .message("spec.dataSource: a target is listed twice (the same site, and the same Secret name and key or the same ConfigMap name, key and jsonPointer); remove the duplicate"))]
    pub data_source: Vec<DataSourceTarget>,

    /// How the application is made to drop connections to the old primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub recycle: Vec<Recycler>,

    /// DNS records that point at the serving site and move with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub dns: Vec<DnsRecord>,

    /// The application's workloads that run only while their site serves (Mattermost's own DR
    /// guidance: the secondary deployment stays scaled down until a failover activates it). Each
    /// site's controller scales its own site's entries: up to the active count when its site
    /// serves, down to `passiveReplicas` when it does not — once per epoch, also when it reaches
    /// its cluster only after the transition. When understudy scales down a workload it ran as the
    /// active one, its count is remembered on the workload (annotation
    /// `dr.understudy.dev/active-replicas`) so that a failback restores it (a count scaled by hand
    /// meanwhile included); otherwise `activeReplicas` is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub activate: Vec<Activation>,

    /// Cross-site coordination through a witness. Required for `failover.mode: Automatic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<Coordination>,

    /// What a transition of this pair must achieve: every failover and switchover is judged against
    /// these (`status.lastTransition.objectives`, an `ObjectivesMet`/`ObjectivesMissed` Event, the
    /// `understudy_objective_verdicts` metric), and `ReadyForFailover` says when they cannot be met
    /// right now (reason `ObjectivesAtRisk`, naming the figure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,

    /// DR drills: a planned switchover to the standby site and back, judged against
    /// `spec.objectives` and kept in `status.drills`. On demand with the
    /// `dr.understudy.dev/drill=<token>` annotation (`kubectl understudy drill`); on a schedule only
    /// when `every` is set (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<DrillPolicy>,
}

/// Recovery objectives (`spec.objectives`). Each is optional; an unset one is not judged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// Recovery time objective: the longest acceptable `rtoSeconds` of a transition — from the
    /// primary first seen failing (a switchover: the request accepted) to the last step done (`30s`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "duration::optional")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')")
        .message("spec.objectives.rto must be between 1s and 24h, e.g. 30s"))]
    pub rto: Option<Duration>,
    /// Recovery point objective, in WAL bytes: the most a transition may lose. A Kubernetes
    /// quantity: `0` (lose nothing: only provable under `spec.failover.replication: Sync`, or for a
    /// switchover), `1Mi`. understudy measures loss in WAL bytes, not in seconds: a failover whose
    /// old primary died unreachable knows only a lower bound, and is judged `Unknown` when that bound
    /// is within the objective.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_quantity")]
    #[schemars(schema_with = "int_or_string")]
    pub rpo: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// DR drills (`spec.drills`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillPolicy {
    /// Run a drill on a schedule: when the last drill started at least this long ago (`168h`), the
    /// pair is `Ready` and the time is inside `window`. Unset (the default): drills run on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "duration::optional")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')")
        .message("spec.drills.every must be at least 1h, e.g. 168h"))]
    pub every: Option<Duration>,
    /// When a scheduled drill may start (UTC). Unset: at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DrillWindow>,
    /// How long a drill waits, after its first switchover, for the former primary to follow again
    /// and the pair to be `Ready` before switching back (`10m`). Past it the drill fails and the pair
    /// stays on the standby site (switch back by hand once it is ready).
    #[serde(default = "default_drill_return_timeout", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')")
        .message("spec.drills.returnTimeout must be between 10s and 24h, e.g. 10m"))]
    pub return_timeout: Duration,
}

impl Default for DrillPolicy {
    fn default() -> Self {
        DrillPolicy { every: None, window: None, return_timeout: default_drill_return_timeout() }
    }
}

fn default_drill_return_timeout() -> Duration {
    std::time::Duration::from_secs(600).into()
}

/// A daily window, in UTC.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillWindow {
    /// Its start, `HH:MM` in UTC (`02:00`).
    #[schemars(pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Its length (`2h`), up to 24h.
    #[serde(deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('24h')")
        .message("spec.drills.window.duration must be between 1m and 24h, e.g. 2h"))]
    pub duration: Duration,
}

impl DrillWindow {
    /// Whether `now` is inside the window (a window may run past midnight).
    pub fn contains(&self, now: jiff::Timestamp) -> bool {
        let Some((h, m)) = self.start.split_once(':') else { return false };
        let (Ok(h), Ok(m)) = (h.parse::<i64>(), m.parse::<i64>()) else { return false };
        let start = h * 3600 + m * 60;
        let len = std::time::Duration::from(self.duration).as_secs() as i64;
        let day = now.as_second().rem_euclid(86_400);
        (day - start).rem_euclid(86_400) < len
    }
}

/// Whether a controller serving site `here` (`None`: a controller run without `--site`, which acts
/// for both sites) acts on an entry that belongs to `entry` (`None`: shared by both sites).
pub fn acts_here(entry: Option<&str>, here: Option<&str>) -> bool {
    match (entry, here) {
        (Some(entry), Some(here)) => entry == here,
        _ => true,
    }
}

/// A site name that `spec.sites` does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no site named {0} in spec.sites")]
pub struct NoSuchSite(pub String);

impl DisasterRecoveryPairSpec {
    /// The site named `name` with its index in `spec.sites` (for field paths in messages).
    pub fn site(&self, name: &str) -> Result<(usize, &Site), NoSuchSite> {
        self.sites.iter().enumerate().find(|(_, s)| s.name == name).ok_or_else(|| NoSuchSite(name.into()))
    }
}

/// One site: a PostgreSQL server and how the application reaches it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    /// A short name for the site, such as `east`; unique within the pair.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// The PostgreSQL server of this site.
    pub postgres: PostgresEndpoint,

    /// The DSN the application uses when this site serves, in a Secret of the pair's namespace.
    /// It is copied into every `spec.dataSource` target when this site becomes primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source_secret: Option<SecretKeyRef>,

    /// Application health checks for this site, run on every probe interval beside the SQL probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<SiteHealth>,

    /// How understudy turns this site's database back into a streaming standby after it lost the
    /// primary role. Without it understudy only assesses and reports what is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoin: Option<RejoinHook>,

    /// How this site's own controller makes its database surely unable to write when SQL cannot
    /// reach it (a site fence, "STONITH"): when the primary site's probes fail and fencing its
    /// database by SQL fails (the postmaster is dead or unreachable), the site's controller runs
    /// this hook; once it succeeds the leader key is released at once and the standby takes over
    /// without waiting for the lease to expire. A hook that fails, hangs or runs over its timeout
    /// never releases the key: the lease rule stands. Only the controller run with `--site` for
    /// this site runs it, only while this site serves, never for the other site. See
    /// `examples/fence-hooks/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_hook: Option<FenceHook>,

    /// The address DNS records point at while this site serves (an IPv4 or IPv6 address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub dns_target: Option<String>,
}

/// How a former primary is made to follow the new one: a `command` the controller runs itself (for
/// servers outside Kubernetes, on the controller's own machine), or a `job`, a Kubernetes Job the
/// controller creates in the pair's namespace of its own cluster (for a server whose data directory
/// only a Pod there can reach). Exactly one of the two. Either way the hook receives
/// `UNDERSTUDY_SITE`, `UNDERSTUDY_EPOCH`, `UNDERSTUDY_PRIMARY_HOST`, `UNDERSTUDY_PRIMARY_PORT`,
/// `UNDERSTUDY_PRIMARY_USER`, `UNDERSTUDY_PRIMARY_PASSWORD` (the new primary's admin credentials)
/// and `UNDERSTUDY_REWIND` (`1` when the timelines diverged and `pg_rewind` must run first); it
/// must stop the server, rewind when asked, write `standby.signal` and `primary_conninfo`, and
/// start it again. Success (exit status 0, or the Job `Complete`) means done; understudy then
/// waits until the site streams.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.command) != has(self.job)")
        .message("spec.sites[*].rejoin: set exactly one of command (a program the controller runs itself, for a server outside Kubernetes) and job (a Job template run in the pair's namespace, for a server in the controller's cluster)"),
)]
#[serde(rename_all = "camelCase")]
pub struct RejoinHook {
    /// The program and its arguments, run by the controller as a child process with the variables
    /// above in its environment. For servers outside Kubernetes; leave out when `job` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub command: Option<Vec<String>>,
    /// A `batch/v1` JobSpec (`template` holding the Pod template) the controller creates as a Job
    /// in the pair's namespace, once per attempt, named `<pair>-rejoin-<site>-e<epoch>-a<attempt>`
    /// (hashed when longer than 63 characters), labelled `dr.understudy.dev/pair`, `/site`,
    /// `/epoch` and owned by the pair. Every container (init containers too) gets the variables
    /// above; the credentials as `valueFrom.secretKeyRef` to the new primary's
    /// `postgres.credentialsSecret` (keys `username` and `password`), never as a literal. Unless the
    /// template sets them: `backoffLimit: 0`, `activeDeadlineSeconds` = `timeout`,
    /// `ttlSecondsAfterFinished: 86400` (finished Jobs stay a day for inspection) and the Pod's
    /// `restartPolicy: Never`. `Complete` means done; `Failed` fails the attempt with the Job's
    /// reason; a Job still running after `timeout` is deleted. An unfinished Job of the same pair,
    /// site and epoch (a controller restarted mid-run) is waited for, not started twice. Only the
    /// skeleton (`template.spec.containers[*].name` and `image`) is checked when the pair is
    /// applied; the rest is checked by the API server when the Job is created, and a Job it
    /// rejects fails the attempt with its message. See `examples/rejoin-job/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rejoin_job_schema")]
    pub job: Option<serde_json::Value>,
    /// How long the command or the Job may run (`2m`).
    #[serde(default = "default_rejoin_timeout", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')")
        .message("spec.sites[*].rejoin.timeout must be between 1s and 24h, e.g. 2m"))]
    pub timeout: Duration,
}

/// The schema of `rejoin.job`: a JobSpec kept as the user wrote it (the full Pod schema would add
/// thousands of lines to the CRD), with its skeleton declared so that a template without a
/// container is refused at `kubectl apply` time.
fn rejoin_job_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["template"],
        "properties": {
            "template": {
                "description": "The Pod template (a core/v1 PodTemplateSpec): the site's PostgreSQL image with pg_rewind, its data volume mounted, a ServiceAccount if it needs one.",
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "required": ["spec"],
                "properties": {
                    "spec": {
                        "description": "The Pod spec (a core/v1 PodSpec); restartPolicy Never unless set.",
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                        "required": ["containers"],
                        "properties": {
                            "containers": {
                                "description": "The Pod's containers; each one gets the UNDERSTUDY_* variables.",
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 8,
                                "items": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": true,
                                    "required": ["name", "image"],
                                    "properties": {
                                        "name": {
                                            "description": "The container's name.",
                                            "type": "string",
                                            "minLength": 1,
                                            "maxLength": 63
                                        },
                                        "image": {
                                            "description": "The container's image, such as the site's PostgreSQL image (it carries pg_rewind).",
                                            "type": "string",
                                            "minLength": 1,
                                            "maxLength": 1024
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// A command run by a site's own controller to fence that site's database when SQL cannot: it must
/// return (exit status 0) only once the old primary surely accepts no write any more — its
/// postmaster gone and unable to come back writable (scaled to 0, fenced by the operator that runs
/// it, powered off, or restarted behind `standby.signal`). Exit 0 is a promise the standby acts on
/// at once. It receives `UNDERSTUDY_SITE`, `UNDERSTUDY_NAMESPACE`, `UNDERSTUDY_PAIR` (the pair's
/// name), `UNDERSTUDY_EPOCH`, `UNDERSTUDY_PGHOST` and `UNDERSTUDY_PGPORT` (this site's server); no
/// credential is passed (put none in `command`: it shows in process lists), the hook brings its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("size(self.command[0]) > 0")
        .message("spec.sites[*].fenceHook.command[0] (the program) must not be empty"),
)]
#[serde(rename_all = "camelCase")]
pub struct FenceHook {
    /// The program and its arguments.
    #[schemars(length(min = 1, max = 32))]
    pub command: Vec<String>,
    /// How long the command may run (`30s`); one still running then is killed and counts as failed.
    #[serde(default = "default_fence_hook_timeout", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')")
        .message("spec.sites[*].fenceHook.timeout must be between 1s and 10m, e.g. 30s"))]
    pub timeout: Duration,
}

fn default_fence_hook_timeout() -> Duration {
    std::time::Duration::from_secs(30).into()
}

fn default_rejoin_timeout() -> Duration {
    std::time::Duration::from_secs(120).into()
}

/// How understudy connects to a site's PostgreSQL server as an administrator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresEndpoint {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Database to connect to for probes and the promotion marker.
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// Secret with keys `username` and `password` of a role allowed to call `pg_promote()` and to
    /// read `pg_stat_replication` (a superuser or a role granted `pg_monitor` and EXECUTE on pg_promote).
    pub credentials_secret: SecretRef,
    /// TLS for every connection understudy opens to this server (probes, fencing, promotion, the
    /// epoch marker, readiness checks, rejoin and switchover catch-up). Without it understudy
    /// connects in plaintext (libpq `sslmode=disable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PostgresTls>,
}

/// TLS settings for the connections to one PostgreSQL server. When TLS is asked for, understudy
/// never falls back to plaintext: a server that does not offer TLS, or whose certificate does
/// not pass the check, is reported (condition and Warning Event naming this field) and is not
/// counted as a failed probe, so a TLS misconfiguration never triggers a failover.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("(self.mode == 'VerifyCA' || self.mode == 'VerifyFull') == has(self.caSecret)")
        .message("spec.sites[*].postgres.tls.caSecret is required for mode VerifyCA and VerifyFull and is not used by Disable or Require"),
    validation = Rule::new("self.mode != 'Disable' || !has(self.clientCertSecret)")
        .message("spec.sites[*].postgres.tls.clientCertSecret needs a mode other than Disable"),
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTls {
    /// How the connection is protected, as libpq's `sslmode`: `Disable` (plaintext), `Require`
    /// (encrypted, the server's certificate is not checked), `VerifyCA` (encrypted, the
    /// certificate must chain to `caSecret`) or `VerifyFull` (as VerifyCA, and `host` must be
    /// one of the certificate's names or IP addresses: `sslmode=verify-full`).
    #[serde(default)]
    pub mode: PostgresTlsMode,
    /// A Secret key holding the PEM certificate(s) of the CA that issued the server's
    /// certificate, such as `{name: pg-ca, key: ca.crt}`. Required for VerifyCA and VerifyFull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// A Secret with keys `tls.crt` (PEM client certificate, chain allowed) and `tls.key` (its
    /// PEM private key), such as a `kubernetes.io/tls` Secret, for servers that require client
    /// certificates (`hostssl ... cert` or `clientcert=verify-full` in pg_hba.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret: Option<SecretRef>,
}

/// libpq's `sslmode`, without the modes that may silently fall back to plaintext (`allow`, `prefer`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PostgresTlsMode {
    /// Plaintext (`sslmode=disable`).
    Disable,
    /// Encrypted; the server's certificate is not checked (`sslmode=require`).
    Require,
    /// Encrypted; the certificate must chain to `caSecret` (`sslmode=verify-ca`).
    #[serde(rename = "VerifyCA")]
    VerifyCa,
    /// Encrypted; the certificate must chain to `caSecret` and name `host` (`sslmode=verify-full`).
    #[default]
    VerifyFull,
}

fn default_pg_port() -> u16 {
    5432
}
fn default_database() -> String {
    "postgres".into()
}

/// A Secret in the pair's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a Secret in the pair's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Application-level health checks for a site.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SiteHealth {
    /// HTTP checks; a check passes on any 2xx answer within the probe timeout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub http: Vec<HttpCheck>,
}

/// One HTTP health check, such as Mattermost's `/api/v4/system/ping`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// The URL to GET (http or https).
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub url: String,
}

/// What understudy does when the primary fails.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    // A probe that may outlast its interval makes detection slower than the settings say
    // (failureThreshold × probeInterval): with 200ms / 2s a dead primary took 7.2 s, not 0.6 s.
    validation = Rule::new("!has(self.probeTimeout) || !has(self.probeInterval) || duration(self.probeTimeout) <= duration(self.probeInterval)")
        .message("spec.failover.probeTimeout must not exceed spec.failover.probeInterval: a dead primary is confirmed after failureThreshold × probeInterval only when each probe ends within its interval; lower probeTimeout or raise probeInterval")
        .field_path(".probeTimeout"),
    validation = Rule::new("!has(self.syncDegradeAfter) || (has(self.replication) && self.replication == 'SyncPreferred')")
        .message("spec.failover.syncDegradeAfter applies only to spec.failover.replication SyncPreferred (Sync never falls back to asynchronous commits, Async never waits): remove it or set replication: SyncPreferred")
        .field_path(".syncDegradeAfter"),
    validation = Rule::new("!has(self.degradedFailover) || self.degradedFailover == 'Refuse' || (has(self.replication) && self.replication == 'SyncPreferred')")
        .message("spec.failover.degradedFailover applies only to spec.failover.replication SyncPreferred: remove it or set replication: SyncPreferred")
        .field_path(".degradedFailover"),
)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicy {
    /// `Manual` detects and reports only; `Approve` waits for the `dr.understudy.dev/approve`
    /// annotation carrying the nonce the status asks for; `Automatic` fails over on its own.
    #[serde(default)]
    pub mode: FailoverMode,
    /// How often both sites are probed, as a Go duration (`1s`, `500ms`).
    #[serde(default = "default_probe_interval", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms') && duration(self) <= duration('1h')")
        .message("spec.failover.probeInterval must be between 100ms and 1h, e.g. 1s"))]
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as failed; at most `probeInterval`.
    /// Default: 1s, or `probeInterval` when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "duration::optional")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('50ms') && duration(self) <= duration('1m')")
        .message("spec.failover.probeTimeout must be between 50ms and 1m, e.g. 1s"))]
    pub probe_timeout: Option<Duration>,
    /// Consecutive failed probes before the primary counts as dead; one blip never triggers anything.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Refuse an automatic promotion when the standby's last known replay lag exceeds this many bytes
    /// (the RPO guard). A Kubernetes quantity: `16Mi`, `1Gi`, `0` for "only when fully caught up".
    #[serde(default = "default_max_lag", deserialize_with = "lenient_quantity")]
    #[schemars(schema_with = "int_or_string")]
    pub max_lag_bytes: k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    /// Planned switchover: how long to wait for the standby to replay the quiesced primary's last
    /// WAL before rolling back (primary writable again, PgBouncer resumed, nothing promoted).
    #[serde(default = "default_catch_up_timeout", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')")
        .message("spec.failover.catchUpTimeout must be between 1s and 1h, e.g. 30s"))]
    pub catch_up_timeout: Duration,
    /// No second automatic failover inside this window after a transition (`10m`).
    #[serde(default = "default_cooldown", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s')")
        .message("spec.failover.cooldown must not be negative, e.g. 10m"))]
    pub cooldown: Duration,
    /// How commits reach the standby. `Async` (default): PostgreSQL's asynchronous streaming, a
    /// failover may lose the commits acknowledged after the standby's last received position.
    /// `Sync`: understudy sets `synchronous_standby_names = '*'` and `synchronous_commit = on` on the
    /// serving primary, so no commit is acknowledged before the standby has flushed it; while the
    /// standby is away, commits wait (that is what Sync means), and an automatic failover runs only
    /// when the standby was the synchronous one at the last observation. `SyncPreferred`: as Sync,
    /// but after the standby has not been synchronous for `syncDegradeAfter` the primary falls back to
    /// asynchronous commits (condition `SynchronousReplication` reason `Degraded`, Event
    /// `SyncDegraded`, metric `understudy_sync_degraded`) until the standby streams again.
    #[serde(default, skip_serializing_if = "ReplicationMode::is_async")]
    pub replication: ReplicationMode,
    /// `SyncPreferred`: how long the standby may be missing as a synchronous standby before the
    /// primary stops waiting for it (writes wait at most this long). Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "duration::optional")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')")
        .message("spec.failover.syncDegradeAfter must be between 1s and 1h, e.g. 10s"))]
    pub sync_degrade_after: Option<Duration>,
    /// `SyncPreferred`: whether an automatic failover may run when the standby was not the
    /// synchronous one at the last observation of the primary (it fell back to asynchronous
    /// commits, so commits acknowledged since may be lost). `Refuse` (default): the guard blocks it
    /// (`FailoverBlocked` reason `NotSynchronous`); a `dr.understudy.dev/failover` annotation still
    /// forces it. `Allow`: fail over and record the loss as a lower bound.
    #[serde(default, skip_serializing_if = "DegradedFailover::is_refuse")]
    pub degraded_failover: DegradedFailover,
}

/// How commits reach the standby (`spec.failover.replication`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// Asynchronous streaming: nothing waits for the standby (PostgreSQL's default).
    #[default]
    Async,
    /// Synchronous, falling back to asynchronous after `syncDegradeAfter` without a synchronous
    /// standby.
    SyncPreferred,
    /// Synchronous, always: commits wait for the standby, however long it is away.
    Sync,
}

impl ReplicationMode {
    pub fn is_async(&self) -> bool {
        *self == ReplicationMode::Async
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "Async",
            ReplicationMode::SyncPreferred => "SyncPreferred",
            ReplicationMode::Sync => "Sync",
        }
    }
}

/// `SyncPreferred`: may an automatic failover run when the standby was not synchronous?
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DegradedFailover {
    /// Block it; an SRE can still force it with the failover annotation.
    #[default]
    Refuse,
    /// Run it; the transition records its loss as a lower bound.
    Allow,
}

impl DegradedFailover {
    pub fn is_refuse(&self) -> bool {
        *self == DegradedFailover::Refuse
    }
}

impl FailoverPolicy {
    /// `syncDegradeAfter`, or its default (10s).
    pub fn sync_degrade_after(&self) -> std::time::Duration {
        self.sync_degrade_after.map(Into::into).unwrap_or(std::time::Duration::from_secs(10))
    }

    /// The timeout a probe round uses: `probeTimeout`, but never more than `probeInterval`, so
    /// that a dead primary is confirmed after `failureThreshold × probeInterval` as the settings
    /// say, also for an object stored before the rule `probeTimeout ≤ probeInterval` existed.
    pub fn effective_probe_timeout(&self) -> std::time::Duration {
        self.probe_timeout().min(self.probe_interval.into())
    }

    /// `probeTimeout` as set, else its default: 1s, or `probeInterval` when that is shorter.
    pub fn probe_timeout(&self) -> std::time::Duration {
        match self.probe_timeout {
            Some(t) => t.into(),
            None => std::time::Duration::from_secs(1).min(self.probe_interval.into()),
        }
    }
}

impl DisasterRecoveryPairSpec {
    /// The spec's cross-field rules checked again at run time, each naming its field and the fix:
    /// an object stored before a rule existed is never checked by the API server again.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (t, i): (std::time::Duration, std::time::Duration) =
            (self.failover.probe_timeout(), self.failover.probe_interval.into());
        if t > i {
            out.push(format!(
                "spec.failover.probeTimeout ({t:?}) exceeds spec.failover.probeInterval ({i:?}): probes use \
                 {i:?} as their timeout so that detection takes failureThreshold × probeInterval; set \
                 probeTimeout to at most probeInterval"
            ));
        }
        let sites: Vec<Option<&str>> = self
            .data_source
            .iter()
            .map(|e| e.site.as_deref())
            .chain(self.recycle.iter().map(|e| e.site.as_deref()))
            .chain(self.dns.iter().map(|e| e.site.as_deref()))
            .chain(self.activate.iter().map(|e| Some(e.site.as_str())))
            .collect();
        for name in sites.into_iter().flatten() {
            if self.site(name).is_err() {
                out.push(format!(
                    "an entry of spec.dataSource, spec.recycle, spec.dns or spec.activate names site {name:?}, which \
                     is not in spec.sites: name one of the two sites (or, except in spec.activate, leave site out \
                     for an entry both sites share)"
                ));
            }
        }
        for (i, a) in self.data_source.iter().enumerate() {
            if self.data_source[..i].contains(a) {
                out.push(format!(
                    "spec.dataSource[{i}] repeats an earlier target; it is written once: remove the duplicate"
                ));
            }
        }
        out
    }
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            mode: FailoverMode::default(),
            probe_interval: default_probe_interval(),
            probe_timeout: None,
            failure_threshold: default_failure_threshold(),
            max_lag_bytes: default_max_lag(),
            catch_up_timeout: default_catch_up_timeout(),
            cooldown: default_cooldown(),
            replication: ReplicationMode::default(),
            sync_degrade_after: None,
            degraded_failover: DegradedFailover::default(),
        }
    }
}

fn default_probe_interval() -> Duration {
    std::time::Duration::from_secs(1).into()
}
fn default_failure_threshold() -> i32 {
    3
}
fn default_max_lag() -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    k8s_openapi::apimachinery::pkg::api::resource::Quantity("16Mi".into())
}
/// A quantity as the API server stores it under `x-kubernetes-int-or-string`: a string, a whole
/// number, or (for objects stored before the schema stopped allowing it) `null`, read as the default.
fn lenient_quantity<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<k8s_openapi::apimachinery::pkg::api::resource::Quantity, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Signed(i64),
        Unsigned(u64),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => default_max_lag(),
        Some(Raw::Text(s)) => k8s_openapi::apimachinery::pkg::api::resource::Quantity(s),
        Some(Raw::Signed(n)) => k8s_openapi::apimachinery::pkg::api::resource::Quantity(n.to_string()),
        Some(Raw::Unsigned(n)) => k8s_openapi::apimachinery::pkg::api::resource::Quantity(n.to_string()),
    })
}

/// An optional quantity: as `lenient_quantity`, but absent or `null` is `None`.
fn optional_quantity<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Signed(i64),
        Unsigned(u64),
    }
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    Ok(Option::<Raw>::deserialize(d)?.map(|r| match r {
        Raw::Text(s) => Quantity(s),
        Raw::Signed(n) => Quantity(n.to_string()),
        Raw::Unsigned(n) => Quantity(n.to_string()),
    }))
}

/// The schema of a quantity: int-or-string, not nullable (so the API server prunes a `null` and
/// applies the default instead of storing it).
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

fn default_catch_up_timeout() -> Duration {
    std::time::Duration::from_secs(30).into()
}
fn default_cooldown() -> Duration {
    std::time::Duration::from_secs(600).into()
}

/// How much understudy may do on its own.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailoverMode {
    /// Detect and report; act only on a `dr.understudy.dev/failover` or `switchover` annotation.
    #[default]
    Manual,
    /// Detect, then wait for `dr.understudy.dev/approve=<nonce>` with the nonce in the status.
    Approve,
    /// Fail over on a confirmed failure, within the guards.
    Automatic,
}

/// Where the application reads its DSN. Exactly one of `secretKey` and `configMapKey`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretKey) != has(self.configMapKey)")
    .message("spec.dataSource[*]: set exactly one of secretKey and configMapKey"))]
#[serde(rename_all = "camelCase")]
pub struct DataSourceTarget {
    /// The site this entry belongs to: its object lives in that site's Kubernetes cluster (or, for
    /// a PgBouncer or an HTTP endpoint, serves that site's application), and only the controller
    /// run with `--site <that site>` (or a controller run without `--site`) acts on it. Without
    /// `site` the entry is shared: whichever controller runs the transition acts on it (one cluster
    /// holding both sites, or an object outside Kubernetes). With one cluster per site, give every
    /// in-cluster entry its site; the copies of the pair in both clusters stay identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub site: Option<String>,
    /// A Secret key that holds the DSN as its whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<SecretKeyRef>,
    /// A ConfigMap key holding a JSON document (such as Mattermost's `config.json`) in which
    /// only the values at the given JSON pointers change; the rest is kept byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key: Option<ConfigMapJsonKey>,
}

/// A JSON document in a ConfigMap key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapJsonKey {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap's data, such as `config.json`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// RFC 6901 pointer to the DSN string, such as `/SqlSettings/DataSource`.
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub json_pointer: String,
    /// Further values that depend on which site serves, such as `/JobSettings/RunScheduler`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub per_site: Vec<PerSiteValue>,
}

/// A JSON value set per serving site.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PerSiteValue {
    /// RFC 6901 pointer to the value.
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub json_pointer: String,
    /// Site name → JSON text of the value to write while that site serves (`true`, `"x"`, `3`).
    pub values: std::collections::BTreeMap<String, String>,
}

/// How the application drops connections to the old primary. Exactly one kind per entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.pgBouncer) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.rolloutRestart) ? 1 : 0) == 1")
    .message("spec.recycle[*]: set exactly one of pgBouncer, http and rolloutRestart"))]
#[serde(rename_all = "camelCase")]
pub struct Recycler {
    /// The site this entry belongs to: its object lives in that site's Kubernetes cluster (or, for
    /// a PgBouncer or an HTTP endpoint, serves that site's application), and only the controller
    /// run with `--site <that site>` (or a controller run without `--site`) acts on it. Without
    /// `site` the entry is shared: whichever controller runs the transition acts on it (one cluster
    /// holding both sites, or an object outside Kubernetes). With one cluster per site, give every
    /// in-cluster entry its site; the copies of the pair in both clusters stay identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub site: Option<String>,
    /// Repoint a PgBouncer through its admin console (PAUSE, rewrite, RELOAD, RESUME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bouncer: Option<PgBouncerRecycler>,
    /// Call an HTTP endpoint, such as Mattermost's `POST /api/v4/database/recycle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRecycler>,
    /// Restart the pods of a Deployment or StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_restart: Option<RolloutRestart>,
}

/// A PgBouncer admin console.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerRecycler {
    /// Host of PgBouncer.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port of PgBouncer.
    #[serde(default = "default_pgbouncer_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Secret with keys `username` and `password` of an `admin_users` entry.
    pub admin_secret: SecretRef,
    /// The PgBouncer database entry to repoint (the name clients connect to).
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// A file holding PgBouncer's `[databases]` entries (included from pgbouncer.ini with
    /// `%include`) that understudy rewrites to the new primary before `RELOAD`; it must be
    /// reachable from the controller (a shared volume or a sidecar). Without it understudy sends
    /// `RECONNECT`, for a PgBouncer that points at a name that moves (a Service, or a DNS record
    /// understudy flips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), pattern(r"^/"))]
    pub databases_file: Option<String>,
    /// The database on the PostgreSQL server that the entry points at (default: the site's
    /// `postgres.database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub backend_database: Option<String>,
}

fn default_pgbouncer_port() -> u16 {
    6432
}

/// An HTTP call that makes the application recycle its connections.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRecycler {
    /// The URL to call.
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub url: String,
    /// The HTTP method.
    #[serde(default = "default_method")]
    #[schemars(pattern(r"^(GET|POST|PUT|PATCH|DELETE)$"))]
    pub method: String,
    /// Secret with key `token`, sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretRef>,
}

fn default_method() -> String {
    "POST".into()
}

/// A workload that runs only while its site serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    /// The site whose cluster holds the workload.
    #[schemars(length(min = 1, max = 63))]
    pub site: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// Name of the workload in the pair's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Replicas while its site does not serve.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub passive_replicas: i32,
    /// Replicas while its site serves, unless a count was remembered when understudy last scaled it
    /// down from active.
    #[serde(default = "one_replica")]
    #[schemars(range(min = 1, max = 10000))]
    pub active_replicas: i32,
}

fn one_replica() -> i32 {
    1
}

/// A workload whose pods are restarted (the `kubectl rollout restart` annotation).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestart {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// Name of the workload in the pair's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload a rollout restart applies to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

/// A DNS record that follows the serving site. Exactly one kind per entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.rfc2136) != has(self.dnsEndpoint)")
    .message("spec.dns[*]: set exactly one of rfc2136 and dnsEndpoint"))]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// The site this entry belongs to: its object lives in that site's Kubernetes cluster (or, for
    /// a PgBouncer or an HTTP endpoint, serves that site's application), and only the controller
    /// run with `--site <that site>` (or a controller run without `--site`) acts on it. Without
    /// `site` the entry is shared: whichever controller runs the transition acts on it (one cluster
    /// holding both sites, or an object outside Kubernetes). With one cluster per site, give every
    /// in-cluster entry its site; the copies of the pair in both clusters stay identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub site: Option<String>,
    /// A dynamic update (RFC 2136) signed with TSIG, sent to an authoritative server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Record>,
    /// An ExternalDNS `DNSEndpoint` object in the pair's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_endpoint: Option<DnsEndpointRecord>,
}

/// An A/AAAA record updated by RFC 2136.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136Record {
    /// The authoritative server, `host:port`.
    #[schemars(length(min = 1, max = 260))]
    pub server: String,
    /// The zone, such as `example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub zone: String,
    /// The record name relative to the zone, such as `chat`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// TTL of the record in seconds.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 86400))]
    pub ttl: i32,
    /// Secret with keys `name` (the TSIG key name), `algorithm` (such as `hmac-sha256`) and
    /// `secret` (base64).
    pub tsig_secret: SecretRef,
}

fn default_ttl() -> i32 {
    30
}

/// An ExternalDNS `DNSEndpoint` (externaldns.k8s.io/v1alpha1) written by understudy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsEndpointRecord {
    /// Name of the DNSEndpoint object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The fully qualified DNS name, such as `chat.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub dns_name: String,
    /// TTL of the record in seconds.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 86400))]
    pub ttl: i32,
}

/// Cross-site coordination.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Coordination {
    /// An etcd cluster outside both sites that acts as the witness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdWitness>,
}

/// The witness etcd.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdWitness {
    /// Client URLs, such as `https://witness-1:2379`.
    #[schemars(length(min = 1, max = 7))]
    pub endpoints: Vec<String>,
    /// Key prefix under which understudy keeps this pair's leader key and epoch.
    #[serde(default = "default_prefix")]
    #[schemars(length(min = 1, max = 253), pattern(r"^/"))]
    pub prefix: String,
    /// Secret with `ca.crt` (PEM CA that issued the witness's server certificate), `tls.crt` and
    /// `tls.key` (PEM client certificate and private key, for etcd's `--client-cert-auth`). With it
    /// every endpoint must be `https://` and the server's certificate must chain to `ca.crt` and
    /// name the endpoint's host; understudy never falls back to plaintext. A witness it cannot
    /// reach this way blocks failover (`FailoverBlocked/WitnessUnavailable` naming this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<SecretRef>,
    /// Secret with `username` and `password` of an etcd user (etcd `auth enable`) allowed to read
    /// and write keys under `prefix`. Wrong credentials block failover
    /// (`FailoverBlocked/WitnessUnavailable` naming this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<SecretRef>,
    /// Lease TTL of the primary site's leader key (`10s`). The controller of the primary site (run
    /// with `--site`) renews it every leaseTTL/5; when it cannot for leaseTTL/2 it fences its own
    /// database (read-only, writers terminated, PgBouncer PAUSE). The standby promotes only after
    /// the lease expired. Must be at least 4 × `spec.failover.probeTimeout`. A whole-site failover
    /// with per-site controllers therefore takes at least leaseTTL.
    #[serde(default = "default_lease_ttl", deserialize_with = "duration::required")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('2s') && duration(self) <= duration('5m')")
        .message("spec.coordination.etcd.leaseTTL must be between 2s and 5m, e.g. 10s"))]
    #[serde(rename = "leaseTTL")]
    pub lease_ttl: Duration,
}

fn default_prefix() -> String {
    "/understudy".into()
}
fn default_lease_ttl() -> Duration {
    std::time::Duration::from_secs(10).into()
}

/// Durations read without panicking. kube's `Duration` parser panics on a negative sum (`5s-3s`)
/// or an overflow (`99999999999999999999h`), and a field without a CEL rule lets the API server
/// store either, so one such object could bring the whole controller down. This parser takes Go's
/// syntax (`1h2m0.5s`, `300ms`, units `ns us µs ms s m h`) and answers an error instead.
pub mod duration {
    use serde::{de::Error as _, Deserialize, Deserializer};

    use super::Duration;

    /// Why a text is not a duration understudy reads.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum DurationError {
        #[error("{0:?} is negative; use a positive duration such as 30s")]
        Negative(String),
        #[error("{0:?} is not a duration; use one such as 30s or 1m30s")]
        NotADuration(String),
        #[error("{text:?} has unit {unit:?}; use ns, us, ms, s, m or h")]
        UnknownUnit { text: String, unit: String },
        #[error("{0:?} is longer than the longest duration (2562047h)")]
        TooLong(String),
    }

    /// The longest duration read: Go's (about 292 years, `2562047h47m16.854775807s`), so that
    /// whatever the API server's CEL `duration()` accepts is read.
    const MAX_SECS: f64 = i64::MAX as f64 / 1e9;

    /// Parses a Go duration; negative, overflowing or malformed values are errors.
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        let s = text.trim();
        let body = s.strip_prefix('+').unwrap_or(s);
        if body.starts_with('-') {
            return Err(DurationError::Negative(text.into()));
        }
        if body == "0" {
            return Ok(std::time::Duration::ZERO.into());
        }
        if body.is_empty() {
            return Err(DurationError::NotADuration(text.into()));
        }
        let mut total = 0f64;
        let mut rest = body;
        while !rest.is_empty() {
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (num, tail) = rest.split_at(num_len);
            let value: f64 = num.parse().map_err(|_| DurationError::NotADuration(text.into()))?;
            let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let scale = match unit {
                "ns" => 1e-9,
                "us" | "µs" | "μs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(DurationError::UnknownUnit { text: text.into(), unit: unit.into() }),
            };
            total += value * scale;
            if !total.is_finite() || total > MAX_SECS {
                return Err(DurationError::TooLong(text.into()));
            }
            rest = next;
        }
        Ok(std::time::Duration::from_secs_f64(total).into())
    }

    /// Deserializes a duration field.
    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }

    /// Deserializes an optional duration field.
    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?.map(|s| parse(&s).map_err(D::Error::custom)).transpose()
    }

    #[cfg(test)]
    mod tests {
        use super::parse;

        #[test]
        fn go_durations_parse_and_odd_ones_are_errors_not_panics() {
            let secs = |s: &str| std::time::Duration::from(parse(s).expect(s)).as_secs_f64();
            assert_eq!(secs("1s"), 1.0);
            assert_eq!(secs("1h0m0.5s"), 3600.5);
            assert_eq!(secs("300ms"), 0.3);
            assert_eq!(secs("1m30s"), 90.0);
            assert_eq!(secs("0"), 0.0);
            assert_eq!(secs("2µs"), 2e-6);
            assert!(parse("2562047h").is_ok(), "Go's longest duration in hours");
            for bad in ["5s-3s", "-5s", "99999999999999999999h", "1e3s", "soon", "", "5", "1.2.3s", "1d"] {
                assert!(parse(bad).is_err(), "{bad:?} must be an error");
            }
        }
    }
}
