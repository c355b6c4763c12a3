//! How much one manifest may ask of the agent, and the checks that hold it to that before the
//! expensive work starts.
//!
//! - The file: at most [`MAX_FILE_BYTES`], as the kubelet's file source (`maxConfigLength`).
//! - The YAML: nesting at most [`MAX_DEPTH`] and at most [`MAX_VALUES`] values, checked by
//!   [`scan`] in one linear pass *before* the text reaches serde_yaml. libyaml does work
//!   proportional to the flow-nesting depth for every token (its simple-key list), so a file
//!   of `[[[[…` costs size × depth: 100 KB of `[` took 12 s. No Pod field nests deeper than
//!   about 15 levels; serde_yaml itself gives up at 128, but only after that parse.
//! - Aliases: a document whose aliases expand to more than [`MAX_VALUES`] values or
//!   [`MAX_EXPANDED_SCALAR_BYTES`] of scalars (a "billion laughs") is refused by
//!   [`expansion`] before it is decoded into a Pod.
//! - The pod: its JSON at most [`MAX_POD_JSON_BYTES`] (see there).

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The kubelet refuses static pod files larger than this (`maxConfigLength = 10 * 1 << 20`
/// in pkg/kubelet/config/file.go).
pub const MAX_FILE_BYTES: u64 = 10 << 20;

/// A Pod must fit etcd's request limit (`--max-request-bytes`, 1.5 MiB by default) to exist
/// in a cluster at all. We measure the defaulted pod's compact JSON, a little stricter than
/// the protobuf etcd stores and well inside the API server's 3 MiB request body limit.
pub const MAX_POD_JSON_BYTES: usize = 1536 * 1024;

/// Deepest nesting of collections (block and flow together) a manifest may have.
pub const MAX_DEPTH: usize = 64;

/// Most values (scalars, aliases, collections) a manifest may hold, counting what aliases
/// expand to. A pod within [`MAX_POD_JSON_BYTES`] has fewer than 800,000 JSON values
/// (each takes at least two bytes), so this refuses nothing Kubernetes could store, and it
/// bounds the parser's event list (about 100 bytes a value).
pub const MAX_VALUES: usize = 1_000_000;

/// Most scalar bytes a document may expand to through aliases: above any file the size
/// limit lets through, so only alias expansion can reach it.
pub const MAX_EXPANDED_SCALAR_BYTES: usize = 16 << 20;

/// How long an error message about a manifest (a log line, an event) may be.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Cut `msg` to [`MAX_MESSAGE_BYTES`] at a character boundary, saying how much was cut.
pub fn bound_message(mut msg: String) -> String {
    if msg.len() <= MAX_MESSAGE_BYTES {
        return msg;
    }
    let mut at = MAX_MESSAGE_BYTES - 64;
    while !msg.is_char_boundary(at) {
        at -= 1;
    }
    let cut = msg.len() - at;
    msg.truncate(at);
    msg.push_str(&format!("... ({cut} more bytes)"));
    msg
}

/// What [`scan`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    TooDeep { line: usize },
    TooManyValues { line: usize },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::TooDeep { line } => write!(
                f,
                "nesting deeper than {MAX_DEPTH} levels at line {line}: no Pod is nested that deep"
            ),
            ScanError::TooManyValues { line } => write!(
                f,
                "more than {MAX_VALUES} values (at line {line}): a pod that large cannot be stored by Kubernetes"
            ),
        }
    }
}

/// Check nesting and the number of values in one linear pass, following libyaml's scanner
/// (which tokens start where, the flow level, the block indentation stack) closely enough
/// never to count less nesting than libyaml will see: quoted, plain and block scalars and
/// comments hide brackets exactly where libyaml's scanner does. Where libyaml would stop
/// with an error, the scan stops too and lets the parser report it. JSON is YAML's flow
/// syntax, so this serves both.
///
/// Returns the number of steps taken (bytes consumed plus tokens), at most twice the text's
/// length: the tests use it to prove linearity.
pub fn scan(text: &str) -> Result<usize, ScanError> {
    let (steps, result) = scan_counting(text);
    result.map(|()| steps)
}

/// [`scan`], with the steps taken whether or not it refuses.
pub fn scan_counting(text: &str) -> (usize, Result<(), ScanError>) {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
        chars: 0,
        line: 1,
        col: 0,
        flow: 0,
        indents: Vec::new(),
        indent: -1,
        allowed: true,
        key: None,
        values: 0,
        steps: 0,
    };
    let result = s.run();
    (s.steps, result)
}

/// A possible simple key: where its token started.
#[derive(Clone, Copy)]
struct Key {
    line: usize,
    chars: usize,
    col: usize,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Characters consumed (libyaml's `mark.index`).
    chars: usize,
    line: usize,
    /// Column in characters.
    col: usize,
    flow: usize,
    indents: Vec<isize>,
    indent: isize,
    allowed: bool,
    key: Option<Key>,
    values: usize,
    steps: usize,
}

/// Why the scan ends early.
enum Halt {
    /// libyaml stops here with an error: nothing after this point is parsed.
    Stop,
    Refuse(ScanError),
}

impl From<ScanError> for Halt {
    fn from(e: ScanError) -> Self {
        Halt::Refuse(e)
    }
}

type Step = Result<(), Halt>;

impl Scanner<'_> {
    #[inline(always)]
    fn at(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    /// Length of the line break at `i + k`, 0 if none (libyaml's IS_BREAK: CR, LF, CRLF,
    /// NEL, LS, PS).
    #[inline(always)]
    fn brk(&self, k: usize) -> usize {
        match (self.at(k), self.at(k + 1), self.at(k + 2)) {
            (b'\r', b'\n', _) => 2,
            (b'\r' | b'\n', _, _) => 1,
            (0xC2, 0x85, _) => 2,
            (0xE2, 0x80, 0xA8 | 0xA9) => 3,
            _ => 0,
        }
    }

    #[inline(always)]
    fn eof(&self) -> bool {
        self.i >= self.b.len()
    }

    #[inline(always)]
    fn blank(&self, k: usize) -> bool {
        matches!(self.at(k), b' ' | b'\t')
    }

    /// Blank, break or end of input.
    #[inline(always)]
    fn blankz(&self, k: usize) -> bool {
        self.blank(k) || self.brk(k) > 0 || self.i + k >= self.b.len()
    }

    /// Advance one character (not a break).
    #[inline(always)]
    fn skip(&mut self) -> Step {
        let c = self.at(0);
        // libyaml's reader refuses control characters: parsing ends there.
        if (c < 0x20 && c != b'\t' && c != b'\r' && c != b'\n') || c == 0x7F {
            return Err(Halt::Stop);
        }
        let width = match c {
            0..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        self.i = (self.i + width).min(self.b.len());
        self.chars += 1;
        self.col += 1;
        self.steps += width;
        Ok(())
    }

    /// Consume a line break.
    #[inline(always)]
    fn skip_break(&mut self) {
        let n = self.brk(0).max(1);
        self.i = (self.i + n).min(self.b.len());
        self.chars += 1;
        self.line += 1;
        self.col = 0;
        self.steps += n;
    }

    fn doc_marker(&self) -> bool {
        self.col == 0
            && ((self.at(0) == b'-' && self.at(1) == b'-' && self.at(2) == b'-')
                || (self.at(0) == b'.' && self.at(1) == b'.' && self.at(2) == b'.'))
            && self.blankz(3)
    }

    fn depth_check(&self) -> Step {
        if self.flow + self.indents.len() > MAX_DEPTH {
            return Err(ScanError::TooDeep { line: self.line }.into());
        }
        Ok(())
    }

    fn value(&mut self) -> Step {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(ScanError::TooManyValues { line: self.line }.into());
        }
        Ok(())
    }

    fn roll_indent(&mut self, col: usize) -> Step {
        if self.flow == 0 && self.indent < col as isize {
            self.indents.push(self.indent);
            self.indent = col as isize;
            self.value()?;
            self.depth_check()?;
        }
        Ok(())
    }

    fn unroll_indent(&mut self, col: isize) {
        if self.flow > 0 {
            return;
        }
        while self.indent > col {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    fn save_key(&mut self) {
        if self.allowed {
            self.key = Some(Key {
                line: self.line,
                chars: self.chars,
                col: self.col,
            });
        }
    }

    fn run(&mut self) -> Result<(), ScanError> {
        loop {
            self.steps += 1;
            match self.next_token() {
                Ok(true) => {}
                Ok(false) | Err(Halt::Stop) => return Ok(()),
                Err(Halt::Refuse(e)) => return Err(e),
            }
        }
    }

    /// libyaml's scan_skip_to_next_token: blanks, comments, breaks.
    fn skip_to_next_token(&mut self) -> Step {
        loop {
            if self.col == 0 && self.at(0) == 0xEF && self.at(1) == 0xBB && self.at(2) == 0xBF {
                self.skip()?;
            }
            while self.at(0) == b' ' || ((self.flow > 0 || !self.allowed) && self.at(0) == b'\t') {
                self.skip()?;
            }
            if self.at(0) == b'#' {
                while !self.eof() && self.brk(0) == 0 {
                    self.skip()?;
                }
            }
            if self.eof() || self.brk(0) == 0 {
                return Ok(());
            }
            self.skip_break();
            if self.flow == 0 {
                self.allowed = true;
            }
        }
    }

    /// Scan one token; false at the end of the input.
    fn next_token(&mut self) -> Result<bool, Halt> {
        self.skip_to_next_token()?;
        if self.eof() {
            return Ok(false);
        }
        if let Some(k) = self.key
            && (k.line < self.line || k.chars + 1024 < self.chars)
        {
            self.key = None;
        }
        self.unroll_indent(self.col as isize);
        let c = self.at(0);
        if self.col == 0 && c == b'%' {
            // A directive: the rest of the line.
            while !self.eof() && self.brk(0) == 0 {
                self.skip()?;
            }
            return Ok(true);
        }
        if self.doc_marker() {
            self.unroll_indent(-1);
            self.key = None;
            self.allowed = false;
            for _ in 0..3 {
                self.skip()?;
            }
            return Ok(true);
        }
        match c {
            b'[' | b'{' => {
                self.save_key();
                self.flow += 1;
                self.value()?;
                self.depth_check()?;
                self.allowed = true;
                self.skip()?;
            }
            b']' | b'}' => {
                self.key = None;
                self.flow = self.flow.saturating_sub(1);
                self.allowed = false;
                self.skip()?;
            }
            b',' => {
                self.key = None;
                self.allowed = true;
                self.skip()?;
            }
            b'-' if self.blankz(1) => {
                if self.flow == 0 {
                    if !self.allowed {
                        return Err(Halt::Stop);
                    }
                    self.roll_indent(self.col)?;
                }
                self.key = None;
                self.allowed = true;
                self.skip()?;
            }
            b'?' if self.flow > 0 || self.blankz(1) => {
                if self.flow == 0 {
                    if !self.allowed {
                        return Err(Halt::Stop);
                    }
                    self.roll_indent(self.col)?;
                }
                self.key = None;
                self.allowed = self.flow == 0;
                self.skip()?;
            }
            b':' if self.flow > 0 || self.blankz(1) => {
                if let Some(k) = self.key.take() {
                    self.roll_indent(k.col)?;
                    self.allowed = false;
                } else {
                    if self.flow == 0 {
                        if !self.allowed {
                            return Err(Halt::Stop);
                        }
                        self.roll_indent(self.col)?;
                    }
                    self.allowed = self.flow == 0;
                }
                self.skip()?;
            }
            b'*' | b'&' => {
                self.save_key();
                self.allowed = false;
                if c == b'*' {
                    self.value()?;
                }
                self.skip()?;
                while self.at(0).is_ascii_alphanumeric() || matches!(self.at(0), b'-' | b'_') {
                    self.skip()?;
                }
            }
            b'!' => {
                self.save_key();
                self.allowed = false;
                self.skip()?;
                // libyaml's tag characters: ',', '[' and ']' only inside a verbatim `!<…>`.
                let uri = |c: u8, verbatim: bool| {
                    c.is_ascii_alphanumeric()
                        || b"-_;/?:@&=+$.%!~*'()".contains(&c)
                        || (verbatim && b",[]".contains(&c))
                };
                let verbatim = self.at(0) == b'<';
                if verbatim {
                    self.skip()?;
                }
                while uri(self.at(0), verbatim) {
                    self.skip()?;
                }
                if verbatim {
                    if self.at(0) != b'>' {
                        return Err(Halt::Stop);
                    }
                    self.skip()?;
                }
                if !(self.blankz(0) || (self.flow > 0 && self.at(0) == b',')) {
                    return Err(Halt::Stop);
                }
            }
            b'|' | b'>' if self.flow == 0 => {
                self.key = None;
                self.allowed = true;
                self.value()?;
                self.block_scalar()?;
            }
            b'\'' | b'"' => {
                self.save_key();
                self.allowed = false;
                self.value()?;
                self.quoted(c)?;
            }
            _ => {
                let plain = !(self.blankz(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c))
                    || (c == b'-' && !self.blank(1))
                    || (self.flow == 0 && (c == b'?' || c == b':') && !self.blankz(1));
                if !plain {
                    return Err(Halt::Stop);
                }
                self.save_key();
                self.allowed = false;
                self.value()?;
                self.plain()?;
            }
        }
        Ok(true)
    }

    fn quoted(&mut self, quote: u8) -> Step {
        self.skip()?;
        loop {
            if self.eof() || self.doc_marker() {
                return Err(Halt::Stop);
            }
            let c = self.at(0);
            if self.brk(0) > 0 {
                self.skip_break();
            } else if quote == b'\'' && c == b'\'' && self.at(1) == b'\'' {
                self.skip()?;
                self.skip()?;
            } else if c == quote {
                return self.skip();
            } else if quote == b'"' && c == b'\\' {
                self.skip()?;
                if self.brk(0) > 0 {
                    self.skip_break();
                } else if !self.eof() {
                    self.skip()?;
                }
            } else {
                self.skip()?;
            }
        }
    }

    /// libyaml's scan_plain_scalar: where the scalar ends, across lines.
    fn plain(&mut self) -> Step {
        let indent = self.indent + 1;
        let mut leading = false;
        loop {
            if self.doc_marker() || self.at(0) == b'#' {
                break;
            }
            while !self.blankz(0) {
                let c = self.at(0);
                if self.flow > 0 && c == b':' && b",?[]{}".contains(&self.at(1)) {
                    return Err(Halt::Stop);
                }
                if (c == b':' && self.blankz(1)) || (self.flow > 0 && b",[]{}".contains(&c)) {
                    break;
                }
                self.skip()?;
            }
            if !(self.blank(0) || self.brk(0) > 0) {
                break;
            }
            while self.blank(0) || self.brk(0) > 0 {
                if self.blank(0) {
                    if leading && (self.col as isize) < indent && self.at(0) == b'\t' {
                        return Err(Halt::Stop);
                    }
                    self.skip()?;
                } else {
                    self.skip_break();
                    leading = true;
                }
            }
            if self.flow == 0 && (self.col as isize) < indent {
                break;
            }
        }
        if leading {
            self.allowed = true;
        }
        Ok(())
    }

    /// libyaml's scan_block_scalar: the header line, then every line indented at least as
    /// much as the content.
    fn block_scalar(&mut self) -> Step {
        self.skip()?;
        let mut increment = 0isize;
        for _ in 0..2 {
            match self.at(0) {
                b'+' | b'-' => self.skip()?,
                d @ b'1'..=b'9' if increment == 0 => {
                    increment = isize::from(d - b'0');
                    self.skip()?;
                }
                b'0' => return Err(Halt::Stop),
                _ => {}
            }
        }
        while self.blank(0) {
            self.skip()?;
        }
        if self.at(0) == b'#' {
            while !self.eof() && self.brk(0) == 0 {
                self.skip()?;
            }
        }
        if self.eof() {
            return Ok(());
        }
        if self.brk(0) == 0 {
            return Err(Halt::Stop);
        }
        self.skip_break();
        let mut indent = if increment > 0 {
            if self.indent >= 0 {
                self.indent + increment
            } else {
                increment
            }
        } else {
            0
        };
        // Leading empty lines, and the first line's indentation when it is not given.
        let mut max_indent = 0isize;
        loop {
            while (indent == 0 || (self.col as isize) < indent) && self.at(0) == b' ' {
                self.skip()?;
            }
            max_indent = max_indent.max(self.col as isize);
            if (indent == 0 || (self.col as isize) < indent) && self.at(0) == b'\t' {
                return Err(Halt::Stop);
            }
            if self.brk(0) == 0 {
                break;
            }
            self.skip_break();
        }
        if indent == 0 {
            indent = max_indent.max(self.indent + 1).max(1);
        }
        while self.col as isize == indent && !self.eof() {
            while !self.eof() && self.brk(0) == 0 {
                self.skip()?;
            }
            if self.eof() {
                break;
            }
            self.skip_break();
            loop {
                while (self.col as isize) < indent && self.at(0) == b' ' {
                    self.skip()?;
                }
                if (self.col as isize) < indent && self.at(0) == b'\t' {
                    return Err(Halt::Stop);
                }
                if self.brk(0) == 0 {
                    break;
                }
                self.skip_break();
            }
        }
        Ok(())
    }
}

/// What [`expansion`] learns of a document on the way: enough for a clear message when it
/// is not a Pod at all.
#[derive(Debug, Default)]
pub struct Head {
    pub null: bool,
    pub api_version: Option<String>,
    pub kind: Option<String>,
}

/// Walk one document as serde_yaml presents it (aliases replayed), counting values and
/// scalar bytes against [`MAX_VALUES`] and [`MAX_EXPANDED_SCALAR_BYTES`] and stopping at the
/// first excess, so an alias bomb costs at most the budget. Nothing is built but the head.
pub fn expansion<'de, D: Deserializer<'de>>(doc: D) -> Result<Head, D::Error> {
    let mut budget = Budget::default();
    doc.deserialize_any(HeadVisitor(&mut budget))
}

#[derive(Default)]
struct Budget {
    values: usize,
    bytes: usize,
}

impl Budget {
    fn spend<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        self.values += 1;
        self.bytes += bytes;
        if self.values > MAX_VALUES {
            return Err(E::custom(format_args!(
                "more than {MAX_VALUES} values once aliases are expanded: a pod that large cannot be stored by Kubernetes"
            )));
        }
        if self.bytes > MAX_EXPANDED_SCALAR_BYTES {
            return Err(E::custom(format_args!(
                "more than {MAX_EXPANDED_SCALAR_BYTES} bytes of scalars once aliases are expanded"
            )));
        }
        Ok(())
    }
}

/// A walked value: its text when it is a short string (for apiVersion and kind).
enum Walked {
    Str(String),
    Other,
}

struct Walk<'b>(&'b mut Budget);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Walked;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Walked, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! scalar {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, _: $t) -> Result<Walked, E> {
            self.0.spend(0)?;
            Ok(Walked::Other)
        }
    )*};
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Walked;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128, visit_u128: u128, visit_f64: f64);
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Walked, E> {
        self.0.spend(v.len())?;
        Ok(if v.len() <= 64 {
            Walked::Str(v.to_string())
        } else {
            Walked::Other
        })
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Walked, E> {
        self.0.spend(v.len())?;
        Ok(Walked::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Walked, E> {
        self.0.spend(0)?;
        Ok(Walked::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Walked, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Walked, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Walked, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Walked, A::Error> {
        self.0.spend(0)?;
        while seq.next_element_seed(Walk(self.0))?.is_some() {}
        Ok(Walked::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walked, A::Error> {
        self.0.spend(0)?;
        while map.next_key_seed(Walk(self.0))?.is_some() {
            map.next_value_seed(Walk(self.0))?;
        }
        Ok(Walked::Other)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Walked, A::Error> {
        // A tagged value (`!Tag value`): the tag, then the value.
        use de::VariantAccess;
        self.0.spend(0)?;
        let (_, variant) = data.variant_seed(Walk(self.0))?;
        variant.newtype_variant_seed(Walk(self.0))?;
        Ok(Walked::Other)
    }
}

/// The document's root: a [`Walk`] that keeps `apiVersion` and `kind`.
struct HeadVisitor<'b>(&'b mut Budget);

impl<'de> Visitor<'de> for HeadVisitor<'_> {
    type Value = Head;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Pod")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        self.0.spend(0)?;
        let mut head = Head::default();
        while let Some(key) = map.next_key_seed(Walk(self.0))? {
            let value = map.next_value_seed(Walk(self.0))?;
            if let (Walked::Str(k), Walked::Str(v)) = (key, value) {
                match k.as_str() {
                    "apiVersion" => head.api_version = Some(v),
                    "kind" => head.kind = Some(v),
                    _ => {}
                }
            }
        }
        Ok(head)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Head, E> {
        Ok(Head {
            null: true,
            ..Head::default()
        })
    }
    fn visit_none<E: de::Error>(self) -> Result<Head, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Head, E> {
        Ok(Head::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Head, E> {
        Ok(Head::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Head, E> {
        Ok(Head::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Head, E> {
        Ok(Head::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Head, E> {
        Ok(Head::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Head, A::Error> {
        Walk(self.0).visit_seq(seq)?;
        Ok(Head::default())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Head, A::Error> {
        Walk(self.0).visit_enum(data)?;
        Ok(Head::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> bool {
        matches!(scan(text), Err(ScanError::TooDeep { .. }))
    }

    fn nested(open: &str, close: &str, n: usize) -> String {
        format!("a: {}x{}\n", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn deep_flow_and_block_nesting_is_refused_in_linear_steps() {
        let bomb = "[".repeat(200_000);
        let t = std::time::Instant::now();
        assert_eq!(scan(&bomb), Err(ScanError::TooDeep { line: 1 }));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(depth_error(&nested("{a: ", "}", MAX_DEPTH + 1)));
        assert!(scan(&nested("[", "]", MAX_DEPTH - 2)).is_ok());
        assert!(depth_error(&"- ".repeat(100_000)));
        let block: String = (0..MAX_DEPTH + 2)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(depth_error(&block));
        // Steps are the bytes looked at: linear.
        let ok = "x: [a, b, {c: d}]\n".repeat(10_000);
        assert!(scan(&ok).unwrap() <= 2 * ok.len());
    }

    #[test]
    fn brackets_inside_scalars_and_comments_do_not_count() {
        let script = format!(
            "a: |\n  {}\n  echo ']'\nb: \"{}\"\nc: '{}'\nd: x {} y # {}\ne: {}\n",
            "if [ -f x; then [[[[ ".repeat(100),
            "[{".repeat(100),
            "[".repeat(100),
            "[".repeat(100),
            "[".repeat(100),
            "[\"[[[[\", '{{{{'] # [[[["
        );
        assert_eq!(scan(&script).map(|_| ()), Ok(()), "{script}");
        let annotation = format!("metadata:\n  annotations:\n    last: '{}'\n", "{\"a\":[".repeat(500));
        assert!(scan(&annotation).is_ok());
    }

    #[test]
    fn brackets_outside_scalars_count_even_behind_lookalikes() {
        let deep = |inner: &str| format!("{}{}", inner, "[".repeat(MAX_DEPTH + 1));
        // A quote in the middle of a flow plain scalar starts nothing.
        assert!(depth_error(&deep("x: [a'b, ")));
        // A quoted scalar ends at its quote; `''` is an escaped quote.
        assert!(depth_error(&deep("x: ['it''s', ")));
        assert!(depth_error(&deep("x: [\"a\\\"b\", ")));
        // A comment ends at any YAML line break.
        assert!(depth_error(&deep("x: # c\u{2028}")));
        // A block scalar ends where the indentation does.
        assert!(depth_error(&deep("x: |\n  text\ny: ")));
        assert!(depth_error(&deep("- k: |\n  other: ")));
        // A plain scalar in a flow collection continues across lines, not into a quote.
        assert!(depth_error(&deep("x: [b\n 'c, ")));
        // Tags take brackets only in their verbatim form.
        assert!(depth_error(&deep("x: !t ")));
        // More shapes libyaml accepts around real nesting.
        assert!(depth_error(&deep("x: b\n  c\nd: ")));
        assert!(depth_error(&deep("- |\n  text [[[\n- ")));
        assert!(depth_error(&deep("x: |1\n  text\ny: ")));
        assert!(depth_error(&deep("x: \"a\\\n  [[[\"\ny: ")));
        assert!(depth_error(&deep("--- ")));
        assert!(depth_error(&deep("? ")));
        assert!(depth_error(&deep("x: !<a[b]> ")));
        assert!(depth_error(&deep("")));
        for text in [
            deep("x: b\n  c\nd: "),
            deep("- |\n  text [[[\n- "),
            deep("x: |1\n  text\ny: "),
            deep("? "),
        ] {
            // Each really is that deep to libyaml: serde_yaml gives up on it.
            let closed = format!("{text}{}", "]".repeat(MAX_DEPTH + 1));
            let e = serde_yaml::from_str::<serde_yaml::Value>(&closed).err();
            assert!(
                e.is_none() || e.as_ref().is_some_and(|e| e.to_string().contains("recursion")),
                "{closed}: {e:?}"
            );
        }
    }

    #[test]
    fn many_values_are_refused() {
        let text = format!("x: [{}]\n", "0,".repeat(MAX_VALUES + 1));
        assert!(matches!(scan(&text), Err(ScanError::TooManyValues { .. })));
    }

    #[test]
    fn alias_bombs_stop_at_the_budget() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(scan(&doc).is_ok(), "small in the text");
        // serde_yaml's own jump limit stops this one...
        assert!(expansion(serde_yaml::Deserializer::from_str(&doc)).is_err());
        // ...but not a wide anchor aliased many times: the budget does.
        let wide = format!(
            "a: &a [{}]
b: [{}]
",
            "x, ".repeat(2000),
            "*a, ".repeat(2000)
        );
        let err = expansion(serde_yaml::Deserializer::from_str(&wide))
            .unwrap_err()
            .to_string();
        assert!(err.contains("aliases are expanded"), "{err}");
        // A few aliases are fine.
        let head = expansion(serde_yaml::Deserializer::from_str(
            "apiVersion: v1\nkind: Pod\nx: &e [1, 2]\ny: *e\n",
        ))
        .unwrap();
        assert_eq!(
            (head.api_version.as_deref(), head.kind.as_deref()),
            (Some("v1"), Some("Pod"))
        );
    }

    #[test]
    fn messages_are_bounded() {
        let m = bound_message("é".repeat(10_000));
        assert!(
            m.len() <= MAX_MESSAGE_BYTES && m.ends_with("more bytes)"),
            "{}",
            m.len()
        );
        assert_eq!(bound_message("short".into()), "short");
    }
}
