//! Frame render time with 100 k peers and 10 k recent events (a report,
//! not a test; the goal is ≤ 5 ms): `cargo bench -p icmpmon-tui`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
#[path = "../tests/demo/mod.rs"]
mod demo;
use demo::sample;
use icmpmon_tui::render::{draw, Ctx, Theme};
use icmpmon_tui::state::UiState;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn render(c: &mut Criterion) {
    let view = sample(100_000, 10_000);
    let theme = Theme::color();
    let mut state = UiState {
        selected_peer: 50_000,
        ..UiState::default()
    };
    for (w, h) in [(120u16, 40u16), (200, 60)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        c.bench_function(&format!("frame_{w}x{h}_100k_peers_10k_events"), |b| {
            b.iter(|| {
                term.draw(|f| {
                    draw(
                        f,
                        &Ctx {
                            view: &view,
                            state: &state,
                            theme: &theme,
                        },
                    )
                })
                .unwrap();
                black_box(term.backend());
            })
        });
    }
    state.selected_peer = 0;
}

criterion_group!(benches, render);
criterion_main!(benches);
