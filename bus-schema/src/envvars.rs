//! The envvars model (SPEC.md §1.1, §4.1): a strict reader for the bash subset that
//! `/iohub/sysvars`, `/iohub/envvars` and `/iohub/envvars.d/*-envvars` are written in, an editor
//! that keeps everything it does not touch byte for byte, and the version layering of `envvars.d`.
//!
//! Architecture invariant: nothing here executes anything. The files are parsed, never run; a line
//! that would run a command (`$(...)`, backticks, a bare command, `;`, pipes, redirections,
//! `if`/`for`, functions) is reported with [`ErrorCode::Forbidden`] and skipped, anything else
//! outside the subset with [`ErrorCode::Syntax`]. Every other line still applies.
//!
//! The subset: `NAME=value`, `NAME='literal'`, `NAME="text ${OTHER} $OTHER"`, concatenations
//! (`A="x"'y'z`), `${VAR}`, `$VAR`, `${VAR:-default}` (the default may hold nested expansions and
//! quotes), `${VAR-default}`, escapes (`\$`, `\"`, `\\`, `` \` `` in double quotes, any character
//! outside quotes, `\` + newline continues a line), `export NAME=...`, `#` comments (whole line or
//! after a value), blank lines, CRLF line endings, values spanning lines inside quotes, and the
//! include line `[[ -f PATH ]] && . PATH` (also `[ -f PATH ] && source PATH`).
//!
//! Where bash itself is inconsistent the reader refuses instead of guessing: quotes inside a
//! double-quoted `${VAR:-...}` (bash keeps `'` literally there and drops text after `$A"b"`) are a
//! [`ErrorCode::Syntax`] error; quotes in an unquoted `${VAR:-'x y'}` are fine. Accepted input was
//! checked against bash 5.2 with randomly generated files (same values for every accepted file).
//!
//! A CR directly before a line feed is part of a CRLF line ending wherever it is, also inside
//! quotes: a value holding `"\r\n"` reads back as `"\n"`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::error::{ErrorCode, LineError};

/// Variables by name, as bash would hold them after sourcing the files.
pub type Vars = BTreeMap<String, String>;

/// How deep `[[ -f PATH ]] && . PATH` includes may nest (the top-level file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 4;
/// The longest value one assignment may produce, in bytes. Longer ones are reported, not applied.
pub const MAX_VALUE_LEN: usize = 1 << 20;
/// The most bytes of values one [`eval`] call may produce (nested includes count too).
pub const MAX_TOTAL_LEN: usize = 16 << 20;
/// The most files one [`eval`] call may include, nested or not.
pub const MAX_INCLUDES: usize = 64;
/// How deep `${VAR:-${OTHER:-...}}` may nest. Bounds the parser's recursion on hostile input.
const MAX_NESTING: usize = 32;
/// Longest piece of user text echoed in an error reason.
const ECHO_MAX: usize = 40;

/// One assignment of a file, as [`assignments`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// 1-based line where the assignment starts.
    pub line: usize,
    pub name: String,
    /// The value as written, unexpanded, quotes included (a CR before a line feed removed).
    pub raw: String,
}

/// Evaluate one bash-subset config file on top of `vars`, in order (positional `${VAR}`
/// interpolation sees only what was defined earlier, exactly like bash sourcing). `file` is the
/// name used in errors (e.g. `envvars`, `envvars.d/1.1.1-envvars`). Lines with errors are reported
/// and NOT applied; all other lines still apply.
///
/// `include` resolves a file sourced by the `[[ -f PATH ]] && . PATH` line form (also
/// `[ -f PATH ] && source PATH`): it gets PATH as written (after expansion) and returns the file's
/// text, or `None` when it is absent, which makes the line a no-op like bash's `-f` test. Included
/// files are evaluated with the same rules and named by their PATH in errors; includes nest at
/// most [`MAX_INCLUDE_DEPTH`] deep and a cycle is reported as an error.
pub fn eval(
    file: &str,
    text: &str,
    vars: &mut Vars,
    include: &mut dyn FnMut(&str) -> Option<String>,
) -> Vec<LineError> {
    eval_tainted(file, text, vars, include, &mut BTreeSet::new())
}

/// [`eval`], carrying `refused` across the files of one load: the names whose last assignment
/// was refused. An assignment whose value uses one of them is refused too (its variable is then
/// in `refused`), instead of taking an empty value from it (`KEYS="$(...)"` refused, then
/// `IOHUBOS_SSH_PUBLIC_KEY="${KEYS}"` would publish no key at all); a later assignment that
/// is accepted clears the name.
pub fn eval_tainted(
    file: &str,
    text: &str,
    vars: &mut Vars,
    include: &mut dyn FnMut(&str) -> Option<String>,
    refused: &mut BTreeSet<String>,
) -> Vec<LineError> {
    let mut ev = Evaluator {
        include,
        errors: Vec::new(),
        chain: vec![file.to_string()],
        includes: 0,
        total: 0,
        refused,
    };
    ev.file(file, text, vars);
    ev.errors
}

/// Parse only (no evaluation): the assignments of a file in order, for tooling. Each item has the
/// 1-based line, the name and the raw (unexpanded) value text. Lines with errors are left out.
pub fn assignments(text: &str) -> Vec<Assignment> {
    split(text)
        .into_iter()
        .filter_map(|span| match parse(text, span, false) {
            Ok(Stmt::Assign { name, value, .. }) => Some(Assignment {
                line: span.line,
                name,
                raw: text[value.0..value.1].replace("\r\n", "\n"),
            }),
            _ => None,
        })
        .collect()
}

/// Rewrite a file's text setting variables, applying `updates` in order.
///
/// `(name, Some(value))` replaces the value of the LAST assignment of `name` in place (that is the
/// one bash would keep), keeping the rest of the line (`export`, the trailing comment); if that
/// line is broken (an error), the whole statement becomes `NAME='value'`. Without an assignment,
/// `NAME='value'` is appended at the end (after a line ending if the text lacks a final one).
/// `(name, None)` removes every assignment line of that name. Comments, blank lines, order,
/// unknown lines and the file's line endings are kept byte for byte otherwise. Values are written
/// with [`quote`]. Updates whose name is not a valid variable name are ignored: validate first.
pub fn set(text: &str, updates: &[(String, Option<String>)]) -> String {
    let mut out = text.to_string();
    for (name, value) in updates {
        if valid_name(name) {
            out = set_one(&out, name, value.as_deref());
        }
    }
    out
}

/// Quote a value so that [`eval`] (and bash) read it back literally: single quotes, with `'`
/// written as `'\''`.
pub fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('\'');
    for c in value.chars() {
        if c == '\'' {
            s.push_str("'\\''");
        } else {
            s.push(c);
        }
    }
    s.push('\'');
    s
}

/// Version of an envvars.d file name `X.Y.Z-envvars` as SPEC §1.1 computes it: split on `.`, the
/// first four fields, each its awk-style numeric prefix (`3-envvars` is 3, no digits is 0). A path
/// is reduced to its base name. `None` if the name does not match the glob `*.*.*-envvars` (a
/// hidden name, starting with `.`, does not match, as with the shell glob).
///
/// The original compares `%d%05d%05d%05d` renderings; comparing the arrays is the same for fields
/// below 100000 and sane above.
pub fn layer_version(file_name: &str) -> Option<[u64; 4]> {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let stem = base.strip_suffix("-envvars")?;
    if base.starts_with('.') || stem.matches('.').count() < 2 {
        return None;
    }
    Some(awk_version(base))
}

/// Parse a firmware version string (`1.1.3`) the same way. `None` if it does not start with a digit
/// (after surrounding whitespace).
pub fn parse_version(v: &str) -> Option<[u64; 4]> {
    let v = v.trim();
    if !v.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(awk_version(v))
}

/// The envvars.d file names to load, in load order (version sort, like `sort -V`), keeping only
/// those whose version is <= `running`. Names that do not match `*.*.*-envvars` are dropped.
pub fn select_layers(names: &[String], running: [u64; 4]) -> Vec<String> {
    let mut keep: Vec<String> = names
        .iter()
        .filter(|n| layer_version(n).is_some_and(|v| v <= running))
        .cloned()
        .collect();
    keep.sort_by(|a, b| version_cmp(a, b));
    keep
}

// ---------------------------------------------------------------------------------------------
// Statements: where each one starts and ends.

/// One statement: a physical line, or several when a quote, a `${`, a `$(` or a `\` line
/// continuation spans them.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Byte offset of its first character (the start of its first line).
    start: usize,
    /// Byte offset just past its last character (before the line ending and its CR).
    end: usize,
    /// Byte offset of the next statement (past the `\n`, or the end of the text).
    next: usize,
    /// 1-based number of its first line.
    line: usize,
    /// A quote (or `${`, `$(`, backtick) opened here is never closed: the span is its first line.
    unterminated: bool,
    /// After [`MAX_UNTERMINATED`] such statements the rest of the file is this one span, not read.
    rest: bool,
}

/// How many unterminated statements a file may have before the rest of it is not read (each one
/// costs a scan to the end of the text).
const MAX_UNTERMINATED: usize = 32;

/// What a quote-aware scan is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Single,
    Double,
    /// `${...}`.
    Brace,
    Paren,
    Tick,
}

fn split(text: &str) -> Vec<Span> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut pos = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut line = 1;
    let mut open = 0;
    while pos < b.len() {
        if open == MAX_UNTERMINATED {
            spans.push(Span {
                start: pos,
                end: b.len(),
                next: b.len(),
                line,
                unterminated: true,
                rest: true,
            });
            break;
        }
        let (nl, unterminated) = match scan(b, pos) {
            Some(nl) => (nl, false),
            None => {
                open += 1;
                (line_end(b, pos), true)
            }
        };
        let mut end = nl;
        if end > pos && b[end - 1] == b'\r' {
            end -= 1;
        }
        let next = if nl < b.len() { nl + 1 } else { b.len() };
        spans.push(Span {
            start: pos,
            end,
            next,
            line,
            unterminated,
            rest: false,
        });
        line += b[pos..next].iter().filter(|&&c| c == b'\n').count();
        pos = next;
    }
    spans
}

fn line_end(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| from + p)
}

/// Index of the `\n` ending the statement starting at `start` (or the text's length), or `None`
/// if something opened in it is still open at the end of the text. Only ASCII bytes matter, so
/// scanning bytes of UTF-8 is exact.
fn scan(b: &[u8], start: usize) -> Option<usize> {
    let mut stack: Vec<Ctx> = Vec::new();
    let mut i = start;
    let mut word_start = true;
    let at = |k: usize| b.get(k).copied();
    while i < b.len() {
        let c = b[i];
        let top = stack.last().copied();
        match top {
            None => match c {
                b'\n' => return Some(i),
                b'\\' => {
                    i = skip_escape(b, i);
                    word_start = false;
                    continue;
                }
                b'#' if word_start => {
                    i = line_end(b, i);
                    continue;
                }
                b' ' | b'\t' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => {
                    word_start = true;
                    i += 1;
                    continue;
                }
                _ => {
                    word_start = false;
                    if let Some(ctx) = opener(c, at(i + 1), false) {
                        i += if c == b'$' { 2 } else { 1 };
                        stack.push(ctx);
                        continue;
                    }
                }
            },
            Some(Ctx::Single) => {
                if c == b'\'' {
                    stack.pop();
                }
            }
            Some(Ctx::Tick) => match c {
                b'\\' => {
                    i = skip_escape(b, i);
                    continue;
                }
                b'`' => {
                    stack.pop();
                }
                _ => {}
            },
            Some(ctx) => {
                // Inside `${...}` bash pairs single quotes even within double quotes (it keeps
                // them literally there, but a `}` between them does not close).
                let in_dq = ctx == Ctx::Double;
                let closes = match ctx {
                    Ctx::Double => c == b'"',
                    Ctx::Brace => c == b'}',
                    _ => c == b')',
                };
                if c == b'\\' {
                    i = skip_escape(b, i);
                    continue;
                }
                if closes {
                    stack.pop();
                } else if ctx == Ctx::Paren && c == b'(' {
                    stack.push(Ctx::Paren);
                } else if let Some(new) = opener(c, at(i + 1), in_dq) {
                    // Inside double quotes a `"` closes (handled above); in `${` it nests.
                    i += if c == b'$' { 2 } else { 1 };
                    stack.push(new);
                    continue;
                }
            }
        }
        i += 1;
    }
    if stack.is_empty() {
        Some(b.len())
    } else {
        None
    }
}

/// The context that `c` (followed by `next`) opens, if any.
fn opener(c: u8, next: Option<u8>, in_dq: bool) -> Option<Ctx> {
    match (c, next) {
        (b'\'', _) if !in_dq => Some(Ctx::Single),
        (b'"', _) => Some(Ctx::Double),
        (b'`', _) => Some(Ctx::Tick),
        (b'$', Some(b'{')) => Some(Ctx::Brace),
        (b'$', Some(b'(')) => Some(Ctx::Paren),
        _ => None,
    }
}

/// Skip a backslash and the byte it escapes (a CR LF counts as one line ending).
fn skip_escape(b: &[u8], i: usize) -> usize {
    match (b.get(i + 1), b.get(i + 2)) {
        (Some(b'\r'), Some(b'\n')) => i + 3,
        (Some(_), _) => i + 2,
        (None, _) => i + 1,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing one statement.

/// A piece of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Var(String),
    /// `${name:-word}` (`colon`) or `${name-word}`.
    Default {
        name: String,
        colon: bool,
        word: Word,
    },
}

type Word = Vec<Seg>;

#[derive(Debug)]
enum Stmt {
    Empty,
    Assign {
        name: String,
        word: Word,
        /// Byte range of the value as written.
        value: (usize, usize),
    },
    Include {
        test: Word,
        source: Word,
    },
}

#[derive(Debug)]
struct PErr {
    /// Byte offset the error points at.
    at: usize,
    code: ErrorCode,
    reason: String,
}

const NOTHING_RUN: &str = "; nothing was executed";

fn parse(text: &str, span: Span, secret: bool) -> Result<Stmt, PErr> {
    if span.rest {
        return Err(PErr {
            at: span.start,
            code: ErrorCode::Syntax,
            reason: format!(
                "more than {MAX_UNTERMINATED} unterminated quotes above; the rest of the file was not read"
            ),
        });
    }
    let stmt = &text[span.start..span.end];
    let secret = secret || assigned_name(stmt, true).is_some_and(|(n, _)| is_secret(n));
    let mut p = Parser::new(text, span, secret);
    let r = p.statement();
    if span.unterminated && r.is_ok() {
        // The scan and the parser disagree on a quote; stay on the safe side.
        return Err(PErr {
            at: span.start,
            code: ErrorCode::Syntax,
            reason: "unterminated quote, `${` or `$(`".into(),
        });
    }
    r
}

struct Parser {
    /// The statement's characters with their byte offsets in the whole text; a CR before a LF is
    /// left out.
    chars: Vec<(usize, char)>,
    i: usize,
    end: usize,
    depth: usize,
    /// The statement assigns a secret: never echo its words in a reason.
    secret: bool,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_meta(c: char) -> bool {
    matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')')
}

/// Characters that end the leading word of a statement (a name or command).
fn ends_head(c: char) -> bool {
    is_blank(c) || is_meta(c) || matches!(c, '=' | '\'' | '"' | '$' | '\\' | '`' | '\n')
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut cs = name.chars();
    cs.next().is_some_and(is_name_start) && cs.all(is_name_char)
}

/// Whether a variable holds a secret (its value is never echoed): the name contains PASS, TOKEN,
/// KEY (but not as part of PUBLIC_KEY) or SECRET, in any case.
pub fn is_secret(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    up.contains("PASS")
        || up.contains("TOKEN")
        || up.contains("SECRET")
        || up.replace("PUBLIC_KEY", "").contains("KEY")
}

fn push_char(w: &mut Word, c: char) {
    if let Some(Seg::Lit(s)) = w.last_mut() {
        s.push(c);
    } else {
        w.push(Seg::Lit(c.to_string()));
    }
}

/// Shorten user text echoed in a reason.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(ECHO_MAX).collect();
        format!("{cut}…")
    }
}

impl Parser {
    fn new(text: &str, span: Span, secret: bool) -> Parser {
        let slice = &text[span.start..span.end];
        let mut chars = Vec::with_capacity(slice.len());
        let mut it = slice.char_indices().peekable();
        while let Some((off, c)) = it.next() {
            if c == '\r' && it.peek().is_some_and(|&(_, n)| n == '\n') {
                continue;
            }
            chars.push((span.start + off, c));
        }
        Parser {
            chars,
            i: 0,
            end: span.end,
            depth: 0,
            secret,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).map(|&(_, c)| c)
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }

    /// Byte offset of the current character (or of the statement's end).
    fn offset(&self) -> usize {
        self.chars.get(self.i).map_or(self.end, |&(o, _)| o)
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.i += 1;
        }
    }

    fn at_end_or_comment(&self) -> bool {
        matches!(self.peek(), None | Some('#'))
    }

    fn err(&self, at: usize, code: ErrorCode, reason: impl Into<String>) -> PErr {
        PErr {
            at,
            code,
            reason: reason.into(),
        }
    }

    fn syntax(&self, at: usize, reason: impl Into<String>) -> PErr {
        self.err(at, ErrorCode::Syntax, reason)
    }

    fn forbidden(&self, at: usize, what: &str) -> PErr {
        self.err(at, ErrorCode::Forbidden, format!("{what}{NOTHING_RUN}"))
    }

    /// The leading word of a statement: everything up to a blank, `=`, quote, `$` or operator.
    fn head(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|&c| !ends_head(c)) {
            s.push(c);
            self.i += 1;
        }
        s
    }

    /// A blank-delimited token (for the fixed words of the include form).
    fn token(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|&c| !is_blank(c)) {
            s.push(c);
            self.i += 1;
        }
        s
    }

    fn statement(&mut self) -> Result<Stmt, PErr> {
        self.skip_blanks();
        if self.at_end_or_comment() {
            return Ok(Stmt::Empty);
        }
        let mut head_at = self.i;
        let mut head = self.head();
        if (head == "[[" || head == "[") && self.peek().is_none_or(is_blank) {
            self.i = head_at;
            return self.include();
        }
        if head == "export" && self.peek().is_some_and(is_blank) {
            self.skip_blanks();
            if self.at_end_or_comment() {
                return Err(self.syntax(
                    self.offset(),
                    "`export` without NAME=value is not supported",
                ));
            }
            head_at = self.i;
            head = self.head();
        }
        let name_at = self.chars.get(head_at).map_or(self.end, |&(o, _)| o);
        if self.peek() != Some('=') {
            return Err(self.command(&head, name_at));
        }
        self.check_name(&head, name_at)?;
        self.bump();
        if self.peek() == Some('(') {
            return Err(self.syntax(
                self.offset(),
                "array assignments `NAME=(...)` are not supported",
            ));
        }
        let v0 = self.offset();
        let word = self.word()?;
        let v1 = self.offset();
        self.after_value(v0 == v1)?;
        Ok(Stmt::Assign {
            name: head,
            word,
            value: (v0, v1),
        })
    }

    fn check_name(&self, head: &str, at: usize) -> Result<(), PErr> {
        if valid_name(head) {
            return Ok(());
        }
        let reason = if head.is_empty() {
            "missing variable name before `=`".to_string()
        } else if head.strip_suffix('+').is_some_and(valid_name) {
            "appending with `+=` is not supported; write NAME=\"${NAME}more\"".to_string()
        } else if head.contains('[') {
            "array elements `NAME[...]=` are not supported".to_string()
        } else {
            format!(
                "`{}` is not a valid variable name (letters, digits and `_`, not starting with a digit)",
                echo(head)
            )
        };
        Err(self.syntax(at, reason))
    }

    /// Why a statement that is not an assignment is refused.
    fn command(&mut self, head: &str, at: usize) -> PErr {
        match head {
            "if" | "for" | "while" | "until" | "case" | "select" => {
                return self.forbidden(at, &format!("`{head}` statements are not allowed"))
            }
            "then" | "else" | "elif" | "fi" | "do" | "done" | "esac" | "function" | "time"
            | "coproc" | "{" | "}" | "!" | "[[" | "[" | "]]" | "]" => {
                return self.forbidden(at, &format!("`{head}` is not allowed"))
            }
            "." | "source" => {
                return self.forbidden(
                    at,
                    "sourcing a file is only allowed in the form `[[ -f PATH ]] && . PATH`",
                )
            }
            _ => {}
        }
        if valid_name(head) {
            self.skip_blanks();
            if self.peek() == Some('(') && self.peek_at(1) == Some(')') {
                return self.forbidden(at, "function definitions are not allowed");
            }
            if self.peek() == Some('=') {
                return self.forbidden(
                    at,
                    &format!(
                        "`{head} =` would run `{head}` as a command: no spaces are allowed around `=` in an assignment"
                    ),
                );
            }
        }
        if !head.is_empty() {
            let what = if self.secret {
                "a command is not allowed".to_string()
            } else {
                format!("command `{}` is not allowed", echo(head))
            };
            return self.forbidden(at, &what);
        }
        let at = self.offset();
        match self.peek() {
            Some('(') => self.forbidden(
                at,
                "subshells `( ... )` and arithmetic commands `(( ... ))` are not allowed",
            ),
            Some(c @ (';' | '&' | '|' | ')')) => self.syntax(at, format!("unexpected `{c}`")),
            Some('<' | '>') => self.forbidden(at, "redirections are not allowed"),
            Some('=') => self.syntax(at, "missing variable name before `=`"),
            Some('$') if self.peek_at(1) == Some('(') => {
                self.forbidden(at, "command substitution $(...) is not allowed")
            }
            Some('`') => self.forbidden(at, "command substitution `...` is not allowed"),
            _ => self.forbidden(at, "a command is not allowed"),
        }
    }

    /// What may follow a value: blanks, then the end or a comment.
    fn after_value(&mut self, empty_value: bool) -> Result<(), PErr> {
        self.skip_blanks();
        let at = self.offset();
        let Some(c) = self.peek() else {
            return Ok(());
        };
        match c {
            '#' => Ok(()),
            ';' | '&' | '|' => {
                let op: String = if self.peek_at(1) == Some(c) && c != ';' {
                    self.i += 2;
                    format!("{c}{c}")
                } else {
                    self.i += 1;
                    c.to_string()
                };
                if op == "|" {
                    return Err(self.forbidden(at, "pipes `|` are not allowed"));
                }
                if op == "&" {
                    return Err(
                        self.forbidden(at, "running in the background with `&` is not allowed")
                    );
                }
                self.skip_blanks();
                if self.at_end_or_comment() {
                    return Err(self.syntax(at, format!("a trailing `{op}` is not supported")));
                }
                if self.looks_like_assignment() {
                    return Err(self.syntax(
                        at,
                        format!("only one assignment per line is supported (found `{op}`)"),
                    ));
                }
                Err(self.forbidden(at, &format!("`{op}` followed by a command is not allowed")))
            }
            '<' | '>' => Err(self.forbidden(at, "redirections are not allowed")),
            '(' | ')' => Err(self.syntax(at, format!("unexpected `{c}`"))),
            _ => {
                if self.looks_like_assignment() {
                    return Err(self.syntax(at, "only one assignment per line is supported"));
                }
                let hint = if empty_value {
                    " (no spaces are allowed after `=`; quote a value with spaces)"
                } else {
                    " (quote a value with spaces)"
                };
                let what = if self.secret {
                    "the next word".to_string()
                } else {
                    let save = self.i;
                    let word = self.token();
                    self.i = save;
                    format!("`{}`", echo(&word))
                };
                Err(self.forbidden(
                    at,
                    &format!("{what} after the value would run as a command{hint}"),
                ))
            }
        }
    }

    fn looks_like_assignment(&mut self) -> bool {
        let save = self.i;
        let head = self.head();
        let yes = self.peek() == Some('=') && valid_name(&head);
        self.i = save;
        yes
    }

    /// `[[ -f PATH ]] && . PATH` and its variants.
    fn include(&mut self) -> Result<Stmt, PErr> {
        let at = self.offset();
        let bad = |p: &Parser| {
            p.forbidden(
                at,
                "the only conditional allowed is the include form `[[ -f PATH ]] && . PATH`",
            )
        };
        let open = self.token();
        let close = if open == "[[" { "]]" } else { "]" };
        self.skip_blanks();
        if self.token() != "-f" {
            return Err(bad(self));
        }
        self.skip_blanks();
        let w0 = self.i;
        let test = self.word()?;
        if self.i == w0 {
            return Err(bad(self));
        }
        self.skip_blanks();
        if self.token() != close {
            return Err(bad(self));
        }
        self.skip_blanks();
        if self.token() != "&&" {
            return Err(bad(self));
        }
        self.skip_blanks();
        let dot = self.token();
        if dot != "." && dot != "source" {
            return Err(bad(self));
        }
        self.skip_blanks();
        let w0 = self.i;
        let source = self.word()?;
        if self.i == w0 {
            return Err(bad(self));
        }
        self.skip_blanks();
        if !self.at_end_or_comment() {
            return Err(bad(self));
        }
        Ok(Stmt::Include { test, source })
    }

    /// An unquoted word: up to a blank, an operator or the end.
    fn word(&mut self) -> Result<Word, PErr> {
        let mut w = Word::new();
        let start = self.i;
        let mut after_colon = false;
        while let Some(c) = self.peek() {
            match c {
                c if is_blank(c) || is_meta(c) || c == '\n' => break,
                '\'' => self.single(&mut w)?,
                '"' => self.double(&mut w)?,
                '\\' => {
                    self.bump();
                    match self.bump() {
                        None => push_char(&mut w, '\\'),
                        Some('\n') => {}
                        Some(e) => push_char(&mut w, e),
                    }
                }
                '$' => self.dollar(&mut w, false)?,
                '`' => return Err(self.backtick()),
                '~' if self.i == start || after_colon => return Err(self.tilde()),
                c => {
                    self.bump();
                    push_char(&mut w, c);
                }
            }
            after_colon = c == ':';
        }
        Ok(w)
    }

    fn backtick(&self) -> PErr {
        self.forbidden(self.offset(), "command substitution `...` is not allowed")
    }

    fn tilde(&self) -> PErr {
        self.syntax(
            self.offset(),
            "tilde expansion `~` is not supported; write the full path or quote it",
        )
    }

    fn single(&mut self, w: &mut Word) -> Result<(), PErr> {
        let at = self.offset();
        self.bump();
        if !matches!(w.last(), Some(Seg::Lit(_))) {
            w.push(Seg::Lit(String::new()));
        }
        loop {
            match self.bump() {
                None => return Err(self.syntax(at, "unterminated single quote")),
                Some('\'') => return Ok(()),
                Some(c) => push_char(w, c),
            }
        }
    }

    fn double(&mut self, w: &mut Word) -> Result<(), PErr> {
        let at = self.offset();
        self.bump();
        if !matches!(w.last(), Some(Seg::Lit(_))) {
            w.push(Seg::Lit(String::new()));
        }
        loop {
            match self.peek() {
                None => return Err(self.syntax(at, "unterminated double quote")),
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => {
                    self.bump();
                    match self.peek() {
                        Some('\n') => {
                            self.bump();
                        }
                        Some(e @ ('$' | '`' | '"' | '\\')) => {
                            self.bump();
                            push_char(w, e);
                        }
                        _ => push_char(w, '\\'),
                    }
                }
                Some('$') => self.dollar(w, true)?,
                Some('`') => return Err(self.backtick()),
                Some(c) => {
                    self.bump();
                    push_char(w, c);
                }
            }
        }
    }

    /// At a `$`.
    fn dollar(&mut self, w: &mut Word, in_dq: bool) -> Result<(), PErr> {
        let at = self.offset();
        self.bump();
        match self.peek() {
            Some('{') => {
                self.bump();
                self.brace(w, in_dq, at)
            }
            Some('(') if self.peek_at(1) == Some('(') => {
                Err(self.syntax(at, "arithmetic expansion $((...)) is not supported"))
            }
            Some('(') => Err(self.forbidden(at, "command substitution $(...) is not allowed")),
            Some('[') => Err(self.syntax(at, "arithmetic expansion $[...] is not supported")),
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
                    name.push(c);
                    self.bump();
                }
                w.push(Seg::Var(name));
                Ok(())
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                Err(self.syntax(at, format!("special parameter `${c}` is not supported")))
            }
            Some('\'') if !in_dq => Err(self.syntax(at, "ANSI-C quoting $'...' is not supported")),
            Some('"') if !in_dq => Err(self.syntax(at, "locale quoting $\"...\" is not supported")),
            _ => {
                push_char(w, '$');
                Ok(())
            }
        }
    }

    /// After `${` (which starts at `at`).
    fn brace(&mut self, w: &mut Word, in_dq: bool, at: usize) -> Result<(), PErr> {
        if self.depth >= MAX_NESTING {
            return Err(self.syntax(
                at,
                format!("`${{...}}` nested deeper than {MAX_NESTING} levels"),
            ));
        }
        self.depth += 1;
        let r = self.brace_inner(w, in_dq, at);
        self.depth -= 1;
        r
    }

    fn brace_inner(&mut self, w: &mut Word, in_dq: bool, at: usize) -> Result<(), PErr> {
        let missing = |p: &Parser| p.syntax(at, "missing `}` to close `${`");
        let name = match self.peek() {
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
                    name.push(c);
                    self.bump();
                }
                name
            }
            Some('#') => return Err(self.syntax(at, "length expansion `${#VAR}` is not supported")),
            Some('!') => {
                return Err(self.syntax(at, "indirect expansion `${!VAR}` is not supported"))
            }
            Some(c) if c.is_ascii_digit() || "@*?$-".contains(c) => {
                return Err(
                    self.syntax(at, format!("special parameter `${{{c}}}` is not supported"))
                )
            }
            None => return Err(missing(self)),
            Some(_) => {
                return Err(self.syntax(
                    at,
                    "bad substitution: `${` must be followed by a variable name",
                ))
            }
        };
        let colon = self.peek() == Some(':');
        if colon {
            self.bump();
        }
        let op = self.peek();
        match op {
            Some('}') if !colon => {
                self.bump();
                w.push(Seg::Var(name));
                Ok(())
            }
            Some('-') => {
                self.bump();
                let word = self.brace_word(in_dq, at)?;
                w.push(Seg::Default { name, colon, word });
                Ok(())
            }
            None => Err(missing(self)),
            Some(o @ ('=' | '+' | '?')) => {
                let c = if colon { ":" } else { "" };
                let why = match o {
                    '=' => "assigns a variable, which is not supported",
                    '+' => "(alternative value) is not supported",
                    _ => "aborts on an unset variable, which is not supported",
                };
                Err(self.syntax(
                    at,
                    format!("`${{{name}{c}{o}...}}` {why}; use `${{{name}:-default}}`"),
                ))
            }
            _ if colon => Err(self.syntax(
                at,
                format!("substring expansion `${{{name}:...}}` is not supported"),
            )),
            Some(o @ ('/' | '#' | '%' | '^' | ',' | '@')) => Err(self.syntax(
                at,
                format!("pattern expansion `${{{name}{o}...}}` is not supported"),
            )),
            Some('[') => Err(self.syntax(at, "arrays `${NAME[...]}` are not supported")),
            Some(_) => Err(self.syntax(
                at,
                format!("bad substitution in `${{{name}...}}`: supported are `${{VAR}}`, `${{VAR:-default}}`, `${{VAR-default}}`"),
            )),
        }
    }

    /// The default word of `${VAR:-word}`, up to the closing `}` (consumed).
    fn brace_word(&mut self, in_dq: bool, at: usize) -> Result<Word, PErr> {
        let mut w = Word::new();
        if !in_dq && self.peek() == Some('~') {
            return Err(self.tilde());
        }
        loop {
            match self.peek() {
                None => return Err(self.syntax(at, "missing `}` to close `${`")),
                Some('}') => {
                    self.bump();
                    return Ok(w);
                }
                Some('\\') => {
                    self.bump();
                    match self.peek() {
                        None => {}
                        Some('\n') => {
                            self.bump();
                        }
                        Some(e) => {
                            // In double quotes only these lose the backslash, but it still
                            // protects any character from ending the word or opening a quote.
                            self.bump();
                            if in_dq && !matches!(e, '$' | '`' | '"' | '\\' | '}') {
                                push_char(&mut w, '\\');
                            }
                            push_char(&mut w, e);
                        }
                    }
                }
                // Bash keeps quotes inside a double-quoted `${VAR:-...}` literally or drops
                // text around them depending on what precedes them: refuse rather than guess.
                Some('\'') if in_dq => return Err(self.syntax(
                    self.offset(),
                    "single quotes inside a double-quoted `${VAR:-...}` are kept literally by bash; remove them (the default is already quoted) or write ${VAR:-'...'} outside double quotes",
                )),
                Some('"') if in_dq => return Err(self.syntax(
                    self.offset(),
                    "double quotes inside a double-quoted `${VAR:-...}` are not supported (bash handles them inconsistently); remove them, the default is already quoted",
                )),
                Some('\'') => self.single(&mut w)?,
                Some('"') => self.double(&mut w)?,
                Some('$') => self.dollar(&mut w, in_dq)?,
                Some('`') => return Err(self.backtick()),
                Some(c) => {
                    self.bump();
                    push_char(&mut w, c);
                }
            }
        }
    }
}

/// The name a statement assigns (`[export ]NAME=`), read even when the rest is broken, with the
/// byte offset of the name in `stmt`. With `spaced`, `NAME = ...` counts too (for redaction).
fn assigned_name(stmt: &str, spaced: bool) -> Option<(&str, usize)> {
    let blanks = |s: &str| s.len() - s.trim_start_matches([' ', '\t']).len();
    let mut at = blanks(stmt);
    if let Some(rest) = stmt[at..].strip_prefix("export") {
        let n = blanks(rest);
        if n > 0 {
            at += "export".len() + n;
        }
    }
    let rest = &stmt[at..];
    let len = rest.find(ends_head).unwrap_or(rest.len());
    let name = &rest[..len];
    let after = &rest[len..];
    let after = if spaced {
        after.trim_start_matches([' ', '\t'])
    } else {
        after
    };
    (!name.is_empty() && after.starts_with('=')).then_some((name, at))
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

struct Evaluator<'a> {
    include: &'a mut dyn FnMut(&str) -> Option<String>,
    errors: Vec<LineError>,
    /// Files being evaluated, outermost first.
    chain: Vec<String>,
    includes: usize,
    total: usize,
    /// Names whose last assignment was refused (see [`eval_tainted`]).
    refused: &'a mut BTreeSet<String>,
}

impl Evaluator<'_> {
    fn file(&mut self, file: &str, text: &str, vars: &mut Vars) {
        // After an unterminated secret value, the lines that follow may be the rest of it:
        // never echo them until a statement parses again.
        let mut hush = false;
        for span in split(text) {
            match parse(text, span, hush) {
                Err(e) => {
                    let assigned = assigned_name(&text[span.start..span.end], true);
                    let opens_secret =
                        span.unterminated && assigned.is_some_and(|(n, _)| is_secret(n));
                    if let Some((name, _)) = assigned {
                        self.refused.insert(name.to_string());
                    }
                    self.error(file, text, span, e, hush);
                    hush = hush || opens_secret;
                }
                Ok(stmt) => {
                    hush = false;
                    let assigned = match &stmt {
                        Stmt::Assign { name, .. } => Some(name.clone()),
                        _ => None,
                    };
                    match self.apply(stmt, vars) {
                        Ok(()) => {
                            if let Some(name) = assigned {
                                self.refused.remove(&name);
                            }
                        }
                        Err(e) => {
                            if let Some(name) = assigned {
                                self.refused.insert(name);
                            }
                            self.error(file, text, span, e, false);
                        }
                    }
                }
            }
        }
    }

    fn apply(&mut self, stmt: Stmt, vars: &mut Vars) -> Result<(), PErr> {
        match stmt {
            Stmt::Empty => Ok(()),
            Stmt::Assign { name, word, value } => {
                if let Some(from) = uses_any(&word, self.refused) {
                    return Err(PErr {
                        at: value.0,
                        code: ErrorCode::InvalidValue,
                        reason: format!(
                            "its value uses `{from}`, whose assignment was refused; the last good \
                             value stays"
                        ),
                    });
                }
                let v = self.expand_counted(&word, vars, value.0)?;
                vars.insert(name, v);
                Ok(())
            }
            Stmt::Include { test, source } => {
                let tested = self.expand_counted(&test, vars, 0)?;
                let path = self.expand_counted(&source, vars, 0)?;
                let err = |code, reason: String| PErr {
                    at: 0,
                    code,
                    reason,
                };
                if tested != path {
                    return Err(err(
                        ErrorCode::Syntax,
                        format!(
                            "the tested path `{}` differs from the sourced path `{}`",
                            echo(&tested),
                            echo(&path)
                        ),
                    ));
                }
                if self.chain.iter().any(|f| same_file(f, &path)) {
                    let mut cycle = self.chain.join(" -> ");
                    cycle.push_str(" -> ");
                    cycle.push_str(&path);
                    return Err(err(ErrorCode::Syntax, format!("include cycle: {cycle}")));
                }
                if self.chain.len() > MAX_INCLUDE_DEPTH {
                    return Err(err(
                        ErrorCode::Syntax,
                        format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels"),
                    ));
                }
                if self.includes >= MAX_INCLUDES {
                    return Err(err(
                        ErrorCode::Syntax,
                        format!("more than {MAX_INCLUDES} files included"),
                    ));
                }
                if let Some(body) = (self.include)(&path) {
                    self.includes += 1;
                    self.chain.push(path.clone());
                    self.file(&path, &body, vars);
                    self.chain.pop();
                }
                Ok(())
            }
        }
    }

    fn expand_counted(&mut self, word: &Word, vars: &Vars, at: usize) -> Result<String, PErr> {
        let mut out = String::new();
        let too_long = |reason: String| PErr {
            at,
            code: ErrorCode::InvalidValue,
            reason,
        };
        if !expand(word, vars, &mut out) {
            return Err(too_long(format!(
                "the value would be longer than {MAX_VALUE_LEN} bytes"
            )));
        }
        if self.total + out.len() > MAX_TOTAL_LEN {
            return Err(too_long(format!(
                "the files expand to more than {MAX_TOTAL_LEN} bytes of values"
            )));
        }
        self.total += out.len();
        Ok(out)
    }

    fn error(&mut self, file: &str, text: &str, span: Span, e: PErr, hush: bool) {
        let at = e.at.clamp(span.start, span.end);
        let at = if text.is_char_boundary(at) {
            at
        } else {
            span.start
        };
        let line = span.line + text[span.start..at].matches('\n').count();
        let line_start = text[span.start..at]
            .rfind('\n')
            .map_or(span.start, |p| span.start + p + 1);
        let line_end = text[at..span.end].find('\n').map_or(span.end, |p| at + p);
        let stmt = &text[span.start..span.end];
        let shown = match assigned_name(stmt, true) {
            Some((name, _)) if is_secret(name) => format!("{name}=<redacted>"),
            _ if hush => "<redacted: may continue a secret value>".to_string(),
            _ => text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
        };
        self.errors.push(LineError {
            file: file.to_string(),
            line,
            text: shown,
            reason: e.reason,
            code: e.code,
        });
    }
}

/// Whether an include path names a file of the chain (`envvars.d/x` and `/iohub/envvars.d/x`).
fn same_file(a: &str, b: &str) -> bool {
    a == b || b.ends_with(&format!("/{a}")) || a.ends_with(&format!("/{b}"))
}

/// The first of `names` that `word` expands, if any.
fn uses_any(word: &Word, names: &BTreeSet<String>) -> Option<String> {
    word.iter().find_map(|seg| match seg {
        Seg::Lit(_) => None,
        Seg::Var(n) => names.contains(n).then(|| n.clone()),
        Seg::Default { name, word, .. } => names
            .contains(name)
            .then(|| name.clone())
            .or_else(|| uses_any(word, names)),
    })
}

/// Expand a word; `false` if the result would exceed [`MAX_VALUE_LEN`].
fn expand(word: &Word, vars: &Vars, out: &mut String) -> bool {
    for seg in word {
        let piece = match seg {
            Seg::Lit(s) => s.as_str(),
            Seg::Var(n) => vars.get(n).map_or("", String::as_str),
            Seg::Default { name, colon, word } => match vars.get(name) {
                Some(v) if !(*colon && v.is_empty()) => v.as_str(),
                _ => {
                    if !expand(word, vars, out) {
                        return false;
                    }
                    continue;
                }
            },
        };
        if out.len() + piece.len() > MAX_VALUE_LEN {
            return false;
        }
        out.push_str(piece);
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Editing.

fn set_one(text: &str, name: &str, value: Option<&str>) -> String {
    let spans: Vec<Span> = split(text)
        .into_iter()
        .filter(|s| {
            !s.rest && assigned_name(&text[s.start..s.end], false).is_some_and(|(n, _)| n == name)
        })
        .collect();
    match value {
        Some(v) => match spans.last() {
            Some(&span) => {
                let (from, to) = match parse(text, span, false) {
                    Ok(Stmt::Assign { value, .. }) => value,
                    // A broken line: the whole statement from the name on becomes NAME='v'.
                    _ => {
                        let at = assigned_name(&text[span.start..span.end], false)
                            .map_or(0, |(_, at)| at);
                        (span.start + at + name.len() + 1, span.end)
                    }
                };
                let mut out = String::with_capacity(text.len() + v.len() + 2);
                out.push_str(&text[..from]);
                out.push_str(&quote(v));
                out.push_str(&text[to..]);
                out
            }
            None => {
                let nl = match text.find('\n') {
                    Some(p) if text[..p].ends_with('\r') => "\r\n",
                    _ => "\n",
                };
                let mut out = text.to_string();
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push_str(nl);
                }
                out.push_str(name);
                out.push('=');
                out.push_str(&quote(v));
                out.push_str(nl);
                out
            }
        },
        None => {
            let mut out = String::with_capacity(text.len());
            let mut pos = 0;
            for span in spans {
                out.push_str(&text[pos..span.start]);
                pos = span.next;
            }
            out.push_str(&text[pos..]);
            out
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Versions.

/// `getVersion`: split on `.`, the first four fields as awk numbers (numeric prefix, else 0).
fn awk_version(s: &str) -> [u64; 4] {
    let mut v = [0u64; 4];
    for (slot, field) in v.iter_mut().zip(s.split('.')) {
        let field = field.trim_start_matches([' ', '\t']);
        *slot = field
            .bytes()
            .take_while(u8::is_ascii_digit)
            .fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
    }
    v
}

/// `sort -V` order (GNU `filevercmp` without suffix handling, which never applies to
/// `*-envvars` names), ties broken bytewise.
fn version_cmp(a: &str, b: &str) -> Ordering {
    verrevcmp(a.as_bytes(), b.as_bytes()).then_with(|| a.cmp(b))
}

/// The Debian/gnulib version comparison: non-digit runs compare by `order`, digit runs
/// numerically.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(b'~') => -1,
            Some(c) => i32::from(c) + 256,
        }
    }
    let digit = |s: &[u8], i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}
