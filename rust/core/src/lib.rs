//! negmine-core: exact top-k similarity search and hard-negative mining over memory-mapped
//! embeddings. Pure Rust; the Python binding lives in the `negmine-py` crate.

pub mod batches;
pub mod choice;
pub mod dataset;
pub mod dedup;
pub mod error;
pub mod fusion;
pub mod hooks;
pub mod idlists;
pub mod kernels;
pub mod kmeans;
pub mod lexical;
pub mod matrix;
pub mod maxsim;
pub mod memory;
pub mod metric;
pub mod mine;
pub mod options;
pub mod pack;
pub mod quant;
pub mod rescore;
pub mod rng;
pub mod rotation;
pub mod search;
pub mod store;
pub mod topk;

pub use error::{Error, Result};
pub use hooks::{Hooks, NoHooks};
pub use idlists::IdLists;
pub use matrix::{DType, Elements, MatrixView};
pub use metric::Metric;
pub use search::{search, search_with_stats, Neighbors, SearchOptions, SearchStats};
