// mimalloc: the manifest loader and the planner make many small objects (names, maps), which
// glibc's allocator serves markedly slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process: mimalloc's large aligned regions would be
    // backed by 2 MiB pages, which doubled an idle agent's RSS (25 MiB against 12 MiB, over its
    // 20 MB target). The `no_thp` feature only stops mimalloc asking for them; this also
    // keeps a kernel set to `always` from giving them. Best effort: nothing depends on it.
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    rampart::cli::main()
}
