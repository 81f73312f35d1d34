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
use ratatui::Terminal;

use crate::app::Input;
use crate::model::Model;

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

mod render;
use render::render;

#[cfg(test)]
mod tests {
    use super::render::input_window;
    use super::*;
    use unicode_width::UnicodeWidthStr;

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
