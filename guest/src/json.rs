//! Minimal JSON output for the `@result` line, without an allocator.
//!
//! [`FixedBuf`] collects a line in a fixed buffer; [`Json`] writes values with the commas and
//! string escaping JSON needs, so callers only say what goes where.

use core::fmt::{self, Write};

/// A fixed-size text buffer implementing `fmt::Write`; output beyond capacity is dropped and
/// remembered as truncation.
pub struct FixedBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FixedBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0, truncated: false }
    }

    /// The text written so far (always whole UTF-8 characters).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// True when some output did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Forgets the contents.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let mut utf8 = [0; 4];
            let enc = ch.encode_utf8(&mut utf8).as_bytes();
            if self.len + enc.len() > N {
                self.truncated = true;
                return Ok(());
            }
            self.bytes[self.len..self.len + enc.len()].copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}

/// Escapes everything written through it as the inside of a JSON string.
pub struct JsonEscape<'w, W: Write>(pub &'w mut W);

impl<W: Write> Write for JsonEscape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            match ch {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A JSON writer that tracks where commas go. Open objects/arrays with `begin_*`, add members
/// with the keyed methods inside objects and the unkeyed ones inside arrays.
pub struct Json<'w, W: Write> {
    out: &'w mut W,
    /// Per nesting level: whether the next member needs a comma before it.
    need_comma: [bool; 16],
    depth: usize,
}

impl<'w, W: Write> Json<'w, W> {
    /// A writer appending to `out`.
    pub fn new(out: &'w mut W) -> Self {
        Self { out, need_comma: [false; 16], depth: 0 }
    }

    fn separator(&mut self, key: Option<&str>) -> fmt::Result {
        if self.depth > 0 {
            if self.need_comma[self.depth] {
                self.out.write_char(',')?;
            }
            self.need_comma[self.depth] = true;
        }
        if let Some(key) = key {
            self.out.write_char('"')?;
            JsonEscape(self.out).write_str(key)?;
            self.out.write_str("\":")?;
        }
        Ok(())
    }

    fn open(&mut self, key: Option<&str>, bracket: char) -> fmt::Result {
        self.separator(key)?;
        self.out.write_char(bracket)?;
        self.depth = (self.depth + 1).min(self.need_comma.len() - 1);
        self.need_comma[self.depth] = false;
        Ok(())
    }

    fn close(&mut self, bracket: char) -> fmt::Result {
        self.depth = self.depth.saturating_sub(1);
        self.out.write_char(bracket)
    }

    /// `{` as a value (top level or array element), or with `key` inside an object.
    pub fn begin_object(&mut self, key: Option<&str>) -> fmt::Result {
        self.open(key, '{')
    }
    /// `}`.
    pub fn end_object(&mut self) -> fmt::Result {
        self.close('}')
    }
    /// `[`, keyed or not like [`Json::begin_object`].
    pub fn begin_array(&mut self, key: Option<&str>) -> fmt::Result {
        self.open(key, '[')
    }
    /// `]`.
    pub fn end_array(&mut self) -> fmt::Result {
        self.close(']')
    }
    /// An unsigned number.
    pub fn u64(&mut self, key: Option<&str>, v: u64) -> fmt::Result {
        self.separator(key)?;
        write!(self.out, "{v}")
    }
    /// A signed number (e.g. a PSCI return code).
    pub fn i64(&mut self, key: Option<&str>, v: i64) -> fmt::Result {
        self.separator(key)?;
        write!(self.out, "{v}")
    }
    /// A boolean.
    pub fn bool(&mut self, key: Option<&str>, v: bool) -> fmt::Result {
        self.separator(key)?;
        self.out.write_str(if v { "true" } else { "false" })
    }
    /// A string built from format arguments, escaped.
    pub fn str_fmt(&mut self, key: Option<&str>, args: fmt::Arguments<'_>) -> fmt::Result {
        self.separator(key)?;
        self.out.write_char('"')?;
        JsonEscape(self.out).write_fmt(args)?;
        self.out.write_char('"')
    }
    /// A plain string, escaped.
    pub fn str(&mut self, key: Option<&str>, v: &str) -> fmt::Result {
        self.str_fmt(key, format_args!("{v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_output_has_commas_and_escapes() {
        let mut buf: FixedBuf<256> = FixedBuf::new();
        let mut j = Json::new(&mut buf);
        j.begin_object(None).unwrap();
        j.str(Some("scenario"), "smp").unwrap();
        j.bool(Some("ok"), true).unwrap();
        j.begin_array(Some("per_vcpu")).unwrap();
        for i in 0..2 {
            j.begin_object(None).unwrap();
            j.u64(Some("vcpu"), i).unwrap();
            j.u64(Some("n"), 10 * i).unwrap();
            j.end_object().unwrap();
        }
        j.end_array().unwrap();
        j.str(Some("error"), "a \"b\"\n").unwrap();
        j.end_object().unwrap();
        assert_eq!(
            buf.as_str(),
            r#"{"scenario":"smp","ok":true,"per_vcpu":[{"vcpu":0,"n":0},{"vcpu":1,"n":10}],"error":"a \"b\"\n"}"#
        );
        assert!(!buf.truncated());
    }

    #[test]
    fn signed_numbers() {
        let mut buf: FixedBuf<64> = FixedBuf::new();
        let mut j = Json::new(&mut buf);
        j.begin_array(None).unwrap();
        j.i64(None, -4).unwrap();
        j.i64(None, 0).unwrap();
        j.i64(None, i64::MIN).unwrap();
        j.end_array().unwrap();
        assert_eq!(buf.as_str(), "[-4,0,-9223372036854775808]");
    }

    #[test]
    fn truncation_is_flagged() {
        let mut buf: FixedBuf<4> = FixedBuf::new();
        buf.write_str("hello").unwrap();
        assert_eq!(buf.as_str(), "hell");
        assert!(buf.truncated());
    }
}
