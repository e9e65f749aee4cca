//! **Architecture invariant:** only `crates/spanflow-otlp` reads protobuf. Every other
//! crate reads spans, events, links and attribute values through its views.
//!
//! This test scans the product code of every other crate (`crates/*/src/**/*.rs`, unit
//! test modules included) for the marks hand-written protobuf reading leaves: varint
//! loops, tag arithmetic, tag bytes in patterns, prost's field-level codec, the wire
//! vocabulary, and a span's raw protobuf body. It fails, naming file, line and rule, when
//! one comes back.
//!
//! Not protobuf reading, and matched by no rule: gRPC's 5-byte frame prefix (a flag byte
//! and a big-endian `u32` length, written and read in spanflow-export and the relay) is
//! framing around the message; whole messages encoded or decoded by prost's generated
//! code (`Message::encode_to_vec`, `ExportTraceServiceResponse::decode`, google.rpc
//! `Status`) never touch field numbers. A use a rule catches wrongly goes into [`ALLOWED`]
//! with its reason; an entry that no longer matches anything fails the test, so the list
//! stays short and true.
//!
//! `SPANFLOW_CHECK_ROOT=<checkout>` scans another checkout instead of this one (to see the
//! check fail on a tree from before the rule held).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Uses a rule catches that are not protobuf reading: (path under the root, rule, why).
const ALLOWED: &[(&str, &str, &str)] = &[];

/// One line of source as the rules see it.
struct Line<'a> {
    /// The line as written, comments included, lower-cased.
    text: String,
    /// The code before any `//` comment, without white space.
    code: String,
    /// The line as written, for the report.
    raw: &'a str,
}

impl<'a> Line<'a> {
    fn new(raw: &'a str) -> Self {
        Line {
            text: raw.to_lowercase(),
            code: code_of(raw)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect(),
            raw,
        }
    }
}

/// `line` up to its `//` comment, if any (a `//` inside a string literal ends the code
/// early, which can only hide a mark, never invent one).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '/' if prev == '/' && !in_string => return &line[..i - 1],
            _ => {}
        }
        prev = c;
    }
    line
}

struct Rule {
    name: &'static str,
    why: &'static str,
    hit: fn(&Line<'_>) -> bool,
}

const RULES: &[Rule] = &[
    Rule {
        name: "varint-loop",
        why: "masks the 7 value bits or tests the continuation bit of a varint byte",
        hit: |l| {
            let code = l.code.to_lowercase();
            ["&0x7f", "&0x80", "<0x80", ">=0x80", "&128", "<128"]
                .iter()
                .any(|m| contains_token(&code, m))
        },
    },
    Rule {
        name: "tag-arithmetic",
        why: "splits a tag into field number and wire type (`>> 3`, `& 7`) or builds one (`<< 3`)",
        hit: |l| {
            [">>3", "<<3", "&7", "&0x7", "&0b111"]
                .iter()
                .any(|m| contains_token(&l.code, m))
        },
    },
    Rule {
        name: "tag-byte",
        why: "a protobuf tag byte (field 1-15, wire type 0, 1, 2 or 5) in a pattern, comparison or byte array",
        hit: |l| {
            let in_pattern = ["=>", "[", "==", "!=", "matches!"]
                .iter()
                .any(|m| l.code.contains(m));
            in_pattern && hex_bytes(&l.code).any(is_tag_byte)
        },
    },
    Rule {
        name: "field-match",
        why: "matches a field by number (or a field-number constant) and wire type",
        hit: |l| field_match(&l.code),
    },
    Rule {
        name: "prost-field-codec",
        why: "prost's field-level encoding helpers read and write single fields",
        hit: |l| {
            [
                "prost::encoding",
                "encoding::",
                "decode_varint",
                "encode_varint",
                "decode_key",
                "encode_key",
                "skip_field",
                "DecodeContext",
                "WireType",
            ]
            .iter()
            .any(|m| l.code.contains(m))
        },
    },
    Rule {
        name: "wire-vocabulary",
        why: "talks about the wire format (varints, wire types, field numbers, tags), in code or comment",
        hit: |l| {
            [
                "varint",
                "wire type",
                "wire_type",
                "wiretype",
                "field number",
                "field_number",
                "tag byte",
            ]
            .iter()
            .any(|m| l.text.contains(m))
        },
    },
    Rule {
        name: "raw-span-bytes",
        why: "`SpanView::raw` hands out a span's protobuf body; read it through the views",
        hit: |l| l.code.contains(".raw()"),
    },
];

/// Whether `code` holds `mark` as an operator and operand of its own: not followed by
/// another digit, letter or `_` (so `<<3` does not match `<<30`, nor `&7` match `&7f`),
/// nor preceded by the operator's first character again (so `&7` does not match `&&7`).
fn contains_token(code: &str, mark: &str) -> bool {
    let first = mark.chars().next();
    code.match_indices(mark).any(|(i, _)| {
        let after = code[i + mark.len()..].chars().next();
        let before = code[..i].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && before != first
    })
}

/// Whether `code` (without white space) holds a tuple pattern like `(2, Val::Len(v))` or
/// `(SPAN_EVENTS, Value::Len(b))`: a number or an upper-case constant, then a `Len` variant.
fn field_match(code: &str) -> bool {
    code.match_indices("Len(").any(|(i, _)| {
        let before = &code[..i];
        let path =
            before.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let Some(head) = path.strip_suffix(',') else {
            return false;
        };
        let number = head
            .rsplit('(')
            .next()
            .filter(|_| head.contains('('))
            .unwrap_or("");
        !number.is_empty()
            && (number.chars().all(|c| c.is_ascii_digit())
                || number
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    })
}

/// The values of the two-digit hex literals (`0x0a`, `0x12u8`) in `code`.
fn hex_bytes(code: &str) -> impl Iterator<Item = u8> + '_ {
    code.match_indices("0x").filter_map(|(i, _)| {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return None;
        }
        let digits: String = code[i + 2..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        (digits.len() == 2).then(|| u8::from_str_radix(&digits, 16).ok())?
    })
}

/// A one-byte tag: field 1 to 15 with wire type varint, fixed64, length-delimited or
/// fixed32.
fn is_tag_byte(b: u8) -> bool {
    (0x08..0x80).contains(&b) && matches!(b & 7, 0 | 1 | 2 | 5)
}

/// What the rules find in one file's text: (line number, rule).
fn scan(text: &str) -> Vec<(usize, &'static Rule, &str)> {
    let mut found = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = Line::new(raw);
        for rule in RULES {
            if (rule.hit)(&line) {
                found.push((n + 1, rule, line.raw));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
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
fn only_spanflow_otlp_reads_protobuf() {
    let root = root();
    let mut files = Vec::new();
    let crates = fs::read_dir(root.join("crates")).expect("a crates/ directory");
    for krate in crates.flatten() {
        if krate.file_name() != "spanflow-otlp" {
            rust_files(&krate.path().join("src"), &mut files);
        }
    }
    files.sort();
    assert!(files.len() > 20, "found only {} files", files.len());

    let mut report = String::new();
    let mut allowed_used = vec![false; ALLOWED.len()];
    for file in &files {
        let text = fs::read_to_string(file).expect("readable source");
        let path = file.strip_prefix(&root).unwrap_or(file);
        for (line, rule, raw) in scan(&text) {
            let allowed = ALLOWED
                .iter()
                .position(|(p, r, _)| path == Path::new(p) && *r == rule.name);
            match allowed {
                Some(i) => allowed_used[i] = true,
                None => {
                    let _ = writeln!(
                        report,
                        "{}:{line}: {} ({})\n    {}",
                        path.display(),
                        rule.name,
                        rule.why,
                        raw.trim()
                    );
                }
            }
        }
    }
    for (used, (path, rule, _)) in allowed_used.iter().zip(ALLOWED) {
        if !used {
            let _ = writeln!(
                report,
                "{path}: allowed `{rule}` matches nothing; remove it"
            );
        }
    }
    assert!(
        report.is_empty(),
        "protobuf is read outside crates/spanflow-otlp; use its views (SpanView, EventView, \
         LinkView, Attributes::stored, SpanView::head) or add the missing view there:\n{report}"
    );
}

/// The rules catch what the old field scanners of spanflow-process did, line by line.
#[test]
fn rules_catch_hand_written_readers() {
    let caught = |line: &str| -> Vec<&str> {
        scan(line)
            .into_iter()
            .map(|(_, rule, _)| rule.name)
            .collect()
    };
    let cases = [
        ("v |= u64::from(b & 0x7f) << shift;", "varint-loop"),
        ("value |= u64::from(b & 0x7F) << (7 * i);", "varint-loop"),
        ("if b & 0x80 == 0 {", "varint-loop"),
        ("if b < 0x80 {", "varint-loop"),
        ("let number = key >> 3;", "tag-arithmetic"),
        ("match key & 7 {", "tag-arithmetic"),
        ("if tag & 7 == 4 {", "tag-arithmetic"),
        ("let key = (number << 3) | 2;", "tag-arithmetic"),
        ("[0x0a, len, rest @ ..] => {}", "tag-byte"),
        ("0x2a | 0x4a => {}", "tag-byte"),
        ("if tag == 0x12 {", "tag-byte"),
        ("let body = [0x08, 0x96, 0x01, 0x12, 0x02];", "tag-byte"),
        (
            "(SPAN_EVENTS, Val::Len(event)) => self.scan(event),",
            "field-match",
        ),
        ("if let (2, Val::Len(v)) = (field, value) {", "field-match"),
        ("let (1, Val::Len(pair)) = (f, pair) else {", "field-match"),
        (
            "prost::encoding::decode_varint(&mut buf)?;",
            "prost-field-codec",
        ),
        (
            "use prost::encoding::{WireType, encode_key};",
            "prost-field-codec",
        ),
        (
            "/// Field numbers of the OTLP trace schema read by the event scan.",
            "wire-vocabulary",
        ),
        ("fn skip(&mut self, wire_type: u64) {}", "wire-vocabulary"),
        (
            "fn varint(bytes: &[u8]) -> Option<u64> {",
            "wire-vocabulary",
        ),
        (
            "let mut fields = Fields::new(span.raw());",
            "raw-span-bytes",
        ),
    ];
    for (line, rule) in cases {
        assert!(
            caught(line).contains(&rule),
            "{rule} misses {line:?}: {:?}",
            caught(line)
        );
    }
}

/// Code the product has today that is not protobuf reading passes every rule.
#[test]
fn rules_pass_framing_masks_and_whole_messages() {
    let fine = [
        "let mut p = [0u8; 5];",
        "p[1..].copy_from_slice(&len.to_be_bytes());",
        "let declared = u64::from(u32::from_be_bytes([a, b, c, d]));",
        "\"gib\" => 1 << 30,",
        "chain.meta & 0xff,",
        "(u64::from_be_bytes(low) >> 1) < bound",
        "let status = RpcStatus::decode(details).ok()?;",
        "Bytes::from(status.encode_to_vec())",
        "let url = \"http://host/v1//traces\"; // & 0x7f is only in this comment",
        "if flags && 7 > limit {",
        "let mask = x & 70;",
        "Some(Len(n)) => n,",
        "let (a, b) = (first, Len(2));",
    ];
    for line in fine {
        let hits: Vec<_> = scan(line)
            .into_iter()
            .map(|(_, rule, _)| rule.name)
            .collect();
        assert!(hits.is_empty(), "{line:?} caught by {hits:?}");
    }
}
