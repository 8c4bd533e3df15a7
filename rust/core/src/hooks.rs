//! What a long computation reports to its caller between blocks of work: progress (and the
//! chance to stop it), and which corpus rows it reads next and is done with. Every pass over
//! the corpus ([`search`](crate::search::search), and mining and k-means through it) takes one.

use std::ops::Range;

use crate::error::Result;

/// Called between blocks, on the thread that called [`search`](crate::search::search).
pub trait Hooks {
    /// `done` of `total` corpus rows are scored (summed over query batches). An error stops the
    /// search and is returned by it (e.g. [`Error::Interrupted`](crate::Error::Interrupted)
    /// on Ctrl-C).
    fn progress(&mut self, _done: u64, _total: u64) -> Result<()> {
        Ok(())
    }

    /// Corpus rows that are about to be read.
    fn will_read(&mut self, _rows: Range<usize>) {}

    /// Corpus rows that will not be read again during this pass (a mapped file can drop them).
    fn done_reading(&mut self, _rows: Range<usize>) {}
}

/// Hooks that do nothing.
pub struct NoHooks;
impl Hooks for NoHooks {}
