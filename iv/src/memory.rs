//! Process-wide allocator settings for dense numeric work (the IV networks above all).
//!
//! Why: every burn op allocates its output. glibc serves blocks above its (dynamic) mmap threshold
//! with fresh mappings and hands freed memory at the heap top back to the OS, so each outer
//! iteration faults in and clears tens of MB of pages again (page faults, page clearing and memset
//! were ≈ 5 % of a DFIV iteration's samples). Serving blocks up to 32 MiB from the heap and keeping
//! up to 1 GiB of freed memory made a DFIV iteration ≈ 10–20 % faster (`benches/iv_timing.rs`,
//! interleaved runs; README "Speed"). Blocks above 32 MiB (the 4096-wide treatment batches and
//! first-layer weights) are still mapped and unmapped per use.

/// Applies the settings above (glibc on Linux; elsewhere nothing). Call once, first thing in `main`.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
