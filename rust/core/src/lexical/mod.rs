//! Lexical candidates: a BM25 inverted index over the corpus texts ([`Bm25Index`]) and its
//! exact top-k per query by MaxScore dynamic pruning ([`Bm25Index::search`]).
//!
//! Tokens ([`tokens`]): maximal runs of Unicode alphanumeric characters (`char::is_alphanumeric`),
//! lowercased (`str::to_lowercase`); no stemming, no stop words.
//!
//! Scoring: bm25s' default variant (`method="lucene"`, Lucene's BM25 since 8.0 without its
//! one-byte length norms), with `N` documents, `dl` a document's token count and `avgdl` their
//! mean (`sum dl / N`), `df` a term's document frequency and `tf` its count in a document:
//!
//! ```text
//! idf(t)    = ln(1 + (N - df + 0.5) / (df + 0.5))
//! norm(d)   = k1 * (1 - b + b * dl / avgdl)
//! w(t)      = qtf(t) * idf(t)              qtf: the term's count in the query
//! score(d)  = sum over the query's distinct terms t in order of first occurrence, of
//!             w(t) * (tf / (tf + norm(d)))  (terms absent from d add nothing)
//! ```
//!
//! evaluated in f64 in exactly that order, so every algorithm (the exhaustive scorer and the
//! pruned one) gives each document the same bits. A ranking is score descending, id
//! ascending; only documents with at least one query term are ranked (score > 0).

mod file;
mod index;
mod search;
mod tokenize;

pub use file::{check_index, reseal_index, FORMAT_VERSION, KEY_LEN, TOKENIZER_VERSION};
pub use index::{Bm25Index, Bm25Params};
pub use search::{Hits, Pruning};
pub use tokenize::tokens;
