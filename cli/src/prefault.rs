//! The global allocator: the system's, which for the run over a large object also maps in fresh memory many
//! pages at a time instead of one page fault at a time.
//!
//! On a virtual machine a page fault costs about a microsecond, and a large object's run first-touches megabytes:
//! the file read, the copy of its BTF, the decoded instructions, the block states of a long program (pyperf180:
//! 1,715 page faults, most of them the heap growing under small blocks). Once [`enable`]d (by `inspect`, when it
//! reads a file of more than 256 KiB), a block of [`LARGE`] bytes or more, or the grown part of one, is populated
//! with one `madvise(MADV_POPULATE_WRITE)` when the system allocator returns it, and the heap [`AHEAD`] bytes past
//! the last small block (pyperf180: 172 page faults, 10% less CPU time). Not for small objects: populating pages
//! costs about as much as faulting them, so the pages populated and never used made a 40 KB object 3.5% slower.
//! Kernels before 5.14 refuse the advice (`EINVAL`), and then the pages fault in as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Blocks smaller than this are left to fault in: most come from the allocator's already-touched heap.
const LARGE: usize = 64 * 1024;

const PAGE: usize = 4096;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Populate the large blocks allocated from now on.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The system allocator, populating large blocks once [`enable`]d.
pub struct Prefault;

/// Maps in the whole pages of `len` bytes at `start`. A failure is harmless: the pages fault in when touched.
fn populate(start: *mut u8, len: usize) {
    if len < LARGE || !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let addr = start as usize;
    let first = addr.next_multiple_of(PAGE);
    let end = (addr + len) & !(PAGE - 1);
    if end > first {
        // SAFETY: the range lies inside a block the system allocator just handed out, writable by the program;
        // MADV_POPULATE_WRITE only faults its pages in (as writing them would), without changing their contents.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_POPULATE_WRITE) };
    }
}

/// How far past the last block the heap's pages are populated, at most up to the heap's end.
const AHEAD: usize = 32 * 1024;

/// The end of what [`heap_ahead`] populated of the heap (the `brk` area small blocks come from).
static FRONTIER: AtomicUsize = AtomicUsize::new(0);

/// Small blocks come from the heap, which the allocator grows with `brk` and whose new pages fault in one at a
/// time as its chunk headers are written (two thirds of a long program's page faults). When a block ends past
/// what was populated, the heap up to [`AHEAD`] bytes further (not past its end) is populated in one call.
fn heap_ahead(p: *mut u8, len: usize) {
    let end = (p as usize).saturating_add(len);
    if end <= FRONTIER.load(Ordering::Relaxed) || !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: sbrk(0) only reads the current end of the heap.
    let brk = unsafe { libc::sbrk(0) } as usize;
    // Blocks of other threads' arenas and of mmap lie outside [heap, brk): those are left alone.
    if end > brk || brk == usize::MAX {
        return;
    }
    let from = FRONTIER.load(Ordering::Relaxed).max(p as usize & !(PAGE - 1));
    let to = (end.next_multiple_of(PAGE) + AHEAD).min(brk & !(PAGE - 1));
    if to > from && FRONTIER.fetch_max(to, Ordering::Relaxed) < to {
        // SAFETY: [from, to) lies inside the heap below its current end: memory of the allocator, writable;
        // populating does not change its contents.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_POPULATE_WRITE) };
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments; `populate` does not touch the contents.
unsafe impl GlobalAlloc for Prefault {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract for `GlobalAlloc::alloc`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            populate(p, layout.size());
            heap_ahead(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract for `GlobalAlloc::alloc_zeroed`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            populate(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract for `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller's contract for `GlobalAlloc::realloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && new_size > layout.size() {
            // Only the grown part is new; the rest was touched (or populated) before, or moved by a copy that
            // touched it.
            let old = layout.size();
            // SAFETY: `old < new_size`, so `p + old` is inside the new block.
            populate(unsafe { p.add(old) }, new_size - old);
        }
        p
    }
}
