//! **Documentation invariant:** every pointer `docs/guide.md` gives into the code is true.
//! A file it names exists, an item it names is in that file, and a test it names is a
//! `fn` in that test file. `docs/ARCHITECTURE.md` is held to the first part: every repo
//! path it names exists.
//!
//! The rule that ties an item to a file, in `docs/guide.md`:
//!
//! * The text is cut into blocks: a bullet (with its continuation lines), a numbered item,
//!   a paragraph, a heading or a table row. Fenced code blocks are skipped.
//! * A block is cut further at each bold label (`**Home:**`, `**Tested:**`, `**Why:**`,
//!   `**mpsc. Home:**`, `**Measured (one run):**`, ...). A label with "Tested" in it starts
//!   a *Tested* segment; any other label starts a *Home* segment.
//! * A backticked repo path (`crates/...`, `xtask/...`, `benches/...`, `.ci/...`,
//!   `docs/...`; globs such as `crates/*/src` are skipped) must exist. It becomes the owner of the identifiers that follow it in the
//!   segment, up to the next path. A path to a directory owns every file below it.
//! * A backticked bare file name (`stack.rs`, `deque/worker.rs`) names a file beside the
//!   last repo path: in the same directory, or under `src/` or the directory itself when
//!   that path is a crate or a directory. It must exist, and it becomes the owner.
//! * A backticked identifier (`Type::item`, `fn_name`, `CONST`, `Type`, optionally with an
//!   argument list such as `Signal::wait(deadline)`) with an owner is checked: the last
//!   path segment must occur as a whole word in one of the owner's files. In a *Tested*
//!   segment, a lower-case name without `::` is a test (or test helper) and must be
//!   declared as `fn <name>` in an owner file. Anything else in backticks (generics,
//!   macros, expressions, `unsafe impl`) and identifiers before the first path of a
//!   segment are not checked.
//! * Names from std, tokio and the like that the prose mentions next to a path without
//!   claiming they are in that file go into [`NOT_CLAIMED`], each with its reason. An
//!   entry that no longer excuses anything fails the test, so the list stays short.
//!
//! `SPANFLOW_CHECK_ROOT=<checkout>` checks another checkout instead of this one (to see the
//! check fail on a guide written before a refactoring).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Identifiers the guide mentions beside a path without claiming that file holds them:
/// (identifier as written, why).
const NOT_CLAIMED: &[(&str, &str)] = &[
    (
        "current_thread",
        "tokio's runtime flavour, in \"a `current_thread` runtime\", not a test name",
    ),
    (
        "watch",
        "the tokio channel the relay's servers stop through, not a test name",
    ),
    (
        "blocking_recv",
        "tokio's oneshot method the guide says the pipeline does not use (it has no timeout)",
    ),
    (
        "join_all",
        "suggested as a future use in `run_workers` (section 19), so not in that file",
    ),
];

/// Repo path prefixes: a backticked token starting with one of these is a path.
const PATH_PREFIXES: &[&str] = &["crates/", "xtask/", "benches/", ".ci/", "docs/"];

/// One backticked token or bold label, in order, with its 1-based line.
#[derive(Debug)]
enum Piece {
    Code(String, usize),
    Label(String),
}

/// The blocks of a markdown text, each as a list of pieces.
fn blocks(text: &str) -> Vec<Vec<Piece>> {
    let mut out = Vec::new();
    let mut current: Vec<(usize, &str)> = Vec::new();
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let starts_block = trimmed.is_empty()
            || trimmed.starts_with("* ")
            || trimmed.starts_with("- ")
            || trimmed.starts_with('#')
            || trimmed.starts_with('|')
            || numbered(trimmed);
        if starts_block && !current.is_empty() {
            out.push(pieces(&current));
            current.clear();
        }
        if !trimmed.is_empty() {
            current.push((n + 1, line));
        }
    }
    if !current.is_empty() {
        out.push(pieces(&current));
    }
    out
}

/// Whether `line` starts a numbered list item (`3. `).
fn numbered(line: &str) -> bool {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line[digits..].starts_with(". ")
}

/// The backticked tokens and bold labels of one block, in order.
fn pieces(lines: &[(usize, &str)]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut code: Option<(String, usize)> = None;
    for &(n, line) in lines {
        let mut rest = line;
        while !rest.is_empty() {
            if let Some((token, start)) = &mut code {
                match rest.find('`') {
                    Some(i) => {
                        token.push_str(&rest[..i]);
                        out.push(Piece::Code(std::mem::take(token), *start));
                        code = None;
                        rest = &rest[i + 1..];
                    }
                    None => {
                        token.push_str(rest);
                        token.push(' ');
                        rest = "";
                    }
                }
                continue;
            }
            let tick = rest.find('`');
            let bold = rest.find("**");
            match (tick, bold) {
                (Some(t), b) if b.is_none_or(|b| t < b) => {
                    code = Some((String::new(), n));
                    rest = &rest[t + 1..];
                }
                (_, Some(b)) => {
                    let after = &rest[b + 2..];
                    match after.find("**") {
                        Some(e) => {
                            let label = &after[..e];
                            if label.trim_end().ends_with(':') || label.contains("):") {
                                out.push(Piece::Label(label.to_string()));
                            }
                            rest = &after[e + 2..];
                        }
                        None => rest = "",
                    }
                }
                _ => rest = "",
            }
        }
    }
    out
}

/// A repo path: one of [`PATH_PREFIXES`], no space, and no glob (`crates/*/src` names a set
/// of files, which is not checked).
fn is_repo_path(token: &str) -> bool {
    PATH_PREFIXES.iter().any(|p| token.starts_with(p)) && !token.contains([' ', '*', '{', '?'])
}

/// A bare relative file name such as `stack.rs` or `deque/worker.rs`.
fn is_bare_file(token: &str) -> bool {
    token.ends_with(".rs")
        && !token.contains(' ')
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-'))
}

/// The identifier path of `token` (`Type::item` from `Type::item(arg)`), if it is one.
fn identifier(token: &str) -> Option<&str> {
    let ident = match token.find('(') {
        Some(i) if token.ends_with(')') => &token[..i],
        Some(_) => return None,
        None => token,
    };
    let ok = !ident.is_empty()
        && ident.split("::").all(|seg| {
            seg.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    ok.then_some(ident)
}

/// Whether `word` occurs in `text` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(is_ident)
            && !text[i + word.len()..].chars().next().is_some_and(is_ident)
    })
}

/// Whether `text` declares `fn name`.
fn has_fn(text: &str, name: &str) -> bool {
    text.match_indices("fn ").any(|(i, _)| {
        let rest = &text[i + 3..];
        rest.starts_with(name)
            && !rest[name.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && !text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn files_under(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p
            .extension()
            .is_some_and(|e| e == "rs" || e == "toml" || e == "md")
        {
            out.push(p);
        }
    }
}

/// The file a bare name like `stack.rs` stands for, next to the last repo path `base`.
fn resolve_bare(root: &Path, base: &str, bare: &str) -> Option<String> {
    let base_path = root.join(base);
    let dirs: Vec<PathBuf> = if base_path.is_dir() {
        vec![base_path.join("src"), base_path.clone()]
    } else {
        base_path
            .parent()
            .map(Path::to_path_buf)
            .into_iter()
            .collect()
    };
    dirs.into_iter().map(|d| d.join(bare)).find_map(|p| {
        p.is_file().then(|| {
            p.strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned()
        })
    })
}

/// Texts of the files below `rel`, read once.
struct Files<'r> {
    root: &'r Path,
    cache: BTreeMap<String, Vec<String>>,
}

impl Files<'_> {
    fn texts(&mut self, rel: &str) -> &[String] {
        let root = self.root;
        self.cache.entry(rel.to_string()).or_insert_with(|| {
            let mut files = Vec::new();
            files_under(&root.join(rel), &mut files);
            files
                .iter()
                .filter_map(|f| fs::read_to_string(f).ok())
                .collect()
        })
    }
}

/// What is wrong with the pointers of `doc` (a path under the root): one line per fault.
/// With `items` false only paths are checked.
fn check(root: &Path, doc: &str, items: bool, not_claimed_used: &mut [bool]) -> String {
    let text = fs::read_to_string(root.join(doc)).expect("a readable document");
    let mut files = Files {
        root,
        cache: BTreeMap::new(),
    };
    let mut report = String::new();
    for block in blocks(&text) {
        let mut tested = false;
        let mut owner: Option<String> = None;
        let mut last_path: Option<String> = None;
        for piece in block {
            let (token, line) = match piece {
                Piece::Label(label) => {
                    tested = label.contains("Tested");
                    owner = None;
                    continue;
                }
                Piece::Code(token, line) => (token.trim().to_string(), line),
            };
            if is_repo_path(&token) {
                let path = token.trim_end_matches('/').to_string();
                if root.join(&path).exists() {
                    owner = Some(path.clone());
                } else {
                    let _ = writeln!(report, "{doc}:{line}: `{token}` does not exist");
                    owner = None;
                }
                last_path = Some(path);
                continue;
            }
            if !items {
                continue;
            }
            if is_bare_file(&token) {
                let Some(base) = &last_path else { continue };
                match resolve_bare(root, base, &token) {
                    Some(path) => owner = Some(path),
                    None => {
                        let _ = writeln!(
                            report,
                            "{doc}:{line}: `{token}` is not a file beside `{base}`"
                        );
                        owner = None;
                    }
                }
                continue;
            }
            let (Some(ident), Some(path)) = (identifier(&token), &owner) else {
                continue;
            };
            let last = ident.rsplit("::").next().unwrap_or(ident);
            let as_test = tested
                && !ident.contains("::")
                && last.chars().next().is_some_and(|c| c.is_ascii_lowercase());
            let texts = files.texts(path);
            let found = if as_test {
                texts.iter().any(|t| has_fn(t, last))
            } else {
                texts.iter().any(|t| has_word(t, last))
            };
            if found {
                continue;
            }
            if let Some(i) = NOT_CLAIMED.iter().position(|(n, _)| *n == ident) {
                not_claimed_used[i] = true;
                continue;
            }
            let what = if as_test {
                format!("no `fn {last}`")
            } else {
                format!("no word `{last}`")
            };
            let _ = writeln!(
                report,
                "{doc}:{line}: `{token}` is attributed to `{path}`, which has {what}"
            );
        }
    }
    report
}

fn root() -> PathBuf {
    match std::env::var_os("SPANFLOW_CHECK_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace root")
            .to_path_buf(),
    }
}

#[test]
fn guide_and_architecture_point_at_code_that_exists() {
    let root = root();
    let mut used = vec![false; NOT_CLAIMED.len()];
    let mut report = check(&root, "docs/guide.md", true, &mut used);
    report.push_str(&check(&root, "docs/ARCHITECTURE.md", false, &mut used));
    for (used, (name, _)) in used.iter().zip(NOT_CLAIMED) {
        if !used {
            let _ = writeln!(report, "NOT_CLAIMED `{name}` excuses nothing; remove it");
        }
    }
    assert!(
        report.is_empty(),
        "a document points at code that is not there; name the file and item the pattern \
         lives in now (see the rule in xtask/tests/doc_homes.rs):\n{report}"
    );
}

/// The rule attributes identifiers to the path before them, and only within a segment.
#[test]
fn the_rule_ties_identifiers_to_the_path_before_them() {
    let text = "* **Home:** `crates/a.rs` — `Type::item` and `free_fn`, then\n  \
                `crates/b.rs` — `Other`. **Tested:** `crates/t.rs` — `a_test`.\n\
                \n```rust\nlet x = `not_code`;\n```\n\
                * `Unowned` before a path.\n";
    let seen: Vec<String> = blocks(text)
        .into_iter()
        .flatten()
        .map(|p| match p {
            Piece::Code(t, n) => format!("{n}:{t}"),
            Piece::Label(l) => format!("[{l}]"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "[Home:]",
            "1:crates/a.rs",
            "1:Type::item",
            "1:free_fn",
            "2:crates/b.rs",
            "2:Other",
            "[Tested:]",
            "2:crates/t.rs",
            "2:a_test",
            "7:Unowned",
        ]
    );
    assert_eq!(identifier("Signal::wait(deadline)"), Some("Signal::wait"));
    assert_eq!(identifier("RwLock<Arc<_>>"), None);
    assert_eq!(identifier("select!"), None);
    assert_eq!(identifier("unsafe impl"), None);
    assert!(has_word("fn wake_waiters(", "wake_waiters"));
    assert!(!has_word("fn wake_waiters_now(", "wake_waiters"));
    assert!(has_fn("#[test]\nfn a_test() {}", "a_test"));
    assert!(!has_fn("fn a_test_more() {}", "a_test"));
}
