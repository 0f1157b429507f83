//! What the user has done to the dashboard (pause, sort, focus, selection,
//! filter being edited), and how an action changes it. Pure: no terminal.

use crate::keys::{Action, Mode};
use crate::model::{PeerView, View};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Peers,
    Events,
    Alerts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Requests,
    Loss,
    RttAvg,
    RttP95,
    LastSeen,
    Peer,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Requests => "requests",
            SortKey::Loss => "loss",
            SortKey::RttAvg => "rtt avg",
            SortKey::RttP95 => "rtt p95",
            SortKey::LastSeen => "last seen",
            SortKey::Peer => "peer",
        }
    }

    /// ▼ for orders that put the largest first, ▲ for ascending ones.
    pub fn arrow(self) -> &'static str {
        match self {
            SortKey::Peer => "▲",
            // Smallest "seconds ago" first: the most recent.
            SortKey::LastSeen => "▲",
            _ => "▼",
        }
    }

    fn next(self) -> Self {
        match self {
            SortKey::Requests => SortKey::Loss,
            SortKey::Loss => SortKey::RttAvg,
            SortKey::RttAvg => SortKey::RttP95,
            SortKey::RttP95 => SortKey::LastSeen,
            SortKey::LastSeen => SortKey::Peer,
            SortKey::Peer => SortKey::Requests,
        }
    }
}

/// Orders peers by `key`: largest first for numbers, most recent first
/// for last seen, by address for peer; ties by address.
pub fn sort_peers(peers: &mut [PeerView], key: SortKey) {
    let f = |o: Option<f64>| o.unwrap_or(-1.0);
    peers.sort_by(|a, b| {
        let by = match key {
            SortKey::Requests => b.requests.cmp(&a.requests),
            SortKey::Loss => f(b.loss_pct).total_cmp(&f(a.loss_pct)),
            SortKey::RttAvg => f(b.rtt_avg_us).total_cmp(&f(a.rtt_avg_us)),
            SortKey::RttP95 => b.rtt_p95_us.cmp(&a.rtt_p95_us),
            SortKey::LastSeen => a.last_seen_s.total_cmp(&b.last_seen_s),
            SortKey::Peer => std::cmp::Ordering::Equal,
        };
        by.then_with(|| (a.requester, a.responder).cmp(&(b.requester, b.responder)))
    });
}

/// What the runtime must do after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// The peers need sorting again.
    Resort,
    /// A valid new filter for the aggregator.
    ApplyFilter(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiState {
    pub mode: Mode,
    pub paused: bool,
    pub sort: SortKey,
    pub focus: Panel,
    pub selected_peer: usize,
    /// Events from the newest one back; 0 follows new events.
    pub events_back: usize,
    pub alerts_back: usize,
    pub filter_input: String,
    pub filter_error: Option<String>,
    /// Rows a page moves (set by the renderer from the panel's height).
    pub page: usize,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            mode: Mode::Normal,
            paused: false,
            sort: SortKey::Requests,
            focus: Panel::Peers,
            selected_peer: 0,
            events_back: 0,
            alerts_back: 0,
            filter_input: String::new(),
            filter_error: None,
            page: 10,
        }
    }
}

impl UiState {
    /// Applies `action`; `validate` checks a filter expression (the
    /// language belongs to the caller) and returns its error text.
    pub fn apply(
        &mut self,
        action: Action,
        view: &View,
        validate: &dyn Fn(&str) -> Result<(), String>,
    ) -> Effect {
        match action {
            Action::Quit => return Effect::Quit,
            Action::TogglePause => self.paused = !self.paused,
            Action::CycleSort => {
                self.sort = self.sort.next();
                self.selected_peer = 0;
                return Effect::Resort;
            }
            Action::EditFilter => {
                self.mode = Mode::EditFilter;
                self.filter_input = view.filter.clone();
                self.filter_error = None;
            }
            Action::NextPanel => {
                self.focus = match self.focus {
                    Panel::Peers => Panel::Events,
                    Panel::Events => Panel::Alerts,
                    Panel::Alerts => Panel::Peers,
                }
            }
            Action::Up => self.move_by(view, -1),
            Action::Down => self.move_by(view, 1),
            Action::PageUp => self.move_by(view, -(self.page as i64)),
            Action::PageDown => self.move_by(view, self.page as i64),
            Action::Top => self.move_by(view, i64::MIN / 2),
            Action::Bottom => self.move_by(view, i64::MAX / 2),
            Action::OpenDetail => match self.focus {
                Panel::Peers if !view.peers.is_empty() => self.mode = Mode::Detail,
                Panel::Events if !view.events.is_empty() => self.mode = Mode::Message,
                Panel::Alerts if !view.alerts.is_empty() => self.mode = Mode::Message,
                _ => {}
            },
            Action::ToggleHelp => self.mode = Mode::Help,
            Action::Back => {
                self.mode = Mode::Normal;
                self.filter_error = None;
            }
            Action::FilterChar(c) => {
                self.filter_input.push(c);
                self.filter_error = None;
            }
            Action::FilterBackspace => {
                self.filter_input.pop();
                self.filter_error = None;
            }
            Action::FilterClear => {
                self.filter_input.clear();
                self.filter_error = None;
            }
            Action::FilterSubmit => match validate(&self.filter_input) {
                Ok(()) => {
                    self.mode = Mode::Normal;
                    self.filter_error = None;
                    self.selected_peer = 0;
                    return Effect::ApplyFilter(self.filter_input.trim().to_string());
                }
                Err(e) => self.filter_error = Some(e),
            },
        }
        Effect::None
    }

    /// Moves the focused panel's cursor by `delta` rows (up is towards the
    /// first peer / the older events).
    fn move_by(&mut self, view: &View, delta: i64) {
        let clamp = |v: i64, len: usize| v.clamp(0, len.saturating_sub(1) as i64) as usize;
        match self.focus {
            Panel::Peers => {
                self.selected_peer = clamp(self.selected_peer as i64 + delta, view.peers.len())
            }
            // Lists grow at the bottom: up goes back in time.
            Panel::Events => {
                self.events_back = clamp(self.events_back as i64 - delta, view.events.len())
            }
            Panel::Alerts => {
                self.alerts_back = clamp(self.alerts_back as i64 - delta, view.alerts.len())
            }
        }
    }

    /// A scrolled-back events panel stays on the events it shows while new
    /// ones arrive (each new message pushes them one further back).
    pub fn carry_scroll(&mut self, old: &View, new: &View) {
        if self.events_back > 0 {
            let arrived = new.total.saturating_sub(old.total);
            self.events_back += usize::try_from(arrived).unwrap_or(usize::MAX);
        }
    }

    /// Keeps the selection inside a new view's lists.
    pub fn fit(&mut self, view: &View) {
        self.selected_peer = self.selected_peer.min(view.peers.len().saturating_sub(1));
        self.events_back = self.events_back.min(view.events.len().saturating_sub(1));
        self.alerts_back = self.alerts_back.min(view.alerts.len().saturating_sub(1));
        if self.mode == Mode::Detail && view.peers.is_empty() {
            self.mode = Mode::Normal;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn view(peers: usize) -> View {
        View {
            peers: (0..peers)
                .map(|i| PeerView {
                    requester: IpAddr::from([10, 0, 0, i as u8]),
                    responder: IpAddr::from([10, 0, 0, 254]),
                    requests: i as u64,
                    ..PeerView::default()
                })
                .collect(),
            filter: "type echo-request".into(),
            ..View::default()
        }
    }

    fn ok(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn no_bogus(s: &str) -> Result<(), String> {
        if s.contains("bogus") {
            Err("unknown ICMP type 'bogus' at column 6".into())
        } else {
            Ok(())
        }
    }

    #[test]
    fn pause_toggles_and_sort_cycles() {
        let v = view(3);
        let mut s = UiState::default();
        assert_eq!(s.apply(Action::TogglePause, &v, &ok), Effect::None);
        assert!(s.paused);
        s.apply(Action::TogglePause, &v, &ok);
        assert!(!s.paused);
        s.selected_peer = 2;
        assert_eq!(s.apply(Action::CycleSort, &v, &ok), Effect::Resort);
        assert_eq!((s.sort, s.selected_peer), (SortKey::Loss, 0));
        for _ in 0..5 {
            s.apply(Action::CycleSort, &v, &ok);
        }
        assert_eq!(s.sort, SortKey::Requests);
    }

    #[test]
    fn filter_edit_with_a_bad_expression_stays_open() {
        let v = view(1);
        let mut s = UiState::default();
        s.apply(Action::EditFilter, &v, &no_bogus);
        assert_eq!(
            (s.mode, s.filter_input.as_str()),
            (Mode::EditFilter, "type echo-request")
        );
        for _ in 0.."echo-request".len() {
            s.apply(Action::FilterBackspace, &v, &no_bogus);
        }
        for c in "bogus".chars() {
            s.apply(Action::FilterChar(c), &v, &no_bogus);
        }
        assert_eq!(s.apply(Action::FilterSubmit, &v, &no_bogus), Effect::None);
        assert_eq!(s.mode, Mode::EditFilter);
        assert!(s.filter_error.as_deref().unwrap().contains("bogus"));
        // Typing clears the error; a good expression is applied.
        s.apply(Action::FilterBackspace, &v, &no_bogus);
        assert_eq!(s.filter_error, None);
        for _ in 0.."bogu".len() {
            s.apply(Action::FilterBackspace, &v, &no_bogus);
        }
        for c in "3 ".chars() {
            s.apply(Action::FilterChar(c), &v, &no_bogus);
        }
        assert_eq!(
            s.apply(Action::FilterSubmit, &v, &no_bogus),
            Effect::ApplyFilter("type 3".into())
        );
        assert_eq!(s.mode, Mode::Normal);
        // Esc abandons an edit.
        s.apply(Action::EditFilter, &v, &no_bogus);
        s.apply(Action::FilterChar('x'), &v, &no_bogus);
        assert_eq!(s.apply(Action::Back, &v, &no_bogus), Effect::None);
        assert_eq!(s.mode, Mode::Normal);
    }

    #[test]
    fn navigation_stays_in_bounds_and_follows_focus() {
        let mut v = view(5);
        v.events = vec![Default::default(); 4];
        let mut s = UiState::default();
        s.apply(Action::Up, &v, &ok);
        assert_eq!(s.selected_peer, 0);
        s.apply(Action::Bottom, &v, &ok);
        assert_eq!(s.selected_peer, 4);
        s.apply(Action::Down, &v, &ok);
        assert_eq!(s.selected_peer, 4);
        s.apply(Action::OpenDetail, &v, &ok);
        assert_eq!(s.mode, Mode::Detail);
        s.apply(Action::Back, &v, &ok);
        s.apply(Action::NextPanel, &v, &ok);
        assert_eq!(s.focus, Panel::Events);
        s.apply(Action::Up, &v, &ok);
        s.apply(Action::Up, &v, &ok);
        assert_eq!(s.events_back, 2);
        // New messages keep a scrolled-back panel on the same events.
        let mut newer = v.clone();
        newer.total = v.total + 3;
        s.carry_scroll(&v, &newer);
        assert_eq!(s.events_back, 5);
        s.carry_scroll(&newer, &newer);
        assert_eq!(s.events_back, 5);
        s.apply(Action::Bottom, &v, &ok);
        assert_eq!(s.events_back, 0);
        // A smaller view pulls the cursor back in.
        s.selected_peer = 4;
        s.fit(&view(2));
        assert_eq!(s.selected_peer, 1);
    }

    #[test]
    fn sorting() {
        let mut v = view(3);
        v.peers[0].loss_pct = Some(50.0);
        v.peers[1].rtt_avg_us = Some(900.0);
        let host = |n: u8| IpAddr::from([10, 0, 0, n]);
        sort_peers(&mut v.peers, SortKey::Requests);
        assert_eq!(v.peers[0].requester, host(2));
        sort_peers(&mut v.peers, SortKey::Loss);
        assert_eq!(v.peers[0].requester, host(0));
        sort_peers(&mut v.peers, SortKey::RttAvg);
        assert_eq!(v.peers[0].requester, host(1));
        sort_peers(&mut v.peers, SortKey::Peer);
        assert_eq!(v.peers[0].requester, host(0));
        // Numerically: 10.0.0.2 before 10.0.0.10.
        let mut v = view(11);
        sort_peers(&mut v.peers, SortKey::Peer);
        assert_eq!(v.peers[2].requester, host(2));
        assert_eq!(v.peers[10].requester, host(10));
    }
}
