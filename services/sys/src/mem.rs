//! The process's heap: hand memory freed after a spike back to the kernel.
//!
//! glibc's allocator keeps freed chunks inside its arenas for reuse; after a spike (a flood the
//! broker's bounds cut off, a large upload) the resident size stays at the peak until the process
//! restarts, although the memory is free. [`trim_if_holding`] asks the allocator how much it holds
//! free and, past a threshold, releases it (`malloc_trim`, which also returns whole free pages
//! inside the arenas, not only the top of the heap).
//!
//! The one place the workspace calls C: `unsafe_code` is denied everywhere else
//! (`tests/tests/tidy.rs` checks it).
#![allow(unsafe_code)]

/// Bytes the allocator holds free in its arenas (glibc's `mallinfo2().fordblks`).
pub fn held_free() -> usize {
    // SAFETY: mallinfo2 takes no arguments, only reads the allocator's own statistics under its
    // locks, and returns a plain struct by value (glibc >= 2.33; Debian 12 has 2.36).
    unsafe { libc::mallinfo2() }.fordblks
}

/// When the allocator holds more than `threshold` bytes free, return free memory to the kernel.
/// Returns the bytes held free before the trim, if one was made.
pub fn trim_if_holding(threshold: usize) -> Option<usize> {
    let free = held_free();
    if free <= threshold {
        return None;
    }
    // SAFETY: malloc_trim(0) only releases free memory of the allocator's arenas (madvise of
    // whole free pages); it touches no memory the program holds and is thread-safe.
    unsafe { libc::malloc_trim(0) };
    Some(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_counted_then_trimmed() {
        // 64 MiB in 64 KiB blocks (below the mmap threshold, so they live in an arena), half of
        // them freed: the arena holds at least that much free until trimmed.
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 64 << 10]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, b)| (i % 2 == 0).then_some(b))
            .collect();
        assert!(held_free() >= 30 << 20, "held free: {}", held_free());
        assert!(trim_if_holding(1 << 20).is_some());
        assert_eq!(trim_if_holding(usize::MAX), None);
        assert_eq!(kept.len(), 512);
    }
}
