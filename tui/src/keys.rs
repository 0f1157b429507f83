//! Keys → actions: one table per mode, which the help overlay also lists.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Everything a key can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    TogglePause,
    CycleSort,
    EditFilter,
    NextPanel,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    OpenDetail,
    ToggleHelp,
    /// Leave the overlay or edit in progress.
    Back,
    FilterChar(char),
    FilterBackspace,
    FilterClear,
    FilterSubmit,
}

/// What the keyboard is talking to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    EditFilter,
    Help,
    /// The selected peer pair's details.
    Detail,
    /// The whole text of the selected event or alert.
    Message,
}

/// One row of a key table.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub code: KeyCode,
    pub mods: KeyModifiers,
    pub action: Action,
    /// For the help overlay; empty for aliases listed elsewhere.
    pub keys: &'static str,
    pub help: &'static str,
}

const fn bind(code: KeyCode, action: Action, keys: &'static str, help: &'static str) -> Binding {
    Binding {
        code,
        mods: KeyModifiers::NONE,
        action,
        keys,
        help,
    }
}

const CTRL_C: Binding = Binding {
    code: KeyCode::Char('c'),
    mods: KeyModifiers::CONTROL,
    action: Action::Quit,
    keys: "Ctrl-C",
    help: "quit (from any mode)",
};

pub const NORMAL: &[Binding] = &[
    bind(
        KeyCode::Char('q'),
        Action::Quit,
        "q",
        "quit (closes the capture cleanly)",
    ),
    CTRL_C,
    bind(
        KeyCode::Char('p'),
        Action::TogglePause,
        "p",
        "pause the display (capture goes on)",
    ),
    bind(
        KeyCode::Char('s'),
        Action::CycleSort,
        "s",
        "cycle the peers' sort order",
    ),
    bind(
        KeyCode::Char('/'),
        Action::EditFilter,
        "/",
        "edit the filter (same language as --filter)",
    ),
    bind(
        KeyCode::Tab,
        Action::NextPanel,
        "Tab",
        "next panel: peers, events, alerts",
    ),
    bind(KeyCode::Up, Action::Up, "↑ / k", "move up"),
    bind(KeyCode::Char('k'), Action::Up, "", ""),
    bind(KeyCode::Down, Action::Down, "↓ / j", "move down"),
    bind(KeyCode::Char('j'), Action::Down, "", ""),
    bind(
        KeyCode::PageUp,
        Action::PageUp,
        "PgUp / PgDn",
        "a page up / down",
    ),
    bind(KeyCode::PageDown, Action::PageDown, "", ""),
    bind(
        KeyCode::Home,
        Action::Top,
        "Home / End",
        "first / last (End: follow new events)",
    ),
    bind(KeyCode::End, Action::Bottom, "", ""),
    bind(
        KeyCode::Enter,
        Action::OpenDetail,
        "Enter",
        "details of the selected peer, event or alert (whole text)",
    ),
    bind(KeyCode::Char('?'), Action::ToggleHelp, "?", "this help"),
];

pub const EDIT_FILTER: &[Binding] = &[
    CTRL_C,
    bind(
        KeyCode::Enter,
        Action::FilterSubmit,
        "Enter",
        "apply the filter (empty: none)",
    ),
    bind(KeyCode::Esc, Action::Back, "Esc", "cancel"),
    bind(
        KeyCode::Backspace,
        Action::FilterBackspace,
        "Backspace",
        "delete a character",
    ),
    Binding {
        code: KeyCode::Char('u'),
        mods: KeyModifiers::CONTROL,
        action: Action::FilterClear,
        keys: "Ctrl-U",
        help: "clear the line",
    },
];

pub const OVERLAY: &[Binding] = &[
    CTRL_C,
    bind(KeyCode::Esc, Action::Back, "Esc / q", "close"),
    bind(KeyCode::Char('q'), Action::Back, "", ""),
    bind(KeyCode::Char('?'), Action::Back, "", ""),
    bind(KeyCode::Enter, Action::Back, "", ""),
];

pub fn table(mode: Mode) -> &'static [Binding] {
    match mode {
        Mode::Normal => NORMAL,
        Mode::EditFilter => EDIT_FILTER,
        Mode::Help | Mode::Detail | Mode::Message => OVERLAY,
    }
}

/// The action `key` means in `mode`, if any.
pub fn action_for(mode: Mode, key: KeyEvent) -> Option<Action> {
    // Shift is part of the character itself ('?', 'K').
    let mods = key.modifiers - KeyModifiers::SHIFT;
    let found = table(mode)
        .iter()
        .find(|b| b.code == key.code && b.mods == mods)
        .map(|b| b.action);
    match (found, mode, key.code) {
        (Some(a), _, _) => Some(a),
        (None, Mode::EditFilter, KeyCode::Char(c)) if mods.is_empty() => {
            Some(Action::FilterChar(c))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn tables_map_keys() {
        assert_eq!(
            action_for(Mode::Normal, key(KeyCode::Char('q'))),
            Some(Action::Quit)
        );
        assert_eq!(
            action_for(Mode::Normal, key(KeyCode::Char('j'))),
            Some(Action::Down)
        );
        assert_eq!(
            action_for(
                Mode::Normal,
                KeyEvent::new(KeyCode::Char('?'), KeyModifiers::SHIFT)
            ),
            Some(Action::ToggleHelp)
        );
        assert_eq!(action_for(Mode::Normal, key(KeyCode::Char('x'))), None);
        // While editing, letters are text, not commands.
        assert_eq!(
            action_for(Mode::EditFilter, key(KeyCode::Char('q'))),
            Some(Action::FilterChar('q'))
        );
        assert_eq!(
            action_for(Mode::EditFilter, key(KeyCode::Esc)),
            Some(Action::Back)
        );
        // Esc closes things; it never quits.
        assert_eq!(action_for(Mode::Normal, key(KeyCode::Esc)), None);
        assert_eq!(
            action_for(
                Mode::EditFilter,
                KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)
            ),
            Some(Action::FilterClear)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        for mode in [
            Mode::Normal,
            Mode::EditFilter,
            Mode::Help,
            Mode::Detail,
            Mode::Message,
        ] {
            assert_eq!(action_for(mode, ctrl_c), Some(Action::Quit), "{mode:?}");
        }
    }
}
