//! A corpus of odd DisasterRecoveryPairs against the real API server and the real controller: the
//! controller survives every pair the API server accepts, and one object it cannot read never blinds
//! it to the others. A generated corpus (every optional field removed or `null`, empty lists and maps,
//! numbers at their bounds and as the other JSON kind, odd durations, unicode and very long strings,
//! unknown fields, odd annotations, odd status) lives next to a good pair; the controller, a real
//! process, is SIGKILLed and restarted, and the good pair must still fail over. Every accepted odd
//! object is either reconciled (a status written) or reported (a Warning Event `Undecodable` naming
//! the field). A second test loosens this binary's CRD so that the API server accepts a pair the
//! controller's types cannot read. Its own test binary: its own kube-apiserver, whose CRD it edits.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::events::v1::Event;
use kube::{
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    Api, Client, CustomResourceExt,
};
use serde_json::{json, Value};
use understudy::crd::DisasterRecoveryPair;
use understudy_e2e::{
    bed::Bed,
    pair::{postgres, Automatic, Failover, Manual, Pair},
    support,
};

/// The two tests edit (or rely on) the one CRD of this binary's control plane: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The good pair's failover policy: automatic, fast probes.
fn good(f: Failover) -> Failover {
    f.mode(Automatic).probe_interval("500ms").failure_threshold(2).probe_timeout("500ms")
}

/// One step into a JSON document.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Idx(usize),
}

/// `spec.sites[0].postgres.port` as segments.
fn path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                out.push(Seg::Idx(rest[1..end].parse().expect("an index")));
                rest = &rest[end + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// Segments back as a dotted path.
fn dotted(p: &[Seg]) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Idx(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A change to the base document.
#[derive(Clone, Debug)]
enum Edit {
    Remove(Vec<Seg>),
    Set(Vec<Seg>, Value),
}

fn apply(doc: &mut Value, edit: &Edit) {
    let (p, val) = match edit {
        Edit::Remove(p) => (p, None),
        Edit::Set(p, v) => (p, Some(v)),
    };
    let Some((last, parents)) = p.split_last() else { return };
    let mut node = doc;
    for seg in parents {
        node = match seg {
            Seg::Key(k) => {
                if !node.is_object() {
                    *node = json!({});
                }
                node.as_object_mut().expect("an object").entry(k.clone()).or_insert(json!({}))
            }
            Seg::Idx(i) => &mut node[*i],
        };
    }
    match (last, val) {
        (Seg::Key(k), None) => {
            node.as_object_mut().map(|o| o.remove(k));
        }
        (Seg::Idx(i), None) => {
            node.as_array_mut().filter(|a| *i < a.len()).map(|a| a.remove(*i));
        }
        (Seg::Key(k), Some(v)) => {
            if !node.is_object() {
                *node = json!({});
            }
            node.as_object_mut().expect("an object").insert(k.clone(), v.clone());
        }
        (Seg::Idx(i), Some(v)) => node[*i] = v.clone(),
    }
}

/// A value for a label: JSON, cut to 60 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    let n = s.chars().count();
    if n <= 60 {
        s
    } else {
        format!("{}…({n} chars)", s.chars().take(40).collect::<String>())
    }
}

/// A site of the base pair: every optional field set, every address unreachable (ports 1 and 2 on
/// loopback), every Secret missing, so that no odd pair can touch the good pair's servers or objects.
fn site(name: &str, port: u16, target: &str) -> Value {
    json!({
        "name": name,
        "postgres": {
            "host": "127.0.0.1",
            "port": port,
            "database": "postgres",
            "credentialsSecret": { "name": "odd-admin" },
            "tls": {
                "mode": "VerifyFull",
                "caSecret": { "name": "odd-ca", "key": "ca.crt" },
                "clientCertSecret": { "name": "odd-client" }
            }
        },
        "dataSourceSecret": { "name": format!("odd-dsn-{name}"), "key": "dsn" },
        "health": { "http": [ { "url": "http://127.0.0.1:1/api/v4/system/ping" } ] },
        "rejoin": { "command": ["/bin/true", name], "timeout": "2m" },
        "dnsTarget": target
    })
}

/// The full valid pair the corpus is derived from.
fn base() -> Value {
    json!({
        "apiVersion": "dr.understudy.dev/v1alpha1",
        "kind": "DisasterRecoveryPair",
        "metadata": { "name": "odd" },
        "spec": {
            "primary": "east",
            "sites": [site("east", 1, "192.0.2.1"), site("west", 2, "192.0.2.2")],
            "failover": {
                "mode": "Approve",
                "probeInterval": "5s",
                "probeTimeout": "1s",
                "failureThreshold": 3,
                "maxLagBytes": "16Mi",
                "catchUpTimeout": "30s",
                "cooldown": "10m"
            },
            "dataSource": [
                { "secretKey": { "name": "odd-db", "key": "dsn" } },
                { "configMapKey": {
                    "name": "odd-config",
                    "key": "config.json",
                    "jsonPointer": "/SqlSettings/DataSource",
                    "perSite": [ { "jsonPointer": "/JobSettings/RunScheduler", "values": { "east": "true", "west": "false" } } ]
                } }
            ],
            "recycle": [
                { "pgBouncer": {
                    "host": "127.0.0.1",
                    "port": 3,
                    "database": "app",
                    "adminSecret": { "name": "odd-pgb" },
                    "databasesFile": "/nonexistent/understudy-odd/databases.ini",
                    "backendDatabase": "postgres"
                } },
                { "http": { "url": "http://127.0.0.1:1/api/v4/database/recycle", "method": "POST", "tokenSecret": { "name": "odd-token" } } },
                { "rolloutRestart": { "kind": "Deployment", "name": "odd-app" } }
            ],
            "dns": [
                { "rfc2136": { "server": "127.0.0.1:9", "zone": "example.test", "name": "odd", "ttl": 30, "tsigSecret": { "name": "odd-tsig" } } },
                { "dnsEndpoint": { "name": "odd-chat", "dnsName": "odd.example.test", "ttl": 30 } }
            ],
            "coordination": { "etcd": {
                "endpoints": ["https://127.0.0.1:9"],
                "prefix": "/understudy-odd",
                "tlsSecret": { "name": "odd-witness-tls" },
                "authSecret": { "name": "odd-witness-auth" },
                "leaseTTL": "10s"
            } }
        }
    })
}

/// Every property under `spec` of `v` with whether the schema requires it (the second site, a mirror
/// of the first, is not walked).
fn properties(v: &Value, schema: &Value, at: &[Seg], out: &mut Vec<(Vec<Seg>, bool)>) {
    match v {
        Value::Object(o) => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            for (k, child) in o {
                let mut p = at.to_vec();
                p.push(Seg::Key(k.clone()));
                out.push((p.clone(), required.contains(&k.as_str())));
                let sub = schema["properties"].get(k).unwrap_or(&schema["additionalProperties"]);
                properties(child, sub, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                if dotted(at) == "spec.sites" && i > 0 {
                    continue;
                }
                let mut p = at.to_vec();
                p.push(Seg::Idx(i));
                properties(child, &schema["items"], &p, out);
            }
        }
        _ => {}
    }
}

/// The spec corpus: (label, document without a name), deterministic.
fn corpus() -> Vec<(String, Value)> {
    let base = base();
    let crd = serde_json::to_value(DisasterRecoveryPair::crd()).expect("the CRD as JSON");
    let spec_schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut variants: Vec<(String, Vec<Edit>)> = Vec::new();

    // Every optional field removed, and set to null.
    let mut props = Vec::new();
    properties(&base["spec"], spec_schema, &[Seg::Key("spec".into())], &mut props);
    for (p, required) in &props {
        if !required {
            variants.push((format!("remove {}", dotted(p)), vec![Edit::Remove(p.clone())]));
            variants.push((format!("{}: null", dotted(p)), vec![Edit::Set(p.clone(), Value::Null)]));
        }
    }
    // A few required ones, for the rejections.
    for p in ["spec.primary", "spec.sites[0].postgres.host", "spec.sites[0].postgres.credentialsSecret"] {
        variants.push((format!("remove {p}"), vec![Edit::Remove(path(p))]));
        variants.push((format!("{p}: null"), vec![Edit::Set(path(p), Value::Null)]));
    }
    for p in ["spec.sites[1].postgres.port", "spec.sites[1].postgres.tls", "spec.sites[1].dnsTarget"] {
        variants.push((format!("{p}: null"), vec![Edit::Set(path(p), Value::Null)]));
    }

    let mut set = |p: &str, vals: Vec<Value>| {
        for v in vals {
            variants.push((format!("{p} = {}", short(&v)), vec![Edit::Set(path(p), v)]));
        }
    };
    let long = |c: &str, n: usize| Value::String(c.repeat(n));

    // Numbers at their bounds, past them, and as the other JSON kind.
    set(
        "spec.failover.failureThreshold",
        vec![json!(1), json!(100), json!(0), json!(101), json!("3"), json!(3.0), json!(2.5), json!(-1)],
    );
    set(
        "spec.sites[0].postgres.port",
        vec![json!(1), json!(65535), json!(0), json!(65536), json!("5432"), json!(5432.0)],
    );
    set("spec.recycle[0].pgBouncer.port", vec![json!(65535), json!(65536)]);
    set("spec.dns[0].rfc2136.ttl", vec![json!(1), json!(86400), json!(86401)]);
    set("spec.dns[1].dnsEndpoint.ttl", vec![json!(1), json!(86400), json!(0)]);
    set(
        "spec.failover.maxLagBytes",
        vec![
            json!(16),
            json!(0),
            json!(-1),
            json!(i64::MAX),
            json!("0"),
            json!("9223372036854775807"),
            json!("9223372036854775808"),
            json!("1.5Gi"),
            json!("16e3"),
            json!("16E"),
            json!("8Ei"),
            json!("-1"),
            json!(""),
            json!("lots"),
            json!(" 16Mi "),
            json!("16mi"),
            json!(1.5),
            json!(true),
            json!({}),
        ],
    );

    // Durations: bounds, Go's odd spellings, and one field the schema does not check at all.
    let d = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
    set(
        "spec.failover.probeInterval",
        d(&[
            "100ms",
            "1h",
            "59m59s",
            "1h0m0.5s",
            "99ms",
            "0s",
            "0",
            "1.5s",
            ".5s",
            "+1s",
            "500000us",
            "500000µs",
            "500000μs",
            "1h0m",
            "5s-3s",
            "5",
            "soon",
        ]),
    );
    set("spec.failover.probeTimeout", d(&["50ms", "250ms", "0.05s", "49ms"]));
    set("spec.failover.catchUpTimeout", d(&["1s", "1h", "1h0m0.5s", "100ms"]));
    set("spec.failover.cooldown", d(&["0s", "0", "1h0m0.5s", "100ms", "2562047h", "2562048h", "-1s"]));
    set("spec.coordination.etcd.leaseTTL", d(&["2s", "5m", "4s", "1h0m0.5s", "5m0.001s"]));
    set(
        "spec.sites[0].rejoin.timeout",
        d(&[
            "0s",
            "1h0m0.5s",
            "100ms",
            "59m59s",
            "soon",
            "",
            "-5s",
            "5s-3s",
            "99999999999999999999h",
            "2562047h",
            "1e3s",
            "0",
        ]),
    );

    // Free text: unicode, very long, and things that only look like what they should be.
    set(
        "spec.sites[0].postgres.host",
        vec![
            json!("östra.例え.テスト"),
            long("h", 253),
            long("h", 254),
            json!("a\u{0}b"),
            json!("::1"),
            json!("[::1]"),
            json!(" 127.0.0.1 "),
            json!("🐘"),
        ],
    );
    set("spec.sites[0].postgres.database", vec![json!("🐘"), long("d", 63), long("d", 64), json!("a b")]);
    set(
        "spec.sites[0].dnsTarget",
        vec![
            json!("not-an-ip"),
            json!("::1"),
            json!("2001:db8::1"),
            json!("ö"),
            json!(""),
            json!("1.2.3.4.5"),
            long("t", 253),
            long("t", 254),
        ],
    );
    set(
        "spec.sites[0].health.http[0].url",
        vec![
            json!("http://ü.example/ping"),
            json!("https://"),
            json!("http://[::1"),
            Value::String(format!("http://127.0.0.1:1/{}", "p".repeat(2020))),
            json!("http://x/%zz"),
            json!("ftp://x/"),
        ],
    );
    set(
        "spec.sites[0].health.http",
        vec![
            json!(vec![json!({"url": "http://127.0.0.1:1/"}); 8]),
            json!(vec![json!({"url": "http://127.0.0.1:1/"}); 9]),
        ],
    );
    set(
        "spec.recycle[1].http.url",
        vec![json!("http://ü/"), json!("https://"), Value::String(format!("http://{}", "u".repeat(2041)))],
    );
    set("spec.recycle[1].http.method", vec![json!("GET"), json!("DELETE"), json!("get")]);
    set("spec.recycle[0].pgBouncer.host", vec![json!("ü"), long("h", 253)]);
    set(
        "spec.recycle[0].pgBouncer.databasesFile",
        vec![json!("/ü/∂.ini"), Value::String(format!("/{}", "f".repeat(4095))), json!("relative.ini")],
    );
    set("spec.recycle[0].pgBouncer.backendDatabase", vec![json!("🐘")]);
    set("spec.recycle[2].rolloutRestart.kind", vec![json!("StatefulSet"), json!("DaemonSet")]);
    set("spec.recycle[2].rolloutRestart.name", vec![json!("ü"), json!("a/b")]);
    set(
        "spec.dns[0].rfc2136.server",
        vec![json!("[::1]:53"), json!("no-port"), json!("127.0.0.1:99999"), json!("ü:53"), json!(":53")],
    );
    set("spec.dns[0].rfc2136.zone", vec![json!("."), json!("ünï.test")]);
    set("spec.dns[0].rfc2136.name", vec![json!("@"), json!("*")]);
    set("spec.dns[1].dnsEndpoint.dnsName", vec![json!("ü.example"), json!("*.example.test"), json!(".")]);
    set(
        "spec.dataSource[1].configMapKey.perSite[0].values",
        vec![
            json!({"east": "not json", "west": "{\"unterminated"}),
            json!({"nowhere": "1"}),
            json!({"east": "x".repeat(10_000), "west": "null"}),
            json!({"": ""}),
            Value::Object((0..200).map(|i| (format!("site-{i}"), json!(i.to_string()))).collect()),
        ],
    );
    set(
        "spec.dataSource[1].configMapKey.perSite[0].jsonPointer",
        vec![json!("/"), json!("/~2"), json!("/a/-"), json!("/é/\u{0}")],
    );
    set(
        "spec.dataSource[1].configMapKey.perSite",
        vec![
            json!(vec![json!({"jsonPointer": "/x", "values": {"east": "1"}}); 16]),
            json!(vec![json!({"jsonPointer": "/x", "values": {"east": "1"}}); 17]),
        ],
    );
    set("spec.dataSource[1].configMapKey.jsonPointer", vec![json!("/"), long("/", 1024)]);
    set("spec.dataSource[1].configMapKey.key", vec![json!("config.json/../x")]);
    set(
        "spec.sites[0].postgres.credentialsSecret.name",
        vec![json!("ü"), json!("../../x"), json!("a/b"), long("n", 253)],
    );
    set("spec.sites[0].dataSourceSecret.key", vec![long("k", 253)]);
    set(
        "spec.coordination.etcd.endpoints",
        vec![
            json!(["not a url"]),
            json!(["http://ü:2379"]),
            json!(vec!["https://127.0.0.1:9"; 7]),
            json!(vec!["https://127.0.0.1:9"; 8]),
            json!([""]),
        ],
    );
    set("spec.coordination.etcd.prefix", vec![json!("/"), json!("//"), json!("/ü"), json!("p")]);
    set(
        "spec.sites[0].rejoin.command",
        vec![json!(vec!["/bin/true"; 32]), json!(vec!["/bin/true"; 33]), json!(["ø", "\u{0}"]), json!([""])],
    );
    set(
        "spec.sites[0].postgres.tls",
        vec![
            json!({"mode": "Require"}),
            json!({"mode": "Require", "clientCertSecret": {"name": "odd-client"}}),
            json!({"mode": "VerifyCA", "caSecret": {"name": "odd-ca", "key": "ca.crt"}}),
            json!({"mode": "Disable"}),
            json!({"mode": "Disable", "caSecret": {"name": "odd-ca", "key": "ca.crt"}}),
            json!({}),
        ],
    );
    set("spec.failover.mode", vec![json!("Manual"), json!("Automatic"), json!("automatic")]);
    set("spec.primary", vec![json!("west")]);

    // Empty lists and maps.
    set("spec.sites[0].health.http", vec![json!([])]);
    set("spec.dataSource", vec![json!([]), json!([{}])]);
    set("spec.recycle", vec![json!([]), json!([{}])]);
    set("spec.dns", vec![json!([])]);
    set("spec.dataSource[1].configMapKey.perSite", vec![json!([])]);
    set("spec.dataSource[1].configMapKey.perSite[0].values", vec![json!({})]);
    set("spec.coordination.etcd.endpoints", vec![json!([])]);
    set("spec.sites[0].rejoin.command", vec![json!([])]);
    set("spec.coordination", vec![json!({})]);
    set("spec.coordination.etcd", vec![json!({})]);
    set("spec.sites[0].health", vec![json!({})]);
    set("spec.failover", vec![json!({})]);
    set("metadata.annotations", vec![json!({})]);
    set("metadata.labels", vec![json!({})]);

    // Unknown fields: the API server prunes them.
    set("spec.bogus", vec![json!(1)]);
    set("spec.failover.bogus", vec![json!("x")]);
    set("spec.sites[0].bogus", vec![json!({})]);
    set("spec.sites[0].postgres.password", vec![json!("hunter2")]);
    set("bogus", vec![json!(true)]);
    set("spec.dataSource[0].bogus", vec![json!([1, 2])]);
    set("spec.coordination.etcd.bogus", vec![Value::Null]);
    set("spec.recycle[2].rolloutRestart.namespace", vec![json!("other")]);

    // Annotations.
    let ann = |k: &str, v: &str| {
        Edit::Set(
            vec![Seg::Key("metadata".into()), Seg::Key("annotations".into()), Seg::Key(k.into())],
            json!(v),
        )
    };
    let big = "s".repeat(10 * 1024);
    let many: Vec<Edit> = (0..100).map(|i| ann(&format!("dr.understudy.dev/x-{i}"), "ü")).collect();
    for (label, edits) in [
        (
            "annotation dr.understudy.dev/switchover with a 10 KB value",
            vec![ann("dr.understudy.dev/switchover", &big)],
        ),
        ("annotation dr.understudy.dev/x", vec![ann("dr.understudy.dev/x", "y")]),
        ("annotations 100 unknown dr.understudy.dev/x-<i>", many),
        (
            "annotations switchover to a site that does not exist",
            vec![
                ann("dr.understudy.dev/switchover", "t1"),
                ann("dr.understudy.dev/switchover-to", "nowhere"),
            ],
        ),
        ("annotation dr.understudy.dev/switchover empty", vec![ann("dr.understudy.dev/switchover", "")]),
        ("annotation dr.understudy.dev/paused = TRUE", vec![ann("dr.understudy.dev/paused", "TRUE")]),
        ("annotation dr.understudy.dev/paused = maybe", vec![ann("dr.understudy.dev/paused", "maybe")]),
        ("annotation dr.understudy.dev/paused = true", vec![ann("dr.understudy.dev/paused", "true")]),
        ("annotation dr.understudy.dev/approve empty", vec![ann("dr.understudy.dev/approve", "")]),
        ("annotation dr.understudy.dev/dry-run unicode", vec![ann("dr.understudy.dev/dry-run", "é✓🐘")]),
        ("annotation dr.understudy.dev/failover", vec![ann("dr.understudy.dev/failover", "f1")]),
        ("annotation dr.understudy.dev/epoch = -1", vec![ann("dr.understudy.dev/epoch", "-1")]),
    ] {
        variants.push((label.into(), edits));
    }

    variants
        .into_iter()
        .map(|(label, edits)| {
            let mut doc = base.clone();
            for e in &edits {
                apply(&mut doc, e);
            }
            (label, doc)
        })
        .collect()
}

/// The status corpus: (label, status) written through the status subresource onto a base pair.
fn status_corpus() -> Vec<(String, Value)> {
    let transition = |steps: Value, finished: bool| {
        let mut t = json!({
            "trigger": "Automatic", "from": "east", "to": "west", "epoch": 1, "id": "odd/1", "holder": "west",
            "kind": "Failover", "startedAt": "2026-01-01T00:00:00Z", "steps": steps
        });
        if finished {
            t["finishedAt"] = json!("2026-01-01T00:00:05Z");
            t["outcome"] = json!("Completed");
        }
        t
    };
    let done = |name: &str| json!({"name": name, "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:02Z", "outcome": "Succeeded", "attempts": 1});
    let mut rolling = transition(json!([done("TakeEpoch"), {"name": "Fence", "attempts": 1}]), false);
    rolling["from"] = json!("nowhere");
    rolling["to"] = json!("elsewhere");
    rolling["outcome"] = json!("RollingBack");
    let mut garbled = transition(json!([done("TakeEpoch")]), true);
    for (k, v) in [
        ("startedAt", json!("garbage")),
        ("finishedAt", json!("not a time")),
        ("rtoSeconds", json!(-1.5)),
        ("lostWalBytes", json!(-1)),
        ("promotedAtLsn", json!("zz/zz")),
        ("finalLsn", json!("0/0")),
    ] {
        garbled[k] = v;
    }
    let mut overflow = transition(json!([{"name": "TakeEpoch", "attempts": 4_294_967_296_i64}]), true);
    overflow["epoch"] = json!(i64::MAX);
    vec![
        ("status.epoch = 9223372036854775807", json!({"epoch": i64::MAX})),
        ("status.epoch = -5", json!({"epoch": -5})),
        ("status.epoch = 9223372036854775808", json!({"epoch": 9_223_372_036_854_775_808_u64})),
        ("status.epoch = 1.0", json!({"epoch": 1.0})),
        (
            "status.lastTransition finished, with an unknown step",
            json!({"epoch": 1, "currentPrimary": "west", "lastTransition": transition(json!([done("TakeEpoch"), done("Teleport")]), true)}),
        ),
        (
            "status.lastTransition unfinished, with an unknown step",
            json!({"epoch": 1, "lastTransition": transition(json!([done("TakeEpoch"), {"name": "Teleport", "attempts": 1}]), false)}),
        ),
        ("status.lastTransition rolling back between sites that do not exist", json!({"epoch": 1, "lastTransition": rolling})),
        ("status.lastTransition times that are not times", json!({"epoch": 1, "currentPrimary": "west", "lastTransition": garbled})),
        ("status.lastTransition.steps[0].attempts = 4294967296", json!({"lastTransition": overflow})),
        ("status.handled with a 10 KB value", json!({"handled": {"dr.understudy.dev/switchover": "h".repeat(10 * 1024)}})),
        ("status.currentPrimary names no site", json!({"currentPrimary": "nowhere"})),
        ("status.targetPrimary names no site, phase FailingOver", json!({"targetPrimary": "nowhere", "phase": "FailingOver"})),
        (
            "status.sites[0].consecutiveFailures = 2147483648",
            json!({"sites": [{"name": "east", "reachable": false, "consecutiveFailures": 2_147_483_648_i64}]}),
        ),
        (
            "status.sites with unknown sites and times that are not times",
            json!({"sites": [
                {"name": "nowhere", "reachable": true, "failingSince": "yesterday", "message": "ü🐘", "timeline": i64::MAX, "consecutiveFailures": -1},
                {"name": "east", "reachable": false, "failingSince": "not a time", "consecutiveFailures": i32::MAX}
            ]}),
        ),
        (
            "status.formerPrimary names no site",
            json!({"formerPrimary": {"site": "nowhere", "assessment": "Whatever", "rejoinAttempts": -1, "assessedAt": "never"}}),
        ),
        (
            "status.formerPrimary.rejoinAttempts = 99999999999",
            json!({"formerPrimary": {"site": "east", "assessment": "Rejoining", "rejoinAttempts": 99_999_999_999_i64}}),
        ),
        ("status.pendingApproval for no site", json!({"pendingApproval": {"nonce": "", "to": "nowhere", "requestedAt": "x"}})),
        (
            "status.dryRun with a 10 KB step",
            json!({"dryRun": {"token": "é", "at": "now", "to": "nowhere", "steps": ["d".repeat(10 * 1024)], "lagBytes": -1}}),
        ),
        ("status.replicationLagBytes = -9223372036854775808", json!({"replicationLagBytes": i64::MIN})),
        ("status with an unknown field and epoch null", json!({"bogus": 1, "epoch": null})),
        ("status.phase = Exploded", json!({"phase": "Exploded"})),
    ]
    .into_iter()
    .map(|(l, s)| (l.to_string(), s))
    .collect()
}

fn dyn_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<DisasterRecoveryPair>(&()))
}

/// The first dotted field path starting with `spec.` or `status.` in `text`.
fn field_path(text: &str) -> Option<&str> {
    for (i, _) in text.char_indices() {
        let rest = &text[i..];
        let prefix = if rest.starts_with("spec.") {
            5
        } else if rest.starts_with("status.") {
            7
        } else {
            continue;
        };
        let boundary =
            text[..i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '.' || c == '_'));
        if !boundary || !rest[prefix..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        let end =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || "._[]".contains(c))).unwrap_or(rest.len());
        return Some(rest[..end].trim_end_matches('.'));
    }
    None
}

/// The Warning `Undecodable` Events of the namespace: object name → notes.
async fn undecodable_events(
    client: &Client,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items {
        if e.reason.as_deref() == Some("Undecodable") && e.type_.as_deref() == Some("Warning") {
            let name = e.regarding.and_then(|r| r.name).unwrap_or_default();
            out.entry(name).or_default().push(e.note.unwrap_or_default());
        }
    }
    Ok(out)
}

/// Whether this build's types read the object, and why not. A panic counts as not.
fn decodes(obj: &DynamicObject) -> std::result::Result<(), String> {
    let v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serde_json::from_value::<DisasterRecoveryPair>(v)
    })) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!(
            "PANICS while decoding: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// An accepted odd object.
struct Odd {
    name: String,
    label: String,
    /// The status as the API server stored it after the test wrote it (none for spec variants).
    written: Option<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_pair_crashes_or_blinds_the_controller_across_a_restart() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut bed = Bed::start("corpus").await?;
    bed.pair("chat").failover(good).create(&bed.client, &bed.ns).await?;
    let mut ctl = bed.controller_process("west", &[])?;
    bed.wait_healthy("chat").await?;
    let api = dyn_api(&bed.client, &bed.ns);

    // The spec corpus, applied while the controller runs: it meets every object through its watch.
    let mut odd: Vec<Odd> = Vec::new();
    let mut rejected: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    let spec_corpus = corpus();
    let applied_spec = spec_corpus.len();
    for (label, mut doc) in spec_corpus {
        let name = format!("odd-{n}");
        n += 1;
        doc["metadata"]["name"] = json!(name);
        let obj: DynamicObject = serde_json::from_value(doc)?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => odd.push(Odd { name, label, written: None }),
            Err(kube::Error::Api(e)) => rejected.push((label, e.message)),
            Err(e) => return Err(e).context(format!("create {name} ({label})")),
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut failures: Vec<String> = Vec::new();
    if !ctl.is_running() {
        failures.push("the first controller died while the corpus was applied (see the panics below)".into());
    }
    ctl.kill9();

    // The status corpus, written while no controller runs, so the restarted one finds it as written.
    let status_variants = status_corpus();
    let applied_status = status_variants.len();
    let mut base_doc = base();
    for (label, status) in status_variants {
        let name = format!("odd-{n}");
        n += 1;
        base_doc["metadata"]["name"] = json!(name);
        let obj: DynamicObject = serde_json::from_value(base_doc.clone())?;
        api.create(&PostParams::default(), &obj).await.with_context(|| format!("create {name}"))?;
        let mut current = serde_json::to_value(api.get(&name).await?)?;
        current["status"] = status;
        let current: DynamicObject = serde_json::from_value(current)?;
        match api.replace_status(&name, &PostParams::default(), &current).await {
            Ok(stored) => {
                let written = stored.data.get("status").cloned();
                odd.push(Odd { name, label, written });
            }
            Err(kube::Error::Api(e)) => {
                api.delete(&name, &DeleteParams::default()).await?;
                rejected.push((label, e.message));
            }
            Err(e) => return Err(e).context(format!("write the status of {name} ({label})")),
        }
    }
    let applied = applied_spec + applied_status;
    eprintln!("corpus: {applied} applied, {} accepted, {} rejected", odd.len(), rejected.len());
    eprintln!(
        "  ({applied_spec} spec variants, {applied_status} status variants; {} status variants accepted)",
        odd.iter().filter(|o| o.written.is_some()).count()
    );
    for (label, msg) in &rejected {
        eprintln!("  rejected: {label}: {}", msg.chars().take(160).collect::<String>());
    }
    assert!(applied >= 150, "a corpus of at least 150 variants");
    assert!(
        !odd.is_empty() && !rejected.is_empty(),
        "the API server accepts some variants and rejects others"
    );

    // What this build's types make of each accepted object, as the API server stores it (their
    // panics are caught and named here; the hook stays quiet meanwhile).
    let mut objs = Vec::new();
    for o in &odd {
        objs.push(api.get(&o.name).await?);
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let verdicts: Vec<_> = objs.iter().map(decodes).collect();
    std::panic::set_hook(hook);
    let mut undecodable = 0;
    for (o, v) in odd.iter().zip(&verdicts) {
        if let Err(e) = v {
            undecodable += 1;
            eprintln!(
                "  undecodable by the Rust types: {} [{}]: {}",
                o.name,
                o.label,
                e.chars().take(200).collect::<String>()
            );
        }
    }
    eprintln!(
        "corpus: {} of {} accepted objects are undecodable by the controller's types",
        undecodable,
        odd.len()
    );

    // The restart: the new process starts with an initial LIST that holds every odd object.
    let mut ctl = bed.controller_process("west", &[])?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The key assertion: the good pair is served again; its primary dies and it fails over.
    bed.pg.primary.kill9();
    match bed.wait_transition_finished("chat", Duration::from_secs(45)).await {
        Ok(drp) => {
            let st = drp.status.unwrap_or_default();
            if (st.epoch.0, st.current_primary.as_deref()) != (1, Some("west")) {
                failures.push(format!(
                    "the good pair's failover after the restart ended with epoch {} and currentPrimary {:?}, not 1 and west",
                    st.epoch.0, st.current_primary
                ));
            }
        }
        Err(e) => failures.push(format!("the good pair did not fail over after the restart: {e:#}")),
    }

    // Every accepted odd object: reconciled (a status written by the controller) or reported.
    let unhandled = |objs: &[DynamicObject], events: &std::collections::BTreeMap<String, Vec<String>>| {
        let mut reconciled = 0;
        let mut reported = 0;
        let mut left: Vec<String> = Vec::new();
        for o in &odd {
            let now = objs
                .iter()
                .find(|x| x.metadata.name.as_deref() == Some(&o.name))
                .and_then(|x| x.data.get("status").cloned());
            let notes = events.get(&o.name).cloned().unwrap_or_default();
            if notes.iter().any(|n| field_path(n).is_some()) {
                reported += 1;
            } else if now.is_some() && now != o.written {
                reconciled += 1;
            } else if !notes.is_empty() {
                left.push(format!(
                    "{} [{}]: Undecodable Event names no spec./status. field: {:?}",
                    o.name, o.label, notes
                ));
            } else {
                left.push(format!(
                    "{} [{}]: neither reconciled (no status written) nor reported (no Undecodable Event)",
                    o.name, o.label
                ));
            }
        }
        (reconciled, reported, left)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (reconciled, reported, left) = loop {
        let objs = api.list(&ListParams::default()).await?.items;
        let events = undecodable_events(&bed.client, &bed.ns).await?;
        let (reconciled, reported, left) = unhandled(&objs, &events);
        if left.is_empty() || tokio::time::Instant::now() > deadline {
            break (reconciled, reported, left);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("corpus: {reconciled} reconciled, {reported} reported Undecodable, {} neither", left.len());
    for (name, notes) in undecodable_events(&bed.client, &bed.ns).await?.iter().take(10) {
        eprintln!("  Undecodable {name}: {}", notes.first().map(String::as_str).unwrap_or_default());
    }
    if !left.is_empty() {
        failures.push(format!(
            "{} accepted odd objects were neither reconciled nor reported:\n    {}",
            left.len(),
            left.join("\n    ")
        ));
    }

    // The controller is alive and never panicked (neither the first process nor the second).
    let alive = ctl.is_running();
    let log = std::fs::read_to_string(&ctl.log)?;
    let lines: Vec<&str> = log.lines().collect();
    let panics: Vec<String> = (0..lines.len())
        .filter(|&i| lines[i].contains("panicked"))
        .take(10)
        .map(|i| format!("{} / {}", lines[i], lines.get(i + 1).copied().unwrap_or_default()))
        .collect();
    if !alive {
        let tail: Vec<&str> = lines.iter().rev().filter(|l| !l.starts_with(' ')).take(5).copied().collect();
        failures.push(format!(
            "the restarted controller is not running; its last log lines (newest first):\n    {}",
            tail.join("\n    ")
        ));
    }
    if !panics.is_empty() {
        failures.push(format!("the controller log has panics:\n    {}", panics.join("\n    ")));
    }
    assert!(failures.is_empty(), "{} failures:\n- {}", failures.len(), failures.join("\n- "));
    Ok(())
}

/// A minimal pair whose sites point at closed ports: it only needs to get a status.
fn minimal(name: &str) -> Pair {
    Pair::new(name, postgres("127.0.0.1", 1, "s"), postgres("127.0.0.1", 2, "s"))
        .failover(|f| f.mode(Manual).probe_interval("500ms"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_the_controller_cannot_read_is_reported_and_the_others_are_served() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let client = support::client_with_crd().await?;
    let ns = support::namespace(&client, "forced").await?;

    // Loosen spec.failover.failureThreshold to int-or-string (same field manager as apply_crd, so
    // the next apply_crd restores it).
    let mut crd = serde_json::to_value(DisasterRecoveryPair::crd())?;
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["failover"]
        ["properties"]["failureThreshold"] = json!({
        "description": "Loosened by the corpus test: accepts what the controller's types cannot read.",
        "x-kubernetes-int-or-string": true
    });
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    crds.patch(
        "disasterrecoverypairs.dr.understudy.dev",
        &PatchParams::apply("understudy-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("loosen the CRD")?;

    // The API server takes the new schema a moment later.
    let mut bad = minimal("bad").to_value();
    bad["spec"]["failover"]["failureThreshold"] = json!("three");
    let bad: DynamicObject = serde_json::from_value(bad)?;
    let api = dyn_api(&client, &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&PostParams::default(), &bad).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if tokio::time::Instant::now() < deadline => {
                eprintln!(
                    "waiting for the loosened schema: {}",
                    e.message.chars().take(120).collect::<String>()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("the loosened CRD accepts failureThreshold: three"),
        }
    }
    assert_eq!(api.get("bad").await?.data["spec"]["failover"]["failureThreshold"], json!("three"));
    minimal("good").create(&client, &ns).await?;

    let ctl = support::RunningController::start(client.clone(), &ns);
    let typed: Api<DisasterRecoveryPair> = Api::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (served, reported, notes) = loop {
        let served = typed.get("good").await?.status.is_some();
        let notes = undecodable_events(&client, &ns).await?.remove("bad").unwrap_or_default();
        let reported = notes.iter().any(|n| n.contains("spec.failover.failureThreshold"));
        if (served && reported) || tokio::time::Instant::now() > deadline {
            break (served, reported, notes);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ctl.shutdown().await;
    support::apply_crd(&client).await?;
    eprintln!("forced: good pair served: {served}; bad pair reported: {reported}");
    assert!(
        served && reported,
        "the good pair gets a status (got one: {served}) and the unreadable one a Warning Event Undecodable \
         naming spec.failover.failureThreshold (its Undecodable notes: {notes:?})"
    );
    Ok(())
}
