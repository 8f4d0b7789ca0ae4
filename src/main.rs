fn main() -> std::process::ExitCode {
    funcrl::memory::keep_freed_memory();
    funcrl::cli::main()
}
