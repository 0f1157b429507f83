//! The panels: header, rates, types, peers, events, alerts, who got
//! hurt, footer.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::style::{block, duration_us, fit, hms, rate_text, window, Ctx, Theme};
use crate::keys::Mode;
use crate::model::PeerView;
use crate::state::Panel;

/// Namespace, uptime, source; totals, rate, lost per stage (red when
/// anything was lost), PAUSED; echo totals and the filter. The most
/// urgent facts come first on each line, for narrow terminals.
pub fn header(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, t) = (ctx.view, ctx.theme);
    // The long backend description last: a narrow terminal cuts it, not
    // the namespace and uptime.
    let mut first = Vec::new();
    if !v.namespace.is_empty() {
        first.extend([
            Span::styled("netns ", t.dim),
            Span::raw(v.namespace.clone()),
            Span::raw("  "),
        ]);
    }
    first.extend([
        Span::styled("up ", t.dim),
        Span::raw(hms(v.uptime_s)),
        Span::styled("  source ", t.dim),
        Span::raw(v.source.clone()),
    ]);
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
    // Why no reply: what the kernel's ICMP counters and sysctls say (of
    // this host: not for a capture file).
    let mut fourth = Vec::new();
    if !v.namespace.is_empty() {
        fourth.push(Span::styled("kernel ", t.dim));
        if v.kernel.is_empty() {
            fourth.push(Span::styled("quiet  ", t.dim));
        }
    }
    for (name, value) in &v.kernel {
        fourth.push(Span::raw(format!("{name} ")));
        fourth.push(Span::styled(format!("{value}  "), t.warn));
    }
    if let Some(c) = &v.caveat {
        fourth.push(Span::styled(c.clone(), t.warn));
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
    let shown = window(v.peers.len(), visible, s.selected_peer);
    let offset = shown.start;
    let rows: Vec<Row> = v.peers[shown]
        .iter()
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

/// The lines of a list that grows at the bottom whose cursor is `back`
/// lines up from its end (0: following the newest), with the cursor's
/// place among them when scrolled back (to highlight it).
fn scrolled<T>(items: &[T], rows: usize, back: usize) -> (&[T], Option<usize>) {
    let cursor = items.len().saturating_sub(back + 1);
    let shown = window(items.len(), rows, cursor);
    let mark = (back > 0 && !items.is_empty()).then(|| cursor - shown.start);
    (&items[shown], mark)
}

/// Highlights line `mark`, if any.
fn marked<'a>(lines: Vec<Line<'a>>, mark: Option<usize>, t: &Theme) -> Vec<Line<'a>> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            if Some(i) == mark {
                l.style(t.selected)
            } else {
                l
            }
        })
        .collect()
}

/// Recent messages, newest at the bottom; errors show the flow they quote.
pub fn events(frame: &mut Frame, area: Rect, ctx: &Ctx) {
    let (v, s, t) = (ctx.view, ctx.state, ctx.theme);
    let rows = area.height.saturating_sub(2) as usize;
    let (shown, mark) = scrolled(&v.events, rows, s.events_back);
    let lines: Vec<Line> = shown
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
    let lines = marked(lines, mark, t);
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
    let (shown, mark) = scrolled(&v.alerts, rows, s.alerts_back);
    let lines: Vec<Line> = shown
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
    let lines = marked(lines, mark, t);
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
