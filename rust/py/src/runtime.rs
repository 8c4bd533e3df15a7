//! Running long work off the GIL, through one gateway ([`run`], or [`run_plain`] for work
//! without threads or hooks): a rayon pool per thread count (rebuilt after a fork, whose child
//! has no worker threads), Ctrl-C checks and progress callbacks between blocks, the panic
//! guard and the error mapping.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use negmine_core::store::MappedMatrix;
use negmine_core::{Error, Hooks};
use pyo3::prelude::*;

use crate::errors::to_pyerr;

struct CachedPool {
    pid: u32,
    threads: usize,
    pool: Arc<rayon::ThreadPool>,
}

static POOL: Mutex<Option<CachedPool>> = Mutex::new(None);

/// More threads than this is a mistake, not a configuration.
const MAX_THREADS: usize = 1024;

/// Number of threads used when the caller does not say: all cores.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The pool for `threads` (None: all cores), created on first use in this process.
fn pool(threads: Option<usize>) -> PyResult<Arc<rayon::ThreadPool>> {
    let threads = match threads {
        Some(0) => {
            return Err(to_pyerr(Error::invalid(
                "threads must be positive (or None for all cores), got 0",
            )))
        }
        Some(t) if t > MAX_THREADS => {
            return Err(to_pyerr(Error::invalid(format!(
                "threads must be at most {MAX_THREADS}, got {t}"
            ))))
        }
        Some(t) => t,
        None => default_threads(),
    };
    let pid = std::process::id();
    let mut cached = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cached.as_ref() {
        if c.pid == pid && c.threads == threads {
            return Ok(c.pool.clone());
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("negmine-{i}"))
        .build()
        .map_err(|e| {
            to_pyerr(Error::invalid(format!(
                "cannot start {threads} threads: {e}"
            )))
        })?;
    let pool = Arc::new(pool);
    *cached = Some(CachedPool {
        pid,
        threads,
        pool: pool.clone(),
    });
    Ok(pool)
}

/// Runs long `work` on the pool for `threads` (None: all cores) with the GIL released, giving
/// it hooks that call `progress(done, total)` and check for Ctrl-C between blocks, and that
/// advise the kernel about the pages of `mapped`. A panic becomes `InternalError`; a Python
/// exception that stopped the work (KeyboardInterrupt, or one raised by `progress`) is
/// re-raised as is; any other core error is mapped by [`to_pyerr`].
pub fn run<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
    mapped: Option<&MappedMatrix>,
    work: impl FnOnce(&rayon::ThreadPool, &mut dyn Hooks) -> negmine_core::Result<T> + Send,
) -> PyResult<T> {
    run_raising(py, threads, progress, mapped, |pool, hooks, _| {
        work(pool, hooks)
    })
}

/// [`run`] for work that calls back into Python itself (a candidate source): `work` gets the
/// slot where such a callback leaves the exception that stopped it, re-raised as is like the
/// progress callback's.
pub fn run_raising<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
    mapped: Option<&MappedMatrix>,
    work: impl FnOnce(&rayon::ThreadPool, &mut dyn Hooks, &Raised) -> negmine_core::Result<T> + Send,
) -> PyResult<T> {
    let pool = pool(threads)?;
    let raised = Raised::default();
    let mut hooks = PyHooks {
        progress,
        mapped,
        raised: &raised,
    };
    detach(py, &raised, || work(&pool, &mut hooks, &raised))
}

/// [`run`] for work that needs neither the pool nor hooks (plans, file I/O).
pub fn run_plain<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> negmine_core::Result<T> + Send,
) -> PyResult<T> {
    detach(py, &Raised::default(), work)
}

/// The Python exception that stopped the work (KeyboardInterrupt, or one raised by a
/// callback), re-raised as is instead of the core's `Interrupted`.
#[derive(Default)]
pub struct Raised(Mutex<Option<PyErr>>);

impl Raised {
    /// Keeps `err` (the first one wins) and returns the error that stops the core.
    pub fn stop(&self, err: PyErr) -> Error {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(err);
        Error::Interrupted
    }

    fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The one place that releases the GIL.
fn detach<T: Send>(
    py: Python<'_>,
    raised: &Raised,
    work: impl FnOnce() -> negmine_core::Result<T> + Send,
) -> PyResult<T> {
    let result = py.detach(|| guarded(work));
    result.map_err(|err| match (raised.take(), err) {
        (Some(raised), Error::Interrupted) => raised,
        (_, err) => to_pyerr(err),
    })
}

/// Runs `work` turning a panic into [`Error::Internal`], so that no panic ever reaches Python
/// as a `PanicException`.
fn guarded<T>(work: impl FnOnce() -> negmine_core::Result<T>) -> negmine_core::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::Internal(message))
    })
}

/// Hooks that report progress to a Python callable, stop on Ctrl-C and manage the pages of a
/// mapped corpus. Called on the thread that released the GIL.
struct PyHooks<'a> {
    progress: Option<Py<PyAny>>,
    mapped: Option<&'a MappedMatrix>,
    raised: &'a Raised,
}

impl Hooks for PyHooks<'_> {
    fn progress(&mut self, done: u64, total: u64) -> negmine_core::Result<()> {
        let result = Python::attach(|py| {
            py.check_signals()?;
            if let Some(callback) = &self.progress {
                callback.call1(py, (done, total))?;
            }
            Ok::<_, PyErr>(())
        });
        result.map_err(|e| self.raised.stop(e))
    }

    fn will_read(&mut self, rows: Range<usize>) {
        if let Some(m) = self.mapped {
            m.will_need(rows);
        }
    }

    fn done_reading(&mut self, rows: Range<usize>) {
        if let Some(m) = self.mapped {
            m.dont_need(rows);
        }
    }
}

/// The kernels this CPU can run, slowest first, and `avx512vnni` where the int8 pre-scoring
/// kernel can use it (then `precision="auto"` pre-scores in int8).
#[pyfunction]
fn cpu_features() -> Vec<&'static str> {
    let mut features: Vec<&'static str> = negmine_core::kernels::Isa::available()
        .into_iter()
        .map(|isa| isa.name())
        .collect();
    if negmine_core::kernels::has_vnni() {
        features.push("avx512vnni");
    }
    features
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cpu_features, m)?)?;
    Ok(())
}
