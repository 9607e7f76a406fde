//! The house rules of `src/` (README, "Development"), checked on the source itself so that a
//! change that breaks one fails here, naming the file and the reference:
//!
//! - a role's folder (`operator/`, `token/`, `admin/`) uses `core/`, `shared/` and `error.rs`,
//!   never another role's folder;
//! - `core/` uses only `core/` and `error.rs`, and no API client (`kube::Client`, `kube::Api`,
//!   `kube::api`, `kube::runtime`): the types of k8s-openapi and kube's derive are fine;
//! - `shared/` uses no role's folder;
//! - no import circle between the crate's modules;
//! - no file over 800 lines but unit tests (`#[cfg(test)]` modules).
//!
//! A module's references are the paths in its code (comments left out) that start at `crate::`,
//! `super::`, `self::` or one of its own child modules, `use` groups expanded; each names the
//! deepest module of the crate its path reaches. Unit-test modules (declared under
//! `#[cfg(test)]`) and what they reference are left out of the layering and circle rules: a test
//! of a module uses it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a file other than unit tests may have.
const MAX_LINES: usize = 800;
/// The folders of the crate's roles.
const ROLES: [&str; 3] = ["operator", "token", "admin"];

/// A module path in the crate, `[]` for the crate root (`lib.rs`).
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    text: String,
    /// Declared under `#[cfg(test)]`, or inside a module that is.
    test: bool,
}

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module of the library, by path: `lib.rs` and what it declares, down the tree.
fn modules() -> BTreeMap<ModPath, Module> {
    let mut found = BTreeMap::new();
    let mut pending = vec![(Vec::new(), src().join("lib.rs"), false)];
    while let Some((path, file, test)) = pending.pop() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (child, child_test) in declared_children(&text) {
            let dir = if file.ends_with("lib.rs") || file.ends_with("mod.rs") {
                file.parent().expect("a folder").to_path_buf()
            } else {
                file.with_extension("")
            };
            let child_file = [
                dir.join(format!("{child}.rs")),
                dir.join(&child).join("mod.rs"),
            ]
            .into_iter()
            .find(|f| f.exists())
            .unwrap_or_else(|| panic!("{}: module {child} has no file", file.display()));
            let mut child_path = path.clone();
            child_path.push(child);
            pending.push((child_path, child_file, test || child_test));
        }
        found.insert(path, Module { file, text, test });
    }
    found
}

/// The modules `text` declares with `mod name;`, and whether under `#[cfg(test)]`.
fn declared_children(text: &str) -> Vec<(String, bool)> {
    let mut children = Vec::new();
    let mut cfg_test = false;
    for line in text.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            cfg_test = true;
            continue;
        }
        let decl = ["pub mod ", "pub(crate) mod ", "pub(super) mod ", "mod "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .and_then(|rest| rest.strip_suffix(';'));
        if let Some(name) = decl {
            children.push((name.to_owned(), cfg_test));
        }
        if !line.starts_with("#[") {
            cfg_test = false;
        }
    }
    children
}

/// `text` without its comments (`//` to the end of a line; `/* */` is not used in `src/`) and
/// without its inline unit tests (`#[cfg(test)] mod tests { ... }`).
fn code(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            Some(_) | None => line,
        })
        .collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let inline_tests = lines[i].trim() == "#[cfg(test)]"
            && lines.get(i + 1).is_some_and(|next| {
                let next = next.trim();
                next.starts_with("mod ") && next.ends_with('{')
            });
        if inline_tests {
            i = end_of_block(&lines, i + 1) + 1;
        } else {
            kept.push(lines[i]);
            i += 1;
        }
    }
    kept.join("\n")
}

/// The line on which the block opened on line `open` closes: braces counted outside string and
/// character literals.
fn end_of_block(lines: &[&str], open: usize) -> usize {
    let mut depth = 0i64;
    for (n, line) in lines.iter().enumerate().skip(open) {
        let mut chars = line.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_string => {
                    chars.next();
                }
                '"' => in_string = !in_string,
                '\'' if !in_string => {
                    // a character literal such as '{' (a lifetime has no closing quote nearby)
                    let literal: String = chars.clone().take(3).collect();
                    if literal.starts_with("{'") || literal.starts_with("}'") {
                        chars.next();
                        chars.next();
                    }
                }
                '{' if !in_string => depth += 1,
                '}' if !in_string => {
                    depth -= 1;
                    if depth == 0 {
                        return n;
                    }
                }
                _ => {}
            }
        }
    }
    lines.len()
}

/// The paths a `use` tree names: `a::{b, c::{d, self}}` gives `a::b`, `a::c::d`, `a::c`.
fn expand_use(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_owned()
        } else {
            format!("{p}::{s}")
        }
    };
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').expect("a closing brace")];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&base, &inner[start..], out);
    } else if !tree.is_empty() {
        let name = tree.split(" as ").next().unwrap_or(tree).trim();
        if name == "self" {
            out.push(prefix.to_owned());
        } else {
            out.push(join(prefix, name));
        }
    }
}

/// Every path in `code`: the expanded `use` trees, and each `a::b::c` written in the code.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        expand_use("", &rest[at + 4..end], &mut out);
        rest = &rest[end..];
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':') {
            let mut j = i;
            let mut path = String::new();
            loop {
                let start = j;
                while j < chars.len() && is_ident(chars[j]) {
                    j += 1;
                }
                path.extend(&chars[start..j]);
                if j + 2 < chars.len()
                    && chars[j] == ':'
                    && chars[j + 1] == ':'
                    && is_ident(chars[j + 2])
                {
                    path.push_str("::");
                    j += 2;
                } else {
                    break;
                }
            }
            if path.contains("::") {
                out.push(path);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Where the next `use` declaration of `code` starts (at `use `), if any.
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        for prefix in ["use ", "pub use ", "pub(crate) use ", "pub(super) use "] {
            if trimmed.starts_with(prefix) {
                return Some(offset + lead + prefix.len() - 4);
            }
        }
        offset += line.len();
    }
    None
}

/// The module of the crate `path`, written in module `from`, reaches (the deepest one), if it
/// starts in the crate.
fn resolve(
    from: &ModPath,
    path: &str,
    children: &BTreeSet<String>,
    known: &BTreeMap<ModPath, Module>,
) -> Option<ModPath> {
    let mut segments = path.split("::").peekable();
    let mut base: ModPath = match *segments.peek()? {
        "crate" => {
            segments.next();
            Vec::new()
        }
        "self" => {
            segments.next();
            from.clone()
        }
        "super" => {
            let mut base = from.clone();
            while segments.peek() == Some(&"super") {
                segments.next();
                base.pop();
            }
            base
        }
        first if children.contains(first) => from.clone(),
        _ => return None,
    };
    let mut deepest = base.clone();
    for segment in segments {
        base.push(segment.to_owned());
        if known.contains_key(&base) {
            deepest = base.clone();
        } else {
            break;
        }
    }
    Some(deepest)
}

/// The crate's module graph: each non-test module and the non-test modules it references.
fn graph(modules: &BTreeMap<ModPath, Module>) -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
    let mut graph = BTreeMap::new();
    for (path, module) in modules.iter().filter(|(_, m)| !m.test) {
        let code = code(&module.text);
        let children: BTreeSet<String> = declared_children(&module.text)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let mut refs = BTreeMap::new();
        for written in paths(&code) {
            if let Some(target) = resolve(path, &written, &children, modules)
                && &target != path
                && modules.get(&target).is_some_and(|m| !m.test)
            {
                refs.entry(target).or_insert(written);
            }
        }
        graph.insert(path.clone(), refs);
    }
    graph
}

fn name(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

fn folder(path: &ModPath) -> &str {
    path.first().map_or("", String::as_str)
}

fn relative(file: &Path) -> String {
    file.strip_prefix(src())
        .unwrap_or(file)
        .display()
        .to_string()
}

#[test]
fn the_scanner_sees_the_references_it_must() {
    let mut out = Vec::new();
    expand_use("", "crate::a::{b, c::{d, self}, e as f}", &mut out);
    assert_eq!(
        out,
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c",
            "crate::a::e"
        ]
    );
    let modules = modules();
    assert!(
        modules.len() > 40,
        "the crate's modules were found: {}",
        modules.len()
    );
    let graph = graph(&modules);
    let refs = |m: &[&str]| {
        let path: ModPath = m.iter().map(|s| s.to_string()).collect();
        graph
            .get(&path)
            .unwrap_or_else(|| panic!("module {}", name(&path)))
            .keys()
            .map(name)
            .collect::<BTreeSet<_>>()
    };
    // a `use` group, a child module used in code, and `super::` all count
    assert!(
        refs(&["operator", "controller", "reconcile"]).contains("operator::controller::writes")
    );
    assert!(refs(&["token", "signing"]).contains("token::signing::jws"));
    assert!(refs(&["core", "decision"]).contains("core::issue"));
    assert!(refs(&["token", "run"]).contains("token::cli"));
}

/// The references that break `allowed(from folder, to folder)`, as `file uses path` lines.
fn forbidden(allowed: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let modules = modules();
    let mut wrong = Vec::new();
    for (from, refs) in graph(&modules) {
        for (to, written) in refs {
            if !allowed(folder(&from), folder(&to)) {
                wrong.push(format!("{} uses {written}", relative(&modules[&from].file)));
            }
        }
    }
    wrong
}

/// Fails with `what` and the references that break `allowed`.
fn assert_allowed(what: &str, allowed: impl Fn(&str, &str) -> bool) {
    let wrong = forbidden(allowed);
    assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
}

#[test]
fn a_role_uses_the_core_and_shared_never_another_role() {
    assert_allowed("a role's folder reaches into another's", |from, to| {
        !(ROLES.contains(&from) && ROLES.contains(&to) && from != to)
    });
}

#[test]
fn the_core_uses_only_itself_and_the_error_type_and_no_api_client() {
    // `crate::Error` and `crate::Result` are the crate root's re-exports of `error.rs`
    assert_allowed("the core reaches out", |from, to| {
        from != "core" || matches!(to, "core" | "error" | "")
    });
    let modules = modules();
    let clients: Vec<String> = modules
        .iter()
        .filter(|(m, module)| folder(m) == "core" && !module.test)
        .flat_map(|(_, module)| {
            paths(&code(&module.text))
                .into_iter()
                .filter(|path| {
                    [
                        "kube::Client",
                        "kube::Api",
                        "kube::api",
                        "kube::runtime",
                        "kube::client",
                    ]
                    .iter()
                    .any(|p| path == p || path.starts_with(&format!("{p}::")))
                })
                .map(|path| format!("{} uses {path}", relative(&module.file)))
        })
        .collect();
    assert!(
        clients.is_empty(),
        "the core calls the API:\n{}",
        clients.join("\n")
    );
}

#[test]
fn shared_uses_no_role() {
    assert_allowed("shared/ reaches into a role", |from, to| {
        from != "shared" || matches!(to, "shared" | "core" | "error" | "")
    });
}

#[test]
fn no_import_circle() {
    let modules = modules();
    let graph = graph(&modules);
    // Depth-first search for a back edge; the path to it is the circle.
    fn visit(
        at: &ModPath,
        graph: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
        stack: &mut Vec<ModPath>,
        done: &mut BTreeSet<ModPath>,
    ) -> Option<Vec<ModPath>> {
        if let Some(start) = stack.iter().position(|m| m == at) {
            let mut circle = stack[start..].to_vec();
            circle.push(at.clone());
            return Some(circle);
        }
        if done.contains(at) {
            return None;
        }
        stack.push(at.clone());
        for next in graph.get(at).into_iter().flat_map(BTreeMap::keys) {
            if let Some(circle) = visit(next, graph, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(circle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            let shown: Vec<String> = circle.iter().map(name).collect();
            panic!("import circle: {}", shown.join(" -> "));
        }
    }
}

#[test]
fn no_file_over_800_lines_but_unit_tests() {
    let mut long: Vec<String> = modules()
        .values()
        .filter(|m| !m.test)
        .map(|m| (relative(&m.file), m.text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(file, lines)| format!("{file}: {lines} lines"))
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines hold two ideas:\n{}",
        long.join("\n")
    );
}
