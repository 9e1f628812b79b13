//! mimalloc as the global allocator, asked the way it is fastest.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to
//! `mi_malloc_aligned`, alignment 1 or 8 included. mimalloc 3 serves that
//! from its fast path only for blocks of at most 1 KiB taken off a free list
//! that happens to be aligned; anything larger whose block size is not a
//! power of two (a boxed future of a few KiB, a header map's entries) goes
//! to the generic path and over-allocates by the alignment. On the proxy
//! path that was 25 of the 86 allocations of a request and ~4 400
//! instructions of it (callgrind, `bench/RESULTS.md`).
//!
//! Here a layout whose alignment mimalloc's plain entry points already give
//! (at most `MI_MAX_ALIGN_SIZE`, 16, with a size that is a multiple of it:
//! [`plain`]) goes to `mi_malloc` / `mi_zalloc` / `mi_realloc`, as Rust's own
//! `System` allocator does with `malloc`. Anything else keeps the aligned
//! calls.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use libmimalloc_sys as mi;

/// The alignment `mi_malloc` guarantees for a block of at least this size.
const MIN_ALIGN: usize = 16;

/// The global allocator; `#[global_allocator] static A: MiMalloc = MiMalloc;`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// Whether mimalloc's plain calls already give `align` for `size`: block
/// sizes are multiples of 8 (of 16 from 16 bytes on, for sizes that are
/// multiples of 16) and pages start 16-aligned. Every layout of a Rust type
/// up to 16-aligned passes (its size is a multiple of its alignment).
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size && size.is_multiple_of(align)
}

// SAFETY (for every method): the pointers come from and go back to mimalloc;
// `plain` only lets through alignments mimalloc's unaligned calls satisfy
// (see the module docs and the test below), others use the aligned calls.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Sizes 1 B to 64 KiB (every 7th below 2 KiB, then growing), alignments
    /// 1 to 4096, several times each so that blocks come from several pages
    /// and free lists: each pointer is aligned, writable, zeroed when asked
    /// and keeps its bytes through a realloc.
    #[test]
    fn every_block_has_its_layouts_alignment() {
        let a = MiMalloc;
        let mut live = Vec::new();
        let mut sizes: Vec<usize> = (1..2048).step_by(7).collect();
        let mut s = 2048;
        while s <= 64 * 1024 {
            sizes.extend([s, s + 8, s + 16, s * 3 / 2]);
            s *= 2;
        }
        for shift in 0..=12 {
            let align = 1usize << shift;
            for &size in &sizes {
                for i in 0..6u8 {
                    let layout = Layout::from_size_align(size, align).expect("layout");
                    let p = if i % 2 == 0 {
                        unsafe { a.alloc(layout) }
                    } else {
                        unsafe { a.alloc_zeroed(layout) }
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    if i % 2 == 1 {
                        let zeroed = unsafe { core::slice::from_raw_parts(p, size) };
                        assert!(zeroed.iter().all(|b| *b == 0), "zeroed {size}");
                    }
                    unsafe { p.write_bytes(i, size) };
                    live.push((p, layout, i));
                }
            }
        }
        for (p, layout, fill) in live.iter_mut() {
            let grown = layout.size() * 2 + layout.align();
            let q = unsafe { a.realloc(*p, *layout, grown) };
            assert!(!q.is_null());
            assert_eq!(q as usize % layout.align(), 0, "realloc keeps {layout:?}");
            let kept = unsafe { core::slice::from_raw_parts(q, layout.size()) };
            assert!(kept.iter().all(|b| b == fill), "realloc keeps the bytes");
            *p = q;
            *layout = Layout::from_size_align(grown, layout.align()).expect("layout");
        }
        for (p, layout, _) in live {
            unsafe { a.dealloc(p, layout) };
        }
    }
}
