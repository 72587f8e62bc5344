//! Redaction of secrets and personal paths from text and URLs that leave the process.
//!
//! [`redact()`] is applied to every error message recorded on a span or in a
//! [`CallRecord`](crate::CallRecord) (through [`redact_error`], which also joins the error's
//! source chain); [`redact_uri`] to every URL (`url.full`). All are pure functions. This module
//! must never log, store or return the text it removes.
//!
//! # How it works
//!
//! One hand-written pass over the bytes, left to right, with no backtracking: at each byte that
//! can start a secret (a table lookup), a matcher looks ahead, and a match is consumed (replaced)
//! whole, so no byte is matched twice. The few look-aheads that can fail after a long scan
//! (the separator after a key, the suffix of a key, the password part of URL userinfo) remember
//! their result for the run they scanned, so the pass is linear in the input on every input.
//! The pass stops once [`MAX_REDACTED_LEN`] bytes of output exist: everything after is cut.
//!
//! There are no word boundaries: a secret is found glued to letters, digits, `_` or non-ASCII
//! text. Keys are matched case-insensitively (the Kelvin sign and the long s count as `k`,
//! `s`). `%XX` escapes of `= : " ' / @` and space are read as those characters, so URL-encoded
//! spellings (`token%3Dv`, `Bearer%20v`, `%2F%2Fu%3Apw%40h`) are found too. When in doubt it
//! fails closed: an unquoted value runs to the next whitespace, `&` or `"`, not to the first
//! punctuation, and a quoted value without its closing quote runs to the end of the text.
//!
//! Redacting twice changes nothing: no replacement can start a new match.

use std::borrow::Cow;
use std::fmt;

use http::Uri;

/// The longest text [`redact`] returns, in bytes (cut on a char boundary). `url.full`
/// ([`redact_uri`]) is capped at the same length.
pub const MAX_REDACTED_LEN: usize = 2048;

/// How many bytes of an error's message chain [`redact_error`] assembles before redacting; the
/// rest is never formatted. Text cut there is also cut back to its last whitespace, so a
/// secret split by the cut never leaves half of itself.
const MAX_ASSEMBLED_LEN: usize = 16 * 1024;

/// What replaces a secret.
const REDACTED: &[u8] = b"REDACTED";

/// Keys whose value is a secret, matched case-insensitively anywhere (`access_token`,
/// `client_secret`, `X-Forwarded-Access-Token`, `DB_PASSWORD`), optionally followed by a
/// suffix of `[A-Za-z0-9_-]` (`secret_key`, `token_value`). `tokens` alone is a count, not a
/// key (`max_tokens: 4096`).
const KEYS: [&[u8]; 10] = [
    b"token",
    b"password",
    b"passwd",
    b"pwd",
    b"secret",
    b"apikey",
    b"api_key",
    b"api-key",
    b"credential",
    b"private_key",
];

/// HTTP authentication schemes whose credential follows after whitespace.
const SCHEMES: [&[u8]; 2] = [b"bearer", b"basic"];

/// Databricks token prefixes: personal access tokens (`dapi`), and `dkea` / `dose` tokens.
const PAT_PREFIXES: [&[u8]; 3] = [b"dapi", b"dkea", b"dose"];

/// Bytes at which a matcher can start: the first letters of [`KEYS`], [`SCHEMES`] and
/// [`PAT_PREFIXES`] in both cases, `e` (JWTs start `eyJ`), `/` (userinfo and home
/// directories), `%` (`%2F`), `:` (`C:\Users`) and the first byte of the long s.
static STARTS: [bool; 256] = {
    let mut table = [false; 256];
    let listed = *b"tTpPsSaAcCbBdDe/%:\xC5";
    let mut i = 0;
    while i < listed.len() {
        table[listed[i] as usize] = true;
        i += 1;
    }
    table
};

/// Removes secrets and personal paths from `text` and caps it at [`MAX_REDACTED_LEN`] bytes.
///
/// Replaced with `REDACTED`, wherever they stand (glued to other text too):
///
/// - `Bearer` / `Basic` credentials (any case; after spaces, tabs, `%20`, `+` or Unicode
///   spaces);
/// - Databricks `dapi…`, `dkea…`, `dose…` tokens (any case), and JWTs (`eyJ…`);
/// - the values of keys containing `token`, `password`, `passwd`, `pwd`, `secret`, `apikey`,
///   `api_key`, `credential` or `private_key` (any case): `key=value`, `key: value`,
///   `key = value`, JSON `"key": "value"`, escaped JSON `{\"key\":\"value\"}`, Python
///   `{'key': 'value'}`, URL-encoded `key%3Dvalue`. A quoted value is replaced up to its closing
///   quote; an unquoted one up to the next whitespace, `&` or `"`; an object or array value
///   (`{…}`, `[…]`) up to its closing bracket;
/// - URL userinfo, with or without a scheme (`https://u:p@h`, `//u:p@h`), up to the last `@`
///   of the URL, so a password holding `/` or `@` goes too;
///
/// and the user name in home directories: `/home/<user>`, `/Users/<user>`, `C:\Users\<user>`
/// become `~`. Returns the input borrowed when nothing had to change. Runs in time linear in
/// the input, and `redact(&redact(x)) == redact(x)`.
///
/// ```
/// use kasal_trace::redact;
///
/// let message = "GET https://me:pw@x.cloud.databricks.com/api?token=dapi0123456789 failed";
/// assert_eq!(
///     redact(message),
///     "GET https://REDACTED@x.cloud.databricks.com/api?token=REDACTED failed"
/// );
/// assert_eq!(redact("password=ab,S3cretRest"), "password=REDACTED");
/// assert!(matches!(redact("nothing secret"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    if !might_hold_secret(text) {
        return Cow::Borrowed(truncate(text));
    }
    let mut redacted = match Scanner::new(text).run() {
        Cow::Owned(redacted) => redacted,
        unchanged => return unchanged,
    };
    // Make the result a fixed point, so that redacting it again changes nothing even where
    // the cap cut a key from its value or a replacement joined a key to a separator. The
    // passes run over at most `MAX_REDACTED_LEN` bytes; two are almost always enough.
    for _ in 0..MAX_PASSES {
        match Scanner::new(&redacted).run() {
            Cow::Borrowed(same) if same.len() == redacted.len() => break,
            again => redacted = again.into_owned(),
        }
    }
    Cow::Owned(redacted)
}

/// Whether any matcher of the [`Scanner`] could fire on `text`: the fast path for the common,
/// clean text (URL paths on every call, most error messages). Every matcher needs one of these
/// literally, in any ASCII case: a key of [`KEYS`] (`tokens`, `passwd`, `api_key`... contain
/// one of the [`NEEDLES`]), a scheme of [`SCHEMES`], a prefix of [`PAT_PREFIXES`], a JWT's `eyJ`,
/// userinfo's `@`, a home directory's `home` / `Users`; or a byte the matchers read as
/// something else: `%` (URL-encoded separators) and any non-ASCII byte (the Kelvin sign, the
/// long s, Unicode spaces). Without any of them the scanner cannot change the text, so skipping
/// it keeps the result (and idempotence) exactly.
pub(crate) fn might_hold_secret(text: &str) -> bool {
    might_hold_secret_bytes(text.as_bytes())
}

/// [`might_hold_secret`] of a text's bytes (a path segment cut at `/`, which is ASCII).
#[inline]
pub(crate) fn might_hold_secret_bytes(bytes: &[u8]) -> bool {
    // One table lookup per byte: most bytes start no needle. A byte that does is followed up
    // only when the next byte is the needle's second letter (in any case), which is rare in
    // URL paths, and only then are the needles compared.
    for (i, &byte) in bytes.iter().enumerate() {
        let seconds = NEEDLE_STARTS[usize::from(byte)];
        if seconds == 0 {
            continue;
        }
        if seconds == ALWAYS {
            return true;
        }
        let Some(&next) = bytes.get(i + 1) else {
            break;
        };
        // `next | 0x20` is a lowercase letter exactly when `next` is an ASCII letter.
        let letter = (next | 0x20).wrapping_sub(b'a');
        if letter < 26 && seconds >> letter & 1 == 1 && needle_at(bytes, i) {
            return true;
        }
    }
    false
}

/// Every needle of [`might_hold_secret`] (compared in any ASCII case), but `@` and `%`; each
/// starts with two letters.
const NEEDLES: [&str; 17] = [
    "token",
    "pass",
    "pwd",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "private_key",
    "bearer",
    "basic",
    "dapi",
    "dkea",
    "dose",
    "eyj",
    "home",
    "users",
];

/// In [`NEEDLE_STARTS`]: a byte that alone makes the text suspect (`@`, `%`, non-ASCII).
const ALWAYS: u32 = u32::MAX;

/// For each byte: 0 if no needle starts with it; [`ALWAYS`]; else the set of the second letters
/// (bit `c - b'a'`) of the needles that start with it, in either case.
static NEEDLE_STARTS: [u32; 256] = needle_starts();

const fn needle_starts() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0x80;
    while byte < 256 {
        table[byte] = ALWAYS;
        byte += 1;
    }
    table[b'@' as usize] = ALWAYS;
    table[b'%' as usize] = ALWAYS;
    let mut n = 0;
    while n < NEEDLES.len() {
        let needle = NEEDLES[n].as_bytes();
        let second = 1 << (needle[1] - b'a');
        table[needle[0] as usize] |= second;
        table[needle[0].to_ascii_uppercase() as usize] |= second;
        n += 1;
    }
    table
}

/// Whether one of [`NEEDLES`] starts at `bytes[i]` (any ASCII case).
#[cold]
fn needle_at(bytes: &[u8], i: usize) -> bool {
    let rest = &bytes[i..];
    let (first, second) = match rest {
        [first, second, ..] => (first | 0x20, second | 0x20),
        _ => return false,
    };
    let is = |needle: &str| {
        let needle = needle.as_bytes();
        needle[1] == second
            && rest.len() >= needle.len()
            && rest[2..needle.len()].eq_ignore_ascii_case(&needle[2..])
    };
    // By first letter: every needle of `NEEDLES` once (a test checks each is found).
    match first {
        b't' => is("token"),
        b'p' => is("pass") || is("pwd") || is("private_key"),
        b's' => is("secret"),
        b'a' => is("apikey") || is("api_key") || is("api-key"),
        b'c' => is("credential"),
        b'b' => is("bearer") || is("basic"),
        b'd' => is("dapi") || is("dkea") || is("dose"),
        b'e' => is("eyj"),
        b'h' => is("home"),
        b'u' => is("users"),
        _ => false,
    }
}

/// How many times [`redact`] re-reads its own output at most.
const MAX_PASSES: usize = 4;

/// `text` cut to at most [`MAX_REDACTED_LEN`] bytes on a char boundary.
fn truncate(text: &str) -> &str {
    &text[..floor_boundary(text.as_bytes(), MAX_REDACTED_LEN)]
}

/// The largest `end <= max` that is a char boundary of the UTF-8 `bytes` (or `bytes.len()`).
fn floor_boundary(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut end = max;
    // A continuation byte is `0b10xx_xxxx`; at most three precede a boundary.
    while end > 0 && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    end
}

/// The character at `i` as the matchers see it, and its length in bytes: `%XX` for one of
/// [`DECODED`] reads as that character, the Kelvin sign as `k`, the long s as `s`; any other
/// byte as itself (non-ASCII bytes one at a time). `None` at the end.
#[inline]
fn at(b: &[u8], i: usize) -> Option<(u8, usize)> {
    let &byte = b.get(i)?;
    Some(match byte {
        b'%' => match (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
            (Some(high), Some(low)) if DECODED.contains(&(high << 4 | low)) => (high << 4 | low, 3),
            _ => (b'%', 1),
        },
        0xE2 if b.get(i + 1) == Some(&0x84) && b.get(i + 2) == Some(&0xAA) => (b'k', 3),
        0xC5 if b.get(i + 1) == Some(&0xBF) => (b's', 2),
        other => (other, 1),
    })
}

/// Characters whose `%XX` escape [`at`] decodes: the separators and quotes the matchers need.
/// `&` is not among them: an encoded `&` inside a value must not end it.
const DECODED: &[u8] = b"=:\"'/@ ";

fn hex(byte: &u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The end of `word` (lower-case ASCII) if it starts at `i`, compared case-insensitively
/// through [`at`].
#[inline]
fn word_at(b: &[u8], mut i: usize, word: &[u8]) -> Option<usize> {
    for &expected in word {
        let (c, n) = at(b, i)?;
        if c.to_ascii_lowercase() != expected {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// The end of the run of bytes from `i` that satisfy `accept`.
#[inline]
fn run_end(b: &[u8], mut i: usize, accept: impl Fn(u8) -> bool) -> usize {
    while i < b.len() && accept(b[i]) {
        i += 1;
    }
    i
}

fn is_key_suffix(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// base64url, as in JWTs (no `+`, `/` or `=`: they would swallow separators).
fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')
}

/// Raw bytes that end an unquoted value: whitespace, `&` (the next query pair) and `"` (the
/// end of the JSON string it is written in).
fn ends_value(c: u8) -> bool {
    c.is_ascii_whitespace() || c == b'&' || c == b'"'
}

/// The end of an unquoted value starting at `j`: the first byte that [`ends_value`], or `\"`.
/// A value holding a URL (`//`) runs to the end of the URL instead, as `&` does not end a
/// URL's userinfo.
fn unquoted_end(b: &[u8], j: usize) -> usize {
    let mut k = j;
    let mut url = false;
    while k < b.len() {
        let c = b[k];
        if c == b'/' && b.get(k + 1) == Some(&b'/') {
            url = true;
        }
        if (ends_value(c) && !(url && c == b'&')) || (c == b'\\' && b.get(k + 1) == Some(&b'"')) {
            break;
        }
        k += 1;
    }
    k
}

/// Raw bytes that cannot stand unescaped in a URL, so end the userinfo look-ahead.
fn ends_url(c: u8) -> bool {
    c.is_ascii_whitespace()
        || matches!(
            c,
            b'"' | b'<' | b'>' | b'\\' | b'{' | b'}' | b'|' | b'^' | b'`'
        )
}

/// Bytes that end a user name in a home directory (besides a `/`, also `%2F`).
fn ends_user(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'/' | b'\\' | b':' | b'"' | b'\'' | b'&')
}

/// What the end of a replaced span looks like: a key, a key and its separator, or an
/// authentication scheme. Then what follows the span is that key's value or that scheme's
/// credential.
enum Tail {
    Key,
    Separator,
    Scheme,
    /// A scheme name and the spaces after it.
    SchemeSpaced,
    /// A key, its separator and the start of an unquoted value, which goes on after the span.
    Continues,
}

/// Whether `span` (already replaced) ends with a key (and maybe its separator) or a scheme
/// name, so that what follows it must be read as a value: `eyJ…token=v`, `Bearer x{'token': 'v'}`,
/// `dapi…_password: v`, `…Bearer v`. Looks at the last few dozen bytes only.
fn tail_of(span: &[u8]) -> Option<Tail> {
    let ends_with = |word: &[u8]| {
        span.len() >= word.len() && span[span.len() - word.len()..].eq_ignore_ascii_case(word)
    };
    if SCHEMES.iter().any(|scheme| ends_with(scheme)) {
        return Some(Tail::Scheme);
    }
    let mut spaced = span.len();
    loop {
        match span[..spaced] {
            [.., b' ' | b'\t' | b'+'] => spaced -= 1,
            [.., b'%', b'2', b'0'] => spaced -= 3,
            _ => break,
        }
    }
    if spaced < span.len()
        && SCHEMES.iter().any(|scheme| {
            spaced >= scheme.len()
                && span[spaced - scheme.len()..spaced].eq_ignore_ascii_case(scheme)
        })
    {
        return Some(Tail::SchemeSpaced);
    }
    // The separator part is short (16 bytes at most are looked at); before it, the key and its
    // suffix are one run of key bytes.
    let mut run = span.len().saturating_sub(16);
    while run > 0 && is_key_suffix(span[run - 1]) {
        run -= 1;
    }
    // A key whose unquoted value started inside the span (`//u:p@h/?token=ab` + `@cd`) can
    // stand further back: anywhere after the span's last value terminator.
    let unterminated = span
        .iter()
        .rposition(|&c| ends_value(c))
        .map_or(0, |k| k + 1);
    let run = run.min(unterminated);
    // A key right at the end (`…x_token: `) wins over an earlier one whose value merely
    // runs to the end (`atoken=x_token:`).
    let mut continues = None;
    for p in run..span.len() {
        if !STARTS[usize::from(span[p])] {
            continue;
        }
        for key in KEYS {
            let Some(key_end) = word_at(span, p, key) else {
                continue;
            };
            let suffix_end = run_end(span, key_end, is_key_suffix);
            if !is_key_with_suffix(key, &span[key_end..suffix_end]) {
                continue;
            }
            match separator_tail(span, suffix_end) {
                Some(Tail::Continues) => continues = continues.or(Some(Tail::Continues)),
                Some(tail) => return Some(tail),
                None => {}
            }
        }
    }
    continues
}

/// Whether `span[q..]` is the start of a separator (quotes, spaces) or a whole one (`":`,
/// `" = `, `%3D`), so that the value follows the span.
fn separator_tail(span: &[u8], mut q: usize) -> Option<Tail> {
    while let Some((b'"' | b'\'' | b'\\' | b' ' | b'\t', n)) = at(span, q) {
        q += n;
    }
    if q == span.len() {
        return Some(Tail::Key);
    }
    let (c, n) = at(span, q)?;
    if c != b'=' && c != b':' {
        return None;
    }
    q += n;
    if matches!(span.get(q), Some(b'=' | b'>')) {
        q += 1;
    }
    while let Some((b' ' | b'\t' | b'\r' | b'\n', n)) = at(span, q) {
        q += n;
    }
    if q == span.len() {
        Some(Tail::Separator)
    } else {
        (!span[q..].iter().any(|&c| ends_value(c))).then_some(Tail::Continues)
    }
}

/// Whether `suffix`, after the key word `key`, still makes a key.
fn is_key_with_suffix(key: &[u8], suffix: &[u8]) -> bool {
    suffix.iter().all(|&c| is_key_suffix(c))
        && !(key == b"token" && suffix.eq_ignore_ascii_case(b"s"))
}

/// The single pass behind [`redact`].
struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    /// The output so far; empty until the first replacement.
    out: Vec<u8>,
    /// Input before this offset is already in `out` (or replaced).
    copied: usize,
    /// Whether anything was replaced.
    changed: bool,
    /// Memo for key suffixes: the run of suffix bytes containing `.0` ends at `.1`.
    suffix: (usize, usize),
    /// Memo for the quotes and spaces between a key and its separator: from `.0` to `.1`.
    before_separator: (usize, usize),
    /// Memo for userinfo: the URL run from `.0` ends at `.1`; its last `@` is at `.2`.
    url_run: (usize, usize, Option<usize>),
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            b: text.as_bytes(),
            out: Vec::new(),
            copied: 0,
            changed: false,
            suffix: (usize::MAX, 0),
            before_separator: (usize::MAX, 0),
            url_run: (usize::MAX, 0, None),
        }
    }

    fn run(mut self) -> Cow<'a, str> {
        let len = self.b.len();
        let mut i = 0;
        while i < len && self.out.len() + i.saturating_sub(self.copied) < MAX_REDACTED_LEN {
            if !STARTS[usize::from(self.b[i])] {
                i += 1;
                continue;
            }
            i = match self.match_at(i) {
                Some(next) => next.max(i + 1),
                None => i + 1,
            };
        }
        if !self.changed {
            return Cow::Borrowed(truncate(self.text));
        }
        let room = (MAX_REDACTED_LEN + 4).saturating_sub(self.out.len());
        let rest = self.b.get(self.copied..).unwrap_or_default();
        self.out.extend_from_slice(&rest[..rest.len().min(room)]);
        let end = floor_boundary(&self.out, MAX_REDACTED_LEN);
        self.out.truncate(end);
        // Every cut is on a boundary, so this cannot fail; if it did, fail closed.
        match String::from_utf8(self.out) {
            Ok(text) => Cow::Owned(text),
            Err(_) => Cow::Borrowed("REDACTED"),
        }
    }

    /// Replaces `start..end` of the input with `with`; scanning goes on at `end`.
    fn emit(&mut self, start: usize, end: usize, with: &[u8]) {
        if let Some(kept) = self.b.get(self.copied..start) {
            self.out.extend_from_slice(kept);
        }
        self.out.extend_from_slice(with);
        self.copied = end.max(self.copied);
        self.changed = true;
    }

    /// Replaces a secret at `start..end`, then whatever secret its end announces.
    fn replace(&mut self, start: usize, end: usize) -> usize {
        self.emit(start, end, REDACTED);
        self.follow(start, end);
        self.copied
    }

    /// After replacing `start..end`: if the span ended with a key or a scheme name, replace
    /// the value or credential that follows too (the span swallowed its key). Each round
    /// consumes input, so this stays linear.
    fn follow(&mut self, mut start: usize, mut end: usize) {
        loop {
            // The span's own end, or a key glued before it that its replacement now joins
            // to what follows (`token` + `eyJa.b.c` + `=v` reads `tokenREDACTED=v`).
            let tail = self
                .b
                .get(start..end)
                .and_then(tail_of)
                .or_else(|| self.output_tail());
            let Some(tail) = tail else {
                return;
            };
            let next = match tail {
                Tail::SchemeSpaced | Tail::Continues => {
                    let value_end = unquoted_end(self.b, end);
                    (end < value_end).then_some((end, value_end))
                }
                Tail::Key => self.value_after_key(end),
                Tail::Separator => {
                    let mut j = end;
                    while let Some((b' ' | b'\t' | b'\r' | b'\n', n)) = at(self.b, j) {
                        j += n;
                    }
                    self.value_at(j)
                }
                Tail::Scheme => self.credential_after_scheme(end),
            };
            let Some((value_start, value_end)) = next else {
                return;
            };
            self.emit(value_start, value_end, REDACTED);
            (start, end) = (value_start, value_end);
        }
    }

    /// [`Tail::Key`] if the output so far ends with a key glued to the last replacement.
    fn output_tail(&self) -> Option<Tail> {
        let recent = &self.out[self.out.len().saturating_sub(64)..];
        match tail_of(recent) {
            Some(Tail::Key) => Some(Tail::Key),
            _ => None,
        }
    }

    /// Tries every matcher that can start at `i`; the offset to go on from after a match.
    fn match_at(&mut self, i: usize) -> Option<usize> {
        match self.b[i] {
            b't' | b'T' | b'p' | b'P' | b's' | b'S' | b'a' | b'A' | b'c' | b'C' | 0xC5 => {
                self.key_value(i)
            }
            b'b' | b'B' => self.scheme_credential(i),
            b'd' | b'D' => self.databricks_token(i),
            b'e' => self.jwt(i),
            b'/' | b'%' => self.userinfo(i).or_else(|| self.home_dir(i)),
            b':' => self.windows_home_dir(i),
            _ => None,
        }
    }

    /// `token=v`, `"client_secret": "v"`, `{\"password\":\"v\"}`, `api_key%3Dv`, ...
    fn key_value(&mut self, i: usize) -> Option<usize> {
        let first = match self.b[i] {
            0xC5 => b's',
            byte => byte.to_ascii_lowercase(),
        };
        let (key, key_end) = KEYS
            .iter()
            .filter(|key| key[0] == first)
            .find_map(|key| word_at(self.b, i, key).map(|end| (*key, end)))?;
        let suffix_end = self.suffix_end(key_end);
        if !is_key_with_suffix(key, &self.b[key_end..suffix_end]) {
            return None;
        }
        let (start, end) = self.value_after_key(suffix_end)?;
        // The key is kept, but a token glued inside it (`tokendapi…=v`) is not.
        let mut k = key_end;
        while k < suffix_end {
            match pat_end(self.b, k, suffix_end).or_else(|| jwt_end(self.b, k, suffix_end)) {
                Some(secret_end) => {
                    self.emit(k, secret_end, REDACTED);
                    k = secret_end;
                }
                None => k += 1,
            }
        }
        Some(self.replace(start, end))
    }

    /// The end of the run of key-suffix bytes from `i` (remembered for the whole run, so a
    /// run of glued keys is scanned once).
    fn suffix_end(&mut self, i: usize) -> usize {
        let (start, end) = self.suffix;
        if start <= i && i <= end {
            return end;
        }
        let end = run_end(self.b, i, is_key_suffix);
        self.suffix = (i, end);
        end
    }

    /// The value after a key ending at `i`: optional quotes and spaces, `=` or `:` (also
    /// `%3D`, `%3A`, `:=`, `=>`), spaces, then the value. Its span, without quotes.
    fn value_after_key(&mut self, i: usize) -> Option<(usize, usize)> {
        let mut j = self.before_separator_end(i);
        let (c, n) = at(self.b, j)?;
        if c != b'=' && c != b':' {
            return None;
        }
        j += n;
        if matches!(self.b.get(j), Some(b'=' | b'>')) {
            j += 1;
        }
        while let Some((b' ' | b'\t' | b'\r' | b'\n', n)) = at(self.b, j) {
            j += n;
        }
        self.value_at(j)
    }

    /// The end of the quotes, backslashes and spaces from `i` (remembered for the run).
    fn before_separator_end(&mut self, i: usize) -> usize {
        let (start, end) = self.before_separator;
        if start <= i && i <= end {
            return end;
        }
        let mut j = i;
        while let Some((b'"' | b'\'' | b'\\' | b' ' | b'\t', n)) = at(self.b, j) {
            j += n;
        }
        self.before_separator = (i, j);
        j
    }

    /// The span of the value starting at `j`, without its quotes; `None` if it is empty.
    fn value_at(&self, j: usize) -> Option<(usize, usize)> {
        let b = self.b;
        let len = b.len();
        let (c, n) = at(b, j)?;
        let (start, end) = match c {
            // Escaped JSON inside a string: `\"v\"`, `\'v\'`.
            b'\\' if matches!(b.get(j + 1), Some(b'"' | b'\'')) => {
                let quote = b[j + 1];
                let mut k = j + 2;
                // Whether the text inside has an escape pending (`\\\"` is an escaped quote).
                let mut escaped = false;
                let end = loop {
                    match b.get(k) {
                        None => break len,
                        Some(b'\\') => {
                            let inner = b.get(k + 1).copied().unwrap_or(0);
                            if inner == quote && !escaped {
                                break k;
                            }
                            escaped = !escaped && inner == b'\\';
                            k += 2;
                        }
                        Some(_) => {
                            escaped = false;
                            k += 1;
                        }
                    }
                };
                (j + 2, end.min(len))
            }
            // URL-encoded quotes: up to the same escape.
            b'"' | b'\'' if n == 3 => {
                let closer = &b[j..j + 3];
                let end = (j + 3..len)
                    .find(|&k| b[k..].len() >= 3 && b[k..k + 3].eq_ignore_ascii_case(closer))
                    .unwrap_or(len);
                (j + 3, end)
            }
            // JSON and Python strings: up to the unescaped closing quote.
            b'"' | b'\'' => {
                let mut k = j + 1;
                let end = loop {
                    match b.get(k) {
                        None => break len,
                        Some(b'\\') => k += 2,
                        Some(&q) if q == c => break k,
                        Some(_) => k += 1,
                    }
                };
                (j + 1, end.min(len))
            }
            // An object or array: up to its closing bracket.
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut k = j;
                let end = loop {
                    match b.get(k) {
                        None => break len,
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                break k + 1;
                            }
                        }
                        Some(_) => {}
                    }
                    k += 1;
                };
                // Whatever is glued after the bracket goes too, as for an unquoted value (so
                // that the `REDACTED` left behind is read the same way again).
                (j, unquoted_end(b, end))
            }
            _ => (j, unquoted_end(b, j)),
        };
        (start < end).then_some((start, end))
    }

    /// `Bearer v`, `basic v`, `Bearer%20v`, `BEARER\u{a0}v`.
    fn scheme_credential(&mut self, i: usize) -> Option<usize> {
        let end = SCHEMES
            .iter()
            .find_map(|scheme| word_at(self.b, i, scheme))?;
        let (start, end) = self.credential_after_scheme(end)?;
        Some(self.replace(start, end))
    }

    /// The credential after a scheme name ending at `i`: at least one space (ASCII, `%20`,
    /// `+` or Unicode), then an unquoted value.
    fn credential_after_scheme(&self, i: usize) -> Option<(usize, usize)> {
        let mut j = i;
        loop {
            match at(self.b, j) {
                Some((b' ' | b'\t' | b'\r' | b'\n' | b'+', n)) => j += n,
                Some((c, _)) if c >= 0x80 => {
                    match self.text.get(j..).and_then(|s| s.chars().next()) {
                        Some(ch) if ch.is_whitespace() => j += ch.len_utf8(),
                        _ => break,
                    }
                }
                _ => break,
            }
        }
        if j == i {
            return None;
        }
        let end = unquoted_end(self.b, j);
        (j < end).then_some((j, end))
    }

    /// `dapi…`, `dkea…`, `dose…` tokens; see [`pat_end`].
    fn databricks_token(&mut self, i: usize) -> Option<usize> {
        let end = pat_end(self.b, i, self.b.len())?;
        Some(self.replace(i, end))
    }

    /// JWTs; see [`jwt_end`].
    fn jwt(&mut self, i: usize) -> Option<usize> {
        let end = jwt_end(self.b, i, self.b.len())?;
        Some(self.replace(i, end))
    }

    /// `//user:password@` (with or without a scheme before it; also `%2F%2F…%40`): the user
    /// and password become `REDACTED`, up to the last `@` before the URL ends.
    fn userinfo(&mut self, i: usize) -> Option<usize> {
        let b = self.b;
        let (b'/', first) = at(b, i)? else {
            return None;
        };
        let (b'/', second) = at(b, i + first)? else {
            return None;
        };
        let start = i + first + second;
        let mut j = start;
        loop {
            let (c, n) = at(b, j)?;
            match c {
                _ if n == 1 && ends_url(c) => return None,
                b'@' if j > start => {
                    self.emit(start, j, REDACTED);
                    self.follow(start, j);
                    return Some(self.copied);
                }
                b':' => break,
                // `~` is what a home directory became (`//x/home/a:…` → `//x~:…`): never a
                // user, so that redacting again finds nothing new.
                b'@' | b'/' | b'?' | b'#' | b'~' => return None,
                _ => j += n,
            }
        }
        let at_sign = self.last_at(j).filter(|&k| k > j)?;
        self.emit(start, at_sign, REDACTED);
        self.follow(start, at_sign);
        Some(self.copied)
    }

    /// The last `@` (or `%40`) from `j` to the end of the URL run containing `j` (remembered
    /// for the run, so overlapping `//a:` prefixes scan it once).
    fn last_at(&mut self, j: usize) -> Option<usize> {
        let (start, end, last) = self.url_run;
        if start <= j && j < end {
            return last.filter(|&k| k >= j);
        }
        let b = self.b;
        let mut k = j;
        let mut last = None;
        while let Some((c, n)) = at(b, k) {
            if n == 1 && ends_url(c) {
                break;
            }
            if c == b'@' {
                last = Some(k);
            }
            k += n;
        }
        self.url_run = (j, k, last);
        last
    }

    /// `/home/<user>` and `/Users/<user>` (also `%2F`-encoded): the slash, directory and user
    /// become `~`. A user of only `~` is left alone, so `~` stays `~`.
    fn home_dir(&mut self, i: usize) -> Option<usize> {
        let b = self.b;
        let (b'/', n) = at(b, i)? else {
            return None;
        };
        let dir = i + n;
        let dir_end = [&b"home"[..], b"Users"]
            .iter()
            .find_map(|name| b[dir..].starts_with(name).then_some(dir + name.len()))?;
        let (b'/', n) = at(b, dir_end)? else {
            return None;
        };
        self.user_to_tilde(i, dir_end + n)
    }

    /// `C:\Users\<user>`, `c:\\users\\<user>` (JSON), `C:/Users/<user>`, found at the `:`.
    fn windows_home_dir(&mut self, i: usize) -> Option<usize> {
        let b = self.b;
        let drive = i.checked_sub(1).filter(|&d| b[d].is_ascii_alphabetic())?;
        let separator = |k: usize| match b.get(k..) {
            Some([b'\\', b'\\', ..]) => Some(k + 2),
            Some([b'\\' | b'/', ..]) => Some(k + 1),
            _ => None,
        };
        let dir = separator(i + 1)?;
        let dir_end = word_at(b, dir, b"users")?;
        let user = separator(dir_end)?;
        // The drive letter goes too, unless an earlier replacement took it.
        let start = if drive >= self.copied { drive } else { i };
        self.user_to_tilde(start, user)
    }

    /// Replaces `start..` the end of the user name starting at `user` with `~`.
    fn user_to_tilde(&mut self, start: usize, user: usize) -> Option<usize> {
        let b = self.b;
        let mut end = user;
        while let Some((c, n)) = at(b, end) {
            // Encoded too: a user name holds no space, `=`, quote or `:`, and `…bearer%20v`,
            // `…token%3Dv` must end it.
            if matches!(c, b'/' | b' ' | b'+' | b'=' | b'"' | b'\'' | b':')
                || (n == 1 && ends_user(c))
            {
                break;
            }
            if c >= 0x80 {
                // Whole characters, so that a Unicode space ends the name too.
                match self.text.get(end..).and_then(|rest| rest.chars().next()) {
                    Some(ch) if ch.is_whitespace() => break,
                    Some(ch) => end += ch.len_utf8(),
                    None => end += 1,
                }
                continue;
            }
            end += n;
        }
        let name = &b[user..end];
        if name.iter().all(|&c| c == b'~') {
            return None;
        }
        self.emit(start, end, b"~");
        self.follow(user, end);
        Some(self.copied)
    }
}

/// The end of a `dapi…`, `dkea…` or `dose…` token (prefix in any case) starting at `i`, not
/// past `limit`: 16 or more hex digits anywhere (and a `-N` suffix), or 6 or more word
/// characters at the start of a word.
fn pat_end(b: &[u8], i: usize, limit: usize) -> Option<usize> {
    let b = &b[..limit];
    if !matches!(b.get(i), Some(b'd' | b'D')) {
        return None;
    }
    let body = PAT_PREFIXES
        .iter()
        .find_map(|prefix| word_at(b, i, prefix))?;
    let hex_end = run_end(b, body, |c| c.is_ascii_hexdigit());
    if hex_end - body >= 16 {
        // A secret glued after it may begin with hex letters (`…abasic`, `…dapi…`): stop
        // where it starts, so its own matcher sees it.
        let glued =
            (hex_end.saturating_sub(3).max(body + 16)..hex_end).find(|&k| starts_secret(b, k));
        return Some(match glued {
            Some(k) => k,
            None if b.get(hex_end) == Some(&b'-') => {
                let digits = run_end(b, hex_end + 1, |c| c.is_ascii_digit());
                if digits > hex_end + 1 {
                    digits
                } else {
                    hex_end
                }
            }
            None => hex_end,
        });
    }
    let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    let end = run_end(b, body, is_key_suffix);
    (word_start && end - body >= 6).then_some(end)
}

/// The end of a JWT, or any base64 JSON, starting at `i`, not past `limit`: `eyJ` and 4 or
/// more base64 characters, then any `.`-joined segments (and the trailing `.` of an unsigned
/// token).
fn jwt_end(b: &[u8], i: usize, limit: usize) -> Option<usize> {
    let b = &b[..limit];
    if !b.get(i..)?.starts_with(b"eyJ") {
        return None;
    }
    let first = run_end(b, i + 3, is_base64);
    if first - (i + 3) < 4 {
        return None;
    }
    let mut end = first;
    let mut dots = 0;
    while b.get(end) == Some(&b'.') {
        let next = run_end(b, end + 1, is_base64);
        if next > end + 1 {
            end = next;
            dots += 1;
        } else {
            if dots == 1 {
                end += 1;
            }
            break;
        }
    }
    Some(end)
}

/// Whether a key, a scheme name, a token prefix or `eyJ` starts at `k`.
fn starts_secret(b: &[u8], k: usize) -> bool {
    b[k..].starts_with(b"eyJ")
        || KEYS
            .iter()
            .chain(&SCHEMES)
            .chain(&PAT_PREFIXES)
            .any(|word| word_at(b, k, word).is_some())
}

/// `uri` for `url.full`: userinfo removed, every query value replaced by `REDACTED` (keys kept
/// and [`redact`]ed), the path passed through [`redact`], the whole capped at
/// [`MAX_REDACTED_LEN`] bytes.
///
/// ```
/// use kasal_trace::redact_uri;
///
/// let uri = "https://u:p@h.example:8443/api/2.0/x?token=abc&page=2".parse().unwrap();
/// assert_eq!(
///     redact_uri(&uri),
///     "https://h.example:8443/api/2.0/x?token=REDACTED&page=REDACTED"
/// );
/// ```
pub fn redact_uri(uri: &Uri) -> String {
    RedactedUri::new(uri).to_string()
}

/// How many links of an error's `source()` chain [`redact_error`] reads: a bound, as in
/// kasal-classify's walk, so a cyclic chain cannot loop forever.
pub const MAX_CHAIN_DEPTH: usize = 32;

/// An error and its `source()` chain (at most [`MAX_CHAIN_DEPTH`] links) as one message,
/// `outer: inner: root`, [`redact`]ed and truncated: safe to record, log or export.
///
/// At most 16 KiB of the chain's text is formatted (a `Display` that writes more is stopped);
/// text cut there loses its last, partial word before it is redacted.
///
/// ```
/// use kasal_trace::redact_error;
///
/// let io = std::io::Error::other("GET /x?token=abc failed");
/// assert_eq!(redact_error(&io), "GET /x?token=REDACTED failed");
/// ```
pub fn redact_error(error: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut message = Assembled::default();
    let chain = std::iter::successors(Some(error), |&err| err.source());
    for (depth, err) in chain.take(MAX_CHAIN_DEPTH).enumerate() {
        if depth > 0 {
            let _ = message.write_str(": ");
        }
        // An error here means the cap was reached (or the `Display` failed): stop either way.
        if write!(message, "{err}").is_err() {
            break;
        }
    }
    let message = message.finish();
    match redact(&message) {
        Cow::Borrowed(redacted) if redacted.len() == message.len() => message,
        redacted => redacted.into_owned(),
    }
}

/// The message [`redact_error`] assembles: at most [`MAX_ASSEMBLED_LEN`] bytes.
#[derive(Default)]
struct Assembled {
    text: String,
    cut: bool,
}

impl fmt::Write for Assembled {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_ASSEMBLED_LEN - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        self.text.push_str(&s[..floor_boundary(s.as_bytes(), room)]);
        self.cut = true;
        Err(fmt::Error)
    }
}

impl Assembled {
    /// The text; if it was cut, without its last (possibly partial) word.
    fn finish(self) -> String {
        let Assembled { mut text, cut } = self;
        if cut {
            let keep = text.rfind(|c: char| c.is_ascii_whitespace()).unwrap_or(0);
            text.truncate(keep);
            if text.is_empty() {
                text.push_str("REDACTED");
            }
        }
        text
    }
}

/// Displays a [`Uri`] as [`redact_uri`] does, without allocating: what the span records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RedactedUri<'a> {
    scheme: Option<&'a str>,
    /// The URI's authority without userinfo (see [`url_authority`]).
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    /// The path is known to pass the prefilter (see `route::infer_path_indexed`): written as
    /// it is.
    path_clean: bool,
}

impl<'a> RedactedUri<'a> {
    pub(crate) fn new(uri: &'a Uri) -> Self {
        RedactedUri::from_parts(
            uri.scheme_str(),
            url_authority(uri),
            uri.path(),
            uri.query(),
        )
    }

    /// From the parts of a URI (the authority without userinfo, see [`url_authority`]), for a
    /// caller that has them already (the call core, from an `http::Uri` or a reqwest `Url`).
    pub(crate) fn from_parts(
        scheme: Option<&'a str>,
        authority: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
    ) -> Self {
        RedactedUri {
            scheme,
            authority,
            path,
            query,
            path_clean: false,
        }
    }

    /// Notes that the path passes the prefilter (`redact` would return it as it is).
    pub(crate) fn path_clean(mut self, clean: bool) -> Self {
        self.path_clean = clean;
        self
    }
}

/// A writer that takes at most `room` more bytes (cut on a char boundary), then ignores the
/// rest: `url.full` stays under [`MAX_REDACTED_LEN`] whatever the URI.
struct Capped<'a, W: ?Sized> {
    out: &'a mut W,
    room: usize,
}

impl<W: fmt::Write + ?Sized> Capped<'_, W> {
    #[inline]
    fn put(&mut self, s: &str) -> fmt::Result {
        let end = floor_boundary(s.as_bytes(), self.room);
        self.room -= end;
        self.out.write_str(&s[..end])
    }

    fn is_full(&self) -> bool {
        self.room == 0
    }
}

impl RedactedUri<'_> {
    /// Appends the redacted URI to `out`: what the span records, written with plain pushes
    /// (no formatting machinery) into a buffer the caller reuses.
    pub(crate) fn push_to(&self, out: &mut String) {
        // Writing to a `String` never fails.
        let _ = self.write_capped(out);
    }

    fn write_capped<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        let mut out = Capped {
            out,
            room: MAX_REDACTED_LEN,
        };
        if let Some(scheme) = self.scheme {
            out.put(scheme)?;
            out.put("://")?;
        }
        if let Some(authority) = self.authority {
            out.put(authority)?;
        }
        let path = self.path;
        match self.path_clean {
            // Every segment clean: `redact` would return the path as it is.
            true => out.put(path)?,
            false => out.put(&redact(path))?,
        }
        if let Some(query) = self.query {
            out.put("?")?;
            // `split('&')` and `split_once('=')`, by byte (both are ASCII: char boundaries).
            let mut rest = query;
            loop {
                if out.is_full() {
                    break;
                }
                let end = memchr::memchr(b'&', rest.as_bytes()).unwrap_or(rest.len());
                let pair = &rest[..end];
                match memchr::memchr(b'=', pair.as_bytes()) {
                    Some(equals) => {
                        out.put(&redact(&pair[..equals]))?;
                        out.put(REDACTED_VALUE)?;
                    }
                    None => out.put(&redact(pair))?,
                }
                if end == rest.len() {
                    break;
                }
                out.put("&")?;
                rest = &rest[end + 1..];
            }
        }
        Ok(())
    }
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_capped(f)
    }
}

/// What replaces a query value, with its `=`.
const REDACTED_VALUE: &str = "=REDACTED";

/// The `host[:port]` of `uri`'s authority, without userinfo; `None` without an authority.
pub(crate) fn url_authority(uri: &Uri) -> Option<&str> {
    uri.authority()
        .map(|authority| host_and_port(authority.as_str()))
}

/// The `host[:port]` part of an authority, without userinfo.
pub(crate) fn host_and_port(authority: &str) -> &str {
    // Nearly every authority has no userinfo: a vector search says so before `rsplit_once`.
    if memchr::memchr(b'@', authority.as_bytes()).is_none() {
        return authority;
    }
    match authority.rsplit_once('@') {
        Some((_, host)) => host,
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_cuts_at_the_last_at_sign_anywhere() {
        let text: String = ('a'..='z').chain('A'..='Z').collect();
        for len in 0..40 {
            assert_eq!(host_and_port(&text[..len]), &text[..len], "{len}");
            for at in 0..len {
                let mut with = text[..len].to_owned();
                with.replace_range(at..at + 1, "@");
                assert_eq!(host_and_port(&with), &with[at + 1..], "{len} {at}");
            }
        }
        assert_eq!(host_and_port("u:p@h.example:1"), "h.example:1");
        assert_eq!(host_and_port("a@b@h.example"), "h.example");
        assert_eq!(host_and_port("h.example:8443"), "h.example:8443");
    }

    /// The prefilter as it was specified: an Aho-Corasick search, in any ASCII case, for every
    /// needle and `@`, `%`, plus any non-ASCII byte.
    fn might_hold_secret_oracle(text: &str) -> bool {
        static ORACLE: std::sync::LazyLock<aho_corasick::AhoCorasick> =
            std::sync::LazyLock::new(|| {
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(NEEDLES.iter().copied().chain(["@", "%"]))
                    .unwrap()
            });
        !text.is_ascii() || ORACLE.is_match(text)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]

        /// The table-driven prefilter says exactly what the automaton says, on text made of
        /// the needles' own pieces in mixed case.
        #[test]
        fn the_prefilter_agrees_with_aho_corasick(
            text in "([tTpPsSaAcCbBdDeEhHuU]|[oOkKeEnNwWrRiIyYjJmM_-]|token|pass|pwd|secret|api|key|credential|private|bearer|basic|dapi|dkea|dose|eyJ|home|users|[@%/.0-9 ]|é){0,24}"
        ) {
            proptest::prop_assert_eq!(might_hold_secret(&text), might_hold_secret_oracle(&text), "{:?}", text);
        }
    }

    #[test]
    fn the_prefilter_finds_every_needle_in_every_case_and_place() {
        for needle in NEEDLES.iter().copied().chain(["@", "%", "é"]) {
            for text in [
                needle.to_string(),
                needle.to_ascii_uppercase(),
                format!("/x/{}y", needle.to_ascii_uppercase()),
                format!("ab{needle}"),
            ] {
                assert!(might_hold_secret(&text), "{text}");
            }
            // Cut short by one byte, it is not there.
            if needle.is_ascii() && needle.len() > 1 {
                let cut = &needle[..needle.len() - 1];
                assert!(!might_hold_secret(&format!("/{cut}")), "{cut}");
            }
        }
        assert!(!might_hold_secret(
            "/api/2.0/genie/spaces/01ef/start-conversation"
        ));
    }

    const PAT: &str = "dapi0123456789abcdef0123456789abcdef-2";
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    /// `redact(text)`, checked to be idempotent and bounded on the way.
    fn r(text: &str) -> String {
        let once = redact(text).into_owned();
        assert_eq!(redact(&once), once, "redacting {text:?} twice changed it");
        assert!(once.len() <= MAX_REDACTED_LEN);
        once
    }

    #[test]
    fn bearer_and_basic_credentials() {
        assert_eq!(
            redact("Authorization: Bearer abc.def-123"),
            "Authorization: Bearer REDACTED"
        );
        assert_eq!(
            redact("authorization: basic dXNlcjpwYXNz=="),
            "authorization: basic REDACTED"
        );
    }

    #[test]
    fn databricks_tokens() {
        assert_eq!(redact(&format!("pat {PAT} used")), "pat REDACTED used");
        assert_eq!(redact("key dkea1234abcd5678"), "key REDACTED");
        assert_eq!(redact("key dose1234abcd5678."), "key REDACTED.");
        assert_eq!(redact("short dapi12 and doses"), "short dapi12 and doses");
    }

    #[test]
    fn jwts() {
        assert_eq!(redact(&format!("id {JWT}!")), "id REDACTED!");
        assert_eq!(redact("unsigned eyJhbGc.eyJzdWI."), "unsigned REDACTED");
    }

    #[test]
    fn key_value_secrets_in_queries_and_text() {
        assert_eq!(
            redact("GET /x?token=abc&page=2&Access_Token=def&client_secret=s3cr3t"),
            "GET /x?token=REDACTED&page=2&Access_Token=REDACTED&client_secret=REDACTED"
        );
        assert_eq!(
            redact("login failed: PASSWORD=hunter2 secret=xyz"),
            "login failed: PASSWORD=REDACTED secret=REDACTED"
        );
    }

    #[test]
    fn colon_and_json_key_value_secrets() {
        assert_eq!(
            redact(r#"400: {"error":"bad","access_token":"opaque-Value_1","client_secret": "s3"}"#),
            r#"400: {"error":"bad","access_token":"REDACTED","client_secret": "REDACTED"}"#
        );
        assert_eq!(
            redact("refresh_token: abc123, password:hunter2}"),
            "refresh_token: REDACTED password:REDACTED"
        );
        // Words that merely mention a token keep their text.
        assert_eq!(
            redact("the token expired; tokens: none"),
            "the token expired; tokens: none"
        );
    }

    #[test]
    fn hex_databricks_tokens_glued_to_a_word() {
        assert_eq!(
            redact("x_dapi0123456789abcdef0123456789abcdef-2 y"),
            "x_REDACTED y"
        );
        assert_eq!(redact("tokendkea0123456789abcdef."), "tokenREDACTED.");
        // Not hex, not glued: English stays.
        assert_eq!(redact("overdose_levels"), "overdose_levels");
    }

    #[test]
    fn url_userinfo() {
        assert_eq!(
            redact("connect to postgres://admin:pw@db.internal:5432/app"),
            "connect to postgres://REDACTED@db.internal:5432/app"
        );
        assert_eq!(
            redact("https://host/users/a@b.com"),
            "https://host/users/a@b.com"
        );
    }

    #[test]
    fn home_directories() {
        assert_eq!(redact("open /home/alice/proj/a.py"), "open ~/proj/a.py");
        assert_eq!(redact("at /Users/bob/x"), "at ~/x");
        assert_eq!(redact(r"at C:\Users\carol\x"), r"at ~\x");
        assert_eq!(redact(r#"{"p":"c:\\users\\dave\\x"}"#), r#"{"p":"~\\x"}"#);
    }

    #[test]
    fn borrowed_when_clean_and_truncated_on_char_boundary() {
        assert!(matches!(redact("plain error"), Cow::Borrowed(_)));
        let long = "é".repeat(MAX_REDACTED_LEN);
        let out = redact(&long);
        assert!(out.len() <= MAX_REDACTED_LEN);
        assert_eq!(out.len(), MAX_REDACTED_LEN);
        assert!(matches!(out, Cow::Borrowed(_)));
        let long_secret = format!("{} Bearer abc", "x".repeat(3000));
        let out = redact(&long_secret);
        assert_eq!(out.len(), MAX_REDACTED_LEN);
        assert!(!out.contains("abc"));
    }

    #[test]
    fn everything_at_once_leaves_no_secret() {
        let text = format!(
            "request https://alice:pw123@ws.cloud.databricks.com/api?access_token=tok1&x=1 \
             with Authorization: Bearer {PAT} and Basic dXNlcjpwYXNz, jwt {JWT}, \
             X-Forwarded-Access-Token: fwd-tok, password=hunter2, secret=s1, \
             client_secret=cs1, token=t1, key dkeaABCDEF123, dose9876543210, \
             file /home/alice/.databrickscfg and /Users/alice/x and C:\\Users\\alice\\y"
        );
        let out = redact(&text);
        for secret in [
            "pw123",
            "tok1",
            PAT,
            "dXNlcjpwYXNz",
            JWT,
            "eyJ",
            "fwd-tok",
            "hunter2",
            "s1,",
            "cs1",
            "t1,",
            "dkeaABCDEF123",
            "dose9876543210",
            "alice",
        ] {
            assert!(!out.contains(secret), "{secret:?} left in {out}");
        }
        assert_eq!(redact(&out), out, "redacting twice changes nothing");
        assert!(out.contains("ws.cloud.databricks.com/api?access_token=REDACTED&x=1"));
    }

    #[test]
    fn uri_query_values_and_userinfo() {
        let uri: Uri = "https://u:p@h.example/a/b?token=abc&flag&page=2"
            .parse()
            .unwrap();
        assert_eq!(
            redact_uri(&uri),
            "https://h.example/a/b?token=REDACTED&flag&page=REDACTED"
        );
        let uri: Uri = "http://127.0.0.1:8080/plain".parse().unwrap();
        assert_eq!(redact_uri(&uri), "http://127.0.0.1:8080/plain");
        let uri: Uri = format!("/tokens/{PAT}?q=1").parse().unwrap();
        assert_eq!(redact_uri(&uri), "/tokens/REDACTED?q=REDACTED");
    }

    #[test]
    fn uri_query_edge_cases() {
        for (query, expected) in [
            ("", ""),
            ("&", "&"),
            ("a&", "a&"),
            ("&a", "&a"),
            ("a==b&&c=", "a=REDACTED&&c=REDACTED"),
            ("=x", "=REDACTED"),
            ("x_token=1&eyJ", "x_token=REDACTED&eyJ"),
        ] {
            let uri: Uri = format!("https://h.example/p?{query}").parse().unwrap();
            assert_eq!(
                redact_uri(&uri),
                format!("https://h.example/p?{expected}"),
                "{query:?}"
            );
        }
    }

    #[test]
    fn forwarded_token_header() {
        // The value runs to the next whitespace: a comma can be part of a token.
        assert_eq!(
            r("X-Forwarded-Access-Token: opaque-value, next"),
            "X-Forwarded-Access-Token: REDACTED next"
        );
    }

    /// Every spelling the hardening issue listed as surviving, each one now redacted.
    #[test]
    fn spellings_that_used_to_survive() {
        let cases: &[(&str, &str)] = &[
            ("https://u:pa/ss@h", "https://REDACTED@h"),
            ("password=ab,S3cretRest", "password=REDACTED"),
            (
                "/home/alice:https://svc:S3cret@db/",
                "~:https://REDACTED@db/",
            ),
            (
                r#"{\"access_token\":\"v\"}"#,
                r#"{\"access_token\":\"REDACTED\"}"#,
            ),
            ("{'access_token': 'v'}", "{'access_token': 'REDACTED'}"),
            (
                r#"x "access_token" : "v""#,
                r#"x "access_token" : "REDACTED""#,
            ),
            (
                r#"error: {"access_token" : "v"}"#,
                r#"error: {"access_token" : "REDACTED"}"#,
            ),
            ("token = v", "token = REDACTED"),
            ("token%3Dv", "token%3DREDACTED"),
            ("client_secret%3Dv", "client_secret%3DREDACTED"),
            ("Bearer%20v", "Bearer%20REDACTED"),
            ("//u:pw@h", "//REDACTED@h"),
            ("DAPI0123456789ABCDEF0123456789ABCDEF", "REDACTED"),
            (&format!("x_{JWT}"), "x_REDACTED"),
            ("étoken=v", "étoken=REDACTED"),
            (
                "dapi0123456789abcdef0123456789abcdeftoken=v",
                "REDACTEDtoken=REDACTED",
            ),
            (
                "dapi0123456789abcdef0123456789abcdefpassword: v",
                "REDACTEDpassword: REDACTED",
            ),
            ("9Bearer abc", "9Bearer REDACTED"),
            ("_eyJhbGciOi.eyJzdWIi.sig", "_REDACTED"),
        ];
        for (input, expected) in cases {
            assert_eq!(r(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn the_listed_non_idempotent_inputs_are_stable() {
        assert_eq!(r("/home/~"), "/home/~");
        assert_eq!(r("/home//home/alice/x"), "/home/~/x");
        assert_eq!(r("/home/~/home/bob"), "/home/~~");
    }

    #[test]
    fn more_spellings() {
        let cases: &[(&str, &str)] = &[
            // Glued keys, any case, suffixes.
            ("xTOKEN=v", "xTOKEN=REDACTED"),
            ("my_secret_key=v w", "my_secret_key=REDACTED w"),
            ("to\u{212a}en=abc", "to\u{212a}en=REDACTED"),
            ("DB_PASSWORD:=v", "DB_PASSWORD:=REDACTED"),
            ("api-key => v", "api-key => REDACTED"),
            // Counts are not keys.
            ("max_tokens: 4096", "max_tokens: 4096"),
            // Values with punctuation, quotes and escapes.
            (
                r#""password":"a\"b,c" next"#,
                r#""password":"REDACTED" next"#,
            ),
            (
                r#"{\"password\":\"a\\\"b\"} tail"#,
                r#"{\"password\":\"REDACTED\"} tail"#,
            ),
            ("token: 'abc", "token: 'REDACTED"),
            ("token=%22abc def%22 x", "token=%22REDACTED%22 x"),
            (
                r#""secret": {"value": "x"}, ok"#,
                r#""secret": REDACTED ok"#,
            ),
            ("token=abc&page=2", "token=REDACTED&page=2"),
            ("bearer a=atoken=x_token: v", "bearer REDACTED REDACTED"),
            (
                "https://aa:_~0aa!0#&a@aaa.comx_token%3DAAa(a_(a#aA(]#@0]A#A]a",
                "https://REDACTEDREDACTED",
            ),
            // Found by the million-case run: a bracket value glued to a URL with userinfo.
            (
                "token%3D[]aA!x_https://aa:&aA?##&#aA@aaa.com",
                "token%3DREDACTED",
            ),
            ("token=&page=2", "token=&page=2"),
            // Schemes: Unicode and encoded spaces, a credential swallowing a key.
            ("BASIC\u{a0}abc", "BASIC\u{a0}REDACTED"),
            ("Bearer+abc", "Bearer+REDACTED"),
            ("token=Bearer abc", "token=REDACTED REDACTED"),
            ("Basic Bearer abc", "Basic REDACTED REDACTED"),
            // Userinfo: encoded, passwords with `@`, and plain URLs left alone.
            ("%2F%2Fu%3Apw%40host", "%2F%2FREDACTED%40host"),
            ("https://u:p@ss@host/x y", "https://REDACTED@host/x y"),
            ("https://token@host", "https://REDACTED@host"),
            ("https://host/users/a@b.com", "https://host/users/a@b.com"),
            // Tokens: short English words and hex glued to another secret.
            (
                "overdose_levels doses dapi12",
                "overdose_levels doses dapi12",
            ),
            ("dose_token=v", "REDACTED=REDACTED"),
            (
                "dapi0123456789abcdef0123456789abcdefbasic v",
                "REDACTEDbasic REDACTED",
            ),
            (
                "dapi0123456789abcdef0123456789abcdefdapi0123456789abcdef0123456789abcdef",
                "REDACTEDREDACTED",
            ),
            // Home directories, encoded and Windows.
            ("%2Fhome%2Falice%2Fx", "~%2Fx"),
            (r"d:/users/bob/x", r"~/x"),
            (r"C:\Users\eve: denied", r"~: denied"),
        ];
        for (input, expected) in cases {
            assert_eq!(r(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn long_inputs_are_capped_after_redaction() {
        // A long secret collapses, and the text after it is kept up to the cap.
        let text = format!("/home/{} then {}", "a".repeat(10_000), "x".repeat(5_000));
        let out = r(&text);
        assert!(out.starts_with("~ then xxx"), "{}", &out[..20]);
        assert_eq!(out.len(), MAX_REDACTED_LEN);
        // A secret straddling the cap is replaced whole before the cut.
        let text = format!("{}token={}", "x".repeat(2040), "s".repeat(100));
        assert_eq!(r(&text), format!("{}token=RE", "x".repeat(2040)));
    }

    #[test]
    fn assembled_error_chains_are_bounded() {
        let huge = std::io::Error::other(format!("token=abc {}", "y ".repeat(1 << 19)));
        let message = redact_error(&huge);
        assert!(message.starts_with("token=REDACTED y y"), "{message}");
        assert_eq!(message.len(), MAX_REDACTED_LEN);
        // A secret cut by the assembly cap loses its partial word, not only its head.
        let cut = std::io::Error::other(format!(
            "{} dapi0123456789abcdef0123456789abcdef",
            "/home/x".repeat(MAX_ASSEMBLED_LEN / 7)
        ));
        assert!(!redact_error(&cut).contains("dapi"));
    }

    #[test]
    fn uri_is_capped() {
        let empty_pairs: Uri = format!("https://h.example/p?{}", "&".repeat(20_000))
            .parse()
            .unwrap();
        assert!(redact_uri(&empty_pairs).len() <= MAX_REDACTED_LEN);
        let many_keys: String = (0..8000).map(|i| format!("k{i}=v&")).collect();
        let uri: Uri = format!("https://h.example/p?{many_keys}").parse().unwrap();
        let out = redact_uri(&uri);
        assert_eq!(out.len(), MAX_REDACTED_LEN);
        assert!(out.starts_with("https://h.example/p?k0=REDACTED&k1=REDACTED"));
        let path: Uri = format!("https://h.example/{}?a=b", "p".repeat(60_000))
            .parse()
            .unwrap();
        assert!(redact_uri(&path).len() <= MAX_REDACTED_LEN);
    }
}
