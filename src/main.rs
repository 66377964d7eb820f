// mimalloc: the planner and the manifest loader allocate many small objects (names, maps),
// which glibc's allocator serves markedly slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rampart::cli::main()
}
