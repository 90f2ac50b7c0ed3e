//! Tidy checks on the crate's own source (tests only): the module graph, read
//! from `crate::` paths, has no cycle, and the middle stages import no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The pure stages and the vocabulary they share: no IO crate, no IO module.
const PURE: &[&str] = &[
    "secret",
    "claim",
    "condition",
    "diagnostic",
    "diff",
    "health",
    "inventory",
    "load",
    "object",
    "openapi",
    "page",
    "pipeline",
    "plan",
    "render",
    "resolve",
    "review",
    "shard",
    "status",
    "validate",
    "view",
    "yaml_limits",
];

const IO_CRATES: &[&str] = &[
    "tokio::",
    "kube::",
    "aws_sdk_s3::",
    "gix::",
    "axum::",
    "notify::",
    "redb::",
    "ureq::",
];

const IO_MODULES: &[&str] = &[
    "crate::api",
    "crate::artifact",
    "crate::coordination",
    "crate::daemon",
    "crate::forge",
    "crate::io_runtime",
    "crate::key_files",
    "crate::metrics",
    "crate::secret_file",
    "crate::source::dir",
    "crate::source::git",
    "crate::source::s3",
    "crate::status_client",
    "crate::store",
    "crate::tags",
    "crate::target::kube",
    "crate::target::manifests",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let ident: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if ident.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.insert(ident);
            } else if !ident.is_empty() {
                out.insert("(root)".to_owned());
            }
        }
    }
    out
}

/// Top-level module -> (imported modules, code of all its files).
fn graph() -> BTreeMap<String, (BTreeSet<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, (BTreeSet<String>, String)> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        // A module's unit tests in a file of their own (`health/tests.rs`)
        // are tests, as an inline `mod tests` is.
        if top == "main" || top == "tidy" || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let top = if top == "lib" {
            "(root)".to_owned()
        } else {
            top
        };
        let code = code(&std::fs::read_to_string(&file).expect("read"));
        let entry = graph.entry(top.clone()).or_default();
        entry.0.extend(crate_imports(&code));
        entry.0.remove(&top);
        entry.1.push_str(&code);
    }
    graph
}

#[test]
fn the_module_graph_has_no_cycle() {
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, (BTreeSet<String>, String)>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Result<(), String> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            return Err(format!("{} -> {m}", path[i..].join(" -> ")));
        }
        if done.contains(m) {
            return Ok(());
        }
        path.push(m);
        for dep in graph.get(m).map(|e| &e.0).into_iter().flatten() {
            if graph.contains_key(dep) {
                visit(dep, graph, path, done)?;
            }
        }
        path.pop();
        done.insert(m);
        Ok(())
    }
    let graph = graph();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Err(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("module cycle: {cycle}");
        }
    }
    assert!(graph.len() > 10, "the graph was read: {:?}", graph.keys());
}

#[test]
fn the_middle_stages_do_no_io() {
    let graph = graph();
    for m in PURE {
        let (_, code) = graph.get(*m).unwrap_or_else(|| panic!("module {m} exists"));
        for bad in IO_CRATES.iter().chain(IO_MODULES) {
            assert!(!code.contains(bad), "{m} uses {bad}");
        }
    }
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let found = crate_imports("use crate::{plan::Plan, render};\nlet x = crate::Converge::new();");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["(root)", "plan", "render"]
    );
}
