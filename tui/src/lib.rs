//! Terminal dashboard for icmpmon. Issue 4/4 fills this crate; it owns its view model and never depends on capture code.
