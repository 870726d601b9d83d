//! The crate's layering, checked from its source: every `crate::` path a module names
//! (outside its unit tests and comments) must point at its own layer or one below it, and
//! the modules inside one layer must not import each other in a cycle. The layers, bottom
//! up, are those of `docs/ARCHITECTURE.md`; `read` and `write` are siblings that never
//! import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A layer's rank: a module may import only layers of lower rank, or its own.
fn rank(layer: &str) -> Option<u32> {
    Some(match layer {
        "error" | "sync" => 0,
        "model" | "fork" => 1,
        "format" => 2,
        "shard" => 3,
        "index" => 4,
        "write" | "read" => 5,
        "h5" => 6,
        "tools" => 7,
        "demo" => 8,
        "" => 9, // lib.rs: the curated re-exports
        _ => return None,
    })
}

/// Every source file as (module path, text without unit tests and `//` comments).
fn modules(src: &Path) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let mut text = std::fs::read_to_string(&p).unwrap();
            if let Some(i) = text.find("#[cfg(test)]\nmod tests") {
                text.truncate(i);
            }
            let text: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            out.push((parts, text));
        }
    }
    out
}

/// The module paths a text names with `crate::a::b…` (longest known prefix).
fn targets(text: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        let path: Vec<String> = rest
            .split("::")
            .map_while(|seg| {
                let id: String = seg.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                (!id.is_empty() && id.len() == seg.len().min(id.len()) && id.chars().next().unwrap().is_lowercase())
                    .then_some(id)
            })
            .collect();
        if let Some(k) = (1..=path.len()).rev().find(|&k| known.contains(&path[..k].to_vec())) {
            out.insert(path[..k].to_vec());
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_it_and_no_layer_has_an_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let known: BTreeSet<Vec<String>> = mods.iter().map(|(m, _)| m.clone()).collect();
    let mut bad = Vec::new();
    let mut within: BTreeMap<String, BTreeMap<Vec<String>, BTreeSet<Vec<String>>>> = BTreeMap::new();
    for (m, text) in &mods {
        let layer = m.first().cloned().unwrap_or_default();
        let r = rank(&layer).unwrap_or_else(|| panic!("module {m:?} is in no known layer: add it to rank()"));
        for t in targets(text, &known) {
            let tl = t.first().cloned().unwrap_or_default();
            let tr = rank(&tl).unwrap_or_else(|| panic!("{m:?} names {t:?}, in no known layer"));
            if tl == layer {
                if t.len() >= 2 && m.len() >= 2 && t[..2] != m[..2] {
                    within
                        .entry(layer.clone())
                        .or_default()
                        .entry(m[..2].to_vec())
                        .or_default()
                        .insert(t[..2].to_vec());
                }
            } else if tr >= r {
                bad.push(format!("{} imports {} (layer {tl:?} is not below {layer:?})", m.join("::"), t.join("::")));
            }
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    for (layer, graph) in &within {
        // Depth-first search for a cycle among the layer's modules.
        fn visit(
            n: &Vec<String>,
            g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
            path: &mut Vec<Vec<String>>,
            done: &mut BTreeSet<Vec<String>>,
        ) -> Option<Vec<Vec<String>>> {
            if let Some(i) = path.iter().position(|p| p == n) {
                return Some(path[i..].to_vec());
            }
            if !done.insert(n.clone()) {
                return None;
            }
            path.push(n.clone());
            for t in g.get(n).into_iter().flatten() {
                if let Some(c) = visit(t, g, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
                let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
                panic!("import cycle inside layer {layer}: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn the_check_sees_a_layer_violation_when_there_is_one() {
    let known: BTreeSet<Vec<String>> =
        [vec!["model".to_string()], vec!["read".to_string(), "run".to_string()]].into_iter().collect();
    let t = targets("use crate::read::run::Run;\nlet x = crate::model::f();", &known);
    assert!(t.contains(&vec!["read".to_string(), "run".to_string()]) && t.contains(&vec!["model".to_string()]));
    assert!(rank("read") > rank("model") && rank("write") == rank("read"));
}
