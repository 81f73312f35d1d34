//! Text layout for the terminal UI: colours per author, wrapping styled text into rows,
//! an entry's rows, clipping names to a width. Control characters and bidi overrides
//! never reach the terminal: they show as `�`.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TLine, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::model::{Entry, Line};
use crate::text::{clock, is_unsafe};

const PALETTE: [Color; 10] = [
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
    Color::Rgb(255, 165, 0),
    Color::Rgb(180, 140, 255),
    Color::Rgb(120, 220, 160),
    Color::Rgb(255, 120, 180),
];

/// A colour per author, stable across runs.
pub fn author_color(peer: &echo_proto::PeerId) -> Color {
    let h = peer.to_bytes().iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    });
    PALETTE[(h % PALETTE.len() as u64) as usize]
}

/// A grapheme that is safe to put in a cell: control characters made visible.
fn safe(g: &str) -> &str {
    match g {
        "\t" => " ",
        g if g.chars().any(is_unsafe) => "\u{FFFD}",
        g => g,
    }
}

/// Width of a grapheme as drawn.
fn gwidth(g: &str) -> usize {
    safe(g).width()
}

/// Wraps styled text into rows of at most `width` columns, breaking at spaces where it
/// can (a word longer than a row is broken where the row ends) and at `\n` always;
/// continuation rows start with `indent` spaces.
pub fn wrap(spans: &[(String, Style)], width: usize, indent: usize) -> Vec<TLine<'static>> {
    let width = width.max(1);
    let indent = indent.min(width / 2);
    let mut rows: Vec<Vec<(String, Style)>> = vec![Vec::new()];
    let mut col = 0usize;
    let new_row = |rows: &mut Vec<Vec<(String, Style)>>, col: &mut usize| {
        rows.push(vec![(" ".repeat(indent), Style::default())]);
        *col = indent;
    };
    for (text, style) in spans {
        // Tokens: a newline, a space, or a word (graphemes up to the next space).
        let gs: Vec<&str> = text.graphemes(true).collect();
        let mut i = 0;
        while i < gs.len() {
            let g = gs[i];
            if g == "\n" || g == "\r\n" {
                new_row(&mut rows, &mut col);
                i += 1;
                continue;
            }
            if g == " " {
                if col + 1 > width {
                    new_row(&mut rows, &mut col); // the space is the break
                } else {
                    rows.last_mut().expect("a row").push((" ".into(), *style));
                    col += 1;
                }
                i += 1;
                continue;
            }
            let end = (i..gs.len())
                .find(|&k| matches!(gs[k], " " | "\n" | "\r\n"))
                .unwrap_or(gs.len());
            let word_w: usize = gs[i..end].iter().map(|g| gwidth(g)).sum();
            if col + word_w > width && col > indent && word_w <= width - indent {
                new_row(&mut rows, &mut col);
            }
            for g in &gs[i..end] {
                let g = safe(g);
                let w = g.width();
                if col + w > width && col > indent {
                    new_row(&mut rows, &mut col);
                }
                rows.last_mut()
                    .expect("a row")
                    .push((g.to_string(), *style));
                col += w;
            }
            i = end;
        }
    }
    rows.into_iter()
        .map(|cells| {
            // Merge cells of one style into spans.
            let mut spans: Vec<Span<'static>> = Vec::new();
            let mut cur = String::new();
            let mut cur_style = Style::default();
            for (g, st) in cells {
                if st != cur_style && !cur.is_empty() {
                    spans.push(Span::styled(std::mem::take(&mut cur), cur_style));
                }
                cur_style = st;
                cur.push_str(&g);
            }
            if !cur.is_empty() {
                spans.push(Span::styled(cur, cur_style));
            }
            TLine::from(spans)
        })
        .collect()
}

/// The rows of one entry at `width`.
pub fn entry_rows(e: &Entry, width: usize) -> Vec<TLine<'static>> {
    let dim = Style::default().fg(Color::DarkGray);
    let time = format!("{} ", clock(e.time_ms));
    let tw = time.width();
    match &e.line {
        Line::Message {
            author,
            name,
            text,
            own,
            history,
            mention,
            receipt,
        } => {
            let who = echo_proto::display_name(name, author);
            let mut st = Style::default()
                .fg(author_color(author))
                .add_modifier(Modifier::BOLD);
            if *own {
                st = st.add_modifier(Modifier::UNDERLINED);
            }
            let text_style = if *history {
                Style::default().fg(Color::Gray)
            } else {
                Style::default()
            };
            let mut spans = vec![
                (time, dim),
                (who.clone(), st),
                (": ".to_string(), Style::default()),
            ];
            match crate::files::parse_offer(text) {
                Some(offer) => spans.push((
                    crate::files::describe(&offer),
                    text_style
                        .fg(Color::LightGreen)
                        .add_modifier(Modifier::BOLD),
                )),
                None => spans.extend(mention_spans(text, text_style, *mention)),
            }
            if let Some((_, status)) = receipt {
                spans.push(dm_mark(*status));
            }
            wrap(&spans, width, tw + 2)
        }
        Line::Info(t) => wrap(
            &[
                (time, dim),
                ("-- ".into(), dim),
                (t.clone(), Style::default().fg(Color::Cyan)),
            ],
            width,
            tw + 3,
        ),
        // Alone on its rows, no time and no indent: a selection gives the address back.
        Line::Address(t) => wrap(
            &[(t.clone(), Style::default().fg(Color::LightCyan))],
            width,
            0,
        ),
        Line::Error(t) => wrap(
            &[
                (time, dim),
                ("!! ".into(), Style::default().fg(Color::Red)),
                (
                    t.clone(),
                    Style::default()
                        .fg(Color::LightRed)
                        .add_modifier(Modifier::BOLD),
                ),
            ],
            width,
            tw + 3,
        ),
    }
}

/// How far an own direct message got: `…` pending (carried by peers until the
/// recipient connects), `✓` delivered, `✓✓` read.
pub fn dm_mark(status: echo_proto::DmStatus) -> (String, Style) {
    match status {
        echo_proto::DmStatus::Pending => (" …".into(), Style::default().fg(Color::DarkGray)),
        echo_proto::DmStatus::Delivered => (" ✓".into(), Style::default().fg(Color::Green)),
        echo_proto::DmStatus::Read => (
            " ✓✓".into(),
            Style::default()
                .fg(Color::Green)
                .add_modifier(Modifier::BOLD),
        ),
    }
}

/// A message's text with each `@word` highlighted; with `strong` (it mentions us) the
/// mentions are drawn reversed, to stand out.
fn mention_spans(text: &str, base: Style, strong: bool) -> Vec<(String, Style)> {
    let at = if strong {
        Style::default()
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD)
    } else {
        base.fg(Color::Yellow)
    };
    let mut out: Vec<(String, Style)> = Vec::new();
    let mut push = |s: &str, st: Style| match out.last_mut() {
        Some((t, last)) if *last == st => t.push_str(s),
        _ => out.push((s.to_string(), st)),
    };
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            push(" ", base);
        }
        let mention = word.len() > 1 && word.starts_with('@');
        push(word, if mention { at } else { base });
    }
    out
}

/// Cuts `s` to `width` columns (with `…` when cut); control characters and bidi
/// overrides show as `�`.
pub fn clip(s: &str, width: usize) -> String {
    let unsafe_chars = s.chars().any(is_unsafe);
    if s.width() <= width && !unsafe_chars {
        return s.to_string();
    }
    let total: usize = s.graphemes(true).map(gwidth).sum();
    let room = if total <= width {
        width
    } else {
        width.saturating_sub(1)
    };
    let mut out = String::new();
    let mut w = 0;
    for g in s.graphemes(true) {
        let gw = gwidth(g);
        if w + gw > room {
            break;
        }
        out.push_str(safe(g));
        w += gw;
    }
    if total > width {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &TLine) -> String {
        l.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn names_and_titles_never_carry_control_characters() {
        assert_eq!(clip("ev\x1b[2Jil", 20), "ev\u{FFFD}[2Jil");
        assert_eq!(clip("a\u{202e}bcdef", 4), "a\u{FFFD}b…");
        assert_eq!(clip("plain", 5), "plain");
        assert_eq!(clip("plainer", 5), "plai…");
        let spans = vec![("x\x1b]0;t\x07y".to_string(), Style::default())];
        let rows: Vec<String> = wrap(&spans, 40, 0).iter().map(text).collect();
        assert!(!rows.concat().chars().any(is_unsafe), "{rows:?}");
    }

    #[test]
    fn wraps_at_spaces_with_indent() {
        let spans = vec![("hello wide world again".to_string(), Style::default())];
        let rows: Vec<String> = wrap(&spans, 12, 2).iter().map(text).collect();
        assert_eq!(rows, ["hello wide ", "  world ", "  again"]);
        // A word longer than a row breaks where the row ends.
        let spans = vec![(
            "-- /ip4/1.2.3.4/tcp/1/p2p/abcdef".to_string(),
            Style::default(),
        )];
        let rows: Vec<String> = wrap(&spans, 16, 2).iter().map(text).collect();
        assert_eq!(rows, ["-- /ip4/1.2.3.4/", "  tcp/1/p2p/abcd", "  ef"]);
    }

    #[test]
    fn wide_characters_never_overflow() {
        let s = "日本語のテキストと絵文字😀😀😀が混ざった長い行";
        for width in 3..20 {
            let rows = wrap(&[(s.to_string(), Style::default())], width, 1);
            for r in &rows {
                assert!(text(r).width() <= width, "{width}: {:?}", text(r));
            }
            let joined: String = rows
                .iter()
                .map(|r| text(r).trim_start().to_string())
                .collect();
            assert_eq!(joined, s);
        }
    }

    #[test]
    fn control_characters_are_neutralised() {
        let rows = wrap(&[("a\u{1b}[2Jb\nc".to_string(), Style::default())], 40, 0);
        let t: Vec<String> = rows.iter().map(text).collect();
        assert_eq!(t, ["a\u{FFFD}[2Jb", "c"]);
    }

    #[test]
    fn an_address_gets_rows_of_its_own_that_join_back_into_it() {
        let addr = "/ip4/192.0.2.7/tcp/8080/p2p/12D3KooWANcYBurt87aymFWLp9j2Q67956JQAA5TLCvmuj";
        let e = Entry {
            key: (None, 0),
            time_ms: 0,
            line: Line::Address(addr.into()),
        };
        // Wide enough: one row, exactly the address (no time, no indent).
        let rows: Vec<String> = entry_rows(&e, 100).iter().map(text).collect();
        assert_eq!(rows, [addr]);
        // Too narrow: cut where the row ends, with nothing added, so the rows join back.
        let rows: Vec<String> = entry_rows(&e, 30).iter().map(text).collect();
        assert!(rows.len() > 1 && rows.iter().all(|r| r.width() <= 30));
        assert_eq!(rows.concat(), addr);
    }

    #[test]
    fn mentions_are_highlighted_and_ours_stand_out() {
        let base = Style::default();
        let spans = mention_spans("hi @bob and @alice, see", base, true);
        let texts: Vec<&str> = spans.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts.concat(), "hi @bob and @alice, see");
        let styled: Vec<&str> = spans
            .iter()
            .filter(|(_, st)| *st != base)
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(styled, ["@bob", "@alice,"]);
        assert!(spans.iter().any(|(_, st)| st.bg == Some(Color::Yellow)));
        // Not about us: highlighted, not reversed. A lone "@" is not a mention.
        let spans = mention_spans("@bob @ x", base, false);
        assert!(spans.iter().all(|(_, st)| st.bg.is_none()));
        assert_eq!(spans.iter().filter(|(_, st)| *st != base).count(), 1);
    }
}
