//! The terminal UI (ratatui + crossterm): message pane, room list, peer list, input
//! line, status bar, help overlay.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TLine, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::{Frame, Terminal};
use unicode_width::UnicodeWidthStr;

use crate::app::Input;
use crate::commands::HELP;
use crate::layout::{author_color, clip, entry_rows};
use crate::model::{Model, ViewId};
use crate::text::fmt_rtt;

type Term = Terminal<CrosstermBackend<Stdout>>;

/// Puts the terminal back: raw mode off, main screen, cursor shown, mouse released.
pub fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal before a panic message is printed.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

/// The terminal, set up for the UI; restored when dropped.
pub struct Tui {
    term: Term,
    stop: Arc<AtomicBool>,
    input: InputLine,
    /// Rows scrolled up from the bottom of the message pane.
    scroll: usize,
    /// The last draw had fewer rows than the scroll asked for.
    wants_older: bool,
    /// Mouse capture on (wheel scrolls; off lets the terminal select text).
    mouse: bool,
    /// Width of the message pane at the last draw.
    pane_width: u16,
    /// Height of the message pane at the last draw.
    pane_height: u16,
}

impl Tui {
    /// Enters raw mode and the alternate screen, and starts reading terminal events
    /// into `tx`.
    pub fn start(tx: UnboundedSender<Input>) -> io::Result<Tui> {
        install_panic_hook();
        enable_raw_mode()?;
        let mut out = io::stdout();
        if let Err(e) = execute!(
            out,
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        ) {
            restore_terminal();
            return Err(e);
        }
        let term = match Terminal::new(CrosstermBackend::new(out)) {
            Ok(t) => t,
            Err(e) => {
                restore_terminal();
                return Err(e);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        thread::Builder::new()
            .name("echo-chat-term".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match event::poll(Duration::from_millis(100)) {
                        Ok(true) => match event::read() {
                            Ok(ev) => {
                                if tx.unbounded_send(Input::Term(ev)).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "terminal read failed");
                                let _ = tx.unbounded_send(Input::Signal);
                                break;
                            }
                        },
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "terminal poll failed");
                            let _ = tx.unbounded_send(Input::Signal);
                            break;
                        }
                    }
                }
            })?;
        Ok(Tui {
            term,
            stop,
            input: InputLine::default(),
            scroll: 0,
            wants_older: false,
            mouse: true,
            pane_width: 80,
            pane_height: 20,
        })
    }

    /// Handles a terminal event; returns a line to run, if Enter was pressed.
    pub fn on_event(&mut self, ev: TermEvent, model: &mut Model, help: &mut bool) -> Action {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.on_key(k, model, help),
            TermEvent::Paste(text) => {
                self.input
                    .insert_str(&text.replace("\r\n", "\n").replace('\r', "\n"));
                Action::None
            }
            TermEvent::Mouse(m) => {
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll_by(3),
                    MouseEventKind::ScrollDown => self.scroll_by(-3),
                    _ => {}
                }
                Action::None
            }
            TermEvent::Resize(..) => {
                let _ = self.term.autoresize();
                Action::None
            }
            _ => Action::None,
        }
    }

    fn scroll_by(&mut self, rows: isize) {
        self.scroll = (self.scroll as isize + rows).max(0) as usize;
    }

    fn on_key(&mut self, k: KeyEvent, model: &mut Model, help: &mut bool) -> Action {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        if *help {
            // Any of these closes the overlay; other keys are ignored while it is open.
            if matches!(
                k.code,
                KeyCode::Esc | KeyCode::F(1) | KeyCode::Enter | KeyCode::Char('q')
            ) {
                *help = false;
            }
            if !(ctrl && k.code == KeyCode::Char('c')) {
                return Action::None;
            }
        }
        let page = (self.pane_height as isize / 2).max(1);
        match k.code {
            KeyCode::Char('c') if ctrl => return Action::Quit,
            KeyCode::Char('d') if ctrl && self.input.is_empty() => return Action::Quit,
            KeyCode::Char('l') if ctrl => {
                let _ = self.term.clear();
            }
            KeyCode::F(1) => *help = true,
            KeyCode::F(2) => {
                self.mouse = !self.mouse;
                let _ = if self.mouse {
                    execute!(io::stdout(), EnableMouseCapture)
                } else {
                    execute!(io::stdout(), DisableMouseCapture)
                };
                model.info(if self.mouse {
                    "Mouse on: the wheel scrolls (F2 lets the terminal select text)."
                } else {
                    "Mouse off: select text with the mouse; F2 turns the wheel back on."
                });
            }
            KeyCode::Enter => {
                let line = self.input.take();
                self.scroll = 0;
                if !line.trim().is_empty() {
                    return Action::Line(line);
                }
            }
            KeyCode::Tab => {
                model.cycle(1);
                self.scroll = 0;
            }
            KeyCode::BackTab => {
                model.cycle(-1);
                self.scroll = 0;
            }
            KeyCode::Down if alt => {
                model.cycle(1);
                self.scroll = 0;
            }
            KeyCode::Up if alt => {
                model.cycle(-1);
                self.scroll = 0;
            }
            KeyCode::Char('n') if ctrl => {
                model.cycle(1);
                self.scroll = 0;
            }
            KeyCode::Char('p') if ctrl => {
                model.cycle(-1);
                self.scroll = 0;
            }
            KeyCode::PageUp => self.scroll_by(page),
            KeyCode::PageDown => self.scroll_by(-page),
            KeyCode::End if ctrl => self.scroll = 0,
            KeyCode::Home if ctrl => self.scroll = usize::MAX / 2,
            KeyCode::Up => self.input.history_prev(),
            KeyCode::Down => self.input.history_next(),
            KeyCode::Left if ctrl || alt => self.input.word_left(),
            KeyCode::Right if ctrl || alt => self.input.word_right(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.cursor = 0,
            KeyCode::Char('a') if ctrl => self.input.cursor = 0,
            KeyCode::End => self.input.cursor = self.input.buf.len(),
            KeyCode::Char('e') if ctrl => self.input.cursor = self.input.buf.len(),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Char('u') if ctrl => self.input.kill_left(),
            KeyCode::Char('k') if ctrl => self.input.kill_right(),
            KeyCode::Char('w') if ctrl => self.input.kill_word(),
            KeyCode::Char('h') if ctrl => self.input.backspace(),
            KeyCode::Char(c) if !ctrl => self.input.insert(c),
            _ => {}
        }
        Action::None
    }

    /// Whether the last draw could not scroll as far back as asked (the view ran out of
    /// lines): the app may load older ones. Clears the flag.
    pub fn take_wants_older(&mut self) -> bool {
        std::mem::take(&mut self.wants_older)
    }

    /// Whether the view shows the newest lines (not scrolled back).
    pub fn at_bottom(&self) -> bool {
        self.scroll == 0
    }

    /// Redraws the screen.
    pub fn draw(&mut self, model: &Model, help: bool) {
        let input = &self.input;
        let mut scroll = self.scroll;
        let asked = self.scroll;
        let mut pane = (self.pane_width, self.pane_height);
        let mouse = self.mouse;
        let r = self.term.draw(|f| {
            pane = render(f, model, input, &mut scroll, help, mouse);
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "draw failed");
        }
        self.scroll = scroll;
        self.wants_older = asked > scroll;
        (self.pane_width, self.pane_height) = pane;
    }

    /// Rows a new entry in the current view takes, to keep a scrolled view still.
    pub fn keep_position(&mut self, added_rows: usize) {
        if self.scroll > 0 {
            self.scroll += added_rows;
        }
    }

    /// Puts `text` on the clipboard of the terminal (and of the machine the terminal runs
    /// on, over SSH too) with OSC 52; tmux keeps it as a paste buffer.
    pub fn copy(&mut self, text: &str) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        let mut out = io::stdout();
        let _ = write!(out, "\x1b]52;c;{b64}\x07").and_then(|()| out.flush());
    }

    /// Rings the terminal bell.
    pub fn bell(&mut self) {
        let mut out = io::stdout();
        let _ = out.write_all(b"\x07").and_then(|()| out.flush());
    }

    /// Width of the message pane.
    pub fn pane_width(&self) -> u16 {
        self.pane_width
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        restore_terminal();
    }
}

/// What a terminal event asks for.
pub enum Action {
    /// Nothing for the app.
    None,
    /// Run this line.
    Line(String),
    /// Quit.
    Quit,
}

/// The input line: a char buffer with a cursor and a history.
#[derive(Debug, Default)]
pub struct InputLine {
    buf: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    hist_pos: Option<usize>,
    draft: String,
}

impl InputLine {
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn text(&self) -> String {
        self.buf.iter().collect()
    }
    fn set(&mut self, s: &str) {
        self.buf = s.chars().collect();
        self.cursor = self.buf.len();
    }
    fn insert(&mut self, c: char) {
        self.buf.insert(self.cursor, c);
        self.cursor += 1;
    }
    fn insert_str(&mut self, s: &str) {
        for c in s.chars() {
            if c == '\n' || !c.is_control() {
                self.insert(c);
            }
        }
    }
    fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }
    fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.buf.len());
    }
    fn word_left(&mut self) {
        while self.cursor > 0 && self.buf[self.cursor - 1].is_whitespace() {
            self.cursor -= 1;
        }
        while self.cursor > 0 && !self.buf[self.cursor - 1].is_whitespace() {
            self.cursor -= 1;
        }
    }
    fn word_right(&mut self) {
        let n = self.buf.len();
        while self.cursor < n && self.buf[self.cursor].is_whitespace() {
            self.cursor += 1;
        }
        while self.cursor < n && !self.buf[self.cursor].is_whitespace() {
            self.cursor += 1;
        }
    }
    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.buf.remove(self.cursor);
        }
    }
    fn delete(&mut self) {
        if self.cursor < self.buf.len() {
            self.buf.remove(self.cursor);
        }
    }
    fn kill_left(&mut self) {
        self.buf.drain(..self.cursor);
        self.cursor = 0;
    }
    fn kill_right(&mut self) {
        self.buf.truncate(self.cursor);
    }
    fn kill_word(&mut self) {
        let end = self.cursor;
        self.word_left();
        self.buf.drain(self.cursor..end);
    }
    fn take(&mut self) -> String {
        let line = self.text();
        self.buf.clear();
        self.cursor = 0;
        self.hist_pos = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > 500 {
                self.history.remove(0);
            }
        }
        line
    }
    fn history_prev(&mut self) {
        if self.history.is_empty() {
            return;
        }
        let pos = match self.hist_pos {
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(0) => 0,
            Some(p) => p - 1,
        };
        self.hist_pos = Some(pos);
        let h = self.history[pos].clone();
        self.set(&h);
    }
    fn history_next(&mut self) {
        match self.hist_pos {
            None => {}
            Some(p) if p + 1 < self.history.len() => {
                self.hist_pos = Some(p + 1);
                let h = self.history[p + 1].clone();
                self.set(&h);
            }
            Some(_) => {
                self.hist_pos = None;
                let d = std::mem::take(&mut self.draft);
                self.set(&d);
            }
        }
    }
}

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
fn render(
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
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(3),
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
    let inner = block.inner(rows[2]);
    f.render_widget(block, rows[2]);
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
        rows[3],
    );

    if help {
        render_help(f, area);
    }
    (w as u16, h as u16)
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
fn input_window(input: &InputLine, width: usize) -> (String, usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_window_keeps_cursor_visible() {
        let mut i = InputLine::default();
        i.insert_str("0123456789abcdef");
        let (s, x) = input_window(&i, 8);
        assert_eq!(x, 7);
        assert!(s.ends_with("ef") || s.width() <= 8);
        i.cursor = 0;
        let (s, x) = input_window(&i, 8);
        assert_eq!((s.as_str(), x), ("01234567", 0));
        // History.
        let mut i = InputLine::default();
        i.insert_str("one");
        i.take();
        i.insert_str("two");
        i.take();
        i.insert_str("dra");
        i.history_prev();
        assert_eq!(i.text(), "two");
        i.history_prev();
        assert_eq!(i.text(), "one");
        i.history_next();
        i.history_next();
        assert_eq!(i.text(), "dra");
    }
}
