//! The terminal runtime: raw mode and the alternate screen, the event
//! loop (about 10 frames/s at most, and none while nothing changes), and
//! putting the terminal back on every way out, a panic included.

use std::io::{self, IsTerminal, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

use crate::input::{gone, read_keys, Input};
use crate::keys::action_for;
use crate::model::View;
use crate::render::{draw, Ctx, Theme};
use crate::state::{sort_peers, Effect, SortKey, UiState};

/// Shortest time between two frames.
const FRAME: Duration = Duration::from_millis(100);
/// Peer rows asked for beyond the selection: a few pages to scroll into.
const PEER_ROWS_AHEAD: usize = 200;

/// Checks a filter expression; the error text is shown inline.
pub type Validate = Box<dyn Fn(&str) -> Result<(), String>>;

/// What the dashboard asks of its host.
pub struct Controls {
    pub validate: Validate,
    /// Applies a valid filter.
    pub apply_filter: Box<dyn FnMut(String)>,
    /// Asks for the first `rows` peer pairs in this order: views carry
    /// only what can be shown, so their cost follows the screen, not the
    /// number of peers.
    pub request_peers: Box<dyn FnMut(SortKey, usize)>,
    /// Whether to leave without a key (SIGTERM, a fatal error).
    pub should_exit: Box<dyn Fn() -> bool>,
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Controls")
    }
}

/// Whether the dashboard holds the terminal (raw mode, alternate screen).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Leaves raw mode and the alternate screen if the dashboard entered them;
/// writes nothing otherwise (standard output may be a CSV file). Safe to
/// call more than once and from a panic hook or a signal path.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// Restores the terminal when dropped (normal return or error).
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Runs the dashboard until the user quits or `should_exit` says so.
/// Views arrive on `views`; a closed channel means the capture ended (the
/// last view stays on screen until `q`).
pub fn run(views: &Receiver<View>, mut controls: Controls) -> io::Result<()> {
    if !io::stdin().is_terminal() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the dashboard reads keys from standard input, which is not a terminal (use --headless)",
        ));
    }
    install_panic_hook();
    ACTIVE.store(true, Ordering::SeqCst);
    let _guard = Guard;
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    event_loop(&mut terminal, views, &mut controls).map_err(|e| {
        // A terminal that went away fails in many ways (EIO, ENXIO, a
        // missing /dev/tty): all of them are a hang-up.
        let hung_up =
            matches!(e.raw_os_error(), Some(5 | 6 | 2)) || e.kind() == io::ErrorKind::BrokenPipe;
        if hung_up {
            gone()
        } else {
            e
        }
    })
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    views: &Receiver<View>,
    controls: &mut Controls,
) -> io::Result<()> {
    let theme = Theme::from_env();
    let mut state = UiState::default();
    let mut view = View::default();
    let mut dirty = true;
    let mut ended = false;
    let mut last_frame = Instant::now() - FRAME;
    let mut size = terminal.size()?;
    let mut asked: Option<(SortKey, usize)> = None;
    loop {
        // The peers wanted: the current order, through the selection and
        // some pages beyond it.
        let want = (state.sort, state.selected_peer + PEER_ROWS_AHEAD);
        if asked
            .is_none_or(|(sort, rows)| sort != want.0 || rows < state.selected_peer + state.page)
        {
            (controls.request_peers)(want.0, want.1);
            asked = Some(want);
        }
        if dirty && last_frame.elapsed() >= FRAME {
            terminal.draw(|f| {
                draw(
                    f,
                    &Ctx {
                        view: &view,
                        state: &state,
                        theme: &theme,
                    },
                )
            })?;
            state.page = terminal.size()?.height.saturating_sub(20).max(5) as usize;
            dirty = false;
            last_frame = Instant::now();
        }
        if controls.should_exit() {
            return Ok(());
        }
        // Sleep until input, or until the next frame is due when one is.
        let wait = if dirty {
            FRAME.saturating_sub(last_frame.elapsed())
        } else {
            FRAME
        };
        if let Input::Keys(keys) = read_keys(wait)? {
            for k in keys {
                let Some(action) = action_for(state.mode, k) else {
                    continue;
                };
                match state.apply(action, &view, &*controls.validate) {
                    Effect::Quit => return Ok(()),
                    Effect::Resort => sort_peers(&mut view.peers, state.sort),
                    Effect::ApplyFilter(f) => (controls.apply_filter)(f),
                    Effect::None => {}
                }
                dirty = true;
            }
        }
        // Resizes: compared each turn (crossterm's SIGWINCH events would
        // need its reader, see `input`).
        let now = terminal.size()?;
        if now != size {
            size = now;
            dirty = true;
        }
        // The newest view wins; older ones are skipped.
        let mut newest = None;
        let mut disconnected = false;
        loop {
            match views.try_recv() {
                Ok(v) => newest = Some(v),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if let Some(mut v) = newest {
            if !state.paused {
                state.carry_scroll(&view, &v);
                sort_peers(&mut v.peers, state.sort);
                view = v;
                state.fit(&view);
                dirty = true;
            }
        }
        // After the last view is in place, so that its banner stays.
        if disconnected && !ended {
            ended = true;
            if view.ended.is_none() {
                view.ended = Some("no more packets".into());
            }
            dirty = true;
        }
    }
}

impl Controls {
    fn should_exit(&self) -> bool {
        (self.should_exit)()
    }
}
