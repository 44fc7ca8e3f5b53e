//! The process heap, for a long-running `proxier run`: glibc's allocator keeps memory freed by
//! the program (the initial list's objects, each resync's kernel table read on another thread)
//! in per-thread arenas instead of returning it, so the resident size would grow with every
//! resync although the live heap does not (`benches/examples/scale_heap.rs` shows the live
//! heap; `cargo xtask vmbench scale` the resident size). Two calls keep the resident size at
//! the live heap: fewer arenas and fixed thresholds from the start, and a trim after the syncs
//! that free a whole table (the initial sync and each resync). Other allocators (musl, an embedder's) need
//! neither: these are no-ops there.

/// Larger blocks than this are mapped on their own and unmapped when freed (the cold sync's
/// results and operations, a resync's big vectors, the client's read buffers).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;
/// Free memory at the top of an arena beyond this goes back to the OS at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1024 * 1024;

/// The allocator for a long-running process, set before any thread starts:
/// - at most two malloc arenas (the loop and the other threads: the watches' workers, the
///   resync's table read): glibc's default of 8 per CPU spreads freed tables over arenas;
/// - fixed mmap and trim thresholds. glibc raises both when a mapped block is freed (to its
///   size and twice that, up to 32 and 64 MiB): once the cold sync has freed its 14 MB results,
///   up to 28 MB free at the top of an arena may stay resident, and `malloc_trim` trims the top
///   of the main arena only, not of the one the other threads share (where the watches decode
///   the initial lists and each resync reads the table). Fixed values keep big blocks out of
///   the arenas and trim every arena's top. VM, Kubernetes source at 10,000 × 10: RSS after
///   100 flips and 3 resyncs +3.4 % with these settings and this branch's compact model,
///   +10.9 % before (`benches/results/scale-kubemem.md`).
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists (the first thing `main` does), and an unsupported value is ignored (returns 0).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the free pages of every arena to the OS (glibc `malloc_trim(0)`): called after the
/// initial sync and after each resync, when the old kernel table has just been freed.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks and has no precondition; it may be
    // called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
