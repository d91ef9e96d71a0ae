//! The crate's modules import one another without a circle: a module that
//! names `crate::a` depends on `a`, and no chain of such dependencies leads
//! back to where it started. A circle (a handler's extractor needing the
//! state that needs the handler's module) makes a module impossible to read,
//! test or move on its own. Comments and `#[cfg(test)]` code are not
//! counted, nor a module's own ancestors and descendants (a parent declares
//! and re-exports its children).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/` by its path (`redis::pool::read`), with its source.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("below src/")
                .with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            found.insert(parts.join("::"), text);
        }
    }
    found
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file names through `crate::` paths (`use crate::a::b::{..}`,
/// `use crate::{a, b::c}` or `crate::a::b::f()` in code), each as the
/// longest module the path starts with. `super::` and `self::` paths stay
/// within a module's own family and are not followed.
fn dependencies(text: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let longest_module = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|candidate| modules.contains_key(candidate))
    };
    let path_at = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's items at its top level: `a`, `b::c`, `d::{e, f}`.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.extend(longest_module(&path_at(&group[i..])));
                    }
                    _ => {}
                }
            }
        } else {
            found.extend(longest_module(&path_at(rest)));
        }
    }
    found
}

fn related(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a == b
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

/// The first circle found, as the modules along it, or none.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut found = path[start..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn graph_of(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(name, text)| {
            let depends = dependencies(&code(text), modules)
                .into_iter()
                .filter(|other| !related(name, other))
                .collect();
            (name.clone(), depends)
        })
        .collect()
}

#[test]
fn no_module_of_the_api_imports_itself_through_others() {
    let modules = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        modules.len() > 20,
        "found the crate's modules: {:?}",
        modules.keys()
    );
    let graph = graph_of(&modules);
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 50,
        "found the imports between them"
    );
    if let Some(found) = circle(&graph) {
        panic!("an import circle: {}", found.join(" -> "));
    }
}

#[test]
fn the_check_finds_a_circle_of_three_modules() {
    let modules: BTreeMap<String, String> = [
        ("state", "use crate::auth::throttle::Checks;"),
        ("auth", "pub mod throttle;"),
        ("auth::throttle", "use crate::client_address::Address;"),
        (
            "client_address",
            "use crate::state::AppState; // crate::auth",
        ),
        ("config", "// use crate::state;\nuse crate::auth::throttle;"),
        ("startup", "use crate::{config, state::AppState};"),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text.to_owned()))
    .collect();
    let found = circle(&graph_of(&modules)).expect("a circle");
    assert_eq!(found.len(), 4, "{found:?}");
    for module in ["state", "auth::throttle", "client_address"] {
        assert!(found.iter().any(|m| m == module), "{found:?}");
    }
    assert!(!found.iter().any(|m| m == "config"), "{found:?}");
}

#[test]
fn a_grouped_import_names_each_module_of_the_group() {
    let modules: BTreeMap<String, String> = ["auth", "auth::throttle", "state", "products"]
        .into_iter()
        .map(|name| (name.to_owned(), String::new()))
        .collect();
    let found = dependencies(
        "use crate::{auth::throttle::Checks, state, products::{self, Product}};",
        &modules,
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["auth::throttle", "products", "state"]
    );
}
