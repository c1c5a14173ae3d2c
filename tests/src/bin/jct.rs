//! `jct`, the command-line client of JCT (see `jct_e2e::cli` and `jct --help`).

fn main() -> std::process::ExitCode {
    jct_e2e::cli::main()
}
