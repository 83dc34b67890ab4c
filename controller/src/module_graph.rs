//! The crate's top-level modules must not import each other in a circle: a newcomer can read them
//! bottom-up (`crd`, `units`, `events`, … up to `reconcile`). This test reads the sources (test code
//! left out), builds the graph of `crate::<module>` references between top-level modules, prints it
//! (`cargo test -p understudy --lib module_graph -- --nocapture`) and fails on any cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The top-level module a source file belongs to (`src/failover/steps.rs` → `failover`).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a source text refers to with `crate::`, including inside `use crate::{…}`.
fn references(text: &str) -> BTreeSet<String> {
    // Test code is not part of the architecture.
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(body) = rest.strip_prefix('{') {
            // `use crate::{a::…, b, c::{…}}`: the first segment of each top-level item.
            let (mut depth, mut item_start, mut end) = (0usize, true, body.len());
            for (j, ch) in body.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = j;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String =
                            body[j..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        out.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
            rest = &body[end..];
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).expect("read src").flatten() {
                files.push(e.path());
            }
            continue;
        }
        if p.extension().and_then(|e| e.to_str()) != Some("rs") || p.file_name() == Some("tests.rs".as_ref())
        {
            continue;
        }
        let rel = p.strip_prefix(&src).expect("under src");
        let Some(from) = module_of(rel) else { continue };
        let text = std::fs::read_to_string(&p).expect("read a source file");
        let entry = graph.entry(from.clone()).or_default();
        for to in references(&text) {
            let is_module = src.join(format!("{to}.rs")).exists() || src.join(&to).is_dir();
            if to != from && is_module {
                entry.insert(to);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let g = graph();
    for (from, to) in &g {
        println!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(g.contains_key("reconcile") && g.contains_key("failover"), "the sources were read: {g:?}");
    assert!(!g["failover"].contains("reconcile"), "failover/ imports reconcile/");
    if let Some(c) = cycle(&g) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn references_are_read_from_paths_and_use_lists() {
    let text = "use crate::{a::b, c, d::{e, f}};\nfn x() { crate::g::h(); }\n#[cfg(test)]\nuse crate::z;";
    let got: Vec<String> = references(text).into_iter().collect();
    assert_eq!(got, ["a", "c", "d", "g"]);
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a".to_string(), ["b".to_string()].into()), ("b".to_string(), ["a".to_string()].into())].into();
    assert!(cycle(&g).is_some());
}
