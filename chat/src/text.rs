//! Text for people: what is printed is made safe for a terminal, times and round-trip
//! times are formatted.

use std::time::Duration;

use serde_json::Value;

/// Whether `c` can steer a terminal or reorder what it shows: C0 and C1 controls, DEL,
/// and the bidi embeddings, overrides and isolates ("Trojan Source").
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` mentions `name`: a word `@name` or `@name#abcd` (the display form),
/// case-insensitive, trailing punctuation ignored.
pub fn mentions(text: &str, name: &str, display: &str) -> bool {
    !name.is_empty()
        && text.split_whitespace().any(|w| {
            let Some(w) = w.strip_prefix('@') else {
                return false;
            };
            let w = w.trim_end_matches(|c: char| c.is_ascii_punctuation() && c != '#');
            w.eq_ignore_ascii_case(name) || w.eq_ignore_ascii_case(display)
        })
}

/// Text made safe to print to a terminal: a newline shows as `⏎`, a tab as a space, a C0
/// control as its Unicode control picture (ESC as `␛`, NUL as `␀`), DEL as `␡`, and C1
/// controls and bidi overrides as `�`. Only what is shown changes; stored text stays exact.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '⏎',
            '\t' => ' ',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('\u{FFFD}'),
            '\u{7F}' => '␡',
            c if is_unsafe(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// A JSON line with the characters JSON leaves raw but a terminal may act on (DEL, C1
/// controls, bidi overrides) written as `\uXXXX` escapes: the same JSON value, safe to
/// print. (JSON itself escapes C0 controls.)
pub fn json_line(value: &Value) -> String {
    let line = value.to_string();
    if !line.chars().any(is_unsafe) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if is_unsafe(c) {
            // Outside strings JSON has only ASCII punctuation, so `c` is inside one.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `HH:MM` today, `MM-DD HH:MM` otherwise, local time.
pub fn clock(ms: u64) -> String {
    use chrono::{Local, TimeZone};
    let Some(t) = Local.timestamp_millis_opt(ms as i64).single() else {
        return "--:--".into();
    };
    if t.date_naive() == Local::now().date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%m-%d %H:%M").to_string()
    }
}

/// `12 ms`, or `-`.
pub fn fmt_rtt(rtt: Option<Duration>) -> String {
    match rtt {
        Some(r) if r < Duration::from_millis(10) => format!("{:.1}ms", r.as_secs_f64() * 1000.0),
        Some(r) => format!("{}ms", r.as_millis()),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clean_shows_controls_and_keeps_the_rest() {
        assert_eq!(clean("a\x1b[2Jb\0c"), "a␛[2Jb␀c");
        assert_eq!(
            clean("x\u{7f}\u{9b}\u{202e}y\nz\t."),
            "x␡\u{FFFD}\u{FFFD}y⏎z ."
        );
        assert_eq!(clean("héllo 👋"), "héllo 👋");
        assert!(!clean("\x07\x1b\u{85}").chars().any(is_unsafe));
    }

    #[test]
    fn json_lines_escape_what_json_leaves_raw() {
        let v = json!({"text": "a\u{9b}31mb\u{202e}c\x1b"});
        let line = json_line(&v);
        assert!(!line.chars().any(is_unsafe), "{line}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_mention_is_an_at_word_naming_us() {
        let m = |t| mentions(t, "alice", "alice#Ab12");
        assert!(m("hey @alice"));
        assert!(m("@Alice: look"));
        assert!(m("ping @alice#ab12!"));
        assert!(m("(cc @alice)"));
        assert!(!m("alice without at"));
        assert!(!m("@alicex"));
        assert!(!m("mail@alice.example"));
        assert!(!mentions("@ anyone", "", ""));
    }
}
