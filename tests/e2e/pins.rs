//! The plugin toolchains' pinned versions agree everywhere they are written.
//!
//! A version of componentize-py, componentize-js, wit-bindgen, wasm-tools or wasmtime (whose
//! preview1 adapter the C example links) is written in several places: `tests/run` installs it,
//! an example's `build.sh` or manifest uses it, `diagmon plugin new` writes it into new
//! projects, and the docs tell authors which one to install. Each tracked file is read for the
//! phrases below, a logical line at a time (a line ending in `\` goes on with the next one, as in
//! shell scripts and Rust strings; `\.` is read as `.`, as in `grep` patterns); every version
//! found after one of a tool's phrases must be that tool's one version (or a shorter form of it:
//! `0.23` for `0.23.0`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Each tool and the phrases after which its version is written.
const PHRASES: [(&str, &[&str]); 5] = [
    (
        "componentize-py",
        &["componentize-py==", "componentize-py "],
    ),
    (
        "componentize-js",
        &[
            "\"@bytecodealliance/componentize-js\": \"",
            "componentize-js ",
        ],
    ),
    (
        "wit-bindgen",
        &[
            "wit-bindgen-cli --version ",
            "wit-bindgen --version 2>/dev/null | grep -q ' ",
            "wit-bindgen = \"",
            "`wit-bindgen-cli` ",
            "wit-bindgen ",
        ],
    ),
    (
        "wasm-tools",
        &[
            "wasm-tools --version ",
            "wasm-tools --version 2>/dev/null | grep -q ' ",
            "`wasm-tools` ",
        ],
    ),
    (
        "wasmtime",
        &[
            "wasmtime = { version = \"",
            "ADAPTER_VERSION=",
            "the preview1 adapter of wasmtime ",
            "component-adapter-provider`, version ",
        ],
    ),
];

/// Files that hold other projects' versions (lock files) or none of these.
fn skipped(path: &str) -> bool {
    path.ends_with("Cargo.lock")
        || path.ends_with("package-lock.json")
        || path.ends_with(".wasm")
        || path.ends_with(".png")
        || path == "tests/e2e/pins.rs"
}

/// `text`'s logical lines, each with the number of the line it starts on: a line ending in `\`
/// is joined with the next (without its leading blanks), and `\.` reads as `.`.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        let (start, mut joined) = match current.take() {
            Some((start, joined)) => (start, joined + line.trim_start()),
            None => (number + 1, line.to_owned()),
        };
        if joined.ends_with('\\') {
            joined.pop();
            current = Some((start, joined));
        } else {
            lines.push((start, joined.replace("\\.", ".")));
        }
    }
    lines.extend(current);
    lines
}

/// The version written at the start of `text` (`1.2.3`, `0.23`), if any.
fn version_at(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let version = text[..end].trim_end_matches('.');
    (version.contains('.') && version.starts_with(|c: char| c.is_ascii_digit())).then_some(version)
}

/// True when `short` is `full` or a leading part of it at a dot (`0.23` of `0.23.0`).
fn is_form_of(short: &str, full: &str) -> bool {
    full == short
        || full
            .strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('.'))
}

#[test]
fn every_pinned_tool_version_is_written_the_same_everywhere() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let listed = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files (the test reads the tracked files)");
    assert!(listed.status.success(), "git ls-files failed");
    let files = String::from_utf8(listed.stdout).expect("UTF-8 paths");
    // Tool -> (version, where it was written).
    let mut found: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for path in files.split('\0').filter(|p| !p.is_empty() && !skipped(p)) {
        let Ok(text) = std::fs::read_to_string(repo.join(path)) else {
            continue;
        };
        for (number, line) in logical_lines(&text) {
            for (tool, phrases) in PHRASES {
                for phrase in phrases {
                    for (at, _) in line.match_indices(phrase) {
                        if let Some(version) = version_at(&line[at + phrase.len()..]) {
                            found
                                .entry(tool)
                                .or_default()
                                .push((version.to_owned(), format!("{path}:{number}")));
                        }
                    }
                }
            }
        }
    }
    for (tool, _) in PHRASES {
        let mentions = found.get(tool).cloned().unwrap_or_default();
        assert!(
            mentions.len() >= 2,
            "{tool}: expected its pin and at least one use, found {mentions:?}"
        );
        // The pin is the longest form written most often; the others are measured against it.
        let full = mentions
            .iter()
            .map(|(version, _)| version.as_str())
            .max_by_key(|version| {
                let written = mentions.iter().filter(|(v, _)| v == version).count();
                (version.len(), written)
            })
            .unwrap_or_default();
        let disagreeing: Vec<_> = mentions
            .iter()
            .filter(|(version, _)| !is_form_of(version, full))
            .collect();
        assert!(
            disagreeing.is_empty(),
            "{tool} is pinned as {full} in some places but written otherwise in {disagreeing:?} \
             (all: {mentions:?}); update every place together"
        );
    }
}

#[test]
fn continued_lines_are_read_as_one() {
    let text = "a --version \\\n    0.63.0 b\nc ' 0\\.63\\.0' \\\n  || d\ne";
    assert_eq!(
        logical_lines(text),
        vec![
            (1, "a --version 0.63.0 b".to_owned()),
            (3, "c ' 0.63.0' || d".to_owned()),
            (5, "e".to_owned()),
        ]
    );
}

#[test]
fn versions_are_read_up_to_the_first_character_after_them() {
    assert_eq!(version_at("0.63.0 --locked"), Some("0.63.0"));
    assert_eq!(version_at("0.23."), Some("0.23"));
    assert_eq!(version_at("48.0.8\""), Some("48.0.8"));
    assert_eq!(version_at("componentize app"), None);
    assert_eq!(version_at("3 files"), None);
    assert!(is_form_of("0.23", "0.23.0"));
    assert!(!is_form_of("0.2", "0.23.0"));
    assert!(!is_form_of("0.24.0", "0.23.0"));
}
