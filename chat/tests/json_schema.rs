//! `chat/JSON.md` documents every `--json` event the app can emit, with every field,
//! and the `ready` event carries the documented schema version.

mod common;

use std::collections::{BTreeMap, BTreeSet};

const DOC: &str = include_str!("../JSON.md");

/// Every Rust source file of the app (all of `src/`, so a module added or split later is
/// scanned too).
fn sources() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src/")
            .map(|e| e.expect("a dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&p).expect("read a source file"));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut out,
    );
    out
}

/// Event kind -> field names, from the doc's `### \`kind\`` headings and the first
/// column of the table under them.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Vec<String> = Vec::new();
    for line in DOC.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            current = h
                .split(',')
                .map(|k| k.trim().trim_matches('`').to_string())
                .collect();
            for k in &current {
                out.entry(k.clone()).or_default();
            }
        } else if line.starts_with("## ") {
            current.clear();
        } else if let Some(row) = line.strip_prefix("| `") {
            let field = row.split('`').next().unwrap().to_string();
            for k in &current {
                out.get_mut(k).unwrap().insert(field.clone());
            }
        }
    }
    out
}

/// Event kind -> top-level fields, from every `json!({"event": "kind", …})` in the
/// sources.
fn emitted() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for src in &sources() {
        let mut rest = src.as_str();
        while let Some(at) = rest.find("json!(") {
            let body = &rest[at + "json!(".len()..];
            // The macro's argument: up to the matching parenthesis.
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in body.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let body = &body[..end];
            rest = &rest[at + 6..];
            let compact: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let Some(e) = compact.find("\"event\": \"") else {
                continue;
            };
            let kind: String = compact[e + 10..]
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            let mut fields = BTreeSet::new();
            for part in compact.split('"').collect::<Vec<_>>().windows(2) {
                if part[1].trim_start().starts_with(':')
                    && part[0].chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && !part[0].is_empty()
                {
                    fields.insert(part[0].to_string());
                }
            }
            fields.remove("event");
            out.entry(kind).or_default().extend(fields);
        }
    }
    out
}

#[test]
fn every_event_and_field_the_app_emits_is_documented() {
    let doc = documented();
    let src = emitted();
    assert!(src.len() >= 20, "the source scan found too little: {src:?}");
    for (kind, fields) in &src {
        let Some(documented) = doc.get(kind) else {
            panic!("event {kind:?} is not documented in JSON.md");
        };
        let missing: Vec<_> = fields.difference(documented).collect();
        assert!(
            missing.is_empty(),
            "event {kind:?}: fields {missing:?} not in JSON.md"
        );
    }
    for kind in doc.keys() {
        assert!(
            src.contains_key(kind),
            "JSON.md documents {kind:?}, which the app never emits"
        );
    }
    for f in ["switched", "message", "peer_up"] {
        assert!(doc.contains_key(f));
    }
    for f in ["verified", "late", "index", "restored"] {
        assert!(doc["message"].contains(f), "message.{f} undocumented");
    }
    assert!(doc["peer_up"].contains("legacy"));
}

#[test]
fn ready_carries_the_documented_schema_version() {
    let version: u64 = DOC
        .split("Schema version: **")
        .nth(1)
        .and_then(|r| r.split("**").next())
        .and_then(|v| v.parse().ok())
        .expect("JSON.md states its schema version");
    let tmp = tempfile::tempdir().unwrap();
    let chat = common::Chat::start("alice", &tmp.path().join("a"), &[]);
    let mut chat = chat;
    let tail = chat.tail();
    let ready = tail
        .lines()
        .find(|l| l.contains("\"event\":\"ready\""))
        .expect("ready line");
    let v: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(v["schema"], version, "{ready}");
    chat.send("/quit");
    assert!(chat.wait_exit().success());
}
