//! The process heap, for a long-running `proxier run`: glibc's allocator keeps memory freed by
//! the program (the initial list's objects, each resync's kernel table read on another thread)
//! in per-thread arenas instead of returning it, so the resident size would grow with every
//! resync although the live heap does not (`benches/examples/scale_heap.rs` shows the live
//! heap; `cargo xtask vmbench scale` the resident size). Two calls keep the resident size at
//! the live heap: fewer arenas from the start, and a trim after the syncs that free a whole
//! table (the initial sync and each resync). Other allocators (musl, an embedder's) need
//! neither: these are no-ops there.

/// At most two malloc arenas (the loop and the resync's table read), set before any thread
/// starts: glibc's default of 8 per CPU spreads freed tables over arenas that are never
/// trimmed back to the OS.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists (the first thing `main` does), and an unsupported value is ignored (returns 0).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
