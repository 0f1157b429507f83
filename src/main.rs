//! The icmpmon program: everything is in the library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    icmpmon::main()
}
