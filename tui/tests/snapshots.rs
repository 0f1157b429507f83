//! insta snapshots of every panel, the help and detail overlays and the
//! whole screen, at 80x24 and 120x40, from `demo::sample` (fixed data).
//! Review changes with `cargo insta review` (or INSTA_UPDATE=always).

mod demo;
use demo::sample;
use icmpmon_tui::keys::Mode;
use icmpmon_tui::render::{self, Ctx, Theme};
use icmpmon_tui::state::{Panel, UiState};
use icmpmon_tui::View;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::{Frame, Terminal};

type Panel_ = fn(&mut Frame, Rect, &Ctx);

/// The screen as text, trailing spaces trimmed.
fn screen(w: u16, h: u16, view: &View, state: &UiState, f: impl Fn(&mut Frame, &Ctx)) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let theme = Theme::plain();
    term.draw(|frame| {
        f(
            frame,
            &Ctx {
                view,
                state,
                theme: &theme,
            },
        )
    })
    .unwrap();
    let buf = term.backend().buffer();
    (0..h)
        .map(|y| {
            let line: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

#[test]
fn panels() {
    let view = sample(30, 40);
    let state = UiState {
        selected_peer: 2,
        ..UiState::default()
    };
    let panels: [(&str, Panel_); 6] = [
        ("header", render::header),
        ("rates", render::rates),
        ("types", render::types),
        ("peers", render::peers),
        ("events", render::events),
        ("alerts", render::alerts),
    ];
    for (w, h) in SIZES {
        for (name, panel) in panels {
            let text = screen(w, h, &view, &state, |f, ctx| panel(f, f.area(), ctx));
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), text);
        }
    }
}

#[test]
fn whole_screen_and_overlays() {
    let view = sample(30, 40);
    let cases = [
        ("screen", UiState::default()),
        (
            "paused_events_focus",
            UiState {
                paused: true,
                focus: Panel::Events,
                events_back: 3,
                ..UiState::default()
            },
        ),
        (
            "help",
            UiState {
                mode: Mode::Help,
                ..UiState::default()
            },
        ),
        (
            "detail",
            UiState {
                mode: Mode::Detail,
                selected_peer: 1,
                ..UiState::default()
            },
        ),
        (
            "filter_error",
            UiState {
                mode: Mode::EditFilter,
                filter_input: "type bogus".into(),
                filter_error: Some("unknown ICMP type 'bogus' at column 6".into()),
                ..UiState::default()
            },
        ),
    ];
    for (w, h) in SIZES {
        for (name, state) in &cases {
            let text = screen(w, h, &view, state, render::draw);
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), text);
        }
    }
}

#[test]
fn too_small_and_empty() {
    let state = UiState::default();
    let text = screen(50, 10, &sample(3, 3), &state, render::draw);
    insta::assert_snapshot!("too_small_50x10", text);
    assert!(text.contains("need 60x16, have 50x10"));
    // Before the first snapshot arrives: empty lists, no panic.
    let text = screen(80, 24, &View::default(), &state, render::draw);
    insta::assert_snapshot!("empty_80x24", text);
}

/// NO_COLOR: the plain theme carries no colour at all.
#[test]
fn plain_theme_has_no_colour() {
    let view = sample(5, 5);
    let state = UiState::default();
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let theme = Theme::plain();
    term.draw(|f| {
        render::draw(
            f,
            &Ctx {
                view: &view,
                state: &state,
                theme: &theme,
            },
        )
    })
    .unwrap();
    let buf = term.backend().buffer();
    for cell in buf.content() {
        assert_eq!(cell.fg, ratatui::style::Color::Reset, "{cell:?}");
        assert_eq!(cell.bg, ratatui::style::Color::Reset, "{cell:?}");
    }
}
