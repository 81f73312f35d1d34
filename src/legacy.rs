//! The echo-go line protocol `/echo-go/chat/1.0.0`: `name|text\n`.
//!
//! Incoming lines are split at the first `|`: the part before is the claimed name, the
//! rest (which may contain more `|`) is the text. A line without `|` is all text, from an
//! unnamed sender. A trailing `\r` is dropped; invalid UTF-8 is replaced (U+FFFD).
//! Outgoing, a `|` in a name becomes `/` (echo-go would split there) and each line of a
//! multi-line text becomes its own `name|line\n`, since a newline ends a message.

/// Why a legacy stream is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A line grew past the limit without a newline.
    #[error("line longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
}

/// Incremental splitter of newline-terminated lines.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max: usize,
}

/// One parsed legacy line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Claimed name (may be empty).
    pub name: String,
    /// Text.
    pub text: String,
}

impl LineDecoder {
    /// A decoder rejecting lines longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            max,
        }
    }

    /// Feeds bytes; calls `f` for each complete line. Stops at the first error.
    pub fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(Line)) -> Result<(), LineError> {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.buf.len() + i > self.max {
                return Err(LineError::TooLong { max: self.max });
            }
            self.buf.extend_from_slice(&data[..i]);
            data = &data[i + 1..];
            let line = std::mem::take(&mut self.buf);
            if let Some(l) = parse_line(&line) {
                f(l);
            }
        }
        if self.buf.len() + data.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }
}

/// Parses one line (without its `\n`); `None` for a blank line.
pub fn parse_line(line: &[u8]) -> Option<Line> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s = String::from_utf8_lossy(line);
    let (name, text) = match s.split_once('|') {
        Some((n, t)) => (clean(n), t.to_string()),
        None => (String::new(), s.to_string()),
    };
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect();
    if text.trim().is_empty() {
        return None;
    }
    Some(Line { name, text })
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// Encodes a message for an echo-go peer.
pub fn encode(name: &str, text: &str, out: &mut Vec<u8>) {
    let name: String = name
        .chars()
        .map(|c| if c == '|' { '/' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'|');
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Line> {
        let mut d = LineDecoder::new(100);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, |l| out.push(l)).unwrap();
        }
        out
    }

    #[test]
    fn splits_at_first_bar_any_chunking() {
        let got = lines(&[b"ali", b"ce|a|b\r\nbob|", b"hi\n", b"\n", b"no bar\n"]);
        assert_eq!(
            got,
            vec![
                Line {
                    name: "alice".into(),
                    text: "a|b".into()
                },
                Line {
                    name: "bob".into(),
                    text: "hi".into()
                },
                Line {
                    name: "".into(),
                    text: "no bar".into()
                },
            ]
        );
    }

    #[test]
    fn long_line_rejected() {
        let mut d = LineDecoder::new(4);
        assert!(d.feed(b"abcdef", |_| {}).is_err());
        let mut d = LineDecoder::new(4);
        assert!(d.feed(b"abcdef\n", |_| {}).is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let got = lines(&[b"x|\xff\xfe ok\n"]);
        assert_eq!(got[0].text, "\u{fffd}\u{fffd} ok");
    }

    #[test]
    fn encode_escapes_bar_in_name_and_splits_lines() {
        let mut out = Vec::new();
        encode("a|b", "one|1\ntwo\n", &mut out);
        assert_eq!(out, b"a/b|one|1\na/b|two\n");
    }
}
