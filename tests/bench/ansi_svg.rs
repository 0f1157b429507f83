//! Turns a terminal capture with ANSI colours (`tmux capture-pane -e -p`)
//! into an SVG picture, for the README's dashboard screenshot:
//! `cargo run --example ansi_svg < screen.ansi > dashboard.svg`.

use std::io::{self, Read, Write};

fn main() -> io::Result<()> {
    let mut ansi = String::new();
    io::stdin().read_to_string(&mut ansi)?;
    let svg = anstyle_svg::Term::new().render_svg(&ansi);
    io::stdout().write_all(svg.as_bytes())
}
