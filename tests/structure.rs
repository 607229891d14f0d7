//! The module graph of `src/` has no cycles. A cycle means no module of it can be read, tested
//! or changed without the others, and they grow back quietly: one `use crate::…` in the wrong
//! direction is enough. The graph is computed here from the code's own paths (`crate::a::…`,
//! `use crate::{a, b::c}`, and `super::x` between files of one directory module), with comments,
//! string literals and `#[cfg(test)]` items left out. A directory module (`src/sentinel/`, or
//! `src/lab.rs` with `src/lab/`) is one node of the crate's graph, and its own files form a
//! second graph that must be acyclic too; the directory's root file (`mod.rs`, `lab.rs`) is its
//! facade (it declares and re-exports its children, which use its items) and is not a node of
//! that second graph. No Redis needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// One file of `src/` as the graph sees it: which top-level module it belongs to and, for a file
/// inside a directory module, its name there.
struct SourceFile {
    path: String,
    module: String,
    child: Option<String>,
    code: String,
}

/// An edge with the place that makes it, for the failure message.
type Edges = BTreeMap<(String, String), Vec<String>>;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn source_files() -> Vec<SourceFile> {
    let root = src();
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let relative = path.strip_prefix(&root).unwrap();
        let parts: Vec<String> =
            relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        let (module, child) = match parts.as_slice() {
            // The crate root and the binary (which sees the library as `roomguard::`).
            [single] if single == "lib" || single == "main" => continue,
            [single] => (single.clone(), None),
            [dir, file] if file == "mod" => (dir.clone(), None),
            [dir, file] => (dir.clone(), Some(file.clone())),
            _ => panic!(
                "{}: modules nested deeper than src/<dir>/<file>.rs are not read by this test",
                relative.display()
            ),
        };
        let text = std::fs::read_to_string(&path).unwrap();
        files.push(SourceFile {
            path: format!("src/{}", relative.display()),
            module,
            child,
            code: without_tests(&code_only(&text)),
        });
    }
    files
}

/// The text with comments removed and string and char literals blanked (newlines kept, so that
/// byte offsets still give line numbers).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
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
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (rest.starts_with(b"r\"")
            || rest.starts_with(b"r#")
            || rest.starts_with(b"br\"")
            || rest.starts_with(b"br#"))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            let start = i + if b[i] == b'b' { 2 } else { 1 };
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            if b.get(start + hashes) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            i = start + hashes + 1;
            out.push(b'"');
            while i < b.len() && !b[i..].starts_with(&close) {
                blank(&mut out, b[i]);
                i += 1;
            }
            out.push(b'"');
            i += close.len();
        } else if b[i] == b'"' {
            out.push(b'"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b'"');
            i += 1;
        } else if b[i] == b'\'' && (b.get(i + 1) == Some(&b'\\') || b.get(i + 2) == Some(&b'\'')) {
            // A char literal ('x', '\n', '\u{1F600}'); otherwise a lifetime, left as it is.
            out.push(b'\'');
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            out.push(b'\'');
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The code with every `#[cfg(test)]` item blanked: up to its `;` or its matching `}`.
fn without_tests(code: &str) -> String {
    let mut b = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = code[from..].find("#[cfg(test)]") {
        let start = from + found;
        let mut i = start + "#[cfg(test)]".len();
        while i < b.len() && b[i] != b';' && b[i] != b'{' {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            let mut depth = 0;
            while i < b.len() {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                i += 1;
                if depth == 0 {
                    break;
                }
            }
        } else {
            i += 1;
        }
        for c in &mut b[start..i.min(code.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = i.min(code.len());
    }
    String::from_utf8(b).unwrap()
}

/// Every path that starts with `prefix::` (e.g. `crate`, `super`), as its segments after the
/// prefix, with the byte offset where it starts; `use` groups (`{a, b::{c, d}}`) are expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<(usize, Vec<String>)> {
    let needle = format!("{prefix}::");
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if start > 0 && (is_ident(b[start - 1]) || b[start - 1] == b':') {
            continue;
        }
        let mut paths = Vec::new();
        tree(b, &mut from, Vec::new(), &mut paths);
        found.extend(paths.into_iter().map(|p| (start, p)));
    }
    found
}

/// Parses a use tree at `*i` (after a `::`): `ident(::ident)*`, optionally ending in a group.
fn tree(b: &[u8], i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_space = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_space(i);
        if *i < b.len() && b[*i] == b'{' {
            *i += 1;
            loop {
                skip_space(i);
                if *i >= b.len() || b[*i] == b'}' {
                    *i += 1;
                    break;
                }
                if b[*i] == b',' {
                    *i += 1;
                    continue;
                }
                let before = *i;
                tree(b, i, prefix.clone(), out);
                if *i == before {
                    *i += 1;
                }
            }
            return;
        }
        let start = *i;
        while *i < b.len() && is_ident(b[*i]) {
            *i += 1;
        }
        if *i > start {
            prefix.push(String::from_utf8_lossy(&b[start..*i]).into_owned());
        }
        skip_space(i);
        if b.get(*i..).is_some_and(|rest| rest.starts_with(b"::")) {
            *i += 2;
        } else {
            // `as name`, `*`, or the end of the path: the segments so far are the path.
            while *i < b.len()
                && !matches!(b[*i], b',' | b'}' | b';')
                && (is_ident(b[*i]) || b[*i] == b' ' || b[*i] == b'*')
            {
                *i += 1;
            }
            if !prefix.is_empty() {
                out.push(prefix);
            }
            return;
        }
    }
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].matches('\n').count() + 1
}

/// The crate's graph (a node per top-level module) and, per directory module, its files' graph.
fn graphs() -> (Edges, BTreeMap<String, Edges>) {
    let files = source_files();
    let modules: BTreeSet<&str> = files.iter().map(|f| f.module.as_str()).collect();
    let children: BTreeSet<(&str, &str)> =
        files.iter().filter_map(|f| f.child.as_deref().map(|c| (f.module.as_str(), c))).collect();
    let mut crate_edges = Edges::new();
    let mut inner: BTreeMap<String, Edges> = BTreeMap::new();
    for file in &files {
        for (offset, path) in paths_after(&file.code, "crate") {
            let place = format!("{}:{}", file.path, line_of(&file.code, offset));
            let target = &path[0];
            if modules.contains(target.as_str()) && *target != file.module {
                crate_edges.entry((file.module.clone(), target.clone())).or_default().push(place.clone());
            }
            if let (Some(child), true, Some(sibling)) = (&file.child, *target == file.module, path.get(1))
                && children.contains(&(file.module.as_str(), sibling.as_str()))
                && sibling != child
            {
                let edges = inner.entry(file.module.clone()).or_default();
                edges.entry((child.clone(), sibling.clone())).or_default().push(place);
            }
        }
        let Some(child) = &file.child else { continue };
        for (offset, path) in paths_after(&file.code, "super") {
            let sibling = &path[0];
            if children.contains(&(file.module.as_str(), sibling.as_str())) && sibling != child {
                let place = format!("{}:{}", file.path, line_of(&file.code, offset));
                let edges = inner.entry(file.module.clone()).or_default();
                edges.entry((child.clone(), sibling.clone())).or_default().push(place);
            }
        }
    }
    (crate_edges, inner)
}

/// The strongly connected groups of more than one node (Tarjan's algorithm).
fn cycles(edges: &Edges) -> Vec<BTreeSet<String>> {
    struct Tarjan<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<BTreeSet<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.next.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.groups.push(group);
                }
            }
        }
    }
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
        next.entry(to).or_default();
    }
    let nodes: Vec<&str> = next.keys().copied().collect();
    let mut t = Tarjan {
        next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.groups
}

/// The cycles of `edges` in words: each group, and every edge inside it with where it is made.
fn describe(scope: &str, edges: &Edges) -> Vec<String> {
    cycles(edges)
        .into_iter()
        .map(|group| {
            let mut text =
                format!("{scope}: a cycle through {}:", group.iter().cloned().collect::<Vec<_>>().join(", "));
            for ((from, to), places) in edges.iter().filter(|((f, t), _)| group.contains(f) && group.contains(t)) {
                let places: BTreeSet<&String> = places.iter().collect();
                let places: Vec<&str> = places.into_iter().map(String::as_str).collect();
                text.push_str(&format!("\n  {from} -> {to}: {}", places.join(", ")));
            }
            text
        })
        .collect()
}

#[test]
fn no_import_cycles_between_modules() {
    let (crate_edges, inner) = graphs();
    // The graph must be a real one: this test reading nothing would pass for the wrong reason.
    for edge in [("controller", "plan"), ("sentinel", "events"), ("dial", "wire")] {
        assert!(
            crate_edges.contains_key(&(edge.0.to_string(), edge.1.to_string())),
            "the module graph lacks {} -> {}: the test no longer reads the paths",
            edge.0,
            edge.1
        );
    }
    let mut problems = describe("src/", &crate_edges);
    for (dir, edges) in &inner {
        problems.extend(describe(&format!("src/{dir}/"), edges));
    }
    assert!(
        problems.is_empty(),
        "import cycles (move the shared item down to the module that owns it):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_module_graph_sees_use_groups_and_leaves_out_tests_and_comments() {
    let code = without_tests(&code_only(
        "use crate::{a::X, b::{c, d::Y as Z}};\n// crate::e::F\nlet s = \"crate::f\";\nfn g() { crate::h::i(); }\n\
         #[cfg(test)]\nmod tests { use crate::j::K; }\n#[cfg(test)]\nuse crate::k;\n",
    ));
    let firsts: Vec<String> = paths_after(&code, "crate").into_iter().map(|(_, p)| p[0].clone()).collect();
    assert_eq!(firsts, ["a", "b", "b", "h"]);
    let mut edges = Edges::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges.insert((from.into(), to.into()), vec![]);
    }
    assert_eq!(cycles(&edges), vec![BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])]);
}
