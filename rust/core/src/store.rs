//! Memory-mapped `.npy` embeddings with strict header validation, and atomic saving.
//!
//! Reading: [`parse_header`] is a pure function over the first bytes of a file. It parses the
//! header dict as a Python literal (never evaluates it), caps it at 10 000 bytes like numpy,
//! accepts exactly `{'descr', 'fortran_order', 'shape'}` with `descr` `'<f4'` or `'<f2'`, a
//! C-order 2-D shape, and computes sizes with checked arithmetic. [`MappedMatrix::open`] then
//! checks the file is a regular file (before opening it: a FIFO is never opened), that the data
//! are exactly as long as the header says (no "missing bytes", no trailing bytes), and maps the
//! data read-only. [`MappedMatrix::read`] does the same checks but copies the data into memory.
//!
//! Accepted `descr` values are only the explicit little-endian `'<f4'` and `'<f2'` (what numpy
//! writes on every machine). `'=f4'`, `'f4'` and `'float32'` are refused: they mean "the byte
//! order of the machine that wrote the file", which a reader cannot know.
//!
//! **Mapped files must not shrink.** A mapping of a file that another process truncates or
//! rewrites in place is undefined behaviour: reading a page past the new end raises SIGBUS and
//! kills the process. negmine itself never writes into a file it maps ([`save`] writes a new
//! inode and renames it into place, so existing mappings keep the old data). When the input
//! may change under you, use [`MappedMatrix::read`], which validates and copies the data once.
//!
//! Writing: [`save`] writes `.npy` 1.0 (2.0 only when the header would not fit) exactly as
//! `np.save` does, atomically: the data go to an unnamed `O_TMPFILE` in the destination
//! directory, are fsynced, linked under a hidden temporary name and renamed over the
//! destination, then the directory is fsynced. A crash while writing leaves no file behind;
//! the destination is always the old file or the complete new one. Where `O_TMPFILE` is not
//! supported a named hidden temp file is used instead and removed on every error (only a
//! `kill -9` during such a write can leave it behind). The new file gets the default mode
//! (`0o666 & !umask`), and a symlink at the destination is replaced, not followed.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use half::f16;
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};
use crate::matrix::{DType, Elements, MatrixView};

/// The first bytes of every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header (the dict text) we parse, numpy's own default limit (`max_header_size`).
pub const MAX_HEADER_LEN: usize = 10_000;

/// Bytes before the header text: magic, 2 version bytes, and a u16 (1.0) or u32 (2.0, 3.0)
/// header length.
const PREFIX_V1: usize = MAGIC.len() + 2 + 2;
const PREFIX_V2: usize = MAGIC.len() + 2 + 4;

/// Enough of a file to hold any header [`parse_header`] accepts.
pub const MAX_PREFIX_LEN: usize = PREFIX_V2 + MAX_HEADER_LEN;

/// numpy aligns the data start of files it writes to 64 bytes.
const ARRAY_ALIGN: usize = 64;

/// Nesting deeper than this is refused, so that `[[[[...` cannot exhaust the stack.
const MAX_NESTING: usize = 16;

/// A validated `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version `(major, minor)`: (1, 0), (2, 0) or (3, 0).
    pub version: (u8, u8),
    pub dtype: DType,
    pub rows: usize,
    pub dim: usize,
    /// Byte offset of the first element; a multiple of the element size.
    pub data_offset: usize,
    /// `rows * dim * element size`, checked.
    pub data_len: usize,
}

/// Why a header was refused: says what was expected and what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError(String);

impl HeaderError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HeaderError {}

fn fail<T>(message: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError(message.into()))
}

/// Parses and validates the header at the start of `bytes` (a file prefix; bytes after the
/// header are ignored). Never panics, never evaluates anything.
pub fn parse_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        let shown = &bytes[..bytes.len().min(MAGIC.len())];
        return fail(format!(
            "not a .npy file: expected magic b\"\\x93NUMPY\", found b\"{}\"",
            shown.escape_ascii()
        ));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return fail("file ends inside the .npy version bytes"),
    };
    let prefix_len = match (major, minor) {
        (1, 0) => PREFIX_V1,
        (2, 0) | (3, 0) => PREFIX_V2,
        _ => {
            return fail(format!(
                "unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
            ))
        }
    };
    let header_len = match bytes.get(8..prefix_len) {
        Some([a, b]) => usize::from(u16::from_le_bytes([*a, *b])),
        Some([a, b, c, d]) => {
            let len = u32::from_le_bytes([*a, *b, *c, *d]);
            usize::try_from(len).unwrap_or(usize::MAX)
        }
        _ => return fail("file ends inside the .npy header length"),
    };
    if header_len > MAX_HEADER_LEN {
        return fail(format!(
            "header is {header_len} bytes, more than the {MAX_HEADER_LEN} bytes allowed \
             (numpy's limit); refusing to parse it"
        ));
    }
    let data_offset = prefix_len + header_len;
    let Some(text) = bytes.get(prefix_len..data_offset) else {
        return fail(format!(
            "header length says {header_len} bytes, but the file ends {} bytes into it",
            bytes.len() - prefix_len.min(bytes.len())
        ));
    };
    if major == 3 && std::str::from_utf8(text).is_err() {
        return fail("header of a version 3.0 file is not valid UTF-8");
    }
    let value = Parser::new(text, major < 3).parse_document()?;
    let fields = header_fields(value)?;
    let dtype = dtype_from_descr(&fields.descr)?;
    if fields.fortran_order {
        return fail(format!(
            "fortran_order is True (column-major data); negmine reads C-order data only: convert \
             with np.save(path, np.ascontiguousarray(x, dtype='{}'))",
            dtype_code(dtype)
        ));
    }
    let (rows, dim) = shape_2d(&fields.shape)?;
    let data_len = rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            HeaderError(format!(
                "shape ({rows}, {dim}) of {} is too large: its byte size overflows",
                dtype.name()
            ))
        })?;
    if data_offset % dtype.size() != 0 {
        return fail(format!(
            "data start at byte {data_offset}, which is not a multiple of the {}-byte {} element \
             size; re-save the file with np.save",
            dtype.size(),
            dtype.name()
        ));
    }
    Ok(Header {
        version: (major, minor),
        dtype,
        rows,
        dim,
        data_offset,
        data_len,
    })
}

/// numpy's `descr` for `dtype`.
fn dtype_code(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
    }
}

/// A Python literal as found in a header.
#[derive(Debug)]
enum Value {
    Dict(Vec<(Value, Value)>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Str(String),
    /// `None` when the integer does not fit in an i128 (its sign is kept in `negative`).
    Int {
        value: Option<i128>,
        negative: bool,
    },
    Bool(bool),
    None,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Dict(_) => "a dict",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Str(_) => "a string",
            Value::Int { .. } => "an int",
            Value::Bool(_) => "a bool",
            Value::None => "None",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        match self {
            Value::Dict(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Value::Tuple(items) => {
                f.write_str("(")?;
                seq(f, items)?;
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            Value::Str(s) => write!(f, "'{}'", s.escape_debug()),
            Value::Int { value: Some(v), .. } => write!(f, "{v}"),
            Value::Int {
                value: None,
                negative,
            } => f.write_str(if *negative {
                "<huge negative int>"
            } else {
                "<huge int>"
            }),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::None => f.write_str("None"),
        }
    }
}

/// A strict parser for the subset of Python literals numpy headers use: dicts, lists, tuples,
/// quoted strings without escapes, decimal integers, `True`, `False`, `None`. Anything else (a
/// name, a call, an operator) is an error naming what was found and where.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    /// Version 1.0 and 2.0 headers written by Python 2 may hold `3L` longs; numpy accepts them.
    allow_long_suffix: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a [u8], allow_long_suffix: bool) -> Self {
        Parser {
            text,
            pos: 0,
            allow_long_suffix,
        }
    }

    fn parse_document(&mut self) -> Result<Value, HeaderError> {
        let value = self.parse_value(0)?;
        self.skip_whitespace();
        if self.pos != self.text.len() {
            return self.unexpected("the end of the header");
        }
        Ok(value)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.get(self.pos).copied()
    }

    fn unexpected<T>(&self, expected: &str) -> Result<T, HeaderError> {
        let rest = &self.text[self.pos.min(self.text.len())..];
        if rest.is_empty() {
            return fail(format!(
                "header is not a valid Python literal: expected {expected}, found the end of the \
                 header"
            ));
        }
        let shown = &rest[..rest.len().min(24)];
        fail(format!(
            "header is not a valid Python literal: expected {expected} at byte {}, found \"{}\" \
             (the header is parsed as a literal, never evaluated)",
            self.pos,
            shown.escape_ascii()
        ))
    }

    fn parse_value(&mut self, depth: usize) -> Result<Value, HeaderError> {
        if depth > MAX_NESTING {
            return fail(format!(
                "header nests containers more than {MAX_NESTING} levels deep"
            ));
        }
        match self.peek() {
            Some(b'{') => self.parse_dict(depth),
            Some(b'[') => Ok(Value::List(self.parse_items(b']', depth)?.0)),
            Some(b'(') => {
                let (items, trailing_comma) = self.parse_items(b')', depth)?;
                if items.len() == 1 && !trailing_comma {
                    // `(x)` is just a parenthesised x in Python, not a tuple.
                    let mut items = items;
                    Ok(items.pop().unwrap_or(Value::None))
                } else {
                    Ok(Value::Tuple(items))
                }
            }
            Some(quote @ (b'\'' | b'"')) => self.parse_str(quote),
            Some(b'-' | b'+' | b'0'..=b'9') => self.parse_int(),
            Some(c) if c == b'_' || c.is_ascii_alphabetic() => self.parse_name(),
            _ => self.unexpected("a literal (dict, tuple, list, string, int, True/False/None)"),
        }
    }

    fn parse_dict(&mut self, depth: usize) -> Result<Value, HeaderError> {
        self.pos += 1; // '{'
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Dict(items));
            }
            let key = self.parse_value(depth + 1)?;
            if self.peek() != Some(b':') {
                return self.unexpected("':' after a dict key");
            }
            self.pos += 1;
            let value = self.parse_value(depth + 1)?;
            items.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return self.unexpected("',' or '}' in a dict"),
            }
        }
    }

    /// Items of a list or tuple up to `close`; also says whether a comma ended the sequence.
    fn parse_items(&mut self, close: u8, depth: usize) -> Result<(Vec<Value>, bool), HeaderError> {
        self.pos += 1; // '[' or '('
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            items.push(self.parse_value(depth + 1)?);
            trailing_comma = false;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => {}
                _ => {
                    let expected = if close == b')' {
                        "',' or ')' in a tuple"
                    } else {
                        "',' or ']' in a list"
                    };
                    return self.unexpected(expected);
                }
            }
        }
    }

    fn parse_str(&mut self, quote: u8) -> Result<Value, HeaderError> {
        let start = self.pos + 1;
        let rest = &self.text[start..];
        let Some(len) = rest
            .iter()
            .position(|&c| c == quote || c == b'\\' || c == b'\n')
        else {
            return fail(format!(
                "header has an unterminated string starting at byte {}",
                self.pos
            ));
        };
        if rest[len] != quote {
            return if rest[len] == b'\\' {
                fail(format!(
                    "header string starting at byte {} holds a backslash escape, which numpy \
                     headers never contain",
                    self.pos
                ))
            } else {
                fail(format!(
                    "header has an unterminated string starting at byte {}",
                    self.pos
                ))
            };
        }
        let raw = &rest[..len];
        if start + len + 1 < self.text.len() && self.text[start + len + 1] == quote && len == 0 {
            // '' followed by ' would be the start of a triple-quoted string.
            return fail("header holds a triple-quoted string, which numpy headers never contain");
        }
        self.pos = start + len + 1;
        // Versions 1.0 and 2.0 are latin-1; 3.0 was checked to be UTF-8 as a whole.
        let text = match std::str::from_utf8(raw) {
            Ok(s) => s.to_owned(),
            Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
        };
        Ok(Value::Str(text))
    }

    fn parse_int(&mut self) -> Result<Value, HeaderError> {
        let start = self.pos;
        let mut negative = false;
        while let Some(sign @ (b'-' | b'+')) = self.peek() {
            negative ^= sign == b'-';
            self.pos += 1;
        }
        self.skip_whitespace();
        let digits_start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.text[digits_start..self.pos];
        if digits.is_empty() {
            self.pos = start;
            return self.unexpected("a number after the sign");
        }
        if self.allow_long_suffix && matches!(self.text.get(self.pos), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        if let Some(&c) = self.text.get(self.pos) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
                self.pos = start;
                return self.unexpected("a decimal integer (no floats, hex or '_' separators)");
            }
        }
        if digits.len() > 1 && digits[0] == b'0' && digits.iter().any(|&d| d != b'0') {
            self.pos = start;
            return self.unexpected("a decimal integer without leading zeros");
        }
        let mut value: Option<i128> = Some(0);
        for &d in digits {
            value = value
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(i128::from(d - b'0')));
        }
        let value = if negative { value.map(|v| -v) } else { value };
        Ok(Value::Int { value, negative })
    }

    fn parse_name(&mut self) -> Result<Value, HeaderError> {
        let start = self.pos;
        while self
            .text
            .get(self.pos)
            .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
        {
            self.pos += 1;
        }
        match &self.text[start..self.pos] {
            b"True" => Ok(Value::Bool(true)),
            b"False" => Ok(Value::Bool(false)),
            b"None" => Ok(Value::None),
            name => {
                let what = if self.peek() == Some(b'(') {
                    "a call expression"
                } else {
                    "a name"
                };
                fail(format!(
                    "header holds {what} `{}` at byte {start}; only literals are allowed (the \
                     header is parsed, never evaluated)",
                    name.escape_ascii()
                ))
            }
        }
    }
}

struct HeaderFields {
    descr: Value,
    fortran_order: bool,
    shape: Value,
}

const KEYS: &str = "'descr', 'fortran_order', 'shape'";

fn header_fields(value: Value) -> Result<HeaderFields, HeaderError> {
    let Value::Dict(items) = value else {
        return fail(format!(
            "header must be a dict literal with keys {KEYS}, found {}",
            value.kind()
        ));
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (key, value) in items {
        let Value::Str(name) = key else {
            return fail(format!(
                "header keys must be strings ({KEYS}), found {} key {key}",
                key.kind()
            ));
        };
        let slot = match name.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            _ => {
                return fail(format!(
                    "header has unexpected key '{}' (expected exactly {KEYS})",
                    name.escape_debug()
                ))
            }
        };
        if slot.replace(value).is_some() {
            return fail(format!("header has key '{name}' twice"));
        }
    }
    let missing = |name: &str| HeaderError(format!("header lacks key '{name}' (expected {KEYS})"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(b) => b,
        other => {
            return fail(format!(
                "fortran_order must be True or False, found {} {other}",
                other.kind()
            ))
        }
    };
    let shape = shape.ok_or_else(|| missing("shape"))?;
    Ok(HeaderFields {
        descr,
        fortran_order,
        shape,
    })
}

const ACCEPTED: &str = "negmine reads float32 ('<f4') or float16 ('<f2') embeddings";

fn dtype_from_descr(descr: &Value) -> Result<DType, HeaderError> {
    let code = match descr {
        Value::Str(code) => code,
        Value::List(_) => {
            return fail(format!(
                "descr {descr} is a structured dtype (a list of fields); {ACCEPTED}"
            ))
        }
        other => {
            return fail(format!(
                "descr must be a dtype string such as '<f4', found {} {other}",
                other.kind()
            ))
        }
    };
    let bytes = code.as_bytes();
    let (order, rest) = match bytes.first() {
        Some(&c @ (b'<' | b'>' | b'=' | b'|')) => (Some(c), &bytes[1..]),
        _ => (None, bytes),
    };
    let kind = rest.first().copied();
    let size: Option<usize> = std::str::from_utf8(rest.get(1..).unwrap_or_default())
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok());
    let code_shown = code.escape_debug();
    let bits = size.map_or(String::new(), |s| s.saturating_mul(8).to_string());
    let name = match kind {
        Some(b'O') => {
            return fail(format!(
                "descr '{code_shown}' is an object dtype (pickled Python objects), which negmine \
                 never loads; {ACCEPTED}"
            ))
        }
        Some(b'f') if matches!(size, Some(2 | 4)) => {
            let dtype = if size == Some(4) {
                DType::F32
            } else {
                DType::F16
            };
            return match order {
                Some(b'<') => Ok(dtype),
                Some(b'>') => fail(format!(
                    "descr '{code_shown}' is big-endian {}; negmine reads little-endian data \
                     only: convert with np.save(path, np.ascontiguousarray(x, dtype='{}'))",
                    dtype.name(),
                    dtype_code(dtype)
                )),
                _ => fail(format!(
                    "descr '{code_shown}' does not say its byte order; negmine needs an explicit \
                     little-endian '{}' (what np.save writes)",
                    dtype_code(dtype)
                )),
            };
        }
        Some(b'f' | b'c' | b'i' | b'u') if size.is_none() => {
            return fail(format!(
                "descr '{code_shown}' is not a dtype negmine knows; {ACCEPTED}"
            ))
        }
        Some(b'f') => format!("float{bits}"),
        Some(b'c') => format!("complex{bits}"),
        Some(b'i') => format!("int{bits}"),
        Some(b'u') => format!("uint{bits}"),
        Some(b'b') => "bool".to_owned(),
        Some(b'S') => "bytes string".to_owned(),
        Some(b'U') => "unicode string".to_owned(),
        Some(b'V') => "void/structured".to_owned(),
        Some(b'M') => "datetime64".to_owned(),
        Some(b'm') => "timedelta64".to_owned(),
        _ => {
            return fail(format!(
                "descr '{code_shown}' is not a dtype negmine knows; {ACCEPTED}"
            ))
        }
    };
    let hint = if name.starts_with("float") || name.contains("int") {
        " (convert with x.astype('<f4'))"
    } else {
        ""
    };
    fail(format!(
        "descr '{code_shown}' is a {name} dtype; {ACCEPTED}{hint}"
    ))
}

fn shape_2d(shape: &Value) -> Result<(usize, usize), HeaderError> {
    let Value::Tuple(items) = shape else {
        return fail(format!(
            "shape must be a tuple (rows, dim), found {} {shape}",
            shape.kind()
        ));
    };
    if items.len() != 2 {
        let hint = if items.len() == 1 {
            " (save a single vector as x.reshape(1, -1))"
        } else {
            ""
        };
        return fail(format!(
            "shape must have 2 dimensions (rows, dim), found {} dimensions {shape}{hint}",
            items.len()
        ));
    }
    let mut dims = [0usize; 2];
    for (dim, item) in dims.iter_mut().zip(items) {
        // The value decides, not the sign written: `-0` is 0, as Python reads it.
        *dim = match item {
            Value::Int { value: Some(v), .. } if *v < 0 => {
                return fail(format!("shape {shape} has a negative dimension"))
            }
            Value::Int {
                value: None,
                negative: true,
            } => return fail(format!("shape {shape} has a negative dimension")),
            Value::Int { value: Some(v), .. } => usize::try_from(*v).map_err(|_| {
                HeaderError(format!(
                    "shape {shape} has a dimension too large for this machine"
                ))
            })?,
            Value::Int { value: None, .. } => {
                return fail(format!(
                    "shape {shape} has a dimension too large for this machine"
                ))
            }
            other => {
                return fail(format!(
                    "shape must hold ints, found {} {other} in {shape}",
                    other.kind()
                ))
            }
        };
    }
    Ok((dims[0], dims[1]))
}

/// The header bytes `np.save` writes for a C-order `rows x dim` array of `dtype`: version 1.0
/// (2.0 only when the header would not fit a u16), dict padded with spaces and ended by `\n`
/// so that the data start on a 64-byte boundary.
pub fn npy_header(dtype: DType, rows: usize, dim: usize) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}",
        dtype_code(dtype)
    );
    // Like numpy, leave room for the row count to grow in place (GROWTH_AXIS_MAX_DIGITS).
    dict.push_str(&" ".repeat(21usize.saturating_sub(rows.to_string().len())));
    let text_len = dict.len() + 1; // + '\n'
    let pad_for = |prefix_len: usize| ARRAY_ALIGN - (prefix_len + text_len) % ARRAY_ALIGN;
    let (version, prefix_len) = if text_len + pad_for(PREFIX_V1) <= usize::from(u16::MAX) {
        (1u8, PREFIX_V1)
    } else {
        (2u8, PREFIX_V2)
    };
    let pad = pad_for(prefix_len);
    let header_len = text_len + pad;
    let mut out = Vec::with_capacity(prefix_len + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        // Fits: checked above.
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Where the elements of a [`MappedMatrix`] live.
enum Storage {
    /// No data bytes (0 rows or dim 0): nothing is mapped.
    Empty,
    Mapped(Mmap),
    OwnedF32(Vec<f32>),
    OwnedF16(Vec<f16>),
}

/// A validated `.npy` file, mapped read-only (or, from [`MappedMatrix::read`], copied into
/// memory). See the module docs for what happens if a mapped file is truncated.
pub struct MappedMatrix {
    path: PathBuf,
    dtype: DType,
    rows: usize,
    dim: usize,
    storage: Storage,
}

fn not_regular(path: &Path, file_type: std::fs::FileType) -> Result<()> {
    if file_type.is_file() {
        return Ok(());
    }
    if file_type.is_dir() {
        return Err(Error::io(path, io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let what = if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    };
    Err(Error::format(
        path,
        format!("is {what}; expected a regular .npy file"),
    ))
}

/// Opens `path` for reading after checking it is a regular file, so that a FIFO is never
/// opened (opening one blocks until a writer appears). Returns the file and its length.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    not_regular(path, metadata.file_type())?;
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, open still returns
    // at once, and the fstat below refuses it. It does not affect reads of regular files.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    not_regular(path, metadata.file_type())?;
    Ok((file, metadata.len()))
}

/// Reads `path`'s header and checks the file holds exactly the data it announces.
fn validated_header(path: &Path, file: &mut File, file_len: u64) -> Result<Header> {
    if file_len == 0 {
        return Err(Error::format(
            path,
            "file is empty (0 bytes); expected a .npy file",
        ));
    }
    let mut prefix = Vec::with_capacity(MAX_PREFIX_LEN.min(file_len as usize));
    Read::take(&*file, MAX_PREFIX_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    let header = parse_header(&prefix).map_err(|e| Error::format(path, e.0))?;
    // Both fit in u64: data_offset <= MAX_PREFIX_LEN, data_len <= isize::MAX.
    let expected = header.data_offset as u64 + header.data_len as u64;
    let describe = || {
        format!(
            "header announces shape ({}, {}) {} = {} data bytes after a {}-byte header",
            header.rows,
            header.dim,
            header.dtype.name(),
            header.data_len,
            header.data_offset
        )
    };
    if file_len < expected {
        return Err(Error::format(
            path,
            format!(
                "file is truncated: missing {} bytes ({}, file is {file_len} bytes)",
                expected - file_len,
                describe()
            ),
        ));
    }
    if file_len > expected {
        return Err(Error::format(
            path,
            format!(
                "file has {} trailing bytes after the data ({}, file is {file_len} bytes)",
                file_len - expected,
                describe()
            ),
        ));
    }
    Ok(header)
}

fn page_size() -> usize {
    static PAGE_SIZE: OnceLock<usize> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(4096)
    })
}

impl MappedMatrix {
    /// Opens and validates `path`; the data are mapped read-only, not read. The file must not
    /// be truncated or rewritten in place while mapped (that is SIGBUS, see the module docs);
    /// use [`MappedMatrix::read`] when it might be.
    pub fn open(path: &Path) -> Result<Self> {
        Self::load(path, true)
    }

    /// Validates `path` like [`MappedMatrix::open`] and copies its data into memory: later
    /// changes to the file cannot affect this matrix.
    pub fn read(path: &Path) -> Result<Self> {
        Self::load(path, false)
    }

    fn load(path: &Path, map: bool) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(Error::format(
                path,
                "negmine reads little-endian .npy data, and this machine is big-endian",
            ));
        }
        let (mut file, file_len) = open_regular(path)?;
        let header = validated_header(path, &mut file, file_len)?;
        let storage = if header.data_len == 0 {
            Storage::Empty
        } else if map {
            // SAFETY: the mapping is read-only and we never write to the file. Another process
            // truncating or rewriting it in place while mapped is undefined behaviour (SIGBUS
            // on access); that is the documented contract of `open`, `read` is the alternative.
            let map = unsafe {
                MmapOptions::new()
                    .offset(header.data_offset as u64)
                    .len(header.data_len)
                    .map(&file)
            };
            Storage::Mapped(map.map_err(|e| Error::io(path, e))?)
        } else {
            read_elements(path, &mut file, &header)?
        };
        let matrix = MappedMatrix {
            path: path.to_path_buf(),
            dtype: header.dtype,
            rows: header.rows,
            dim: header.dim,
            storage,
        };
        // Establishes the invariant `view` relies on.
        matrix.try_view()?;
        Ok(matrix)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the data are mapped from the file (false: copied into memory, or empty).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    fn try_view(&self) -> Result<MatrixView<'_>> {
        let elements = match &self.storage {
            Storage::Empty => match self.dtype {
                DType::F32 => Elements::F32(&[]),
                DType::F16 => Elements::F16(&[]),
            },
            Storage::OwnedF32(v) => Elements::F32(v),
            Storage::OwnedF16(v) => Elements::F16(v),
            Storage::Mapped(map) => {
                let ptr = map.as_ptr();
                if ptr.align_offset(self.dtype.size()) != 0 || map.len() % self.dtype.size() != 0 {
                    return Err(Error::format(&self.path, "mapped data are misaligned"));
                }
                let len = map.len() / self.dtype.size();
                match self.dtype {
                    DType::F32 => {
                        // SAFETY: `ptr` is aligned for the element type (the mapping starts on
                        // a page boundary, the data offset is a multiple of the element size,
                        // and we just checked), `len` elements cover exactly the mapped bytes,
                        // every bit pattern is a valid f32, and the slice borrows `self`, which
                        // owns the mapping.
                        let data = unsafe { std::slice::from_raw_parts(ptr.cast::<f32>(), len) };
                        Elements::F32(data)
                    }
                    DType::F16 => {
                        // SAFETY: as above, for 2-byte f16 elements.
                        let data = unsafe { std::slice::from_raw_parts(ptr.cast::<f16>(), len) };
                        Elements::F16(data)
                    }
                }
            }
        };
        MatrixView::new(elements, self.rows, self.dim)
    }

    /// The data as a matrix.
    pub fn view(&self) -> MatrixView<'_> {
        self.try_view()
            .expect("the storage was checked against the shape when the file was opened")
    }

    /// The page-aligned address range of `rows` in the mapping: (first page, end), with `end`
    /// rounded down to a page unless `rows` reaches the last row (the tail of the last page
    /// holds no other rows). `outer`: round outwards instead (for read-ahead).
    fn page_range(&self, rows: Range<usize>, outer: bool) -> Option<(usize, usize)> {
        let Storage::Mapped(map) = &self.storage else {
            return None;
        };
        let end_row = rows.end.min(self.rows);
        let start_row = rows.start.min(end_row);
        if start_row == end_row {
            return None;
        }
        let row_bytes = self.dim * self.dtype.size();
        let base = map.as_ptr() as usize;
        let (start, end) = (base + start_row * row_bytes, base + end_row * row_bytes);
        let page = page_size();
        let down = |a: usize| a - a % page;
        let up = |a: usize| down(a + page - 1);
        let range = if outer {
            (down(start), end)
        } else {
            let end = if end_row == self.rows {
                up(end)
            } else {
                down(end)
            };
            (up(start), end)
        };
        (range.0 < range.1).then_some(range)
    }

    /// Hint that `rows` will be read soon (read-ahead for files larger than memory). Rows out
    /// of range are ignored; does nothing for data held in memory.
    pub fn will_need(&self, rows: Range<usize>) {
        if let Some((start, end)) = self.page_range(rows, true) {
            // SAFETY: [start, end) lies within our mapping (its first page is the page of a
            // mapped byte, and the kernel mapped whole pages); WILLNEED only schedules reads.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_WILLNEED);
            }
        }
    }

    /// Drop the pages that lie entirely within `rows` from this process's resident set; they
    /// stay in the page cache. Rows out of range are ignored.
    pub fn dont_need(&self, rows: Range<usize>) {
        if let Some((start, end)) = self.page_range(rows, false) {
            // SAFETY: [start, end) is page-aligned and lies within our mapping. The mapping is
            // a read-only shared file mapping, so DONTNEED loses nothing: a later access simply
            // reads the page from the file again. Slices into the mapping stay valid.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// Reads the data of a validated file into an owned, aligned buffer.
fn read_elements(path: &Path, file: &mut File, header: &Header) -> Result<Storage> {
    let elements = header.data_len / header.dtype.size();
    let truncated = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::format(path, "file was truncated while being read")
        } else {
            Error::io(path, e)
        }
    };
    // The prefix read may have consumed data bytes; read from the data offset again.
    io::Seek::seek(file, io::SeekFrom::Start(header.data_offset as u64))
        .map_err(|e| Error::io(path, e))?;
    let mut reader: &File = file;
    let alloc_error = || {
        Error::format(
            path,
            format!("cannot allocate {} bytes to read the file", header.data_len),
        )
    };
    let storage = match header.dtype {
        DType::F32 => {
            let mut data: Vec<f32> = Vec::new();
            data.try_reserve_exact(elements)
                .map_err(|_| alloc_error())?;
            data.resize(elements, 0.0);
            // SAFETY: the byte view covers exactly the f32 buffer (u8 has no alignment
            // requirement), and any bytes written into it form valid f32 values.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), header.data_len)
            };
            reader.read_exact(bytes).map_err(truncated)?;
            Storage::OwnedF32(data)
        }
        DType::F16 => {
            let mut data: Vec<f16> = Vec::new();
            data.try_reserve_exact(elements)
                .map_err(|_| alloc_error())?;
            data.resize(elements, f16::ZERO);
            // SAFETY: as above, for f16 (a 2-byte plain-old-data type).
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), header.data_len)
            };
            reader.read_exact(bytes).map_err(truncated)?;
            Storage::OwnedF16(data)
        }
    };
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(|e| Error::io(path, e))? != 0 {
        return Err(Error::format(
            path,
            "file grew while being read: it has trailing bytes after the data",
        ));
    }
    Ok(storage)
}

/// Writes the elements as little-endian bytes.
fn write_elements(out: &mut impl Write, matrix: &MatrixView<'_>) -> io::Result<()> {
    if cfg!(target_endian = "little") {
        let bytes: &[u8] = match matrix.elements() {
            // SAFETY: reinterpreting initialised f32 values as bytes (u8 needs no alignment);
            // the byte slice covers exactly the elements and borrows them.
            Elements::F32(s) => unsafe {
                std::slice::from_raw_parts(s.as_ptr().cast(), std::mem::size_of_val(s))
            },
            // SAFETY: as above, for f16.
            Elements::F16(s) => unsafe {
                std::slice::from_raw_parts(s.as_ptr().cast(), std::mem::size_of_val(s))
            },
        };
        return out.write_all(bytes);
    }
    let mut buf = Vec::with_capacity(1 << 20);
    match matrix.elements() {
        Elements::F32(s) => {
            for chunk in s.chunks(1 << 18) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                out.write_all(&buf)?;
            }
        }
        Elements::F16(s) => {
            for chunk in s.chunks(1 << 19) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                out.write_all(&buf)?;
            }
        }
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A hidden name in the destination directory that no other writer uses.
fn temp_name(file_name: &OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = file_name.as_bytes();
    // Keep the name under the usual 255-byte limit.
    let base = &base[..base.len().min(150)];
    let mut name = OsString::from(".");
    name.push(OsStr::from_bytes(base));
    name.push(format!(
        ".{:x}-{nanos:x}-{count}.negmine-tmp",
        std::process::id()
    ));
    name
}

/// Retries `attempt` with fresh temp names while the name is taken.
fn with_temp_name<T>(
    dir: &Path,
    file_name: &OsStr,
    mut attempt: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T)> {
    let mut tries = 0;
    loop {
        let temp = dir.join(temp_name(file_name));
        match attempt(&temp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            result => return result.map(|t| (temp, t)),
        }
    }
}

/// Removes a named temp file unless disarmed: every error path leaves nothing behind.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn write_and_sync(file: &mut File, header: &[u8], matrix: &MatrixView<'_>) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, &mut *file);
    out.write_all(header)?;
    write_elements(&mut out, matrix)?;
    out.flush()?;
    drop(out);
    file.sync_all()
}

/// The unnamed-temp-file path: `Ok(None)` when the kernel or file system has no `O_TMPFILE`
/// (or its file cannot be linked), so the caller falls back to a named temp file.
#[cfg(target_os = "linux")]
fn save_via_tmpfile(
    dir: &Path,
    file_name: &OsStr,
    header: &[u8],
    matrix: &MatrixView<'_>,
) -> io::Result<Option<PathBuf>> {
    let file = OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    let mut file = match file {
        Ok(file) => file,
        // Old kernels see O_TMPFILE as O_DIRECTORY (EISDIR); some file systems lack it.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EISDIR | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    write_and_sync(&mut file, header, matrix)?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let linked = with_temp_name(dir, file_name, |temp| {
        let temp = c_path(temp)?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr(),
                libc::AT_FDCWD,
                temp.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    });
    match linked {
        Ok((temp, ())) => Ok(Some(temp)),
        // No /proc, or a file system that cannot link: write a named temp file instead.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EPERM | libc::EXDEV)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn save_via_tmpfile(
    _dir: &Path,
    _file_name: &OsStr,
    _header: &[u8],
    _matrix: &MatrixView<'_>,
) -> io::Result<Option<PathBuf>> {
    Ok(None)
}

fn save_via_named_temp(
    dir: &Path,
    file_name: &OsStr,
    header: &[u8],
    matrix: &MatrixView<'_>,
) -> io::Result<TempGuard> {
    let (temp, mut file) = with_temp_name(dir, file_name, |temp| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_CLOEXEC)
            .open(temp)
    })?;
    let guard = TempGuard(Some(temp));
    write_and_sync(&mut file, header, matrix)?;
    Ok(guard)
}

/// Writes `matrix` to `path` as `.npy`, atomically: a temp file in the same directory (unnamed
/// while being written, where the system allows), fsync, rename, fsync of the directory. On
/// any error the destination is untouched and no temp file is left.
pub fn save(path: &Path, matrix: &MatrixView<'_>) -> Result<()> {
    let Some(file_name) = path.file_name() else {
        return Err(Error::invalid(format!(
            "cannot save to {path:?}: the path does not name a file"
        )));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let io_err = |e: io::Error| Error::io(path, e);
    let dir_file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io_err)?;
    // Refused before writing anything (rename would refuse it only after the whole write).
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(io_err(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let header = npy_header(matrix.dtype(), matrix.rows(), matrix.dim());
    let mut guard = match save_via_tmpfile(dir, file_name, &header, matrix).map_err(io_err)? {
        Some(temp) => TempGuard(Some(temp)),
        None => save_via_named_temp(dir, file_name, &header, matrix).map_err(io_err)?,
    };
    if let Some(temp) = &guard.0 {
        std::fs::rename(temp, path).map_err(io_err)?;
    }
    guard.disarm();
    // Makes the rename itself durable. Some file systems cannot fsync a directory (EINVAL);
    // the file is in place either way.
    match dir_file.sync_all() {
        Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(io_err(e)),
        _ => Ok(()),
    }
}
