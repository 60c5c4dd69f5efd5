//! The layout `ARCHITECTURE.md` describes, held by a test: no import cycles between modules.
//!
//! Rust allows a module to use its siblings in both directions; a reader then cannot read one
//! without the other. The rule checked here, for every crate of the workspace: among the children
//! of any module, the "uses" relation has no cycle. A use of `crate::a::b` or `super::b` from
//! module `m` resolves to the deepest module the path names; if neither module contains the other,
//! it is an edge between the two children of their nearest common ancestor that contain them.
//! Uses of a module's own ancestors or descendants are not edges (a parent declares and
//! re-exports its children). Comments are skipped, so doc links are not uses. Crates cannot form
//! cycles: cargo refuses them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The workspace's crates: every folder with a Cargo.toml and a `src/`.
fn crates(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for top in ["runtime", "firmware", "host-tools", "fuzz", "tests"] {
        let mut stack = vec![root.join(top)];
        while let Some(dir) = stack.pop() {
            if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
                out.push(dir.clone());
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = entry.path();
                let name = entry.file_name();
                if p.is_dir()
                    && !matches!(name.to_str(), Some("src" | "target" | "tests" | "data" | "corpus" | "regressions"))
                {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// Every `.rs` file under `src/` as the module it defines (`src/a/mod.rs` and `src/a.rs` are `a`).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut m: Module = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    m.pop();
                }
                out.insert(m, p);
            }
        }
    }
    out
}

/// The text without comments (line and block) and without string literals' contents.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The module paths a file uses: `crate::…` and `super::…` (with `{…}` groups expanded one
/// level), relative to the file's module.
fn uses(text: &str, from: &Module) -> Vec<Module> {
    let text = code(text);
    let mut out = Vec::new();
    for (start, kw) in text
        .match_indices("crate::")
        .map(|(i, _)| (i, "crate"))
        .chain(text.match_indices("super::").map(|(i, _)| (i, "super")))
    {
        // `super::` inside a `super::super::` chain is handled by its first occurrence.
        let before = &text[..start];
        if before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut base: Module = if kw == "crate" { Vec::new() } else { from[..from.len().saturating_sub(1)].to_vec() };
        let mut rest = &text[start + kw.len() + 2..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let mut paths = Vec::new();
        walk(rest, base, &mut paths);
        out.extend(paths);
    }
    out
}

/// Follows `a::b::{c, d::e}` from `base`, pushing each full path.
fn walk(mut rest: &str, mut base: Module, out: &mut Vec<Module>) {
    loop {
        rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        walk(&group[item..i], base.clone(), out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        walk(&group[item..i], base.clone(), out);
                        item = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let (name, after) = ident(rest);
        if name.is_empty() || name == "self" {
            out.push(base);
            return;
        }
        base.push(name.to_string());
        match after.strip_prefix("::") {
            Some(a) => rest = a,
            None => {
                out.push(base);
                return;
            }
        }
    }
}

/// The deepest module of `known` that `path` names.
fn resolve(path: &Module, known: &BTreeMap<Module, PathBuf>) -> Module {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| known.contains_key(m)).unwrap_or_default()
}

/// Cycles among the children of each module, as lists of sibling modules.
fn cycles(known: &BTreeMap<Module, PathBuf>) -> Vec<(Vec<Module>, Vec<String>)> {
    // parent -> child -> (child it uses -> an example "file uses path")
    let mut edges: BTreeMap<Module, BTreeMap<Module, BTreeMap<Module, String>>> = BTreeMap::new();
    for (m, file) in known {
        let text = std::fs::read_to_string(file).unwrap();
        for path in uses(&text, m) {
            let target = resolve(&path, known);
            let common = m.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == m.len() || common == target.len() {
                continue;
            }
            let parent = m[..common].to_vec();
            let (a, b) = (m[..=common].to_vec(), target[..=common].to_vec());
            edges
                .entry(parent)
                .or_default()
                .entry(a)
                .or_default()
                .entry(b)
                .or_insert_with(|| format!("{} uses {}", file.display(), path.join("::")));
        }
    }
    let mut found = Vec::new();
    for graph in edges.values() {
        // Tarjan-free: a pair in a cycle reaches each other; report each strongly connected set.
        let reach = |from: &Module| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.clone()];
            while let Some(n) = stack.pop() {
                for next in graph.get(&n).into_iter().flat_map(|e| e.keys()) {
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
            seen
        };
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            if done.contains(n) || !reach(n).contains(n) {
                continue;
            }
            let set: Vec<Module> =
                graph.keys().filter(|o| reach(n).contains(*o) && reach(o).contains(n)).cloned().collect();
            let mut why = Vec::new();
            for a in &set {
                for (b, example) in graph.get(a).into_iter().flatten() {
                    if set.contains(b) {
                        why.push(example.clone());
                    }
                }
            }
            done.extend(set.iter().cloned());
            found.push((set, why));
        }
    }
    found
}

#[test]
fn no_module_uses_a_sibling_that_uses_it_back() {
    let root = lepton_e2e::root();
    let crates = crates(&root);
    assert!(crates.len() >= 10, "found only {} crates under {}", crates.len(), root.display());
    let mut report = String::new();
    for krate in &crates {
        let known = modules(&krate.join("src"));
        for (set, why) in cycles(&known) {
            let names: Vec<String> = set.iter().map(|m| m.join("::")).collect();
            report +=
                &format!("\n{}: modules {} use each other:\n  {}", krate.display(), names.join(", "), why.join("\n  "));
        }
    }
    assert!(report.is_empty(), "import cycles (ARCHITECTURE.md: dependencies go one way):{report}");
}

#[test]
fn the_checker_finds_a_cycle_and_follows_groups_and_super() {
    let dir = lepton_e2e::scratch("architecture");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; // crate::b::x in a comment is no use\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod inner;\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "use super::super::{b::{self, Thing}, c};\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() { crate::a::inner::g(); }\n").unwrap();
    std::fs::write(src.join("c.rs"), "/* crate::a */ const S: &str = \"crate::a\";\n").unwrap();
    let found = cycles(&modules(&src));
    let sets: Vec<Vec<String>> = found.iter().map(|(s, _)| s.iter().map(|m| m.join("::")).collect()).collect();
    assert_eq!(sets, vec![vec!["a".to_string(), "b".to_string()]], "{found:?}");
    // Without b's use of a, nothing is reported (a uses b and c one way only).
    std::fs::write(src.join("b.rs"), "fn f() {}\n").unwrap();
    assert!(cycles(&modules(&src)).is_empty());
}
