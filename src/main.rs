fn main() -> std::process::ExitCode {
    funcrl::cli::main()
}
