//! The module structure of `core/src` matches `docs/architecture.md` and has no import cycles.
//!
//! Every file of `core/src` is a module; a path `crate::a::b`, `super::x` or `self::y` in its code
//! (comments and its `#[cfg(test)]` part aside: a doc link is not a dependency) is a dependency on the longest module that path names. Two graphs are
//! checked: the top-level modules (the concerns: `http`, `operations`, `egress`, ...) and every
//! file; in neither may a module depend on one that depends back on it. The top-level graph must
//! be the one `docs/architecture.md` lists.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module path (`egress::engine`) -> the modules it depends on.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, as (module path, source).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("core/src is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(stem);
            modules(&path, &inner, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            if stem == "tests" || (prefix.is_empty() && stem == "main") {
                continue;
            }
            let mut name = prefix.to_vec();
            if !matches!(stem.as_str(), "mod" | "lib") {
                name.push(stem);
            }
            let source = fs::read_to_string(&path).expect("a source file is readable");
            let code: Vec<&str> = without_tests(&source)
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect();
            out.insert(name.join("::"), code.join("\n"));
        }
    }
}

/// The source before its inline test module (`#[cfg(test)] mod tests { ... }`, at the end of a
/// file by convention).
fn without_tests(source: &str) -> &str {
    let mut from = 0;
    while let Some(at) = source[from..].find("#[cfg(test)]") {
        let start = from + at;
        let rest = source[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests {") {
            return &source[..start];
        }
        from = start + 1;
    }
    source
}

/// Paths named in `source` after `crate::`, `super::` or `self::`, as (anchor, segments). A brace
/// group (`use crate::{a::X, b}`) gives one path per member.
fn paths(source: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut found = Vec::new();
    for anchor in ["crate", "super", "self"] {
        let needle = format!("{anchor}::");
        let mut rest = source;
        while let Some(at) = rest.find(&needle) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + needle.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for member in group[..end].split(',') {
                    let segments = segments(member.trim().trim_start_matches('{'));
                    if !segments.is_empty() {
                        found.push((anchor, segments));
                    }
                }
            } else {
                found.push((anchor, segments(rest)));
            }
        }
    }
    found
}

/// The leading `ident::ident::...` of `text`.
fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        out.push(rest[..len].to_owned());
        match rest[len..].strip_prefix("::") {
            Some(next) if next.starts_with(|c: char| c.is_alphabetic() || c == '_') => rest = next,
            _ => break,
        }
    }
    out
}

fn graph() -> Graph {
    let mut sources = BTreeMap::new();
    modules(&repo().join("core/src"), &[], &mut sources);
    let known: BTreeSet<String> = sources.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, source) in &sources {
        let own: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(str::to_owned).collect()
        };
        let deps = graph.entry(module.clone()).or_default();
        for (anchor, segments) in paths(source) {
            let mut full = match anchor {
                "crate" => Vec::new(),
                "self" => own.clone(),
                _ => own[..own.len().saturating_sub(1)].to_vec(),
            };
            full.extend(segments);
            let target = (1..=full.len())
                .rev()
                .map(|n| full[..n].join("::"))
                .find(|candidate| known.contains(candidate));
            if let Some(target) = target.filter(|target| target != module) {
                deps.insert(target);
            }
        }
    }
    graph
}

/// The graph with every module cut to its first `depth` segments; edges inside one group dropped.
fn collapse(graph: &Graph, depth: usize) -> Graph {
    let cut = |module: &str| {
        module
            .split("::")
            .take(depth)
            .collect::<Vec<_>>()
            .join("::")
    };
    let mut out = Graph::new();
    for (module, deps) in graph {
        let from = cut(module);
        let entry = out.entry(from.clone()).or_default();
        entry.extend(
            deps.iter()
                .map(|dep| cut(dep))
                .filter(|to| *to != from && !to.is_empty()),
        );
    }
    out.remove("");
    out
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        for next in state.graph.get(node).into_iter().flatten() {
            if !state.index.contains_key(next.as_str()) {
                visit(state, next);
                let low = state.low[next.as_str()].min(state.low[node]);
                state.low.insert(node, low);
            } else if state.stack.contains(&next.as_str()) {
                let low = state.index[next.as_str()].min(state.low[node]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let at = state.stack.iter().rposition(|m| *m == node).unwrap_or(0);
            let component: Vec<String> = state.stack.drain(at..).map(str::to_owned).collect();
            if component.len() > 1 {
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn no_module_depends_on_one_that_depends_back_on_it() {
    let graph = graph();
    let deepest = graph
        .keys()
        .map(|m| m.split("::").count())
        .max()
        .unwrap_or(1);
    let mut all = Vec::new();
    for depth in [1, deepest] {
        all.extend(cycles(&collapse(&graph, depth)));
    }
    assert!(all.is_empty(), "import cycles in core/src: {all:?}");
}

/// `docs/architecture.md` lists each top-level module's dependencies as lines
/// `` - `module` → `dep`, `dep` `` (or `→ nothing`) under `## Module dependencies`.
#[test]
fn architecture_doc_lists_the_real_module_dependencies() {
    let doc =
        fs::read_to_string(repo().join("docs/architecture.md")).expect("docs/architecture.md");
    let section = doc
        .split("## Module dependencies")
        .nth(1)
        .expect("docs/architecture.md has a `## Module dependencies` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut listed = Graph::new();
    for line in section.lines().filter_map(|l| l.trim().strip_prefix("- `")) {
        let Some((module, deps)) = line.split_once('`') else {
            continue;
        };
        let deps = deps.split_once('→').map_or("", |(_, deps)| deps);
        listed.insert(
            module.to_owned(),
            deps.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect(),
        );
    }
    let real = collapse(&graph(), 1);
    assert_eq!(
        listed, real,
        "docs/architecture.md (left) vs the code (right)"
    );
}
