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
//!
//! Freed blocks of [`HUGE_FROM`] or more are kept mapped, up to [`KEEP_MAX`] in all, and
//! handed out again for a request they cover (wasting at most an eighth of themselves):
//! the payload move's and the sorts' tables are freed and allocated again at the same
//! sizes phase after phase, and a fresh mapping costs its first touch of every page (the
//! kernel's `clear_page` was still 29 % of all samples of a 10^6 `acs-bench round` with
//! huge pages). A request that no kept block covers first gives back kept blocks of at
//! least its size, so kept memory only adds to a process's peak what the cap allows.
//! Measured (session 15, 10^6 users, second round, a noisy machine, interleaved): 13.8,
//! 14.4, 14.9, 15.4 s (CPU 25.7–28.5 s) without, 12.7, 13.9, 14.7 s with up to 2 GiB
//! kept (CPU 23.4–27.3 s), at a peak of 7.08–7.31 GB against 6.83–6.94 GB; keeping
//! everything gave 12.8–14.3 s at 7.27–7.61 GB, a cap of 768 MiB no gain. Kept blocks
//! hold whatever their last owner left in them: code that frees secrets wipes them first
//! (`Zeroizing`, `ZeroizeOnDrop`), as it must whatever the allocator.
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

/// Freed blocks of [`HUGE_FROM`] or more that the allocator keeps mapped for reuse, and
/// the real size of every such block handed out (a reused block may be larger than its
/// request). Fixed arrays: the allocator must not allocate.
struct Reuse {
    live: [(usize, usize); LIVE_SLOTS],
    free: [(usize, usize); FREE_SLOTS],
    free_bytes: usize,
}

/// Large blocks tracked at once (a round at 10^6 users holds a few dozen); past this a
/// block is simply the system allocator's.
const LIVE_SLOTS: usize = 1024;
/// Freed large blocks kept.
const FREE_SLOTS: usize = 64;
/// At most this much freed memory is kept: what it adds to a process's peak.
pub const KEEP_MAX: usize = 2 << 30;
/// A kept block serves a request of at least this many eighths of its size.
const REUSE_MIN_EIGHTHS: usize = 7;

static REUSE: std::sync::Mutex<Reuse> = std::sync::Mutex::new(Reuse {
    live: [(0, 0); LIVE_SLOTS],
    free: [(0, 0); FREE_SLOTS],
    free_bytes: 0,
});

fn reuse() -> std::sync::MutexGuard<'static, Reuse> {
    // Nothing panics while holding the lock; a poisoned lock is still consistent.
    REUSE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reuse {
    /// Takes the smallest kept block that fits `layout` without wasting more than a
    /// quarter of itself, as (pointer, real size).
    fn take(&mut self, layout: Layout) -> Option<(usize, usize)> {
        let (size, align) = (layout.size(), layout.align());
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &(p, n))| {
                p != 0 && n >= size && size * 8 >= n * REUSE_MIN_EIGHTHS && p % align == 0
            })
            .min_by_key(|(_, &(_, n))| n)
            .map(|(k, _)| k)?;
        let block = std::mem::take(&mut self.free[best]);
        self.free_bytes -= block.1;
        Some(block)
    }

    /// Records a block handed out; false if the table is full (the block is then left
    /// to the system allocator as it is).
    fn track(&mut self, ptr: usize, real: usize) -> bool {
        match self.live.iter_mut().find(|e| e.0 == 0) {
            Some(slot) => {
                *slot = (ptr, real);
                true
            }
            None => false,
        }
    }

    /// The real size of a tracked block, which stops being tracked.
    fn untrack(&mut self, ptr: usize) -> Option<usize> {
        let slot = self.live.iter_mut().find(|e| e.0 == ptr)?;
        Some(std::mem::take(slot).1)
    }

    /// Keeps a freed block; returns the blocks that must go back to the system instead
    /// (this one when no slot is free).
    fn keep(&mut self, ptr: usize, real: usize) -> Option<(usize, usize)> {
        if self.free_bytes + real > KEEP_MAX {
            return Some((ptr, real));
        }
        match self.free.iter_mut().find(|e| e.0 == 0) {
            Some(slot) => {
                *slot = (ptr, real);
                self.free_bytes += real;
                None
            }
            None => Some((ptr, real)),
        }
    }

    /// Removes kept blocks, largest first, until at least `bytes` are gone or none is
    /// left: they go back to the system.
    fn evict(&mut self, bytes: usize, out: &mut [(usize, usize); FREE_SLOTS]) -> usize {
        let (mut gone, mut k) = (0, 0);
        while gone < bytes && self.free_bytes > 0 {
            let Some(i) = (0..FREE_SLOTS)
                .filter(|&i| self.free[i].0 != 0)
                .max_by_key(|&i| self.free[i].1)
            else {
                break;
            };
            let block = std::mem::take(&mut self.free[i]);
            self.free_bytes -= block.1;
            gone += block.1;
            out[k] = block;
            k += 1;
        }
        k
    }
}

/// Frees a block the system allocator gave: `free` ignores the layout's size.
///
/// # Safety
/// `ptr` must come from `System` and not be used afterwards.
unsafe fn release(ptr: usize, real: usize, align: usize) {
    // SAFETY: `ptr` came from `System` (the caller's contract); a layout of its real size
    // and the alignment it was allocated with is the one `System` handed it out under.
    unsafe {
        System.dealloc(
            ptr as *mut u8,
            Layout::from_size_align_unchecked(real, align),
        )
    }
}

impl HugePageAlloc {
    /// A block of at least [`HUGE_FROM`] bytes: a kept one if one fits, else a fresh one
    /// from the system (after giving back as much kept memory as it takes, so that kept
    /// blocks never add to the peak), advised as huge pages. `zeroed`: clear a reused one.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    unsafe fn alloc_large(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let mut give_back = [(0usize, 0usize); FREE_SLOTS];
        let (hit, n_back) = {
            let mut r = reuse();
            match r.take(layout) {
                Some(block) => {
                    if r.track(block.0, block.1) {
                        (Some(block), 0)
                    } else {
                        // No room to track it: back to the system, and map afresh.
                        give_back[0] = block;
                        (None, 1)
                    }
                }
                None => {
                    let n = r.evict(layout.size(), &mut give_back);
                    (None, n)
                }
            }
        };
        for &(p, n) in &give_back[..n_back] {
            // SAFETY: kept blocks came from `System` and nothing refers to them.
            unsafe { release(p, n, 1) };
        }
        if let Some((p, _)) = hit {
            let p = p as *mut u8;
            if zeroed {
                // SAFETY: the block is at least `layout.size()` bytes, owned by this
                // allocator and handed to nobody else yet.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            }
            return p;
        }
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe {
            if zeroed {
                System.alloc_zeroed(layout)
            } else {
                System.alloc(layout)
            }
        };
        if !p.is_null() {
            advise(p, layout.size());
            reuse().track(p as usize, layout.size());
        }
        p
    }
}

// SAFETY: blocks under `HUGE_FROM` are forwarded to `System` unchanged. Larger ones come
// from `System` too, once: a freed one is kept (still mapped, owned by nobody) and handed
// out again only for a request it covers (size, alignment checked), and is given back to
// `System` with `free`, which ignores the size. `live` records each handed-out block's
// real size, so `dealloc` and `realloc` never act on a size smaller than the block; a
// block the table could not record is the system allocator's as it is. `advise` only adds
// advice on memory of a block just returned.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE_FROM {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.alloc_large(layout, false) };
        }
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE_FROM {
            // SAFETY: as in `alloc`.
            return unsafe { self.alloc_large(layout, true) };
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE_FROM {
            let back = {
                let mut r = reuse();
                match r.untrack(ptr as usize) {
                    Some(real) => r.keep(ptr as usize, real),
                    None => Some((ptr as usize, layout.size())),
                }
            };
            if let Some((p, n)) = back {
                // SAFETY: `ptr` came from `System` through this allocator.
                unsafe { release(p, n, layout.align()) };
            }
            return;
        }
        // SAFETY: forwarded unchanged: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE_FROM && new_size < HUGE_FROM {
            // SAFETY: forwarded unchanged: `ptr` came from `System` through this allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if layout.size() >= HUGE_FROM {
            let real = {
                let r = reuse();
                r.live.iter().find(|e| e.0 == ptr as usize).map(|e| e.1)
            };
            if real.is_some_and(|real| new_size <= real && new_size >= HUGE_FROM) {
                return ptr;
            }
        }
        // SAFETY: `new_size` is non-zero and rounds to a valid layout with the old
        // alignment (`GlobalAlloc::realloc`'s contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as in `alloc`.
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap
            // (`q` is a different live block); then the old block is freed with its
            // layout, as `realloc` promises.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
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
    fn a_freed_large_block_is_reused_cleared_when_asked_and_never_too_small() {
        let a = HugePageAlloc;
        let size = HUGE_FROM + 4096;
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero sizes; every block is written and read within its bounds and
        // freed once with the layout (and size) it has at that moment.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(0xa5, size);
            a.dealloc(p, layout);
            // Other threads' tests may take the kept block first; either way the block
            // handed out is cleared and large enough.
            let q = a.alloc_zeroed(layout);
            assert!(!q.is_null());
            assert!((0..size).step_by(4093).all(|k| *q.add(k) == 0));
            assert_eq!(*q.add(size - 1), 0);
            q.add(size - 1).write(9);
            // Shrinking within the block keeps it; growing past it moves the contents.
            let r = a.realloc(q, layout, HUGE_FROM);
            assert_eq!(r, q);
            let big = Layout::from_size_align(HUGE_FROM, 8).unwrap();
            let s = a.realloc(r, big, 2 * size);
            assert!(!s.is_null());
            assert_eq!(*s.add(HUGE_FROM - 1), 0);
            a.dealloc(s, Layout::from_size_align(2 * size, 8).unwrap());
        }
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
