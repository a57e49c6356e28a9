//! The global allocator: glibc's malloc, with a per-thread cache of freed small blocks in front of it.
//!
//! An inspect report is hundreds of small `String`s and `Vec`s that are all freed together. glibc's own per-thread
//! cache (tcache) holds 7 blocks per size, so most of those frees, and the allocations for the next file, take
//! malloc's slow paths (docs/benchmarks.md). Here freed blocks up to 512 bytes go on a free list per 16-byte size
//! class and are handed out again, never returned to malloc: the cache holds at most the largest number of small
//! blocks that were live at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Largest size cached; larger blocks go straight to malloc.
const MAX_SMALL: usize = 512;
const GRANULE: usize = 16;
const CLASSES: usize = MAX_SMALL / GRANULE;

thread_local! {
    /// Heads of the free lists; a free block's first word points to the next one.
    static FREE: [Cell<*mut u8>; CLASSES] = const { [const { Cell::new(ptr::null_mut()) }; CLASSES] };
}

pub struct Cached;

/// The size class of a cacheable layout, and the layout its blocks really have.
fn class(layout: Layout) -> Option<(usize, Layout)> {
    if layout.size() > MAX_SMALL || layout.align() > GRANULE {
        return None;
    }
    // Rust never allocates 0 bytes through the global allocator, so the class is below CLASSES.
    let class = layout.size().saturating_sub(1) / GRANULE;
    Layout::from_size_align((class + 1) * GRANULE, GRANULE).ok().map(|l| (class, l))
}

// SAFETY: every block is malloc's (System's), with a layout at least as large and as aligned as the one asked
// for; a block of class c is only ever handed out again for a layout of class c, and its first word is used
// only while it is free.
unsafe impl GlobalAlloc for Cached {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, real)) = class(layout) else { return System.alloc(layout) };
        let cached = FREE
            .try_with(|free| {
                let head = free[class].get();
                if !head.is_null() {
                    free[class].set(head.cast::<*mut u8>().read());
                }
                head
            })
            .unwrap_or(ptr::null_mut());
        if cached.is_null() {
            System.alloc(real)
        } else {
            cached
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some((class, real)) = class(layout) else { return System.dealloc(block, layout) };
        let cached = FREE.try_with(|free| {
            block.cast::<*mut u8>().write(free[class].get());
            free[class].set(block);
        });
        if cached.is_err() {
            System.dealloc(block, real);
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            Some(_) => {
                let block = self.alloc(layout);
                if !block.is_null() {
                    block.write_bytes(0, layout.size());
                }
                block
            }
            // calloc: fresh pages need no zeroing.
            None => System.alloc_zeroed(layout),
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class(layout), class(new_layout)) {
            (None, None) => System.realloc(block, layout, new_size),
            (Some((old, _)), Some((new, _))) if old == new => block,
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_keep_their_contents_and_are_reused() {
        let a = Cached;
        // SAFETY: every block is freed once, with the layout it was allocated or reallocated with.
        unsafe {
            for align in [1, 2, 4, 8, 16, 32] {
                for size in (1..=MAX_SMALL + 40).step_by(7) {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let block = a.alloc(layout);
                    assert!(!block.is_null() && (block as usize).is_multiple_of(align));
                    block.write_bytes(0xa5, size);
                    let grown = a.realloc(block, layout, size * 2);
                    assert!((0..size).all(|i| *grown.add(i) == 0xa5));
                    let zeroed = a.alloc_zeroed(layout);
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    a.dealloc(zeroed, layout);
                    a.dealloc(grown, Layout::from_size_align(size * 2, align).unwrap());
                }
            }
            let small = Layout::from_size_align(40, 8).unwrap();
            let block = a.alloc(small);
            a.dealloc(block, small);
            // Same 16-byte class (33..=48 bytes): the freed block again.
            let same_class = Layout::from_size_align(48, 4).unwrap();
            assert_eq!(a.alloc(same_class), block);
            a.dealloc(block, same_class);
        }
    }
}
