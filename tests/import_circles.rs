//! No import circles between the files of `src/export` and `src/pipeline`.
//!
//! Reads every `use crate::…`, `use super::…` and `use self::…` item at the top level of each
//! file (nested test modules are skipped: they only import the file they sit in), resolves each
//! path to the file that defines the module it names, and checks that the graph of those edges
//! has no cycle. Shared types belong in leaf modules (`pipeline/config.rs`,
//! `pipeline/message.rs`, `export/undelivered.rs`), as in `tower::buffer`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files under `dir`, recursively, relative to `src`.
fn rust_files(src: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(src).unwrap().to_path_buf());
        }
    }
}

/// The module path of a file: `export/databricks/flags.rs` → `[export, databricks, flags]`;
/// `pipeline/mod.rs` → `[pipeline]`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The file defining the longest module prefix of `path`, if it is one of ours.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    let mut found = None;
    for len in 1..=path.len() {
        let stem: PathBuf = path[..len].iter().collect();
        let flat = stem.with_extension("rs");
        let nested = stem.join("mod.rs");
        if src.join(&flat).is_file() {
            found = Some(flat);
        } else if src.join(&nested).is_file() {
            found = Some(nested);
        } else {
            break;
        }
    }
    found
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|item| format!("{prefix}{item}"))
        .collect()
}

/// The top-level `use` items of a file (outside any nested module), as full text.
fn top_level_uses(text: &str) -> Vec<String> {
    let mut uses = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(statement) = current.as_mut() {
            statement.push_str(line.trim());
            if line.contains(';') {
                uses.push(current.take().unwrap());
            }
            continue;
        }
        // Top level only: nested test modules are indented.
        let trimmed = line.trim_end();
        let body = ["pub(crate) use ", "pub(super) use ", "pub use ", "use "]
            .iter()
            .find_map(|prefix| trimmed.strip_prefix(prefix));
        if let Some(body) = body {
            if body.contains(';') {
                uses.push(body.to_owned());
            } else {
                current = Some(body.to_owned());
            }
        }
    }
    uses.into_iter()
        .map(|u| u.trim_end_matches(';').replace(' ', ""))
        .collect()
}

/// Every edge `file → file` between the files of `src/export` and `src/pipeline`.
fn edges(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    for dir in ["export", "pipeline"] {
        rust_files(src, &src.join(dir), &mut files);
    }
    for old in ["export.rs", "flags.rs"] {
        // Where the export wing lived before it moved under `export/`: absent today.
        files.push(PathBuf::from(old));
    }
    files.retain(|f| src.join(f).is_file());
    let ours: BTreeSet<PathBuf> = files.iter().cloned().collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        let module = module_of(file);
        let mut targets = BTreeSet::new();
        for statement in top_level_uses(&text) {
            for path in expand(&statement) {
                let segments: Vec<String> = path
                    .split("::")
                    .map(|s| s.split(" as ").next().unwrap().to_owned())
                    .collect();
                let absolute: Vec<String> = match segments.first().map(String::as_str) {
                    Some("crate") => segments[1..].to_vec(),
                    Some("self") => module
                        .iter()
                        .cloned()
                        .chain(segments[1..].to_vec())
                        .collect(),
                    Some("super") => {
                        let mut base = module.clone();
                        let mut rest = &segments[..];
                        while rest.first().is_some_and(|s| s == "super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        base.into_iter().chain(rest.iter().cloned()).collect()
                    }
                    // A child module of this one (`pub use child::Item` in a module root).
                    Some(first)
                        if file_of(src, &[module.clone(), vec![first.to_owned()]].concat())
                            .is_some() =>
                    {
                        module.iter().cloned().chain(segments).collect()
                    }
                    _ => continue,
                };
                if let Some(target) = file_of(src, &absolute) {
                    if &target != file && ours.contains(&target) {
                        targets.insert(target);
                    }
                }
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// A cycle in `graph`, if any, as the files along it.
fn find_cycle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
                1 => {
                    let at = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn the_parser_sees_edges_and_cycles() {
    assert_eq!(
        expand("super::{a::X, b::{C, D}}"),
        ["super::a::X", "super::b::C", "super::b::D"]
    );
    let uses = top_level_uses(
        "use super::a::X;\npub(crate) use crate::b::{\n    Y,\n    Z,\n};\nmod tests {\n    use super::*;\n}\n",
    );
    assert_eq!(uses, ["super::a::X", "crate::b::{Y,Z,}"]);
    let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        ("a.rs", vec!["b.rs"]),
        ("b.rs", vec!["c.rs"]),
        ("c.rs", vec!["a.rs"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.into(), to.into_iter().map(PathBuf::from).collect()))
    .collect();
    assert!(find_cycle(&graph).is_some());
}

#[test]
fn export_and_pipeline_have_no_import_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&src);
    let listed: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| {
            to.iter()
                .map(move |to| format!("{} -> {}", from.display(), to.display()))
        })
        .collect();
    eprintln!(
        "use edges between src/export and src/pipeline:\n{}",
        listed.join("\n")
    );
    // The checker sees the edges it must: a module root re-exporting its children, a child
    // importing a sibling, and the wing importing the pipeline's leaf.
    for edge in [
        "pipeline/mod.rs -> pipeline/telemetry.rs",
        "pipeline/aggregator.rs -> pipeline/message.rs",
        "export/databricks/flags.rs -> pipeline/config.rs",
    ] {
        assert!(listed.iter().any(|e| e == edge), "missing {edge}");
    }
    if let Some(cycle) = find_cycle(&graph) {
        let cycle: Vec<String> = cycle.iter().map(|p| p.display().to_string()).collect();
        panic!("import circle: {}", cycle.join(" -> "));
    }
}
