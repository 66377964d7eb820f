// mimalloc: the manifest loader and the planner allocate many small strings and maps; with
// glibc's allocator a fifth of `simulate`'s time went to malloc and free (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rampart::cli::main()
}
