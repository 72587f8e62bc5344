//! Redaction of secrets and personal paths from text and URLs that leave the process.
//!
//! [`redact()`] is applied to every error message recorded on a span or in a
//! [`CallRecord`](crate::CallRecord) (through [`redact_error`], which also joins the error's
//! source chain); [`redact_uri`] to every URL (`url.full`). All are pure functions. This module must never log, store or return the text it removes.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use http::Uri;
use regex::{Captures, Regex};

/// The longest text [`redact`] returns, in bytes (cut on a char boundary).
pub const MAX_REDACTED_LEN: usize = 2048;

/// What replaces a secret.
const REDACTED: &str = "REDACTED";

/// One pattern, one pass. Each alternative is a named group so the replacement can keep the
/// non-secret prefix (`Bearer `, `token=`, `https://`). `None` only if the pattern failed to
/// compile (a bug the tests catch): then `redact` fails closed.
static SECRETS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        // `Authorization: Bearer x`, `Basic x`.
        r"(?i:(?P<scheme>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+)",
        // Forwarded user token header written as text.
        r"|(?i:(?P<header>\bx-forwarded-access-token\s*[:=]\s*)[^\s,;]+)",
        // Databricks tokens: PATs (`dapi`), and `dkea`/`dose` tokens; the hex form also when
        // glued to a preceding word (`x_dapi…`, `tokendapi…`).
        r"|\b(?:dapi|dkea|dose)[0-9A-Za-z_-]{6,}",
        r"|(?:dapi|dkea|dose)[0-9a-f]{16,}(?:-[0-9]+)?",
        // JWTs: three base64url segments, the header starting `eyJ` (`{"`).
        r"|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        // `token=`, `access_token=`, `client_secret=`, `password=`, ... in queries or text.
        r"|(?i:(?P<key>\b[a-z0-9_]*(?:token|password|secret)=)[^&\s,;'\x22]+)",
        // The same keys as `key: value` or JSON `"key": "value"` (API error bodies quote them).
        r"|(?i:(?P<colon>\b[a-z0-9_]*(?:token|password|secret)\x22?\s*:\s*\x22?)[^\x22\s,;}&']+)",
        // URL userinfo: `https://user:pass@host`.
        r"|(?i:(?P<url>\b[a-z][a-z0-9+.-]*://)[^/?#\s@]+@)",
        // Home directories: `/home/alice`, `/Users/alice`, `C:\Users\alice` (also JSON-escaped).
        r"|(?:/home/|/Users/|(?i:[a-z]:\\{1,2}users\\{1,2}))[^/\\\s]+",
    ))
    .ok()
});

/// Removes secrets and personal paths from `text` and caps it at [`MAX_REDACTED_LEN`] bytes.
///
/// Replaced: `Bearer`/`Basic` credentials, `X-Forwarded-Access-Token` values, Databricks
/// `dapi…`/`dkea…`/`dose…` tokens, JWTs, the values of `…token`, `…password` and `…secret`
/// keys (`token`, `access_token`, `client_secret`, … any case) written `key=value` (queries,
/// text), `key: value` or JSON `"key": "value"`, URL userinfo,
/// and the user name in home directories (`/home/<user>` becomes `~`). Returns the input borrowed
/// when nothing had to change.
///
/// ```
/// use kasal_trace::redact;
///
/// let message = "GET https://me:pw@x.cloud.databricks.com/api?token=dapi0123456789 failed";
/// assert_eq!(
///     redact(message),
///     "GET https://REDACTED@x.cloud.databricks.com/api?token=REDACTED failed"
/// );
/// assert!(matches!(redact("nothing secret"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    if !may_hold_secret(text) {
        return Cow::Borrowed(truncate(text));
    }
    let Some(secrets) = SECRETS.as_ref() else {
        return Cow::Borrowed(REDACTED);
    };
    let redacted = secrets.replace_all(text, |caps: &Captures<'_>| {
        let prefix = ["scheme", "header", "key", "colon", "url"]
            .into_iter()
            .find_map(|name| caps.name(name));
        match prefix {
            Some(prefix) if prefix.as_str().ends_with("://") => {
                format!("{}{REDACTED}@", prefix.as_str())
            }
            Some(prefix) => format!("{}{REDACTED}", prefix.as_str()),
            None if is_home_dir(&caps[0]) => "~".to_owned(),
            None => REDACTED.to_owned(),
        }
    });
    match redacted {
        Cow::Borrowed(text) => Cow::Borrowed(truncate(text)),
        Cow::Owned(mut text) => {
            let keep = truncate(&text).len();
            text.truncate(keep);
            Cow::Owned(text)
        }
    }
}

/// A one-pass prefilter for [`SECRETS`], so the common case (a URL path, a query key, a plain
/// message) skips the regex: `false` only when no alternative can match. Every alternative needs
/// whitespace (`Bearer x`, `Basic x`; Unicode whitespace is non-ASCII), `:` or `=` (forwarded
/// token header, `token=`, `scheme://user@`, `C:\Users`), or one of the case-sensitive literals
/// `dapi`, `dkea`, `dose`, `eyJ`, `/home/`, `/Users/`. Non-ASCII text always goes to the regex
/// (Unicode case folding and whitespace).
fn may_hold_secret(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &byte)| {
        TRIGGERS[usize::from(byte)]
            && match byte {
                b'd' => [&b"dapi"[..], b"dkea", b"dose"]
                    .iter()
                    .any(|token| bytes[i..].starts_with(token)),
                b'e' => bytes[i..].starts_with(b"eyJ"),
                b'/' => bytes[i..].starts_with(b"/home/") || bytes[i..].starts_with(b"/Users/"),
                _ => true, // whitespace, `:`, `=`, non-ASCII
            }
    })
}

/// The bytes [`may_hold_secret`] looks at: a table lookup per byte, most bytes are not.
static TRIGGERS: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0x80;
    while byte < 256 {
        table[byte] = true;
        byte += 1;
    }
    let listed = *b" \t\n\x0b\x0c\r:=de/";
    let mut i = 0;
    while i < listed.len() {
        table[listed[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_home_dir(matched: &str) -> bool {
    matched.starts_with('/') || matched.get(1..2) == Some(":")
}

/// `text` cut to at most [`MAX_REDACTED_LEN`] bytes on a char boundary.
fn truncate(text: &str) -> &str {
    if text.len() <= MAX_REDACTED_LEN {
        return text;
    }
    let mut end = MAX_REDACTED_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `uri` for `url.full`: userinfo removed, every query value replaced by `REDACTED` (keys kept),
/// and the path passed through [`redact`].
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
/// ```
/// use kasal_trace::redact_error;
///
/// let io = std::io::Error::other("GET /x?token=abc failed");
/// assert_eq!(redact_error(&io), "GET /x?token=REDACTED failed");
/// ```
pub fn redact_error(error: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut message = String::new();
    let chain = std::iter::successors(Some(error), |&err| err.source());
    for (depth, err) in chain.take(MAX_CHAIN_DEPTH).enumerate() {
        if depth > 0 {
            message.push_str(": ");
        }
        // Writing into a `String` cannot fail.
        let _ = write!(message, "{err}");
    }
    match redact(&message) {
        Cow::Borrowed(_) => message,
        Cow::Owned(redacted) => redacted,
    }
}

/// Displays a [`Uri`] as [`redact_uri`] does, without allocating: what the span records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RedactedUri<'a> {
    uri: &'a Uri,
    /// The URI's authority without userinfo (see [`url_authority`]).
    authority: Option<&'a str>,
}

impl<'a> RedactedUri<'a> {
    pub(crate) fn new(uri: &'a Uri) -> Self {
        RedactedUri::with_authority(uri, url_authority(uri))
    }

    /// For a caller that already has `url_authority(uri)`: saves scanning it again.
    pub(crate) fn with_authority(uri: &'a Uri, authority: Option<&'a str>) -> Self {
        RedactedUri { uri, authority }
    }
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.uri;
        if let Some(scheme) = uri.scheme_str() {
            f.write_str(scheme)?;
            f.write_str("://")?;
        }
        if let Some(authority) = self.authority {
            f.write_str(authority)?;
        }
        f.write_str(&redact(uri.path()))?;
        if let Some(query) = uri.query() {
            f.write_str("?")?;
            // `&`-separated pairs, split on bytes: both separators are ASCII, so every split
            // falls on a char boundary.
            let mut rest = query;
            let mut first = true;
            loop {
                let end = rest.bytes().position(|b| b == b'&').unwrap_or(rest.len());
                let (pair, tail) = rest.split_at(end);
                if !first {
                    f.write_str("&")?;
                }
                first = false;
                match pair.bytes().position(|b| b == b'=') {
                    Some(eq) => {
                        f.write_str(&redact(&pair[..eq]))?;
                        f.write_str(REDACTED_VALUE)?;
                    }
                    None => f.write_str(&redact(pair))?,
                }
                match tail.strip_prefix('&') {
                    Some(next) => rest = next,
                    None => break,
                }
            }
        }
        Ok(())
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
    match authority.rsplit_once('@') {
        Some((_, host)) => host,
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAT: &str = "dapi0123456789abcdef0123456789abcdef-2";
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    #[test]
    fn pattern_compiles() {
        assert!(SECRETS.is_some());
    }

    #[test]
    fn prefilter_skips_only_text_the_pattern_cannot_match() {
        let secrets = SECRETS.as_ref().unwrap();
        let clean = [
            "/api/2.0/genie/spaces/01ef/start-conversation",
            "page",
            "/serving-endpoints/my-model/invocations",
            "connection closed before message completed",
            "",
        ];
        for text in clean {
            assert!(!secrets.is_match(text), "{text}");
            assert!(!may_hold_secret(text) || text.contains(' '), "{text}");
        }
        let dirty = [
            "Bearer abc",
            "BASIC\u{a0}abc",
            "x-forwarded-access-token: abc",
            PAT,
            "dkea012345678",
            "dose012345678",
            JWT,
            "?access_token=abc",
            "TOKEN=abc",
            "https://user:pw@host",
            "/home/alice",
            "/Users/alice",
            "C:\\Users\\alice",
            "to\u{212a}en=abc",
        ];
        for text in dirty {
            assert!(secrets.is_match(text), "{text}");
            assert!(may_hold_secret(text), "{text}");
        }
        // Exhaustively over every sequence of three fragments that build secrets: whenever
        // the pattern matches, the prefilter lets the text through.
        let fragments = [
            "dapi",
            "dkea",
            "dose",
            "0123456789",
            "eyJ",
            "hdr.",
            "body.sig",
            "token",
            "secret",
            "=",
            "x",
            " ",
            "\t",
            "Bearer",
            "basic",
            "x-forwarded-access-token",
            ":",
            "https",
            "://",
            "u@",
            "/home/",
            "/Users/",
            "c:\\users\\",
            "/",
            "\u{212a}",
        ];
        let mut matched = 0;
        for a in fragments {
            for b in fragments {
                for c in fragments {
                    let text = format!("{a}{b}{c}");
                    if secrets.is_match(&text) {
                        matched += 1;
                        assert!(may_hold_secret(&text), "{text:?}");
                    }
                }
            }
        }
        assert!(matched > 1000, "{matched}");
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
    fn forwarded_token_header() {
        assert_eq!(
            redact("X-Forwarded-Access-Token: opaque-value, next"),
            "X-Forwarded-Access-Token: REDACTED, next"
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
            "refresh_token: REDACTED, password:REDACTED}"
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
}
