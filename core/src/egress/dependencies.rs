//! Checks that the module dependency table of `docs/egress-host.md` is the one the code has, and
//! that it has no cycle: a module of `egress/` never imports one that imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The file of `object_store/` each name re-exported by `object_store/mod.rs` comes from.
const OBJECT_STORE_EXPORTS: &[(&str, &str)] = &[
    ("ObjectStoreGrant", "grant"),
    ("GrantValue", "grant"),
    ("FromEnv", "grant"),
    ("FromFile", "grant"),
    ("GrantedStore", "store"),
    ("MultipartWrite", "store"),
    ("ObjectStoreCtx", "capability"),
    ("ObjectStoreAccess", "capability"),
    ("ObjectStoreView", "capability"),
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The modules of `egress/` each module uses, from its source before its tests, comments aside.
fn from_code() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/egress");
    let mut graph = Graph::new();
    for (folder, prefix) in [("", ""), ("object_store", "object_store/")] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "rs")
                || ["mod", "tests", "dependencies"].contains(&stem)
            {
                continue;
            }
            let module = format!("{prefix}{stem}");
            let source = std::fs::read_to_string(&path).unwrap();
            let code: String = source
                .lines()
                .take_while(|line| !line.starts_with("#[cfg(test)]"))
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut uses = BTreeSet::new();
            for (marker, in_object_store) in
                [("crate::egress::", false), ("super::", !prefix.is_empty())]
            {
                for (at, _) in code.match_indices(marker) {
                    let rest = &code[at + marker.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let used = if in_object_store {
                        format!("object_store/{name}")
                    } else if name == "object_store" {
                        let after = &rest[name.len()..].trim_start_matches("::");
                        let item = after
                            .trim_start_matches('{')
                            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                            .next()
                            .unwrap_or("");
                        let file = OBJECT_STORE_EXPORTS
                            .iter()
                            .find(|(export, _)| *export == item)
                            .map(|(_, file)| *file)
                            .unwrap_or_else(|| panic!("{module}: object_store::{item}?"));
                        format!("object_store/{file}")
                    } else {
                        name
                    };
                    if used != module {
                        uses.insert(used);
                    }
                }
            }
            graph.insert(module, uses);
        }
    }
    graph
}

/// The table of `docs/egress-host.md`.
fn from_docs() -> Graph {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/egress-host.md"),
    )
    .unwrap();
    let mut graph = Graph::new();
    for line in docs.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_owned();
        let uses = cells[3]
            .split(',')
            .map(|u| u.trim().trim_matches('`').to_owned())
            .filter(|u| !u.is_empty() && u != "—")
            .collect();
        if !graph.contains_key(&module) && cells.len() == 5 {
            graph.insert(module, uses);
        }
    }
    graph.retain(|module, _| !module.contains(' ') && !module.starts_with("memory_mib"));
    graph
}

#[test]
fn the_documented_module_dependencies_are_the_code_s_and_have_no_cycle() {
    let code = from_code();
    let documented: Graph = from_docs()
        .into_iter()
        .filter(|(module, _)| code.contains_key(module))
        .collect();
    assert_eq!(
        documented, code,
        "docs/egress-host.md differs from the code"
    );
    // Peel off modules that use nothing left; a cycle would remain.
    let mut left = code;
    while !left.is_empty() {
        let done: Vec<String> = left
            .iter()
            .filter(|(_, uses)| uses.iter().all(|u| !left.contains_key(u)))
            .map(|(module, _)| module.clone())
            .collect();
        assert!(!done.is_empty(), "a cycle among {:?}", left.keys());
        for module in done {
            left.remove(&module);
        }
    }
}
