//! Drawing the terminal UI: the room list, the message pane, the peer list, the input
//! box and the status bar, and the help overlay.

use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TLine, Span};
use ratatui::widgets::{Block, Borders, Clear, LineGauge, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::InputLine;
use crate::commands::HELP;
use crate::layout::{author_color, clip, entry_rows};
use crate::model::{Model, ViewId};
use crate::text::fmt_rtt;

fn view_title(model: &Model, id: &ViewId) -> String {
    match id {
        ViewId::Room(r) => format!("#{r}"),
        ViewId::Direct(p) => format!("@{}", model.display(p)),
    }
}

/// The input box's title: where a line typed now goes.
fn input_title(model: &Model) -> String {
    match model.current_id() {
        Some(id @ ViewId::Room(_)) => {
            format!(" to {} (everyone in the room) ", view_title(model, id))
        }
        Some(id @ ViewId::Direct(_)) => {
            format!(" to {} only (direct message) ", view_title(model, id))
        }
        None => " in no room: /join ROOM, or /msg PEER TEXT ".to_string(),
    }
}

/// Draws everything; returns the message pane's size.
pub(super) fn render(
    f: &mut Frame,
    model: &Model,
    input: &InputLine,
    scroll: &mut usize,
    help: bool,
    mouse: bool,
) -> (u16, u16) {
    let area = f.area();
    if area.width < 20 || area.height < 6 {
        f.render_widget(Paragraph::new("window too small"), area);
        return (area.width, 1);
    }
    // One row per running download (at most 3, and only while the window is tall).
    let gauges = model
        .files
        .active()
        .count()
        .min(3)
        .min((area.height as usize).saturating_sub(10)) as u16;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(gauges),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .split(area);
    let side = area.width >= 70;
    let cols = if side {
        Layout::default()
            .direction(Direction::Horizontal)
            .constraints([
                Constraint::Length(22),
                Constraint::Min(20),
                Constraint::Length(28),
            ])
            .split(rows[1])
    } else {
        Layout::default()
            .direction(Direction::Horizontal)
            .constraints([
                Constraint::Length(0),
                Constraint::Min(10),
                Constraint::Length(0),
            ])
            .split(rows[1])
    };

    // Title bar.
    let online = model.peers.values().filter(|p| p.online).count();
    let title = format!(
        " echo-chat · {} · {} peer{} connected{}",
        model.me_display(),
        online,
        if online == 1 { "" } else { "s" },
        model
            .mdns
            .as_ref()
            .map(|m| format!(" · {m}"))
            .unwrap_or_default()
    );
    f.render_widget(
        Paragraph::new(clip(&title, area.width as usize))
            .style(Style::default().bg(Color::Blue).fg(Color::White)),
        rows[0],
    );

    if side {
        render_rooms(f, model, cols[0]);
        render_peers(f, model, cols[2]);
    }

    // Messages.
    let view = model.current_view();
    let block_title = match model.current_id() {
        Some(id @ ViewId::Room(_)) => format!(
            " {} · {} other{} here ",
            view_title(model, id),
            view.members.len(),
            if view.members.len() == 1 { "" } else { "s" }
        ),
        Some(id) => format!(" {} (direct) ", view_title(model, id)),
        None => " no room: /join <room> ".to_string(),
    };
    let block = Block::default().borders(Borders::ALL).title(block_title);
    let inner = block.inner(cols[1]);
    f.render_widget(block, cols[1]);
    let (w, h) = (inner.width as usize, inner.height as usize);
    let mut lines: Vec<TLine<'static>> = Vec::new();
    let want = h + *scroll;
    for e in view.entries.iter().rev() {
        let mut r = entry_rows(e, w);
        r.reverse();
        lines.extend(r);
        if lines.len() >= want {
            break;
        }
    }
    let max_scroll = lines.len().saturating_sub(h);
    *scroll = (*scroll).min(max_scroll);
    let visible: Vec<TLine<'static>> = lines
        .into_iter()
        .skip(*scroll)
        .take(h)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    // Bottom-align: pad above when the pane is not full.
    let pad = h.saturating_sub(visible.len());
    let mut shown: Vec<TLine<'static>> = vec![TLine::default(); pad];
    shown.extend(visible);
    f.render_widget(Paragraph::new(shown), inner);
    if *scroll > 0 && inner.height > 0 {
        let note = format!(" ↓ {} more rows · Ctrl-End ", *scroll);
        let nw = note.width() as u16;
        let at = Rect {
            x: inner.x + inner.width.saturating_sub(nw),
            y: inner.y + inner.height - 1,
            width: nw.min(inner.width),
            height: 1,
        };
        f.render_widget(
            Paragraph::new(note).style(Style::default().bg(Color::Yellow).fg(Color::Black)),
            at,
        );
    }

    // Input line.
    let target = input_title(model);
    let block = Block::default().borders(Borders::ALL).title(target);
    render_transfers(f, model, rows[2]);
    let inner = block.inner(rows[3]);
    f.render_widget(block, rows[3]);
    let (text, cursor_x) = input_window(input, inner.width as usize);
    f.render_widget(Paragraph::new(text), inner);
    if !help {
        f.set_cursor_position(Position {
            x: inner.x + cursor_x as u16,
            y: inner.y,
        });
    }

    // Status bar: our address first, so it can be copied.
    let addr = crate::app::best_address(&model.addrs).unwrap_or_else(|| "not listening".into());
    let more = model.addrs.len().saturating_sub(1);
    let status = format!(
        " {addr}{} │ F1 help · Tab next room · PgUp/PgDn scroll{}",
        if more > 0 {
            format!(" (+{more}, /addrs)")
        } else {
            String::new()
        },
        if mouse {
            " · F2 select text"
        } else {
            " · F2 mouse"
        }
    );
    f.render_widget(
        Paragraph::new(clip(&status, area.width as usize))
            .style(Style::default().bg(Color::DarkGray).fg(Color::White)),
        rows[4],
    );

    if help {
        render_help(f, area);
    }
    (w as u16, h as u16)
}

/// A progress bar per running download: name, percentage, bytes, rate, ETA, sources.
fn render_transfers(f: &mut Frame, model: &Model, area: Rect) {
    for (i, t) in model.files.active().take(area.height as usize).enumerate() {
        let row = Rect {
            y: area.y + i as u16,
            height: 1,
            ..area
        };
        let label = format!(
            "↓ {} {}",
            clip(&crate::text::clean(&t.offer.name), 24),
            t.status()
        );
        f.render_widget(
            LineGauge::default()
                .filled_style(Style::default().fg(Color::Green))
                .unfilled_style(Style::default().fg(Color::DarkGray))
                .label(clip(&label, (area.width as usize).saturating_sub(12)))
                .ratio(t.ratio()),
            row,
        );
    }
}

fn render_rooms(f: &mut Frame, model: &Model, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" Rooms ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width as usize;
    let mut lines = Vec::new();
    let mut shown_direct = false;
    for (i, v) in model.views.iter().enumerate() {
        if matches!(v.id, ViewId::Direct(_)) && !shown_direct {
            shown_direct = true;
            lines.push(TLine::styled(
                "Direct",
                Style::default().fg(Color::DarkGray),
            ));
        }
        let name = view_title(model, &v.id);
        let unread = if v.unread > 0 {
            format!(" {}", v.unread.min(999))
        } else {
            String::new()
        };
        let room_w = w.saturating_sub(unread.width() + 2);
        let mut st = Style::default();
        if i == model.current {
            st = st
                .bg(Color::Blue)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD);
        } else if v.unread > 0 {
            st = st.add_modifier(Modifier::BOLD);
        }
        lines.push(TLine::from(vec![
            Span::styled(
                format!(
                    "{} {}",
                    if i == model.current { "›" } else { " " },
                    clip(&name, room_w)
                ),
                st,
            ),
            Span::styled(unread, Style::default().fg(Color::Black).bg(Color::Yellow)),
        ]));
    }
    if model.views.is_empty() {
        lines.push(TLine::styled(
            "(none: /join)",
            Style::default().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_peers(f: &mut Frame, model: &Model, area: Rect) {
    let online = model.peers.values().filter(|p| p.online).count();
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" Peers ({online}) "));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width as usize;
    let mut peers: Vec<_> = model.peers.iter().collect();
    peers.sort_by_key(|(_, p)| (!p.online, p.name.to_lowercase()));
    let mut lines = Vec::new();
    for (id, p) in peers {
        let disp = echo_proto::display_name(&p.name, id);
        let (dot, st) = if p.online {
            ("●", Style::default().fg(Color::Green))
        } else {
            ("○", Style::default().fg(Color::DarkGray))
        };
        let right = if p.online {
            if p.legacy {
                "legacy".to_string()
            } else if p.relayed {
                format!("relay {}", fmt_rtt(p.rtt))
            } else {
                fmt_rtt(p.rtt)
            }
        } else {
            "offline".into()
        };
        let name_w = w.saturating_sub(right.width() + 3);
        let name = clip(&disp, name_w);
        let gap = w.saturating_sub(2 + name.width() + right.width());
        lines.push(TLine::from(vec![
            Span::styled(format!("{dot} "), st),
            Span::styled(
                name,
                if p.online {
                    Style::default().fg(author_color(id))
                } else {
                    Style::default().fg(Color::DarkGray)
                },
            ),
            Span::raw(" ".repeat(gap)),
            Span::styled(right, Style::default().fg(Color::DarkGray)),
        ]));
    }
    if lines.is_empty() {
        lines.push(TLine::styled(
            "nobody yet",
            Style::default().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_help(f: &mut Frame, area: Rect) {
    let mut lines: Vec<TLine> = vec![TLine::styled(
        "Commands",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (c, h) in HELP {
        lines.push(TLine::from(vec![
            Span::styled(format!("  {c:<22}"), Style::default().fg(Color::Yellow)),
            Span::raw(*h),
        ]));
    }
    lines.push(TLine::default());
    lines.push(TLine::styled(
        "Keys",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    for (k, h) in [
        ("Enter", "send / run the line"),
        ("Up / Down", "input history"),
        (
            "Tab / Shift-Tab",
            "next / previous room (also Ctrl-N / Ctrl-P)",
        ),
        ("PgUp / PgDn, wheel", "scroll; Ctrl-End back to the newest"),
        (
            "Ctrl-A/E/U/K/W",
            "line start / end, delete to start / end / word",
        ),
        ("F2", "mouse on/off (off: select text to copy)"),
        ("Ctrl-C, /quit", "quit"),
    ] {
        lines.push(TLine::from(vec![
            Span::styled(format!("  {k:<22}"), Style::default().fg(Color::Yellow)),
            Span::raw(h),
        ]));
    }
    lines.push(TLine::default());
    lines.push(TLine::styled(
        "  Esc closes this help",
        Style::default().fg(Color::DarkGray),
    ));
    let h = (lines.len() as u16 + 2).min(area.height);
    let w = 76.min(area.width);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Help · Esc closes "),
        ),
        rect,
    );
}

/// The part of the input line that fits `width` columns with the cursor visible, and
/// the cursor's column in it.
pub(super) fn input_window(input: &InputLine, width: usize) -> (String, usize) {
    let width = width.max(2);
    let shown: Vec<String> = input
        .buf
        .iter()
        .map(|c| match c {
            '\n' => "⏎".to_string(),
            c if c.is_control() => "\u{FFFD}".to_string(),
            c => c.to_string(),
        })
        .collect();
    let widths: Vec<usize> = shown.iter().map(|s| s.width()).collect();
    // Start so the cursor (plus one cell) fits.
    let mut start = 0;
    let mut before: usize = widths[..input.cursor].iter().sum();
    while before + 1 > width && start < input.cursor {
        before -= widths[start];
        start += 1;
    }
    let mut out = String::new();
    let mut w = 0;
    for (s, sw) in shown[start..].iter().zip(&widths[start..]) {
        if w + sw > width {
            break;
        }
        out.push_str(s);
        w += sw;
    }
    (out, before)
}
