//! The allocator of the `acs` and `acs-bench` binaries: the system allocator, with every
//! large block advised to the kernel as transparent huge pages.
//!
//! Why: a round at scale allocates and frees tables of hundreds of megabytes per phase;
//! the system allocator maps each one afresh and returns it on free, so every 4 KiB page
//! of it faults and is zeroed again. At 10^6 users a round touched 28 GB of fresh pages
//! (7.1 M page faults, 34 s of system time for two rounds on two cores, a fifth of all
//! samples in `clear_page`). With huge pages each fault covers 2 MiB: 2.0 M faults, 18 s
//! of system time, and the round takes about 15 % less time (`docs/benchmarks.md`,
//! session 11), at the same peak memory. This is what glibc's `glibc.malloc.hugetlb=1` tunable does, made part of the
//! binary instead of its environment. The kernel's setting decides: with transparent huge
//! pages `never`, the advice is ignored; with `always`, it is redundant.
//!
//! Only blocks of [`HUGE_FROM`] (32 MiB) and more are advised, and only the whole 2 MiB
//! pages inside them. glibc serves every block that large by a mapping of its own (32 MiB
//! is the ceiling of its adaptive mmap threshold), which it unmaps whole on free; smaller
//! blocks may sit in a thread's heap, which glibc shrinks with `MADV_DONTNEED`, and that
//! would split huge pages. Measured (two cores, interleaved runs): with the threshold at
//! 4 MiB the malicious 2^20 sort ran 9.4–10.2 s against 9.0–9.6 s without advice; at
//! 32 MiB 8.9–9.3 s against 8.7–9.2 s, and the semi-honest 10^5 round 1.25–1.28 s against
//! 1.38–1.74 s.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are advised.
pub const HUGE_FROM: usize = 32 << 20;

/// Free memory at the top of a glibc heap beyond which the heap is given back to the
/// kernel ([`configure`]).
pub const TRIM_ABOVE: usize = 32 << 20;

/// Sets glibc's allocator for a process that allocates through [`HugePageAlloc`]: blocks
/// of [`HUGE_FROM`] and more get a mapping of their own (as they already do at glibc's
/// default, whose threshold adapts upwards to that ceiling), and a heap keeps up to
/// [`TRIM_ABOVE`] of freed memory at its top instead of giving back everything above
/// 128 KiB (glibc's default, which also adapts). Call it first thing in `main`, before
/// other threads start.
///
/// Why: a round allocates and frees buffers of a few MiB to a few tens of MiB per
/// message, per shuffle step and per verification; each one returned to the kernel comes
/// back as fresh pages that fault and are zeroed again. Measured (two cores, interleaved
/// runs, session 12, `acs-bench round`, fourth round): 1000 users × 8 KB 0.147–0.177 s
/// → 0.114–0.137 s; the 10^6 round's peak memory stays 7.72 GB. Keeping 64 MiB gave the
/// same small-round gain but a 10^6 peak of 7.87–8.04 GB, and 512 MiB 8.28 GB: past the
/// 8 GB the round must fit in. A long-running exchange server thus holds at most
/// [`TRIM_ABOVE`] of idle memory per glibc arena.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes two of glibc's tuning parameters; it touches no
    // memory of ours and is called before other threads allocate. A refusal (returned
    // as 0) leaves glibc's defaults, which are correct, only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HUGE_FROM as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_ABOVE as libc::c_int);
    }
}

/// A huge page of x86-64 and aarch64 with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// The system allocator, with large blocks advised as transparent huge pages.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

/// The whole huge pages inside `[ptr, ptr + len)`, as (start, length), if any.
fn huge_pages_within(ptr: usize, len: usize) -> Option<(usize, usize)> {
    let start = ptr.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
    let end = ptr.checked_add(len)? & !(HUGE_PAGE - 1);
    (end > start).then(|| (start, end - start))
}

#[cfg(target_os = "linux")]
fn advise(ptr: *mut u8, len: usize) {
    if ptr.is_null() || len < HUGE_FROM {
        return;
    }
    if let Some((start, n)) = huge_pages_within(ptr as usize, len) {
        // SAFETY: `[start, start + n)` lies inside the block the system allocator just
        // returned (`huge_pages_within` rounds inwards), which this process owns and
        // which stays mapped while it is allocated. MADV_HUGEPAGE only changes how the
        // kernel backs the range (it neither moves, unmaps nor changes the contents of
        // any page), so no Rust reference into the block is invalidated. A failure
        // (EINVAL where THP is compiled out) leaves the range as it was; the result is
        // deliberately ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, n, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_ptr: *mut u8, _len: usize) {}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// returns its result, so `System`'s guarantees (alignment, size, ownership) hold as they
// are; `advise` only adds advice on memory of a block just returned.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged: `ptr` came from `System` through this allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_huge_pages_inside_the_block_are_advised() {
        let m = HUGE_PAGE;
        assert_eq!(huge_pages_within(0, 2 * m), Some((0, 2 * m)));
        assert_eq!(huge_pages_within(1, 2 * m), Some((m, m)));
        assert_eq!(huge_pages_within(1, 2 * m - 2), None);
        assert_eq!(huge_pages_within(m - 1, 3 * m), Some((m, 2 * m)));
        assert_eq!(huge_pages_within(usize::MAX - 10, 100), None);
    }

    #[test]
    fn large_and_small_blocks_round_trip_through_the_allocator() {
        let a = HugePageAlloc;
        for size in [16, HUGE_FROM - 1, HUGE_FROM, 3 * HUGE_FROM + 12345] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a non-zero size; the block is written within bounds, read back and
            // freed with the layout it was allocated with.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % 64, 0);
                assert_eq!(*p.add(size - 1), 0);
                p.add(size - 1).write(7);
                let q = a.realloc(p, layout, size * 2);
                assert!(!q.is_null());
                assert_eq!(*q.add(size - 1), 7);
                a.dealloc(q, Layout::from_size_align(size * 2, 64).unwrap());
            }
        }
    }
}
