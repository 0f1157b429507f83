//! What is drawn over the panels: messages, a filter's error, the help,
//! the detail of the selected peer, event or alert.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline, Wrap};
use ratatui::Frame;

use super::style::{block, clear_around, duration_us, popup, text_box, Ctx};
use crate::keys::{self};
use crate::state::Panel;

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
                        e.process_detail
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
    // As wide as its longest line; a narrower terminal wraps them, and the
    // box grows by the lines wrapping adds.
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 2;
    let inner = usize::from(width.min(area.width).saturating_sub(2)).max(1);
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let r = popup(area, width, u16::try_from(rows).unwrap_or(u16::MAX) + 2);
    clear_around(frame, r);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(" help (Esc closes) ", true, t)),
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
