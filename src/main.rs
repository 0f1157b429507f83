fn main() -> std::process::ExitCode {
    icmpmon::app::main()
}
