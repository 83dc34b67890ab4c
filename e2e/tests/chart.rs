//! The Helm chart against the real kube-apiserver of the sandbox: `helm lint --strict`, the values schema
//! refusing bad values, every rendered object accepted by the API server (server-side dry run) in both
//! RBAC modes, and a real `helm install` whose ServiceAccount is checked for least privilege with
//! `kubectl auth can-i`. Helm is built from Go modules by `e2e/scripts/build-helm.sh` (cached). There is
//! no kubelet: the controller's Pods are never created, and nothing here waits for them.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Container, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{Api, Client};
use tokio::io::AsyncWriteExt;
use understudy_e2e::{
    sandbox::{random_hex, repo_root, scratch_dir, ControlPlane},
    support::{self, wait_for},
};

const CRD: &str = "disasterrecoverypairs.dr.understudy.dev";

// === helpers ===

/// The Helm binary and an isolated HELM_*_HOME, built or found once per process.
fn helm_setup() -> Result<&'static (PathBuf, PathBuf)> {
    static HELM: OnceLock<std::result::Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    HELM.get_or_init(|| {
        let build = || -> Result<(PathBuf, PathBuf)> {
            let out = Command::new("bash")
                .arg(repo_root().join("e2e/scripts/build-helm.sh"))
                .stdin(Stdio::null())
                .output()
                .context("run e2e/scripts/build-helm.sh")?;
            ensure!(
                out.status.success(),
                "e2e/scripts/build-helm.sh failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
            ensure!(bin.is_file(), "build-helm.sh did not produce a binary (printed {stdout:?})");
            Ok((bin, scratch_dir("helm-home")?))
        };
        build().map_err(|e| format!("{e:#}"))
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `helm` with the shared control plane's kubeconfig and its own cache/config/data directories.
fn helm(cp: &ControlPlane) -> Result<Command> {
    let (bin, home) = helm_setup()?;
    let mut c = Command::new(bin);
    c.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", &cp.kubeconfig)
        .current_dir(repo_root());
    Ok(c)
}

/// What a finished command said.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` (optionally feeding `stdin`) without blocking the runtime.
async fn exec(cmd: Command, stdin: Option<&str>) -> Result<Out> {
    let shown = format!("{cmd:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("start {shown}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .with_context(|| format!("{shown} did not finish in 300 s"))??;
    Ok(Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` and returns its stdout, failing with everything it printed when it fails.
async fn ok(cmd: Command, stdin: Option<&str>) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = exec(cmd, stdin).await?;
    ensure!(out.ok, "{shown} failed:\n{}{}", out.stdout, out.stderr);
    Ok(out.stdout)
}

/// `helm template` of the chart with `--set` values (and extra `flags`), as `release` into `ns`.
async fn template(cp: &ControlPlane, release: &str, ns: &str, flags: &[&str], set: &[&str]) -> Result<Out> {
    let mut c = helm(cp)?;
    c.args(["template", release, "charts/understudy", "--namespace", ns]).args(flags);
    for s in set {
        c.args(["--set", s]);
    }
    exec(c, None).await
}

/// The YAML documents of a rendered chart, empty ones dropped.
fn documents(rendered: &str) -> Result<Vec<serde_yaml::Value>> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(rendered) {
        let v = serde::Deserialize::deserialize(de).context("parse rendered YAML")?;
        if !matches!(v, serde_yaml::Value::Null) {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The rendered documents of `kind`, as typed objects.
fn of_kind<T: serde::de::DeserializeOwned>(docs: &[serde_yaml::Value], kind: &str) -> Result<Vec<T>> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .map(|d| serde_yaml::from_value(d.clone()).with_context(|| format!("read a rendered {kind}")))
        .collect()
}

/// `kubectl auth can-i <args> --as=system:serviceaccount:<ns>:<sa>`: the API server's own RBAC answer.
async fn can_i(cp: &ControlPlane, ns: &str, sa: &str, args: &[&str]) -> Result<bool> {
    let mut c = cp.kubectl();
    c.args(["auth", "can-i"]).args(args).arg(format!("--as=system:serviceaccount:{ns}:{sa}"));
    let out = exec(c, None).await?;
    match out.stdout.trim() {
        "yes" if out.ok => Ok(true),
        "no" => Ok(false),
        other => bail!("kubectl auth can-i {args:?}: unexpected answer {other:?}: {}", out.stderr),
    }
}

/// Asserts every (args, expected) answer, reporting all mismatches at once.
async fn assert_can_i(cp: &ControlPlane, ns: &str, sa: &str, cases: &[(&[&str], bool)]) -> Result<()> {
    let mut wrong = Vec::new();
    for (args, want) in cases {
        let got = can_i(cp, ns, sa, args).await?;
        if got != *want {
            wrong.push(format!("can-i {} → {} (want {})", args.join(" "), yes(got), yes(*want)));
        }
    }
    ensure!(wrong.is_empty(), "ServiceAccount {ns}/{sa} has the wrong rights:\n  {}", wrong.join("\n  "));
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `helm install` into `ns`, with `--skip-crds` when the CRD is already there (installed by another
/// test of this process or an earlier install). Helm also skips an existing CRD by itself, so a race
/// between the check and the install is harmless.
async fn install(
    cp: &ControlPlane,
    client: &Client,
    release: &str,
    ns: &str,
    set: &[&str],
) -> Result<String> {
    let crd_present = Api::<CustomResourceDefinition>::all(client.clone()).get_opt(CRD).await?.is_some();
    let mut c = helm(cp)?;
    c.args(["install", release, "charts/understudy", "--namespace", ns])
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()));
    if crd_present {
        c.arg("--skip-crds");
    }
    for s in set {
        c.args(["--set", s]);
    }
    let out = ok(c, None).await.with_context(|| format!("helm install {release} into {ns}"))?;
    ensure!(out.contains("STATUS: deployed"), "helm install did not report deployed:\n{out}");
    // Installed by this release or present before: either way the pairs' API must be served.
    wait_for("the DisasterRecoveryPair CRD Established", Duration::from_secs(30), || async {
        let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(CRD).await?;
        Ok(crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await?;
    Ok(out)
}

async fn uninstall(cp: &ControlPlane, release: &str, ns: &str) -> Result<()> {
    let mut c = helm(cp)?;
    c.args(["uninstall", release, "--namespace", ns])
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()));
    let out = ok(c, None).await?;
    ensure!(out.contains("uninstalled"), "helm uninstall said: {out}");
    Ok(())
}

fn controller_container(d: &Deployment) -> Result<&Container> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == "understudy"))
        .context("the Deployment has no container named understudy")
}

fn args_of(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

/// The rules the controller is meant to have on the objects it manages, and nothing else.
fn assert_controller_rules(rules: &[PolicyRule]) -> Result<()> {
    let mut got: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in rules {
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                let mut verbs = r.verbs.clone();
                verbs.sort();
                got.push((g.clone(), res, verbs));
            }
        }
    }
    got.sort();
    let v = |s: &[&str]| {
        let mut v: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    let mut want = vec![
        ("".to_string(), "configmaps".to_string(), v(&["get", "update", "patch"])),
        ("".into(), "secrets".into(), v(&["get", "update", "patch"])),
        ("apps".into(), "deployments".into(), v(&["get", "patch"])),
        ("apps".into(), "statefulsets".into(), v(&["get", "patch"])),
        (
            "dr.understudy.dev".into(),
            "disasterrecoverypairs".into(),
            v(&["get", "list", "watch", "patch", "update"]),
        ),
        ("dr.understudy.dev".into(), "disasterrecoverypairs/finalizers".into(), v(&["update"])),
        ("dr.understudy.dev".into(), "disasterrecoverypairs/status".into(), v(&["get", "patch", "update"])),
        ("events.k8s.io".into(), "events".into(), v(&["create", "patch"])),
        ("externaldns.k8s.io".into(), "dnsendpoints".into(), v(&["get", "create", "patch"])),
        ("batch".into(), "jobs".into(), v(&["create", "get", "list", "delete"])),
    ];
    want.sort();
    ensure!(got == want, "controller rules differ:\n got  {got:?}\n want {want:?}");
    Ok(())
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_lints_strictly_and_its_schema_rejects_bad_values() -> Result<()> {
    let cp = tokio::task::spawn_blocking(support::control_plane).await?;
    tokio::task::spawn_blocking(helm_setup).await?.map(|_| ())?;

    let mut version = helm(cp)?;
    version.args(["version", "--short"]);
    eprintln!("helm {}", ok(version, None).await?.trim());

    for set in [&[][..], &["namespacedOnly=true", "watchNamespace=chat"][..]] {
        let mut lint = helm(cp)?;
        lint.args(["lint", "--strict", "charts/understudy"]);
        for s in set {
            lint.args(["--set", s]);
        }
        let out = ok(lint, None).await.context("helm lint --strict charts/understudy")?;
        ensure!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "helm lint: {out}");
        ensure!(!out.contains("[ERROR]") && !out.contains("[WARNING]"), "helm lint: {out}");
    }

    // Each bad value is refused before anything renders, and the message names the value.
    let bad: [(&[&str], &str); 6] = [
        (&["replicaCount=-1"], "/replicaCount"),
        (&["replicaCount=two"], "/replicaCount"),
        (&["unknownKey=1"], "unknownKey"),
        (&["logging.format=xml"], "/logging/format"),
        (&["metrics.port=70000"], "/metrics/port"),
        (&["watchNamespace=Not_A_Namespace"], "/watchNamespace"),
    ];
    for (set, needle) in bad {
        let out = template(cp, "bad", "default", &[], set).await?;
        ensure!(!out.ok, "helm template --set {set:?} must fail, it rendered:\n{}", out.stdout);
        ensure!(out.stderr.contains("schema"), "{set:?}: not a schema error: {}", out.stderr);
        ensure!(out.stderr.contains(needle), "{set:?}: expected {needle:?} in: {}", out.stderr);
    }
    // Two unelected replicas would both act: refused by the chart itself.
    let out = template(cp, "bad", "default", &[], &["leaderElection.enabled=false"]).await?;
    ensure!(!out.ok && out.stderr.contains("leaderElection.enabled"), "{}{}", out.stdout, out.stderr);
    let out = template(cp, "ok", "default", &[], &["leaderElection.enabled=false", "replicaCount=1"]).await?;
    ensure!(out.ok, "one replica without leader election renders: {}", out.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_is_accepted_by_the_api_server() -> Result<()> {
    let cp = tokio::task::spawn_blocking(support::control_plane).await?;
    tokio::task::spawn_blocking(helm_setup).await?.map(|_| ())?;
    let client = cp.client().await?;
    let ns = support::namespace(&client, "chart-tpl").await?;
    let watch = support::namespace(&client, "chart-watch").await?;

    let dry_run = |rendered: String| async move {
        let mut c = cp.kubectl();
        c.args(["apply", "--dry-run=server", "-f", "-"]);
        ok(c, Some(&rendered)).await.context("kubectl apply --dry-run=server of the rendered chart")
    };
    let watch_set = format!("watchNamespace={watch}");
    let renders: [(&str, Vec<&str>); 3] = [
        ("defaults", vec![]),
        ("namespacedOnly", vec!["namespacedOnly=true", &watch_set]),
        (
            "everything else",
            vec![
                "replicaCount=1",
                "leaderElection.enabled=false",
                "site=east",
                "grafanaDashboard.enabled=true",
                "logging.format=text",
                "logging.level=understudy=debug",
                "metrics.port=9090",
                "priorityClassName=dr-critical",
                "podAnnotations.example\\.com/team=sre",
                "nodeSelector.kubernetes\\.io/os=linux",
                "tolerations[0].key=dedicated,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
                "imagePullSecrets[0].name=regcred",
            ],
        ),
    ];
    for (what, set) in renders {
        // The defaults render carries the chart's CRD too: the server must accept it as well.
        let flags: &[&str] = if what == "defaults" { &["--include-crds"] } else { &[] };
        let out = template(cp, "tpl", &ns, flags, &set).await?;
        ensure!(out.ok, "helm template ({what}) failed: {}", out.stderr);
        let docs = documents(&out.stdout)?;
        let applied = dry_run(out.stdout.clone()).await.with_context(|| what.to_string())?;
        eprintln!("{what}:\n{applied}");
        ensure!(
            applied.lines().filter(|l| l.contains("(server dry run)")).count() == docs.len(),
            "{what}: every one of {} objects accepted:\n{applied}",
            docs.len()
        );

        let deploys: Vec<Deployment> = of_kind(&docs, "Deployment")?;
        ensure!(deploys.len() == 1, "{what}: one Deployment");
        let args = args_of(controller_container(&deploys[0])?);
        let has = |a: &str| args.iter().any(|x| x == a);
        ensure!(args.first().map(String::as_str) == Some("run"), "{what}: `understudy run`: {args:?}");
        match what {
            "defaults" => {
                ensure!(has("--leader-elect") && has("--lease-name=understudy"), "{args:?}");
                ensure!(has(&format!("--lease-namespace={ns}")), "{args:?}");
                ensure!(has("--metrics-addr=0.0.0.0:8080") && has("--log-format=json"), "{args:?}");
                ensure!(!args.iter().any(|a| a.starts_with("--namespace")), "all namespaces: {args:?}");
                ensure!(of_kind::<ClusterRole>(&docs, "ClusterRole")?.len() == 1, "a ClusterRole");
                ensure!(of_kind::<PodDisruptionBudget>(&docs, "PodDisruptionBudget")?.len() == 1, "a PDB");
                ensure!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"), "no ServiceMonitor by default");
                ensure!(!docs.iter().any(|d| d["kind"] == "ConfigMap"), "no dashboard by default");
                ensure!(docs.iter().any(|d| d["kind"] == "CustomResourceDefinition"), "the chart's CRD");
            }
            "namespacedOnly" => {
                ensure!(has(&format!("--namespace={watch}")), "{args:?}");
                ensure!(of_kind::<ClusterRole>(&docs, "ClusterRole")?.is_empty(), "no ClusterRole");
                ensure!(of_kind::<ClusterRoleBinding>(&docs, "ClusterRoleBinding")?.is_empty());
                let roles: Vec<Role> = of_kind(&docs, "Role")?;
                let in_watch: Vec<&Role> =
                    roles.iter().filter(|r| r.metadata.namespace.as_deref() == Some(&*watch)).collect();
                ensure!(in_watch.len() == 1, "one Role in {watch}: {roles:?}");
                assert_controller_rules(in_watch[0].rules.as_deref().unwrap_or_default())?;
                let lease_role = roles
                    .iter()
                    .find(|r| r.metadata.namespace.as_deref() == Some(&*ns))
                    .context("the leases Role is in the release namespace")?;
                ensure!(format!("{:?}", lease_role.rules).contains("leases"), "{lease_role:?}");
            }
            _ => {
                ensure!(has("--site=east") && has("--metrics-addr=0.0.0.0:9090"), "{args:?}");
                ensure!(!has("--leader-elect"), "{args:?}");
                ensure!(of_kind::<PodDisruptionBudget>(&docs, "PodDisruptionBudget")?.is_empty(), "no PDB");
                ensure!(of_kind::<Role>(&docs, "Role")?.is_empty(), "no leases Role without election");
                let dash = docs
                    .iter()
                    .find(|d| d["kind"] == "ConfigMap")
                    .context("the Grafana dashboard ConfigMap")?;
                ensure!(dash["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"));
                let json: serde_json::Value =
                    serde_json::from_str(dash["data"]["understudy.json"].as_str().unwrap_or_default())
                        .context("the dashboard is JSON")?;
                let exprs = json.to_string();
                for m in ["understudy_replication_lag_bytes", "understudy_epoch", "understudy_is_leader"] {
                    ensure!(exprs.contains(m), "the dashboard charts {m}");
                }
            }
        }
    }
    // A dry run creates nothing.
    ensure!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("tpl-understudy").await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_cluster_wide_grants_only_what_the_controller_uses() -> Result<()> {
    let cp = tokio::task::spawn_blocking(support::control_plane).await?;
    tokio::task::spawn_blocking(helm_setup).await?.map(|_| ())?;
    let client = cp.client().await?;
    let ns = support::namespace(&client, "chart-inst").await?;
    let other = support::namespace(&client, "chart-other").await?;
    let release = format!("dr-{}", random_hex(3));
    let full = format!("{release}-understudy");

    let notes = install(cp, &client, &release, &ns, &[]).await?;
    ensure!(notes.contains("all namespaces"), "NOTES say what is watched:\n{notes}");

    // The Deployment: two leader-elected replicas, locked down.
    let d = Api::<Deployment>::namespaced(client.clone(), &ns).get(&full).await?;
    let spec = d.spec.clone().context("Deployment spec")?;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.clone().context("pod spec")?;
    assert_eq!(pod.service_account_name.as_deref(), Some(&*full));
    let psc = pod.security_context.clone().context("pod securityContext")?;
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.seccomp_profile.map(|s| s.type_).as_deref(), Some("RuntimeDefault"));
    let c = controller_container(&d)?;
    let sc = c.security_context.clone().context("container securityContext")?;
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.map(|s| s.type_).as_deref(), Some("RuntimeDefault"));
    let res = c.resources.clone().context("resources")?;
    ensure!(res.requests.is_some() && res.limits.is_some(), "requests and limits: {res:?}");
    let port = c.ports.clone().unwrap_or_default();
    ensure!(port.iter().any(|p| p.name.as_deref() == Some("http-metrics") && p.container_port == 8080));
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.clone()).context("an HTTP probe")?;
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("http-metrics".into()));
    }
    let env = c.env.clone().unwrap_or_default();
    for (name, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
        let from = env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        assert_eq!(from.as_deref(), Some(field), "{name} from the downward API");
    }
    let args = args_of(c);
    for a in ["run", "--leader-elect", "--lease-name=understudy", &format!("--lease-namespace={ns}")] {
        ensure!(args.iter().any(|x| x == a), "{a} in {args:?}");
    }

    // ServiceAccount, metrics Service, PDB, ClusterRole + binding, leases Role + binding.
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).get(&full).await?;
    let svc = Api::<Service>::namespaced(client.clone(), &ns).get(&format!("{full}-metrics")).await?;
    let sp = svc.spec.and_then(|s| s.ports).unwrap_or_default();
    ensure!(sp.iter().any(|p| p.name.as_deref() == Some("http-metrics") && p.port == 8080), "{sp:?}");
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns).get(&full).await?;
    assert_eq!(pdb.spec.and_then(|s| s.min_available), Some(IntOrString::Int(1)));
    let cluster_name = format!("{ns}-{full}");
    let cr = Api::<ClusterRole>::all(client.clone()).get(&cluster_name).await?;
    assert_controller_rules(cr.rules.as_deref().unwrap_or_default())?;
    let crb = Api::<ClusterRoleBinding>::all(client.clone()).get(&cluster_name).await?;
    assert_eq!(crb.role_ref.name, cluster_name);
    let subject = crb.subjects.unwrap_or_default();
    ensure!(
        subject.len() == 1 && subject[0].name == full && subject[0].namespace.as_deref() == Some(&*ns),
        "{subject:?}"
    );
    Api::<Role>::namespaced(client.clone(), &ns).get(&format!("{full}-leader-election")).await?;
    Api::<RoleBinding>::namespaced(client.clone(), &ns).get(&format!("{full}-leader-election")).await?;

    // Least privilege, as the API server's authorizer sees the ServiceAccount. `kubectl auth can-i`
    // resolves resources by discovery, so ExternalDNS's DNSEndpoint CRD must be served (as where
    // ExternalDNS runs).
    let mut dnsendpoint = cp.kubectl();
    dnsendpoint.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "e2e/manifests/dnsendpoint-crd.yaml",
    ]);
    dnsendpoint.current_dir(repo_root());
    ok(dnsendpoint, None).await?;
    let mut established = cp.kubectl();
    established.args([
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/dnsendpoints.externaldns.k8s.io",
    ]);
    ok(established, None).await?;
    let drp = "disasterrecoverypairs.dr.understudy.dev";
    let o: &str = &other;
    let n: &str = &ns;
    assert_can_i(
        cp,
        &ns,
        &full,
        &[
            (&["list", drp, "--all-namespaces"], true),
            (&["watch", drp, "--all-namespaces"], true),
            (&["patch", drp, "-n", o], true),
            (&["patch", drp, "--subresource=status", "-n", o], true),
            (&["update", drp, "--subresource=finalizers", "-n", o], true),
            (&["get", "secrets", "-n", o], true),
            (&["patch", "secrets", "-n", o], true),
            (&["patch", "configmaps", "-n", o], true),
            (&["create", "events.events.k8s.io", "-n", o], true),
            (&["patch", "deployments.apps", "-n", o], true),
            (&["patch", "statefulsets.apps", "-n", o], true),
            (&["create", "dnsendpoints.externaldns.k8s.io", "-n", o], true),
            (&["delete", "dnsendpoints.externaldns.k8s.io", "-n", o], false),
            // Rejoin Jobs: created, read, looked up and deleted; never changed.
            (&["create", "jobs.batch", "-n", o], true),
            (&["get", "jobs.batch", "-n", o], true),
            (&["list", "jobs.batch", "-n", o], true),
            (&["delete", "jobs.batch", "-n", o], true),
            (&["update", "jobs.batch", "-n", o], false),
            (&["patch", "jobs.batch", "-n", o], false),
            (&["patch", "jobs.batch", "--subresource=status", "-n", o], false),
            (&["create", "cronjobs.batch", "-n", o], false),
            (&["create", "leases.coordination.k8s.io", "-n", n], true),
            (&["update", "leases.coordination.k8s.io", "-n", n], true),
            // ... and nothing more.
            (&["create", drp, "-n", o], false),
            (&["delete", drp, "-n", o], false),
            (&["delete", "secrets", "-n", o], false),
            (&["list", "secrets", "-n", o], false),
            (&["create", "secrets", "-n", o], false),
            (&["delete", "configmaps", "-n", o], false),
            (&["create", "pods", "-n", o], false),
            (&["create", "pods", "-n", n], false),
            (&["delete", "deployments.apps", "-n", o], false),
            (&["create", "leases.coordination.k8s.io", "-n", o], false),
            (&["list", "nodes"], false),
            (&["create", "clusterrolebindings"], false),
            (&["*", "*", "--all-namespaces"], false),
        ],
    )
    .await?;

    uninstall(cp, &release, &ns).await?;
    ensure!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt(&full).await?.is_none());
    ensure!(Api::<ClusterRole>::all(client.clone()).get_opt(&cluster_name).await?.is_none());
    ensure!(Api::<ClusterRoleBinding>::all(client.clone()).get_opt(&cluster_name).await?.is_none());
    ensure!(!can_i(cp, &ns, &full, &["get", "secrets", "-n", o]).await?, "rights revoked on uninstall");
    // CRDs are never deleted by helm: pairs outlive the controller.
    Api::<CustomResourceDefinition>::all(client.clone()).get(CRD).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_namespaced_only_stays_inside_its_namespace() -> Result<()> {
    let cp = tokio::task::spawn_blocking(support::control_plane).await?;
    tokio::task::spawn_blocking(helm_setup).await?.map(|_| ())?;
    let client = cp.client().await?;
    let ns = support::namespace(&client, "chart-ctl").await?;
    let watch = support::namespace(&client, "chart-app").await?;
    let other = support::namespace(&client, "chart-else").await?;
    let release = format!("west-{}", random_hex(3));
    let full = format!("{release}-understudy");

    let set_watch = format!("watchNamespace={watch}");
    let notes =
        install(cp, &client, &release, &ns, &["namespacedOnly=true", &set_watch, "site=west"]).await?;
    ensure!(notes.contains(&format!("namespace {watch}")), "NOTES say what is watched:\n{notes}");

    let d = Api::<Deployment>::namespaced(client.clone(), &ns).get(&full).await?;
    let args = args_of(controller_container(&d)?);
    for a in [format!("--namespace={watch}"), "--site=west".into(), format!("--lease-namespace={ns}")] {
        ensure!(args.contains(&a), "{a} in {args:?}");
    }
    let role = Api::<Role>::namespaced(client.clone(), &watch).get(&full).await?;
    assert_controller_rules(role.rules.as_deref().unwrap_or_default())?;
    Api::<RoleBinding>::namespaced(client.clone(), &watch).get(&full).await?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).get(&full).await?;
    ensure!(Api::<ClusterRole>::all(client.clone()).get_opt(&format!("{ns}-{full}")).await?.is_none());

    let drp = "disasterrecoverypairs.dr.understudy.dev";
    let (w, n, o): (&str, &str, &str) = (&watch, &ns, &other);
    assert_can_i(
        cp,
        &ns,
        &full,
        &[
            (&["watch", drp, "-n", w], true),
            (&["patch", drp, "--subresource=status", "-n", w], true),
            (&["get", "secrets", "-n", w], true),
            (&["update", "secrets", "-n", w], true),
            (&["patch", "configmaps", "-n", w], true),
            (&["create", "events.events.k8s.io", "-n", w], true),
            (&["create", "jobs.batch", "-n", w], true),
            (&["delete", "jobs.batch", "-n", w], true),
            (&["create", "jobs.batch", "-n", o], false),
            (&["create", "jobs.batch", "-n", n], false),
            (&["get", "leases.coordination.k8s.io", "-n", n], true),
            (&["create", "leases.coordination.k8s.io", "-n", n], true),
            (&["list", drp, "--all-namespaces"], false),
            (&["list", drp, "-n", o], false),
            (&["get", "secrets", "-n", o], false),
            (&["get", "secrets", "-n", n], false),
            (&["delete", "secrets", "-n", w], false),
            (&["create", "pods", "-n", w], false),
            (&["create", "leases.coordination.k8s.io", "-n", w], false),
            (&["list", "nodes"], false),
        ],
    )
    .await?;

    uninstall(cp, &release, &ns).await?;
    ensure!(Api::<Role>::namespaced(client.clone(), &watch).get_opt(&full).await?.is_none());
    ensure!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt(&full).await?.is_none());
    Ok(())
}
