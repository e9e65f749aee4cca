//! Software prefetch of the items the intake's hot path reads next.
//!
//! With `DropSite::Producers` a send drops a finished item that the consumer wrote last (it
//! built the batch), so its cache lines sit in the other core's cache. Asking for them a couple
//! of sends ahead lets the transfer overlap the application's own work instead of stalling the
//! send: in `end_span_probe` (bursts interleaved in one process) the median time to end a span
//! fell by about a tenth. Hints only: a prefetch never faults and does not change what the
//! program does, so a wrong address costs nothing but bandwidth.

/// Most cache lines of one item worth prefetching (an SDK `SpanData` is about six).
const MAX_LINES: usize = 8;
const LINE: usize = 64;

/// Prefetches the cache lines of the `T` at `item` for reading.
#[inline]
pub(crate) fn read<T>(item: *const T) {
    lines::<T>(item.cast(), |p| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `prefetcht0` is a hint that never faults, whatever the address; SSE, which
        // the intrinsic needs, is part of the x86_64 baseline.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    });
}

#[inline]
fn lines<T>(start: *const u8, mut each: impl FnMut(*const u8)) {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return;
    }
    let lines = size.div_ceil(LINE).min(MAX_LINES);
    for line in 0..lines {
        // `wrapping_add`: only an address is formed, never dereferenced.
        each(start.wrapping_add(line * LINE));
    }
}
