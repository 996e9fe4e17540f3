//! The `swarm` binary; everything lives in the library.
#![forbid(unsafe_code)]

/// jemalloc rather than glibc's malloc: with a thread per core and answers
/// of tens of megabytes (`docker ps -a` over 30,000 containers), glibc's
/// arenas kept the freed memory and the manager's RSS grew with the load;
/// jemalloc returns it to the system within seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    swarm::run()
}
