//! The module layering `docs/architecture.md` draws, checked on the source: every `crate::X`
//! reference from one top-level module of `src/` to another must be an allowed arrow, the
//! allowed arrows must have no cycle, the modules said to be Pingora-free must not name
//! Pingora, and the `filters` crate must not depend on Pingora or the gateway. Test code
//! (`#[cfg(test)]` modules, `tests.rs`, `*_tests.rs`, `testing.rs`) may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may import whom: `(module, modules it may use)`. The foundation (`clock`, `decimal`,
/// `pricing`, `http_query`, `logging`) uses nothing of the crate. Add an arrow only when it
/// points down the layers drawn in docs/architecture.md (the acyclic check below enforces it).
const ALLOWED: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("decimal", &[]),
    ("pricing", &[]),
    ("http_query", &[]),
    ("logging", &[]),
    ("config", &["clock", "pricing"]),
    ("access_log", &["logging"]),
    ("metrics", &["access_log", "config"]),
    ("upstream", &["config"]),
    ("providers", &["config"]),
    ("routing", &["clock", "config", "providers"]),
    ("listings", &["clock", "config", "http_query"]),
    ("management", &["clock", "config", "decimal", "pricing"]),
    ("admin", &["clock", "http_query", "management"]),
    ("cache", &["clock", "config"]),
    (
        "app",
        &[
            "cache",
            "config",
            "listings",
            "management",
            "metrics",
            "pricing",
            "providers",
            "routing",
            "upstream",
        ],
    ),
    (
        "proxy",
        &[
            "access_log",
            "admin",
            "app",
            "cache",
            "clock",
            "config",
            "decimal",
            "listings",
            "management",
            "metrics",
            "providers",
            "routing",
            "upstream",
        ],
    ),
    ("downstream", &["app", "metrics", "proxy"]),
    ("shutdown", &["app", "logging"]),
    (
        "server",
        &[
            "app",
            "config",
            "downstream",
            "logging",
            "management",
            "pricing",
            "proxy",
            "shutdown",
            "upstream",
        ],
    ),
    // The fuzz targets' entry points (not part of the gateway).
    ("fuzz", &["config", "pricing", "providers"]),
];

/// Modules that hold no Pingora type: pure data and policy, testable without a server.
const PINGORA_FREE: &[&str] = &[
    "clock",
    "decimal",
    "pricing",
    "http_query",
    "config",
    "access_log",
    "metrics",
    "providers",
    "listings",
    "management",
    "admin",
    "routing",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`proxy/attempt.rs` -> `proxy`), `None` for the
/// crate root and the binary.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name == "testing.rs" || name.ends_with("_tests.rs")
}

/// The source without comments and without its trailing `#[cfg(test)] mod tests`.
fn production_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module `code` names through `crate::` (also inside `crate::{a, b::c}`).
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Only the first segment of each item: `crate::{a::{b, c}, d}` names a and d.
            let mut depth = 0;
            let mut start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[k..]));
                        start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => start = false,
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

/// Arrows `(from, to)` found in the source, with a file that draws each.
fn arrows() -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src()).expect("under src").to_path_buf();
        let Some(from) = top_module(&rel) else {
            continue;
        };
        if is_test_file(&path) {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&path).expect("read source"));
        for to in crate_references(&code) {
            if to != from {
                found
                    .entry((from.clone(), to))
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    found
}

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    ALLOWED
        .iter()
        .map(|(from, to)| (*from, to.iter().copied().collect()))
        .collect()
}

#[test]
fn every_crate_import_follows_an_allowed_arrow() {
    let allowed = allowed();
    let found = arrows();
    assert!(
        found.len() > 20,
        "the scan found only {} arrows: is it reading src/?",
        found.len()
    );
    let forbidden: Vec<String> = found
        .iter()
        .filter(|((from, to), _)| {
            !allowed
                .get(from.as_str())
                .is_some_and(|ok| ok.contains(to.as_str()))
        })
        .map(|((from, to), file)| format!("{from} -> {to} (src/{file})"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "imports against the layering of docs/architecture.md:\n  {}\n\
         Move the code to the layer it belongs to; change ALLOWED (and the document) only for \
         an arrow that points down the layers.",
        forbidden.join("\n  ")
    );
}

#[test]
fn every_top_level_module_is_in_the_table() {
    let allowed = allowed();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|p| top_module(p.strip_prefix(src()).ok()?))
        .collect();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !allowed.contains_key(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "new top-level modules need a row in ALLOWED: {missing:?}"
    );
}

#[test]
fn the_allowed_arrows_have_no_cycle() {
    // Kahn's algorithm: repeatedly remove modules all of whose allowed imports are removed.
    let allowed = allowed();
    let mut left: BTreeMap<&str, BTreeSet<&str>> = allowed.clone();
    loop {
        let done: Vec<&str> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| *m)
            .collect();
        if done.is_empty() {
            break;
        }
        for m in done {
            left.remove(m);
        }
    }
    assert!(
        left.is_empty(),
        "the allowed arrows have a cycle among {:?}",
        left.keys().collect::<Vec<_>>()
    );
}

#[test]
fn pure_modules_hold_no_pingora_type() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| {
            let rel = p.strip_prefix(src()).expect("under src");
            top_module(rel).is_some_and(|m| PINGORA_FREE.contains(&m.as_str())) && !is_test_file(p)
        })
        .filter(|p| {
            production_code(&std::fs::read_to_string(p).expect("read source")).contains("pingora")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "Pingora in modules meant to be Pingora-free: {offenders:?}"
    );
}

#[test]
fn the_filters_crate_depends_on_neither_pingora_nor_the_gateway() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("filters/Cargo.toml"))
            .expect("filters/Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    let deps = deps.split("\n[").next().unwrap_or(deps);
    for forbidden in ["pingora", "sluice =", "path = \".."] {
        assert!(
            !deps.contains(forbidden),
            "filters/Cargo.toml depends on {forbidden}"
        );
    }
}

#[test]
fn the_scanner_reads_grouped_and_nested_imports() {
    let code =
        "use crate::{config::{A, B}, clock, providers::x as y};\nlet p = crate::pricing::f();";
    let names: Vec<String> = crate_references(code).into_iter().collect();
    assert_eq!(names, ["clock", "config", "pricing", "providers"]);
    assert!(crate_references(&production_code("// crate::admin\nfn f() {}")).is_empty());
}

/// Lines of non-test code a source file may have; a longer file says why in its `//!` header
/// with the words "long because".
const MAX_FILE_LINES: usize = 850;

#[test]
fn source_files_stay_short_enough_to_read() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("filters/src"),
        &mut files,
    );
    let long: Vec<String> = files
        .iter()
        .filter(|p| !is_test_file(p))
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).expect("read source");
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            let lines = code.lines().count();
            let explained = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .any(|l| l.contains("long because"));
            (lines > MAX_FILE_LINES && !explained)
                .then(|| format!("{} ({lines} lines)", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by concern (or say in the header why not): {long:?}"
    );
}
