//! Training batches as common random numbers.
//!
//! A seed fixes the sequence of training batches, independent of the gene: the batch
//! stream of seed `s` is a ChaCha8 generator seeded from `(s, "batches")`, and each batch
//! is `batch_size` windows of `seq_len + 1` consecutive training tokens whose start is
//! drawn uniformly. Every gene trained with seed `s` sees exactly the same batches.

use crate::seed::rng_for;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// An endless, seeded stream of training windows.
pub struct BatchStream {
    rng: ChaCha8Rng,
    batch_size: usize,
    seq_len: usize,
    n_tokens: usize,
}

impl BatchStream {
    /// A stream over a split of `n_tokens` tokens. Panics if the split is shorter than one window.
    pub fn new(seed: u64, n_tokens: usize, batch_size: usize, seq_len: usize) -> Self {
        assert!(
            n_tokens > seq_len + 1,
            "split of {n_tokens} tokens is shorter than a window of {}",
            seq_len + 1
        );
        BatchStream {
            rng: rng_for(seed, "batches"),
            batch_size,
            seq_len,
            n_tokens,
        }
    }

    /// The start offsets of the next batch's windows.
    pub fn next_starts(&mut self) -> Vec<usize> {
        let hi = self.n_tokens - (self.seq_len + 1);
        (0..self.batch_size)
            .map(|_| self.rng.random_range(0..=hi))
            .collect()
    }

    /// Where the stream is: its generator's word position (for checkpoints).
    pub fn position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Moves the stream to `pos`, a value of [`BatchStream::position`].
    pub fn set_position(&mut self, pos: u128) {
        self.rng.set_word_pos(pos);
    }

    /// The next batch as (inputs, targets), each `batch_size * seq_len` ids, row-major.
    pub fn next_batch(&mut self, tokens: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let starts = self.next_starts();
        let mut x = Vec::with_capacity(self.batch_size * self.seq_len);
        let mut y = Vec::with_capacity(self.batch_size * self.seq_len);
        for s in starts {
            x.extend_from_slice(&tokens[s..s + self.seq_len]);
            y.extend_from_slice(&tokens[s + 1..s + 1 + self.seq_len]);
        }
        (x, y)
    }
}

/// Non-overlapping evaluation windows over a split: inputs `t[i..i+L]`, targets
/// `t[i+1..i+1+L]` for `i = 0, L, 2L, …`; the last window is shorter so that every token
/// after the first is predicted exactly once. Returns (inputs, targets) per window.
pub fn eval_windows(tokens: &[u32], seq_len: usize) -> Vec<(&[u32], &[u32])> {
    let n = tokens.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < n {
        let len = seq_len.min(n - 1 - i);
        out.push((&tokens[i..i + len], &tokens[i + 1..i + 1 + len]));
        i += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_resumes_the_stream() {
        let toks: Vec<u32> = (0..1000).collect();
        let mut a = BatchStream::new(3, toks.len(), 4, 16);
        for _ in 0..5 {
            a.next_batch(&toks);
        }
        let mut b = BatchStream::new(3, toks.len(), 4, 16);
        b.set_position(a.position());
        for _ in 0..3 {
            assert_eq!(a.next_batch(&toks), b.next_batch(&toks));
        }
    }

    #[test]
    fn same_seed_same_batches_other_seed_differs() {
        let toks: Vec<u32> = (0..1000).collect();
        let mut a = BatchStream::new(7, toks.len(), 4, 16);
        let mut b = BatchStream::new(7, toks.len(), 4, 16);
        let mut c = BatchStream::new(8, toks.len(), 4, 16);
        let (a1, _) = a.next_batch(&toks);
        let (b1, _) = b.next_batch(&toks);
        let (c1, _) = c.next_batch(&toks);
        assert_eq!(a1, b1);
        assert_ne!(a1, c1);
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let toks: Vec<u32> = (0..500).collect();
        let mut s = BatchStream::new(1, toks.len(), 3, 10);
        let (x, y) = s.next_batch(&toks);
        assert_eq!(x.len(), 30);
        for i in 0..30 {
            assert_eq!(y[i], x[i] + 1);
        }
    }

    #[test]
    fn eval_windows_predict_each_token_once() {
        let toks: Vec<u32> = (0..103).collect();
        let w = eval_windows(&toks, 10);
        let targets: Vec<u32> = w.iter().flat_map(|(_, y)| y.iter().copied()).collect();
        assert_eq!(targets, (1..103).collect::<Vec<u32>>());
        assert!(w.iter().all(|(x, y)| x.len() == y.len() && x.len() <= 10));
    }
}
