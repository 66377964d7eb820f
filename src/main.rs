// mimalloc: the manifest loader and the planner make many small objects (names, maps), which
// glibc's allocator serves markedly slower. Without transparent huge pages (`no_thp`): with
// them, an idle agent's RSS doubled (25 MiB against 12 MiB), over its 20 MB target.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rampart::cli::main()
}
