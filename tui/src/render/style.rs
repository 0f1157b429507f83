//! What every panel shares: the minimum size, the theme, the context a
//! panel reads, and small text and layout helpers.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::model::View;
use crate::state::UiState;

/// The smallest terminal the dashboard draws in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// Styles; `Theme::plain()` when NO_COLOR is set.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub title: Style,
    pub dim: Style,
    pub bad: Style,
    pub warn: Style,
    pub good: Style,
    pub focus: Style,
    pub selected: Style,
    pub paused: Style,
}

impl Theme {
    pub fn color() -> Self {
        Self {
            title: Style::new().add_modifier(Modifier::BOLD),
            dim: Style::new().fg(Color::DarkGray),
            bad: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            warn: Style::new().fg(Color::Yellow),
            good: Style::new().fg(Color::Green),
            focus: Style::new().fg(Color::Cyan),
            selected: Style::new().add_modifier(Modifier::REVERSED),
            paused: Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        }
    }

    /// No colours; emphasis by weight and reversal only.
    pub fn plain() -> Self {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        Self {
            title: bold,
            dim: Style::new(),
            bad: bold,
            warn: Style::new(),
            good: Style::new(),
            focus: bold,
            selected: Style::new().add_modifier(Modifier::REVERSED),
            paused: Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        }
    }

    /// `Theme::plain()` if the NO_COLOR convention asks for it.
    pub fn from_env() -> Self {
        match std::env::var_os("NO_COLOR") {
            Some(v) if !v.is_empty() => Self::plain(),
            _ => Self::color(),
        }
    }
}

/// What every panel reads.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub view: &'a View,
    pub state: &'a UiState,
    pub theme: &'a Theme,
}

/// Microseconds as a short duration: `87µs`, `1.25ms`, `2.50s`.
pub fn duration_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

pub(super) fn hms(s: u64) -> String {
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub(super) fn block<'a>(title: &'a str, focused: bool, theme: &Theme) -> Block<'a> {
    let b = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, theme.title));
    if focused {
        b.border_style(theme.focus)
            .border_set(symbols::border::THICK)
    } else {
        b
    }
}

/// `s` cut to `width` columns, with an ellipsis when cut.
pub(super) fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A text in a box over the screen, wrapped so that all of it shows.
pub(super) fn text_box(frame: &mut Frame, r: Rect, title: &str, lines: Vec<Line>, t: &Theme) {
    clear_around(frame, r);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(title, true, t)),
        r,
    );
}

/// Clears `r` and a one-cell margin around it (within the screen), so an
/// overlay's border never runs along a panel's border.
pub(super) fn clear_around(frame: &mut Frame, r: Rect) {
    let screen = frame.area();
    let x = r.x.saturating_sub(1).max(screen.x);
    let y = r.y.saturating_sub(1).max(screen.y);
    let right = (r.right() + 1).min(screen.right());
    let bottom = (r.bottom() + 1).min(screen.bottom());
    frame.render_widget(
        Clear,
        Rect {
            x,
            y,
            width: right - x,
            height: bottom - y,
        },
    );
}

pub(super) fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let [r] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(r);
    r
}

/// A rate for people: whole numbers from 100/s up, one decimal below.
pub fn rate_text(per_s: f64) -> String {
    if per_s >= 100.0 {
        format!("{per_s:.0}")
    } else {
        format!("{per_s:.1}")
    }
}

/// The one scroll model of every list panel: which of `len` items show in
/// `rows` lines so that item `cursor` is visible, the page full whenever
/// there are enough items (the cursor at the bottom once it passes a page).
pub(super) fn window(len: usize, rows: usize, cursor: usize) -> std::ops::Range<usize> {
    let start = (cursor + 1).saturating_sub(rows.max(1)).min(len);
    start..len.min(start + rows)
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    #[test]
    fn a_window_keeps_its_cursor_and_fills_the_page() {
        // Following: the last page.
        assert_eq!(window(50, 10, 49), 40..50);
        // Back at the oldest of 3 (Home): all 3 shown, not 1.
        assert_eq!(window(3, 10, 0), 0..3);
        // Mid-list: the cursor on the last line shown.
        assert_eq!(window(50, 10, 20), 11..21);
        assert_eq!(window(50, 10, 5), 0..10);
        assert_eq!(window(0, 10, 0), 0..0);
        assert_eq!(window(5, 0, 2), 2..2);
    }

    #[test]
    fn cut_text_ends_in_an_ellipsis() {
        assert_eq!(fit("10.0.0.1 → 10.0.0.2", 30), "10.0.0.1 → 10.0.0.2");
        assert_eq!(fit("10.0.0.1 → 10.0.0.2", 10), "10.0.0.1 …");
    }
}
