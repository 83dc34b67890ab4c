//! Replace the value at an RFC 6901 JSON pointer inside a JSON document's text, keeping every other
//! byte as it was (indentation, key order, number formatting, escapes). Mattermost's `config.json`
//! is edited by humans and diffed by tools; rewriting it through a serializer would churn it.

/// Why a pointer could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PointerError {
    #[error("the document is not JSON ({0}); fix the ConfigMap key so that it holds a JSON object")]
    NotJson(String),
    #[error("JSON pointer {0:?} must be empty or start with '/'")]
    BadPointer(String),
    #[error(
        "JSON pointer {pointer:?}: no member {token:?} at {at:?}; check the pointer against the document"
    )]
    Missing { pointer: String, token: String, at: String },
    #[error("JSON pointer {pointer:?}: {at:?} is not an object or array")]
    NotContainer { pointer: String, at: String },
}

/// Decodes a pointer into its reference tokens (`~1` → `/`, `~0` → `~`).
pub fn tokens(pointer: &str) -> Result<Vec<String>, PointerError> {
    if pointer.is_empty() {
        return Ok(vec![]);
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| PointerError::BadPointer(pointer.into()))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

/// Returns `doc` with the value at `pointer` replaced by `value` (serialized compactly).
pub fn splice(doc: &str, pointer: &str, value: &serde_json::Value) -> Result<String, PointerError> {
    let (start, end) = locate(doc, pointer)?;
    let new = serde_json::to_string(value).map_err(|e| PointerError::NotJson(e.to_string()))?;
    let mut out = String::with_capacity(doc.len() + new.len());
    out.push_str(&doc[..start]);
    out.push_str(&new);
    out.push_str(&doc[end..]);
    Ok(out)
}

/// The current value at `pointer`.
pub fn get(doc: &str, pointer: &str) -> Result<serde_json::Value, PointerError> {
    let (start, end) = locate(doc, pointer)?;
    serde_json::from_str(&doc[start..end]).map_err(|e| PointerError::NotJson(e.to_string()))
}

/// The byte span of the value at `pointer`.
pub fn locate(doc: &str, pointer: &str) -> Result<(usize, usize), PointerError> {
    // Validate the whole document first, so the scanner below only ever sees well-formed JSON.
    serde_json::from_str::<serde::de::IgnoredAny>(doc).map_err(|e| PointerError::NotJson(e.to_string()))?;
    let toks = tokens(pointer)?;
    let b = doc.as_bytes();
    let mut pos = skip_ws(b, 0);
    let mut at = String::new();
    for tok in &toks {
        match b[pos] {
            b'{' => {
                pos = find_member(b, pos, tok).ok_or_else(|| PointerError::Missing {
                    pointer: pointer.into(),
                    token: tok.clone(),
                    at: if at.is_empty() { "/".into() } else { at.clone() },
                })?;
            }
            b'[' => {
                let idx: usize = tok.parse().map_err(|_| PointerError::Missing {
                    pointer: pointer.into(),
                    token: tok.clone(),
                    at: if at.is_empty() { "/".into() } else { at.clone() },
                })?;
                pos = find_index(b, pos, idx).ok_or_else(|| PointerError::Missing {
                    pointer: pointer.into(),
                    token: tok.clone(),
                    at: if at.is_empty() { "/".into() } else { at.clone() },
                })?;
            }
            _ => return Err(PointerError::NotContainer { pointer: pointer.into(), at }),
        }
        at.push('/');
        at.push_str(&tok.replace('~', "~0").replace('/', "~1"));
    }
    Ok((pos, value_end(b, pos)))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting at `i` (which is a `"`).
fn string_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// End (exclusive) of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            j
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            j
        }
    }
}

/// Position of the value of member `key` in the object at `i`.
fn find_member(b: &[u8], i: usize, key: &str) -> Option<usize> {
    let mut j = skip_ws(b, i + 1);
    while j < b.len() && b[j] != b'}' {
        let kend = string_end(b, j);
        let name: String = serde_json::from_slice(&b[j..kend]).ok()?;
        let colon = skip_ws(b, kend);
        let vstart = skip_ws(b, colon + 1);
        if name == key {
            return Some(vstart);
        }
        let vend = value_end(b, vstart);
        j = skip_ws(b, vend);
        if j < b.len() && b[j] == b',' {
            j = skip_ws(b, j + 1);
        }
    }
    None
}

/// Position of element `idx` of the array at `i`.
fn find_index(b: &[u8], i: usize, idx: usize) -> Option<usize> {
    let mut j = skip_ws(b, i + 1);
    let mut n = 0;
    while j < b.len() && b[j] != b']' {
        if n == idx {
            return Some(j);
        }
        j = skip_ws(b, value_end(b, j));
        if j < b.len() && b[j] == b',' {
            j = skip_ws(b, j + 1);
        }
        n += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = r#"{
    "ServiceSettings": { "SiteURL": "https://chat.example.com", "ListenAddress": ":8065" },
    "SqlSettings": {
        "DriverName": "postgres",
        "DataSource": "postgres://mmuser:old@pg-east:5432/mattermost?sslmode=verify-full",
        "DataSourceReplicas": [],
        "MaxIdleConns": 20
    },
    "JobSettings": {"RunJobs": true,   "RunScheduler": true},
    "Weird/Key~": [1, 2.50, {"a\"b": "x"}]
}
"#;

    #[test]
    fn replaces_only_the_pointed_value() {
        let new = "postgres://mmuser:new@pg-west:5432/mattermost?sslmode=verify-full";
        let out = splice(CONFIG, "/SqlSettings/DataSource", &json!(new)).expect("splice");
        assert_eq!(out, CONFIG.replace("postgres://mmuser:old@pg-east", "postgres://mmuser:new@pg-west"));
        assert_eq!(get(&out, "/SqlSettings/DataSource").expect("get"), json!(new));
    }

    #[test]
    fn handles_escapes_arrays_and_odd_spacing() {
        let out = splice(CONFIG, "/JobSettings/RunScheduler", &json!(false)).expect("splice");
        assert!(out.contains(r#"{"RunJobs": true,   "RunScheduler": false}"#), "{out}");
        let out = splice(CONFIG, "/Weird~1Key~0/2/a\"b", &json!("y")).expect("escaped pointer");
        assert!(out.contains(r#"{"a\"b": "y"}"#), "{out}");
        let out = splice(CONFIG, "/Weird~1Key~0/1", &json!(3)).expect("array index");
        assert!(out.contains("[1, 3, {"), "{out}");
        assert_eq!(out.len(), CONFIG.len() - 3, "2.50 became 3 and nothing else moved");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(splice("{not json", "/a", &json!(1)), Err(PointerError::NotJson(_))));
        assert_eq!(
            splice(CONFIG, "/SqlSettings/DataSourceX", &json!(1)),
            Err(PointerError::Missing {
                pointer: "/SqlSettings/DataSourceX".into(),
                token: "DataSourceX".into(),
                at: "/SqlSettings".into()
            })
        );
        assert!(matches!(splice(CONFIG, "SqlSettings", &json!(1)), Err(PointerError::BadPointer(_))));
        assert!(matches!(
            splice(CONFIG, "/SqlSettings/MaxIdleConns/x", &json!(1)),
            Err(PointerError::NotContainer { .. })
        ));
        assert!(matches!(splice(CONFIG, "/Weird~1Key~0/9", &json!(1)), Err(PointerError::Missing { .. })));
    }

    #[test]
    fn splicing_then_parsing_equals_setting_through_serde() {
        // Cross-check against serde_json's own pointer on every leaf of the sample.
        let parsed: serde_json::Value = serde_json::from_str(CONFIG).expect("json");
        for p in [
            "/ServiceSettings/SiteURL",
            "/SqlSettings/MaxIdleConns",
            "/SqlSettings/DataSourceReplicas",
            "/Weird~1Key~0/0",
        ] {
            let out = splice(CONFIG, p, &json!({"replaced": [1, "two"]})).expect(p);
            let mut expect = parsed.clone();
            *expect.pointer_mut(p).expect(p) = json!({"replaced": [1, "two"]});
            assert_eq!(serde_json::from_str::<serde_json::Value>(&out).expect("json"), expect, "{p}");
        }
    }
}

#[cfg(test)]
mod properties {
    //! Property tests: for arbitrary documents (any formatting), arbitrary existing pointers and
    //! arbitrary new values — DSNs with quotes, backslashes and unicode included — the splice sets
    //! exactly that value (as serde_json's own pointer would) and keeps every byte outside its span.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Quarters are exact in binary, so the comparison does not hinge on float parsing.
            any::<i32>().prop_map(|i| serde_json::Number::from_f64(f64::from(i) / 4.0)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            ".{0,24}".prop_map(Value::String),
        ]
    }

    fn doc() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z~/ \"\\\\é]{0,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every pointer that names a value in `v`.
    fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
        out.push(here.clone());
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    pointers(c, format!("{here}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    pointers(c, format!("{here}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn splice_sets_exactly_the_pointed_value(v in doc(), pick in any::<prop::sample::Index>(), new in doc(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v).expect("json") } else { serde_json::to_string(&v).expect("json") };
            let mut ps = Vec::new();
            pointers(&v, String::new(), &mut ps);
            let p = ps[pick.index(ps.len())].clone();
            let out = splice(&text, &p, &new).expect("splice");
            let mut expect = v.clone();
            *expect.pointer_mut(&p).expect("pointer") = new.clone();
            prop_assert_eq!(serde_json::from_str::<Value>(&out).expect("result is JSON"), expect);
            let (start, end) = locate(&text, &p).expect("locate");
            prop_assert_eq!(&out[..start], &text[..start]);
            prop_assert_eq!(&out[out.len() - (text.len() - end)..], &text[end..]);
        }

        #[test]
        fn any_dsn_round_trips_through_the_document(dsn in "\\PC{0,64}") {
            let doc = "{\n  \"SqlSettings\": {\"DataSource\": \"old\", \"DriverName\": \"postgres\"}\n}\n";
            let out = splice(doc, "/SqlSettings/DataSource", &Value::String(dsn.clone())).expect("splice");
            prop_assert_eq!(get(&out, "/SqlSettings/DataSource").expect("get"), Value::String(dsn));
            let tail = ", \"DriverName\": \"postgres\"}\n}\n";
            prop_assert!(out.ends_with(tail), "the rest of the document is kept");
        }
    }
}
