//! The whole screen: the panels in their places, then the overlay of the
//! current mode, or a note that the terminal is too small.

use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::overlays::{detail, filter_error, help, message};
use super::panels::{alerts, events, footer, header, hurt, peers, rates, types};
use super::style::{Ctx, MIN_HEIGHT, MIN_WIDTH};
use crate::keys::Mode;

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
