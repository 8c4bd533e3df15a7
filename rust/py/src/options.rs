//! Option values from Python into the core's option types, with the core's wording for every
//! refusal: string enums parsed once as PyO3 extracts the argument ([`Wrap`], as polars'
//! `Wrap<T>: FromPyObject`), and keyword arguments read as [`Given`] values, which the core's
//! option structs set by name (`MineOptions::set`), so no binding restates a field.

use negmine_core::choice::Choice;
use negmine_core::options::{Given, OptionSpec, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::errors::PyResultExt;

/// A core enum parsed from its Python name.
#[derive(Clone, Copy)]
pub struct Wrap<T>(pub T);

impl<'py, T: Choice> FromPyObject<'_, 'py> for Wrap<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let given = given(&obj)?;
        match &given.value {
            Value::Text(text) => T::parse(text, &given.repr).map(Wrap).py_err(),
            _ => Err(T::not_a_string(&format!(
                "{} {}",
                given.type_name, given.repr
            )))
            .py_err(),
        }
    }
}

/// A Python value as the core's option setters read it. numpy scalars count as the Python
/// numbers they stand for (a numpy bool as a bool, never as an integer).
pub fn given(obj: &Bound<'_, PyAny>) -> PyResult<Given> {
    let value = if obj.is_none() {
        Value::None
    } else if obj.is_instance_of::<PyBool>() || is_numpy(obj, "bool_")? {
        Value::Bool(obj.is_truthy()?)
    } else if let Ok(text) = obj.cast::<PyString>() {
        Value::Text(text.to_cow()?.into_owned())
    } else if obj.is_instance_of::<PyFloat>() || is_numpy(obj, "floating")? {
        Value::Float(obj.extract::<f64>()?)
    } else if obj.is_instance_of::<PyInt>() || is_numpy(obj, "integer")? {
        // Past i128 no option could hold it: kept as "an int" for the range refusal.
        match obj.extract::<i128>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Other,
        }
    } else {
        Value::Other
    };
    let type_name = if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        "int".to_string()
    } else {
        obj.get_type().name()?.to_cow()?.into_owned()
    };
    Ok(Given {
        value,
        type_name,
        repr: obj.repr()?.to_cow()?.into_owned(),
    })
}

/// Whether `obj` is an instance of `numpy.<kind>` (without importing numpy when the caller
/// has not: then it cannot be a numpy scalar).
fn is_numpy(obj: &Bound<'_, PyAny>, kind: &str) -> PyResult<bool> {
    let py = obj.py();
    let modules = py.import("sys")?.getattr("modules")?;
    match modules.get_item("numpy") {
        Ok(numpy) => obj.is_instance(&numpy.getattr(kind)?),
        Err(_) => Ok(false),
    }
}

/// A core value as the Python value a caller would give (`Other` has none: `None`).
fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::None | Value::Other => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Text(t) => PyString::new(py, t).into_any(),
    })
}

/// An options table as Python reads it: one dict per option (`name`, `type`, `optional`,
/// `choices`, `default`, `help`), in declared order.
pub fn table_to_py<'py>(py: Python<'py>, table: &[OptionSpec]) -> PyResult<Bound<'py, PyTuple>> {
    let rows = table
        .iter()
        .map(|spec| {
            let row = PyDict::new(py);
            row.set_item("name", spec.name)?;
            row.set_item("type", spec.kind)?;
            row.set_item("optional", spec.optional)?;
            row.set_item("choices", PyTuple::new(py, &spec.choices)?)?;
            row.set_item("default", value_to_py(py, &spec.default)?)?;
            row.set_item("help", &spec.help)?;
            Ok(row)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, rows)
}
