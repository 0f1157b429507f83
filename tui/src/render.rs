//! Pure rendering: each panel is a function of (frame, area, what to show).
//! Nothing here reads the terminal or the clock, so `TestBackend`
//! snapshots are exact.

use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};
use ratatui::Frame;

use crate::keys::{self, Mode};
use crate::model::{PeerView, View};
use crate::state::{Panel, UiState};

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

fn hms(s: u64) -> String {
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn block<'a>(title: &'a str, focused: bool, theme: &Theme) -> Block<'a> {
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

/// The whole screen: panels, then the overlay of the current mode.
pub fn draw(frame: &mut Frame, ctx: &Ctx) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area, ctx);
        return;
    }
    let charts = if area.height >= 30 { 8 } else { 5 };
    let bottom = if area.height >= 30 { 12 } else { 7 };
    let [head, middle, peers_area, lower, foot] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Length(charts),
        Constraint::Min(5),
        Constraint::Length(bottom),
        Constraint::Length(1),
    ])
    .areas(area);
    let [rates_area, types_area] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(middle);
    let [events_area, right] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(lower);
    let [alerts_area, hurt_area] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    header(frame, head, ctx);
    rates(frame, rates_area, ctx);
    types(frame, types_area, ctx);
    peers(frame, peers_area, ctx);
    events(frame, events_area, ctx);
    alerts(frame, alerts_area, ctx);
    hurt(frame, hurt_area, ctx);
    footer(frame, foot, ctx);
    match ctx.state.mode {
        Mode::Help => help(frame, area, ctx),
        Mode::Detail => detail(frame, area, ctx),
        Mode::Message => message(frame, area, ctx),
        Mode::EditFilter => filter_error(frame, area, ctx),
        Mode::Normal => {}
    }
}

pub fn too_small(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let text = vec![
        Line::styled("icmpmon: terminal too small", ctx.theme.title),
        Line::from(format!(
            "need {MIN_WIDTH}x{MIN_HEIGHT}, have {}x{}",
            area.width, area.height
        )),
        Line::from("enlarge it, or press q to quit"),
    ];
    let [mid] = Layout::vertical([Constraint::Length(3)])
        .flex(Flex::Center)
        .areas(area);
    frame.render_widget(
        Paragraph::new(text)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        mid,
    );
}

/// Namespace, uptime, source; totals, rate, lost per stage (red when
/// anything was lost), PAUSED; echo totals and the filter. The most
/// urgent facts come first on each line, for narrow terminals.
pub fn header(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, t) = (ctx.view, ctx.theme);
    // The long backend description last: a narrow terminal cuts it, not
    // the namespace and uptime.
    let first = vec![
        Span::styled("netns ", t.dim),
        Span::raw(v.namespace.clone()),
        Span::styled("  up ", t.dim),
        Span::raw(hms(v.uptime_s)),
        Span::styled("  source ", t.dim),
        Span::raw(v.source.clone()),
    ];
    let mut second = Vec::new();
    if ctx.state.paused {
        second.push(Span::styled(" PAUSED ", t.paused));
        second.push(Span::raw("  "));
    }
    second.extend([
        Span::styled("messages ", t.dim),
        Span::raw(v.total.to_string()),
        Span::styled("  rate ", t.dim),
        Span::raw(format!("{}/s", rate_text(v.rate_per_s))),
        Span::styled("  lost ", t.dim),
    ]);
    for (i, (stage, n)) in v.lost.iter().enumerate() {
        if i > 0 {
            second.push(Span::raw(" "));
        }
        let style = if *n > 0 { t.bad } else { t.good };
        second.push(Span::styled(format!("{stage} {n}"), style));
    }
    let mut third = vec![
        Span::styled("echo ", t.dim),
        Span::raw(format!(
            "{} req {} answered {} lost {} pending",
            v.echo.requests, v.echo.answered, v.echo.lost, v.echo.pending
        )),
        Span::styled("  filter ", t.dim),
    ];
    if v.filter.is_empty() {
        third.push(Span::styled("none (/ to set)", t.dim));
    } else {
        third.push(Span::styled(v.filter.clone(), t.focus));
    }
    if let Some(why) = &v.ended {
        third.push(Span::raw("  "));
        third.push(Span::styled(format!("capture ended: {why}"), t.warn));
    }
    // Why no reply: what the kernel's ICMP counters and sysctls say.
    let mut fourth = vec![Span::styled("kernel ", t.dim)];
    if v.kernel.is_empty() {
        fourth.push(Span::styled("quiet", t.dim));
    }
    for (name, value) in &v.kernel {
        fourth.push(Span::raw(format!("{name} ")));
        fourth.push(Span::styled(format!("{value}  "), t.warn));
    }
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(first),
            Line::from(second),
            Line::from(third),
            Line::from(fourth),
        ])
        .block(block(" icmpmon ", false, t)),
        area,
    );
}

/// Messages per second over the last seconds.
pub fn rates(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let v = ctx.view;
    let peak = v.rate_history.iter().copied().max().unwrap_or(0);
    let title = format!(" rate {}/s, peak {peak}/s ", rate_text(v.rate_per_s));
    let inner_w = area.width.saturating_sub(2) as usize;
    let data: &[u64] = &v.rate_history[v.rate_history.len().saturating_sub(inner_w)..];
    frame.render_widget(
        Sparkline::default()
            .block(block(&title, false, ctx.theme))
            .data(data)
            .style(ctx.theme.good),
        area,
    );
}

/// Messages per type, as bars.
pub fn types(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let v = ctx.view;
    let rows = area.height.saturating_sub(2) as usize;
    let inner = area.width.saturating_sub(2) as usize;
    let max = v.types.iter().map(|c| c.count).max().unwrap_or(0).max(1);
    let name_w = v
        .types
        .iter()
        .take(rows)
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .min(22);
    let count_w = v
        .types
        .iter()
        .take(rows)
        .map(|c| c.count.to_string().len())
        .max()
        .unwrap_or(1);
    let bar_w = inner.saturating_sub(name_w + count_w + 2);
    let lines: Vec<Line> = v
        .types
        .iter()
        .take(rows)
        .map(|c| {
            let n = ((c.count as f64 / max as f64) * bar_w as f64).ceil() as usize;
            let name: String = c.name.chars().take(name_w).collect();
            Line::from(vec![
                Span::raw(format!("{name:<name_w$} ")),
                Span::styled("█".repeat(n.min(bar_w)), ctx.theme.focus),
                Span::raw(format!("{:>w$} ", "", w = bar_w - n.min(bar_w))),
                Span::raw(format!("{:>count_w$}", c.count)),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(block(" types ", false, ctx.theme)),
        area,
    );
}

/// `s` cut to `width` columns, with an ellipsis when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Widths of the peers table's fixed columns (req … last), and how the
/// rest is shared: the pair 3 parts, the flags 1.
const PEER_FIXED: [u16; 7] = [6, 6, 5, 6, 8, 8, 5];

/// The widths the pair and flags columns get in a table `inner` wide.
fn peer_text_widths(inner: u16) -> (usize, usize) {
    let fixed: u16 = PEER_FIXED.iter().sum::<u16>() + PEER_FIXED.len() as u16;
    let rest = usize::from(inner.saturating_sub(fixed));
    (rest * 3 / 4, rest - rest * 3 / 4)
}

fn peer_row<'a>(p: &'a PeerView, t: &Theme, widths: (usize, usize)) -> Row<'a> {
    let loss = p.loss_pct.map_or("-".into(), |l| format!("{l:.1}%"));
    let loss_style = match p.loss_pct {
        Some(l) if l > 0.0 => t.bad,
        _ => Style::new(),
    };
    let rtt = |o: Option<f64>| o.map_or("-".into(), duration_us);
    Row::new(vec![
        Cell::from(fit(&p.pair_label(), widths.0)),
        Cell::from(p.requests.to_string()),
        Cell::from(p.replies.to_string()),
        Cell::from(p.pending.to_string()),
        Cell::from(loss).style(loss_style),
        Cell::from(rtt(p.rtt_avg_us)),
        Cell::from(rtt(p.rtt_p95_us.map(|u| u as f64))),
        Cell::from(format!("{:.0}s", p.last_seen_s)),
        Cell::from(fit(&p.flags.join(","), widths.1)).style(t.warn),
    ])
}

/// Peer pairs, sorted by the state's key; only the visible rows are
/// built, so 100 k peers cost what a screenful does.
pub fn peers(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, s, t) = (ctx.view, ctx.state, ctx.theme);
    let title = format!(
        " peers {} (sort: {} {}, s) ",
        v.peers_total.max(v.peers.len()),
        s.sort.label(),
        s.sort.arrow()
    );
    let visible = area.height.saturating_sub(3) as usize;
    let offset = (s.selected_peer + 1).saturating_sub(visible.max(1));
    let rows: Vec<Row> = v
        .peers
        .iter()
        .skip(offset)
        .take(visible)
        .map(|p| peer_row(p, t, peer_text_widths(area.width.saturating_sub(2))))
        .collect();
    let pair_head = fit(
        "requester → responder",
        peer_text_widths(area.width.saturating_sub(2)).0,
    );
    let header = Row::new([
        pair_head.as_str(),
        "req",
        "rep",
        "pend",
        "loss",
        "rtt avg",
        "p95/128",
        "last",
        "flags",
    ])
    .style(t.title);
    let table = Table::new(
        rows,
        std::iter::once(Constraint::Fill(3))
            .chain(PEER_FIXED.map(Constraint::Length))
            .chain([Constraint::Fill(1)]),
    )
    .header(header)
    .block(block(&title, s.focus == Panel::Peers, t))
    .row_highlight_style(t.selected);
    let mut ts = TableState::default();
    if !v.peers.is_empty() {
        ts.select(Some(s.selected_peer - offset));
    }
    frame.render_stateful_widget(table, area, &mut ts);
}

/// The last lines of a list that grows at the bottom, `back` lines up
/// from its end.
fn tail<T>(items: &[T], rows: usize, back: usize) -> &[T] {
    let end = items.len().saturating_sub(back);
    &items[end.saturating_sub(rows)..end]
}

/// Recent messages, newest at the bottom; errors show the flow they quote.
pub fn events(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, s, t) = (ctx.view, ctx.state, ctx.theme);
    let rows = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = tail(&v.events, rows, s.events_back)
        .iter()
        .map(|e| {
            let style = if e.error { t.warn } else { Style::new() };
            Line::from(vec![
                Span::styled(format!("{} ", e.time), t.dim),
                Span::raw(format!("{:<3} ", e.direction)),
                Span::styled(e.kind.clone(), style),
                Span::raw(format!(" {} → {} ", e.src, e.dst)),
                // Whose flow first: the detail may be cut.
                Span::styled(
                    e.process
                        .as_ref()
                        .map_or(String::new(), |p| format!("{p} · ")),
                    style,
                ),
                Span::styled(e.detail.clone(), t.dim),
            ])
        })
        .collect();
    let title = if s.events_back > 0 {
        format!(" events ({} back, End: follow) ", s.events_back)
    } else {
        format!(" events {} ", v.events.len())
    };
    frame.render_widget(
        Paragraph::new(lines).block(block(&title, s.focus == Panel::Events, t)),
        area,
    );
}

/// Anomaly flags raised, newest at the bottom.
pub fn alerts(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, s, t) = (ctx.view, ctx.state, ctx.theme);
    let rows = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = tail(&v.alerts, rows, s.alerts_back)
        .iter()
        .map(|a| {
            Line::from(vec![
                Span::styled(format!("{} ", a.time), t.dim),
                Span::styled(a.flag.clone(), t.bad),
                Span::raw(format!(" {} ", a.subject)),
                Span::styled(format!("×{} {}", a.count, a.detail), t.dim),
            ])
        })
        .collect();
    let title = format!(" alerts {} ", v.alerts.len());
    let mut p = Paragraph::new(lines).block(block(&title, s.focus == Panel::Alerts, t));
    if v.alerts.is_empty() {
        p = Paragraph::new(Line::styled("no anomaly flags", t.dim)).block(block(
            &title,
            s.focus == Panel::Alerts,
            t,
        ));
    }
    frame.render_widget(p, area);
}

/// Who got hurt (errors per local process or unit), then the path MTUs.
pub fn hurt(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, t) = (ctx.view, ctx.theme);
    let mut lines: Vec<Line> = v
        .hurt
        .iter()
        .map(|h| {
            Line::from(vec![
                Span::styled(format!("{} ", h.process), t.title),
                Span::raw(if h.who.is_empty() {
                    String::new()
                } else {
                    format!("{} ", h.who)
                }),
                Span::styled(format!("×{} {} ", h.errors, h.kinds), t.warn),
                Span::styled(h.last.clone(), t.dim),
            ])
        })
        .collect();
    lines.extend(v.mtus.iter().map(|m| {
        Line::from(vec![
            Span::styled("mtu ", t.dim),
            Span::raw(format!("{} {} ", m.destination, m.mtu)),
            Span::styled(format!("from {} at {}", m.reporter, m.changed), t.dim),
        ])
    }));
    if lines.is_empty() {
        lines.push(Line::styled("no error hit a local process", t.dim));
    }
    let title = format!(
        " who got hurt {} · path MTU {} ",
        v.hurt.len(),
        v.mtus.len()
    );
    frame.render_widget(Paragraph::new(lines).block(block(&title, false, t)), area);
}

/// Key hints, or the filter being edited with its error.
pub fn footer(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (s, t) = (ctx.state, ctx.theme);
    let line = if s.mode == Mode::EditFilter {
        let mut spans = vec![
            Span::styled("filter: ", t.title),
            Span::raw(s.filter_input.clone()),
            Span::styled("▏", t.focus),
        ];
        match &s.filter_error {
            Some(e) => spans.push(Span::styled(
                format!("  {}", e.lines().next().unwrap_or("")),
                t.bad,
            )),
            None => spans.push(Span::styled("  Enter apply, Esc cancel", t.dim)),
        }
        Line::from(spans)
    } else {
        Line::styled(
            "q quit  p pause  s sort  / filter  Tab panel  ↑↓ move  Enter details  ? help",
            t.dim,
        )
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A text in a box over the screen, wrapped so that all of it shows.
fn text_box(frame: &mut Frame, r: Rect, title: &str, lines: Vec<Line>, t: &Theme) {
    clear_around(frame, r);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(title, true, t)),
        r,
    );
}

/// The whole of the selected event or alert (the panels cut long lines).
pub fn message(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, s, t) = (ctx.view, ctx.state, ctx.theme);
    let pick = |len: usize, back: usize| len.checked_sub(back + 1);
    let (title, lines) = match s.focus {
        Panel::Alerts => {
            let Some(a) = pick(v.alerts.len(), s.alerts_back).map(|i| &v.alerts[i]) else {
                return;
            };
            (
                " alert (Esc closes) ",
                vec![
                    Line::from(vec![
                        Span::styled(format!("{} ", a.time), t.dim),
                        Span::styled(a.flag.clone(), t.bad),
                        Span::raw(format!("  ×{}", a.count)),
                    ]),
                    Line::raw(format!("subject: {}", a.subject)),
                    Line::raw(a.detail.clone()),
                ],
            )
        }
        _ => {
            let Some(e) = pick(v.events.len(), s.events_back).map(|i| &v.events[i]) else {
                return;
            };
            (
                " event (Esc closes) ",
                vec![
                    Line::from(vec![
                        Span::styled(format!("{} ", e.time), t.dim),
                        Span::raw(format!("{} {}", e.direction, e.kind)),
                    ]),
                    Line::raw(format!("{} → {}", e.src, e.dst)),
                    Line::raw(e.detail.clone()),
                    Line::raw(
                        e.process
                            .as_ref()
                            .map_or(String::new(), |p| format!("process: {p}")),
                    ),
                ],
            )
        }
    };
    let r = popup(
        area,
        area.width.saturating_sub(8).min(90),
        area.height.saturating_sub(4).min(10),
    );
    text_box(frame, r, title, lines, t);
}

/// A filter's error in full, above the line being edited.
pub fn filter_error(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let Some(e) = &ctx.state.filter_error else {
        return;
    };
    let lines: Vec<Line> = e.lines().map(|l| Line::raw(l.to_string())).collect();
    let width = area.width.saturating_sub(4);
    // Wrapped lines plus the borders, at most half the screen.
    let rows: u16 = lines
        .iter()
        .map(|l| {
            (l.width() as u16)
                .div_ceil(width.saturating_sub(2).max(1))
                .max(1)
        })
        .sum::<u16>()
        + 2;
    let height = rows.min(area.height / 2);
    let r = Rect {
        x: area.x + 2,
        y: area.bottom().saturating_sub(height + 1),
        width,
        height,
    };
    text_box(frame, r, " filter error ", lines, ctx.theme);
}

/// Clears `r` and a one-cell margin around it (within the screen), so an
/// overlay's border never runs along a panel's border.
fn clear_around(frame: &mut Frame, r: Rect) {
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

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let [r] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(r);
    r
}

/// The key table of normal mode, and the filter language.
pub fn help(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let t = ctx.theme;
    let mut lines: Vec<Line> = keys::NORMAL
        .iter()
        .filter(|b| !b.keys.is_empty())
        .map(|b| {
            Line::from(vec![
                Span::styled(format!("{:<12}", b.keys), t.title),
                Span::raw(b.help),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "filter: host|src|dst ADDR[/LEN], type NAME|NUM,",
        t.dim,
    ));
    lines.push(Line::styled(
        "code N, family 4|6, dir in|out; and, or, not, ( )",
        t.dim,
    ));
    let r = popup(area, 64, lines.len() as u16 + 2);
    clear_around(frame, r);
    frame.render_widget(
        Paragraph::new(lines).block(block(" help (Esc closes) ", true, t)),
        r,
    );
}

/// The selected peer pair: counters and RTT history.
pub fn detail(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, s, t) = (ctx.view, ctx.state, ctx.theme);
    let Some(p) = v.peers.get(s.selected_peer) else {
        return;
    };
    let r = popup(
        area,
        area.width.saturating_sub(8).min(90),
        area.height.saturating_sub(4).min(18),
    );
    clear_around(frame, r);
    let title = format!(" {} (Esc closes) ", p.pair_label());
    let outer = block(&title, true, t);
    let inner = outer.inner(r);
    frame.render_widget(outer, r);
    let [text_area, chart_area] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(inner);
    let rtt = |o: Option<f64>| o.map_or("-".into(), duration_us);
    let lines = vec![
        Line::raw(format!(
            "requests {}  replies {}  lost {}  pending {}  loss {}",
            p.requests,
            p.replies,
            p.lost,
            p.pending,
            p.loss_pct.map_or("-".into(), |l| format!("{l:.1}%"))
        )),
        Line::raw(format!(
            "rtt over the run: min {}  avg {}  max {}  jitter {}",
            rtt(p.rtt_min_us.map(|u| u as f64)),
            rtt(p.rtt_avg_us),
            rtt(p.rtt_max_us.map(|u| u as f64)),
            rtt(p.jitter_us),
        )),
        Line::raw(format!(
            "p95 of the last {} replies {}  last seen {:.0}s ago",
            p.rtt_history.len(),
            rtt(p.rtt_p95_us.map(|u| u as f64)),
            p.last_seen_s
        )),
        Line::styled(
            if p.flags.is_empty() {
                "no flags".into()
            } else {
                format!("flags: {}", p.flags.join(", "))
            },
            t.warn,
        ),
    ];
    frame.render_widget(Paragraph::new(lines), text_area);
    let hist: Vec<u64> = p.rtt_history.iter().map(|&u| u64::from(u)).collect();
    let shown = &hist[hist.len().saturating_sub(chart_area.width as usize)..];
    let peak = shown.iter().copied().max().unwrap_or(0);
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::TOP).title(format!(
                " rtt, last {} replies (peak {}) ",
                shown.len(),
                duration_us(peak as f64)
            )))
            .data(shown)
            .style(t.good),
        chart_area,
    );
}

/// A rate for people: whole numbers from 100/s up, one decimal below.
pub fn rate_text(per_s: f64) -> String {
    if per_s >= 100.0 {
        format!("{per_s:.0}")
    } else {
        format!("{per_s:.1}")
    }
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    #[test]
    fn cut_text_ends_in_an_ellipsis() {
        assert_eq!(fit("10.0.0.1 → 10.0.0.2", 30), "10.0.0.1 → 10.0.0.2");
        assert_eq!(fit("10.0.0.1 → 10.0.0.2", 10), "10.0.0.1 …");
    }
}
