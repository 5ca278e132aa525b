//! The anti-replay window of one epoch: a sliding bitmap of the sequence numbers already accepted
//! (RFC 6347 §4.1.2.6), kept as a ring of 64-bit blocks with one spare block so that moving the window
//! clears whole blocks and never a bit at a time (RFC 6479).

/// Which sequence numbers of one epoch were accepted, within `window` of the highest.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    blocks: Box<[u64]>,
    window: u64,
    highest: Option<u64>,
}

const BLOCK_BITS: u64 = u64::BITS as u64;

impl ReplayWindow {
    /// A window that remembers at least `window` sequence numbers below the highest seen (rounded up
    /// to a multiple of 64; at least 64).
    pub fn new(window: usize) -> Self {
        let words = window.div_ceil(BLOCK_BITS as usize).max(1);
        ReplayWindow { blocks: vec![0; words + 1].into_boxed_slice(), window: words as u64 * BLOCK_BITS, highest: None }
    }

    /// How many sequence numbers below the highest it remembers.
    pub fn size(&self) -> u64 {
        self.window
    }

    /// Whether `seq` is new: above the highest, or within the window and not seen.
    pub fn check(&self, seq: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if seq > h => true,
            Some(h) if h - seq >= self.window => false,
            Some(_) => self.blocks[self.block_of(seq)] & bit_of(seq) == 0,
        }
    }

    /// Records `seq` as accepted; `false` (and nothing changes) if it was not new.
    pub fn mark(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if self.highest.map_or(true, |h| seq > h) {
            self.advance_to(seq);
        }
        let block = self.block_of(seq);
        self.blocks[block] |= bit_of(seq);
        true
    }

    /// Makes `seq` the highest, clearing the blocks the window slides over.
    fn advance_to(&mut self, seq: u64) {
        let n = self.blocks.len() as u64;
        if let Some(h) = self.highest {
            let first_new = h / BLOCK_BITS + 1;
            let last_new = seq / BLOCK_BITS;
            if last_new >= first_new {
                if last_new - first_new + 1 >= n {
                    self.blocks.fill(0);
                } else {
                    for b in first_new..=last_new {
                        self.blocks[(b % n) as usize] = 0;
                    }
                }
            }
        }
        self.highest = Some(seq);
    }

    fn block_of(&self, seq: u64) -> usize {
        ((seq / BLOCK_BITS) % self.blocks.len() as u64) as usize
    }
}

fn bit_of(seq: u64) -> u64 {
    1 << (seq % BLOCK_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_each_number_once_and_forgets_below_the_window() {
        let mut w = ReplayWindow::new(1024);
        assert_eq!(w.size(), 1024);
        assert!(w.mark(5));
        assert!(!w.mark(5));
        assert!(w.mark(3), "below the highest but inside the window and unseen");
        assert!(!w.check(3));
        assert!(w.mark(5 + 1024 + 10));
        assert!(!w.check(5), "slid out of the window");
        assert!(!w.check(15), "exactly 1024 below the highest (1039) is too old");
        assert!(w.check(16));
        assert!(w.mark(16));
        assert!(!w.mark(16));
        // A jump far ahead forgets everything.
        assert!(w.mark(1 << 40));
        assert!(w.mark((1 << 40) - 1));
        assert!(!w.check((1 << 40) - 1024));
    }

    #[test]
    fn sizes_round_up_to_whole_blocks() {
        assert_eq!(ReplayWindow::new(1000).size(), 1024);
        assert_eq!(ReplayWindow::new(0).size(), 64);
    }

    proptest! {
        /// Against a model that keeps every accepted number: the window accepts exactly the numbers never
        /// accepted before that are within `size` of the highest.
        #[test]
        fn matches_a_set_model(seqs in proptest::collection::vec(0u64..5000, 1..400)) {
            let mut w = ReplayWindow::new(1024);
            let mut seen = std::collections::BTreeSet::new();
            let mut highest: Option<u64> = None;
            for s in seqs {
                let fresh = !seen.contains(&s) && highest.map_or(true, |h| s > h || h - s < 1024);
                prop_assert_eq!(w.mark(s), fresh, "seq {}", s);
                if fresh {
                    seen.insert(s);
                    highest = Some(highest.map_or(s, |h| h.max(s)));
                }
            }
        }
    }
}
