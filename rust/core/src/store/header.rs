//! The `.npy` header: parsing (what a reader accepts) and writing (what `np.save` writes).
//!
//! [`parse_header`] is a pure function over the first bytes of a file. It parses the
//! header dict as a Python literal (never evaluates it), caps it at 10 000 bytes like numpy,
//! accepts exactly `{'descr', 'fortran_order', 'shape'}` with `descr` `'<f4'` or `'<f2'`, a
//! C-order 2-D shape, and computes sizes with checked arithmetic.
//!
//! Accepted `descr` values are only the explicit little-endian `'<f4'` and `'<f2'` (what numpy
//! writes on every machine). `'=f4'`, `'f4'` and `'float32'` are refused: they mean "the byte
//! order of the machine that wrote the file", which a reader cannot know.
//!
//! [`npy_header`] writes the header of `.npy` 1.0 (2.0 only when the header would not fit)
//! exactly as `np.save` does.

use std::fmt;

use crate::error::Result;
use crate::matrix::DType;

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
    pub(crate) fn new(message: impl Into<String>) -> Self {
        HeaderError(message.into())
    }

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
