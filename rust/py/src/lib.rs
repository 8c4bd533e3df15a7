//! `negmine._core`: the Python binding of negmine-core. This file only registers; each exposed
//! area has its own module.

use pyo3::prelude::*;

mod batches;
mod dataset;
mod errors;
mod fusion;
mod inputs;
mod kmeans;
mod lexical;
mod maxsim;
mod memory;
mod mine;
mod options;
mod runtime;
mod search;
mod store;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    runtime::register(m)?;
    batches::register(m)?;
    dataset::register(m)?;
    store::register(m)?;
    search::register(m)?;
    mine::register(m)?;
    kmeans::register(m)?;
    lexical::register(m)?;
    fusion::register(m)?;
    maxsim::register(m)?;
    memory::register(m)?;
    Ok(())
}
