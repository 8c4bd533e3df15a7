//! Hard-negative mining: candidates from a [`CandidateSource`] (the exact
//! [`search`](crate::search::search) by default) rescored exactly, false-negative filters, a window over the filtered ranking, seeded sampling, and a record of
//! what every filter removed.
//!
//! For each query, candidates come in ranked order (score descending, id ascending) with its
//! positives and their duplicates already excluded by the search. Walking that ranking:
//! 1. `max_score` / `min_score` drop candidates above / below absolute cuts;
//! 2. `absolute_margin` drops `score + m > p`, `relative_margin` drops `score > p - |p| m`,
//!    where `p` is the query's lowest positive score (sentence-transformers' definition);
//! 3. a candidate whose cosine with one of the query's positives is `>= dup_threshold` is a
//!    near-duplicate of a positive and dropped;
//! 4. a candidate in the same duplicate group as a better candidate already kept is dropped;
//! 5. what is left is the filtered ranking; its ranks `[range_min, range_max)` are the window;
//! 6. `top` takes the window in order, `random` in a seeded uniform order and `simans` in a
//!    seeded order weighted by `exp(-a (s - p - b)^2)`; a candidate whose cosine with a negative
//!    already chosen is `>= dup_threshold` is skipped, until `num_negatives` are chosen.
//!
//! Candidates are fetched again, deeper ([`depth_schedule`], the same for every source), for
//! the queries whose window is not complete yet, so filters never starve the window silently:
//! a query ends with fewer negatives only when the whole corpus is used up (a source that
//! cannot go deep enough hands the query to the exact search). Every score, the search's and
//! the rescored ones alike, is refused when it could overflow f32
//! ([`crate::metric::score_limit`]). Results depend only on the inputs, the options and the
//! seed (mixed with the query's global index by a hash), never on threads, blocks or how
//! queries are chunked.
//!
//! The options and their validation are in `options.rs`, the candidate sources in
//! `source.rs`, the walk of one query's ranking (the filters, the window and the sampling) in
//! `walk.rs`, and the entry points that fetch, rescore and deepen the rankings ([`mine_with`],
//! [`mine`]) and the schedule in `drivers.rs`.

mod drivers;
mod options;
mod source;
mod teacher;
pub(crate) mod walk;

pub use drivers::{depth_schedule, mine, mine_judged, mine_with, MineJob, Mined};
pub use options::{MineOptions, Sampling, MAX_RANK};
pub use source::{CandidateSource, Candidates, ExactSource, FnSource};
pub use teacher::{FnTeacher, Judging, Teacher};
pub use walk::{Filter, FilterCounts, Removed};
