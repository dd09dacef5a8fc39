//! The layout of the code follows the data flow, so no module may import one that imports it
//! back: between top-level modules (`sources`, `journal`, `store`, …), and between sibling
//! submodules of one of them (`attribution::channel` and `attribution::referrer`). A parent and
//! its children are exempt (a `mod.rs` re-exports what its children define, and they use its
//! types). Test code is left out: a test may drive its module through the whole application.
//!
//! Paths are read from the source text (`crate::…`, `super::…`, `use super::{…}`), outside
//! comments; that is enough for this codebase's style and needs no parser dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path below the crate root, from its file: `src/journal/file/mod.rs` → `journal::file`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        file.strip_prefix(src).unwrap().with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file's code without comments and without its test module (which comes last).
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut in_block = 0usize;
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("/*") {
            in_block += 1;
        }
        if in_block > 0 {
            if trimmed.ends_with("*/") || line.contains("*/") {
                in_block -= 1;
            }
            continue;
        }
        let line = match line.find("//") {
            // `//` inside a string (a URL) is rare in paths' lines; cutting there only loses text.
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Every absolute module path the code names, resolved from module `here`.
fn paths_named(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let first = ident(rest);
        let second = rest[first.len()..].strip_prefix("::").map(ident).unwrap_or_default();
        out.push([first, second].into_iter().filter(|s| !s.is_empty()).collect());
    }
    let parent = &here[..here.len().saturating_sub(1)];
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with("super::") {
            continue; // `super::super::` is not used here; skip rather than misread it
        }
        let rest = &code[at + "super::".len()..];
        let names: Vec<String> = match rest.strip_prefix('{') {
            Some(group) => group
                .split(['}'])
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|item| ident(item.trim()))
                .filter(|name| !name.is_empty() && name.chars().next().is_some_and(char::is_lowercase))
                .collect(),
            None => vec![ident(rest)],
        };
        for name in names {
            let mut path = parent.to_vec();
            path.push(name);
            out.push(path);
        }
    }
    out
}

/// The graph's node for module path `path`: the top-level module, or `top::child` for a
/// submodule of a top-level module (deeper modules count as their first-level ancestor).
fn node(path: &[String], children: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    let top = path.first()?;
    let child = path.get(1).filter(|c| children.get(top).is_some_and(|set| set.contains(*c)));
    Some(match child {
        Some(child) => format!("{top}::{child}"),
        None => top.clone(),
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // Test-only module trees.
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

/// The import edges between nodes, each with one file that makes it.
fn edges() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<(PathBuf, Vec<String>)> = files.into_iter().map(|f| (f.clone(), module_of(&src, &f))).collect();
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, module) in &modules {
        if let [top, child, ..] = module.as_slice() {
            children.entry(top.clone()).or_default().insert(child.clone());
        }
    }
    let mut edges = BTreeMap::new();
    for (file, module) in &modules {
        let Some(from) = node(module, &children) else { continue };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for path in paths_named(&code, module) {
            let Some(to) = node(&path, &children) else { continue };
            let (from_top, to_top) = (from.split("::").next().unwrap(), to.split("::").next().unwrap());
            let edge = if from_top != to_top {
                (from_top.to_owned(), to_top.to_owned())
            } else if from.contains("::") && to.contains("::") && from != to {
                (from.clone(), to.clone())
            } else {
                continue;
            };
            edges.entry(edge).or_insert_with(|| file.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    edges
}

/// A cycle in the graph, if there is one, as the nodes along it.
fn find_cycle(edges: &BTreeMap<(String, String), String>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for to in next.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(to, next, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    next.keys().find_map(|start| visit(start, &next, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let edges = edges();
    assert!(edges.contains_key(&("sources".to_owned(), "journal".to_owned())), "the reader sees imports: {edges:?}");
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} → {} (in src/{})", w[0], w[1], edges[&(w[0].clone(), w[1].clone())]))
            .collect();
        panic!("an import cycle:\n  {}", steps.join("\n  "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle_of_three() {
    let edges: BTreeMap<(String, String), String> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .into_iter()
        .map(|(f, t)| ((f.to_owned(), t.to_owned()), String::new()))
        .collect();
    assert_eq!(find_cycle(&edges), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let acyclic: BTreeMap<(String, String), String> = [(("a".to_owned(), "b".to_owned()), String::new())].into();
    assert_eq!(find_cycle(&acyclic), None);
}
