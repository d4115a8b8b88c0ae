//! Sealing and opening the blocks of one large request on two threads: the work of a chunk is
//! split in two halves, one on a scoped helper thread, one on the caller's. Pure helpers over
//! slices; no keys, no I/O.

use std::sync::{Mutex, PoisonError};

/// Fewer blocks than this are done on the caller's thread alone: a thread costs more than it
/// saves on a small request.
pub(super) const PARALLEL_MIN_BLOCKS: usize = 64;

/// Runs `work` on every item, split over two threads when there are enough items. Falls back
/// to the caller's thread alone when no thread can be started.
pub(super) fn run_split<T: Send>(items: &mut [T], work: impl Fn(&mut T) + Sync) {
    if items.len() < PARALLEL_MIN_BLOCKS {
        items.iter_mut().for_each(&work);
        return;
    }
    let (first, second) = items.split_at_mut(items.len() / 2);
    // Each half behind a lock, so the caller can still do the second one when no helper
    // thread can be started.
    let halves = [Mutex::new(first), Mutex::new(second)];
    let run = |i: usize| {
        let mut half = halves[i].lock().unwrap_or_else(PoisonError::into_inner);
        half.iter_mut().for_each(&work);
    };
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("ssefs-crypto".to_string())
            .spawn_scoped(scope, || run(1));
        run(0);
        match helper {
            Ok(handle) => {
                if let Err(panic) = handle.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(_) => run(1),
        }
    });
}

/// Disjoint mutable slices `buf[start..start + len]` for ranges given in ascending order of
/// `start` that do not overlap.
pub(super) fn disjoint_mut(
    mut buf: &mut [u8],
    ranges: impl IntoIterator<Item = (usize, usize)>,
) -> Vec<&mut [u8]> {
    let mut consumed = 0;
    let mut out = Vec::new();
    for (start, len) in ranges {
        let rest = std::mem::take(&mut buf);
        let (_, rest) = rest.split_at_mut(start - consumed);
        let (piece, rest) = rest.split_at_mut(len);
        out.push(piece);
        buf = rest;
        consumed = start + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_done_once_on_either_path() {
        for n in [0, 1, PARALLEL_MIN_BLOCKS - 1, PARALLEL_MIN_BLOCKS, 1000] {
            let mut items: Vec<u64> = (0..n as u64).collect();
            run_split(&mut items, |x| *x = *x * 2 + 1);
            let expected: Vec<u64> = (0..n as u64).map(|x| x * 2 + 1).collect();
            assert_eq!(items, expected);
        }
    }

    #[test]
    fn slices_cover_exactly_the_ranges() {
        let mut buf: Vec<u8> = (0..100).collect();
        let pieces = disjoint_mut(&mut buf, [(0, 3), (10, 5), (15, 0), (90, 10)]);
        let got: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        assert_eq!(
            got,
            vec![
                vec![0, 1, 2],
                vec![10, 11, 12, 13, 14],
                vec![],
                (90..100).collect::<Vec<u8>>()
            ]
        );
    }
}
