//! The process' allocator: the system's, except that large blocks are transparent-huge-page memory.
//!
//! A program of a million instructions needs ~40 MB of per-instruction arrays (decoded instructions, slots, block
//! numbers), touched for the first time as the analysis fills them: ~10,000 page faults in 4 KiB pages, a
//! quarter of the run on a virtual machine (~2 µs each here), ~20 in 2 MiB pages. So a block allocated at 1 MiB
//! or more is a private mapping of its own, aligned to 2 MiB and advised `MADV_HUGEPAGE`: the time per
//! instruction of programs of 100k to 1M instructions then stays near that of small ones (docs/benchmarks.md).
//! Without transparent huge pages the advice does nothing and the pages are small, as the system allocator's
//! would be.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks allocated at this many bytes or more are mappings of their own. Smaller ones could waste most of a huge page,
/// which their first touch zeroes whole; 4 MiB left programs of 100k-300k instructions on small pages.
const BIG: usize = 1024 * 1024;

/// A transparent huge page on x86-64 (and arm64 with 4 KiB pages).
pub const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// Below each block, in its mapping: the mapping's start and length.
const HEADER: usize = 2 * size_of::<usize>();

/// Maps a block of at least `size` bytes, aligned to 2 MiB and, if `huge`, advised `MADV_HUGEPAGE`; its bytes
/// are zero. None when the mapping fails.
pub fn map(size: usize, huge: bool) -> Option<NonNull<u8>> {
    // One huge page more than the size, for the alignment and the header.
    let len = size.checked_next_multiple_of(HUGE_PAGE)?.checked_add(HUGE_PAGE)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let raw = unsafe {
        libc::mmap(null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let start = raw as usize;
    let mut block = start.next_multiple_of(HUGE_PAGE);
    if block - start < HEADER {
        block += HUGE_PAGE; // the mapping was aligned: the header goes in its first huge page
    }
    // SAFETY: [block - HEADER, block) lies in the mapping, aligned for usize; the advice is for the block's part
    // of the mapping and changes no byte of it.
    unsafe {
        (block as *mut usize).sub(2).write(start);
        (block as *mut usize).sub(1).write(len);
        if huge {
            libc::madvise(block as *mut libc::c_void, start + len - block, libc::MADV_HUGEPAGE);
        }
    }
    NonNull::new(block as *mut u8)
}

/// The mapping a block from `map` lies in: start and length.
///
/// # Safety
/// `block` came from `map` and is not unmapped.
unsafe fn mapping(block: NonNull<u8>) -> (usize, usize) {
    let header = block.as_ptr().cast::<usize>();
    // SAFETY: the caller's promise: the header `map` wrote is below the block.
    unsafe { (header.sub(2).read(), header.sub(1).read()) }
}

/// Bytes a block from `map` may hold: to the end of its mapping (at least the size it was made for).
///
/// # Safety
/// As for `mapping`.
pub unsafe fn room(block: NonNull<u8>) -> usize {
    // SAFETY: the caller's promise.
    let (start, len) = unsafe { mapping(block) };
    start + len - block.as_ptr() as usize
}

/// Unmaps a block from `map`.
///
/// # Safety
/// As for `mapping`, and nothing uses the block afterwards.
pub unsafe fn unmap(block: NonNull<u8>) {
    // SAFETY: the caller's promise; the mapping `map` made, unmapped once.
    unsafe {
        let (start, len) = mapping(block);
        libc::munmap(start as *mut libc::c_void, len);
    }
}

/// A block grown past its mapping's end: a new mapping, into which the old block's pages are moved rather than
/// copied (`mremap`; both blocks are 2 MiB aligned, so huge pages move whole). What it grows by gets small pages
/// (see `BigAlloc`). None when either call fails; the old block is then as it was.
///
/// # Safety
/// `block` came from `map`, holds `old` bytes and is not used afterwards unless this fails; `new > old`.
unsafe fn grow(block: NonNull<u8>, old: usize, new: usize) -> Option<NonNull<u8>> {
    let to = map(new, false)?;
    // Whole huge pages: both blocks have room for the old size rounded up to one.
    let moved = old.next_multiple_of(HUGE_PAGE);
    // SAFETY: [block, block + moved) lies in the old block's mapping and [to, to + moved) in the new one, which
    // MREMAP_FIXED replaces. Then what is left of the old mapping, below and above the moved part, is unmapped:
    // not the whole range, where another thread may have mapped something into the hole meanwhile.
    unsafe {
        let (start, len) = mapping(block);
        let from = block.as_ptr();
        let moved_to = libc::mremap(from.cast(), moved, moved, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to.as_ptr());
        if moved_to == libc::MAP_FAILED {
            unmap(to);
            return None;
        }
        let end = from as usize + moved;
        libc::munmap(start as *mut libc::c_void, from as usize - start);
        if start + len > end {
            libc::munmap(end as *mut libc::c_void, start + len - end);
        }
    }
    Some(to)
}

/// The allocator: [`System`]'s, but a block allocated at `BIG` bytes or more, of an alignment a page gives, is a
/// mapping from [`map`] with huge pages (arrays made at their length). A block that grows into that size stays
/// the system allocator's: a growing `Vec` doubles its capacity and fills only part of the new half, and moving it
/// into a fresh mapping cost more than the huge pages saved (strobemeta's state pool, 1.0 -> 1.3 MiB: 7% slower).
/// Likewise what a mapped block grows by gets small pages.
pub struct BigAlloc;

fn big(layout: Layout) -> bool {
    layout.size() >= BIG && layout.align() <= 4096
}

/// The mapped blocks alive, by address (0: a free slot): a block of a big layout may also be the system
/// allocator's (grown into it), so `dealloc` and `realloc` ask here. When every slot is taken, new blocks are the
/// system allocator's.
static MAPPED: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];

/// Whether `ptr` is a mapped block alive.
fn is_mapped(ptr: *mut u8) -> bool {
    MAPPED.iter().any(|slot| slot.load(Ordering::Acquire) == ptr as usize)
}

/// Puts `block` in the slot holding `old` (0: any free slot); false when there is none.
fn swap_mapped(old: usize, block: usize) -> bool {
    MAPPED.iter().any(|slot| slot.compare_exchange(old, block, Ordering::AcqRel, Ordering::Relaxed).is_ok())
}

impl BigAlloc {
    /// A new mapped block of `size` bytes (huge pages if `huge`), or the system allocator's when it cannot be
    /// mapped or recorded.
    fn new_block(size: usize, align: usize, huge: bool, zeroed: bool) -> *mut u8 {
        if let Some(block) = map(size, huge) {
            if swap_mapped(0, block.as_ptr() as usize) {
                return block.as_ptr();
            }
            // SAFETY: the block just mapped, not handed out.
            unsafe { unmap(block) };
        }
        // SAFETY: a valid layout: the caller's.
        unsafe {
            let layout = Layout::from_size_align_unchecked(size, align);
            if zeroed {
                System.alloc_zeroed(layout)
            } else {
                System.alloc(layout)
            }
        }
    }
}

// SAFETY: a mapped block is a mapping of its own from `map`, 2 MiB aligned (so aligned as `big` admits) and at
// least its size long, recorded in MAPPED from its making to its unmapping (by `dealloc` or `realloc`, the only
// places that remove it). Every other block is the system allocator's, and goes back to it.
unsafe impl GlobalAlloc for BigAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if big(layout) {
            Self::new_block(layout.size(), layout.align(), true, false)
        } else {
            // SAFETY: the caller's layout, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if big(layout) {
            // A fresh mapping reads as zeros: nothing to write, no page touched.
            Self::new_block(layout.size(), layout.align(), true, true)
        } else {
            // SAFETY: the caller's layout, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match NonNull::new(ptr) {
            // SAFETY: a recorded block came from `map`; the caller frees it once.
            Some(block) if big(layout) && swap_mapped(ptr as usize, 0) => unsafe { unmap(block) },
            // SAFETY: the caller's block and layout, passed on.
            _ => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(block) = NonNull::new(ptr).filter(|_| big(layout) && is_mapped(ptr)) else {
            // SAFETY: the caller's block and layout, passed on: the system allocator's, at any new size.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // SAFETY: a recorded block came from `map`, is the caller's and lives until it is replaced here.
        unsafe {
            if new_size <= room(block) && new_size >= BIG {
                return ptr; // in place, larger or smaller
            }
            if new_size > room(block) {
                if let Some(to) = grow(block, layout.size(), new_size) {
                    if swap_mapped(ptr as usize, to.as_ptr() as usize) {
                        return to.as_ptr();
                    }
                    unmap(to); // cannot happen: the old block's slot is this thread's to replace
                    return null_mut();
                }
            }
            // Shrunk below BIG, or not grown in place: a new block, the bytes copied.
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            let to = if big(new) { Self::new_block(new_size, layout.align(), false, false) } else { System.alloc(new) };
            if !to.is_null() {
                std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            to
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: *mut u8, n: usize, seed: usize) {
        for i in (0..n).step_by(4093) {
            // SAFETY: i < n, within the block.
            unsafe { p.add(i).write((i / 4093 + seed) as u8) };
        }
    }

    fn check(p: *const u8, n: usize, seed: usize) {
        for i in (0..n).step_by(4093) {
            // SAFETY: i < n, within the block.
            assert_eq!(unsafe { p.add(i).read() }, (i / 4093 + seed) as u8, "byte {i} of {n}");
        }
    }

    /// Blocks across the threshold, grown and shrunk through every path (the system's, in place, moved pages, copy
    /// both ways) keep their bytes and their alignment, and are mapped exactly when made big or grown from big;
    /// zeroed blocks read as zeros.
    #[test]
    fn blocks_keep_their_bytes_as_they_grow_and_shrink() {
        let a = BigAlloc;
        let mid = [BIG + 1, BIG + HUGE_PAGE - HEADER, 3 * BIG + 5, 7 * BIG, BIG / 2, 10, 2 * BIG];
        for first in [100, BIG - 1, BIG] {
            for align in [1, 8, 64, 4096] {
                let mut layout = Layout::from_size_align(first, align).unwrap();
                // SAFETY: a valid layout of nonzero size.
                let mut p = unsafe { a.alloc(layout) };
                // Mapped while it has only been big since it was made; the system's once it was small.
                let mut mapped = first >= BIG;
                assert_eq!(is_mapped(p), mapped, "{first} bytes");
                fill(p, layout.size(), align);
                for &n in &mid {
                    // SAFETY: p is a live block of `layout`; n is nonzero and valid for the alignment.
                    p = unsafe { a.realloc(p, layout, n) };
                    assert!(!p.is_null() && (p as usize).is_multiple_of(align), "{n} bytes aligned to {align}");
                    mapped &= n >= BIG;
                    assert_eq!(is_mapped(p), mapped, "{first} bytes grown to {n}");
                    check(p, layout.size().min(n), align);
                    layout = Layout::from_size_align(n, align).unwrap();
                    fill(p, n, align);
                }
                // SAFETY: the live block of `layout`.
                unsafe { a.dealloc(p, layout) };
            }
        }
        for n in [BIG, 3 * BIG + 1] {
            let layout = Layout::from_size_align(n, 8).unwrap();
            // SAFETY: a valid layout of nonzero size.
            let p = unsafe { a.alloc_zeroed(layout) };
            // SAFETY: n bytes of the block.
            assert!(unsafe { std::slice::from_raw_parts(p, n) }.iter().all(|&b| b == 0));
            assert!(is_mapped(p) && (p as usize).is_multiple_of(HUGE_PAGE), "a big block starts on a huge page");
            // SAFETY: the live block of `layout`.
            unsafe { a.dealloc(p, layout) };
        }
    }
}
