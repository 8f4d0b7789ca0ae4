fn main() -> std::process::ExitCode {
    funcrl_iv::memory::keep_freed_memory();
    funcrl::cli::main()
}
