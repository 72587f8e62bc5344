//! The [`ExecutionContext`] of an incoming request, read from the headers a Databricks Apps
//! proxy forwards: [`ForwardedHeaders`].
//!
//! Sans-IO: a function of a `HeaderMap` and a few settings, so the axum server layer and any
//! other server adapter read the same headers by the same rules (the table is on
//! [`ForwardedHeaders`]).
//!
//! This module must never panic on any header value, never copy the token anywhere but the
//! context's `user_token`, and never put a header's value into a [`RejectedHeader`] (it may be
//! the token).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{ExecutionContext, ExecutionMode, SecretToken};

/// `X-Forwarded-Access-Token`: the signed-in user's token (on-behalf-of).
pub const X_FORWARDED_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-forwarded-access-token");
/// `X-Forwarded-Email`: the user's email, the preferred caller id.
pub const X_FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
/// `X-Forwarded-User`: the user's id, the caller id when there is no email.
pub const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
/// `X-Forwarded-Preferred-Username`: the caller id when there is neither email nor user.
pub const X_FORWARDED_PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-forwarded-preferred-username");

/// The longest forwarded header value taken, in bytes (8 KiB); longer ones are rejected.
pub const MAX_FORWARDED_HEADER_LEN: usize = 8 * 1024;

/// Why a forwarded header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Longer than [`MAX_FORWARDED_HEADER_LEN`].
    Oversized,
    /// Not valid UTF-8.
    NotUtf8,
    /// Empty, or only whitespace.
    Empty,
    /// Sent more than once.
    Duplicated,
}

impl RejectReason {
    /// `"oversized"`, `"not_utf8"`, `"empty"` or `"duplicated"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::Empty => "empty",
            RejectReason::Duplicated => "duplicated",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A forwarded header that was not used, and why. Never holds the header's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedHeader {
    /// Which header (lower case, as on the wire in HTTP/2).
    pub header: HeaderName,
    /// Why.
    pub reason: RejectReason,
}

impl fmt::Display for RejectedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "forwarded header {} rejected: {}",
            self.header, self.reason
        )
    }
}

/// The context read from a request, and the header rejected on the way, if any.
#[derive(Clone, Debug)]
pub struct ForwardedContext {
    /// Who the request runs for. A `Service` context when a header was rejected.
    pub context: ExecutionContext,
    /// The first forwarded header that was rejected (the context is then `Service`).
    pub rejected: Option<RejectedHeader>,
}

/// How to read the [`ExecutionContext`] from the headers a Databricks Apps proxy forwards:
///
/// | request | context |
/// |---|---|
/// | `X-Forwarded-Access-Token` present | `User`; `caller.id` from `X-Forwarded-Email`, else `X-Forwarded-User`, else `X-Forwarded-Preferred-Username`; the token as a [`SecretToken`] |
/// | no token | `Service`, `caller.id` = the configured service-principal id |
/// | no token, on-behalf-of route, development mode | as above, plus `execution.obo_dev_fallback = true` |
/// | a forwarded header that is read (the token; with a token, the identity headers in order until one gives the caller id) longer than 8 KiB, not UTF-8, empty or sent twice | `Service`, and the [`RejectedHeader`] saying which and why |
///
/// Never panics on any header value; the token goes only into the context's `user_token`, and
/// a [`RejectedHeader`] never holds a value.
///
/// ```
/// use http::HeaderMap;
/// use kasal_trace::{ExecutionMode, ForwardedHeaders};
///
/// let rules = ForwardedHeaders::new().service_principal_id("sp-1234");
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-access-token", "dapi-never-printed".parse().unwrap());
/// headers.insert("x-forwarded-email", "alice@example.com".parse().unwrap());
/// let user = rules.context(&headers, true);
/// assert_eq!(user.context.mode, ExecutionMode::User);
/// assert_eq!(user.context.caller_id.as_deref(), Some("alice@example.com"));
/// assert_eq!(format!("{:?}", user.context.user_token), "Some(***)");
///
/// let service = rules.context(&HeaderMap::new(), true);
/// assert_eq!(service.context.mode, ExecutionMode::Service);
/// assert_eq!(service.context.caller_id.as_deref(), Some("sp-1234"));
/// assert!(!service.context.obo_dev_fallback); // development mode is off by default
/// ```
#[derive(Clone, Debug, Default)]
pub struct ForwardedHeaders {
    service_principal_id: Option<Arc<str>>,
    development_mode: bool,
}

impl ForwardedHeaders {
    /// No service-principal id, development mode off.
    pub fn new() -> Self {
        ForwardedHeaders::default()
    }

    /// The `caller.id` of requests served as the service (no forwarded token).
    pub fn service_principal_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.service_principal_id = Some(id.into());
        self
    }

    /// Development mode (off by default): an on-behalf-of request without a token is served as
    /// the service and marked `execution.obo_dev_fallback = true`, so telemetry tells local
    /// runs on the developer's credentials apart from real user calls.
    pub fn development_mode(mut self, on: bool) -> Self {
        self.development_mode = on;
        self
    }

    /// Whether development mode is on.
    pub fn is_development_mode(&self) -> bool {
        self.development_mode
    }

    /// The context for a request with `headers`. `on_behalf_of` says whether the route expects a
    /// user token (it only matters in development mode). Never fails: bad input gives the
    /// service context and the rejected header.
    pub fn context(&self, headers: &HeaderMap, on_behalf_of: bool) -> ForwardedContext {
        match self.read(headers) {
            Ok(Some(user)) => ForwardedContext {
                context: user,
                rejected: None,
            },
            Ok(None) => ForwardedContext {
                context: self
                    .service()
                    .with_obo_dev_fallback(on_behalf_of && self.development_mode),
                rejected: None,
            },
            Err(rejected) => ForwardedContext {
                context: self.service(),
                rejected: Some(rejected),
            },
        }
    }

    /// The user context, `None` without a token, or the first rejected header.
    fn read(&self, headers: &HeaderMap) -> Result<Option<ExecutionContext>, RejectedHeader> {
        let forwarded = Forwarded::of(headers);
        let Some(token) = forwarded.single(TOKEN, &X_FORWARDED_ACCESS_TOKEN)? else {
            // No user: the identity headers are not used, so not checked either.
            return Ok(None);
        };
        // The headers read are checked, in order, until one gives the caller id.
        let caller = match forwarded.single(EMAIL, &X_FORWARDED_EMAIL)? {
            Some(email) => Some(email),
            None => match forwarded.single(USER, &X_FORWARDED_USER)? {
                Some(user) => Some(user),
                None => forwarded.single(PREFERRED_USERNAME, &X_FORWARDED_PREFERRED_USERNAME)?,
            },
        };
        let mut context = ExecutionContext {
            mode: ExecutionMode::User,
            ..ExecutionContext::default()
        }
        .with_user_token(SecretToken::new(token));
        if let Some(caller) = caller {
            context = context.with_caller_id(shared_caller(caller));
        }
        Ok(Some(context))
    }

    fn service(&self) -> ExecutionContext {
        let mut context = ExecutionContext::service();
        context.caller_id = self.service_principal_id.clone();
        context
    }
}

/// `caller` as a shared string, from this thread's last one when it is the same: a server sees
/// the same user on request after request, and this saves an allocation and a copy. (Only the
/// caller id: the token is never kept beyond its request.)
fn shared_caller(caller: &str) -> Arc<str> {
    thread_local! {
        static LAST: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    }
    let make = || Arc::<str>::from(caller);
    crate::last::shared(&LAST, |last| **last == *caller, || Some(make())).unwrap_or_else(make)
}

/// The forwarded headers, lower case, indexed by [`TOKEN`], [`EMAIL`], [`USER`] and
/// [`PREFERRED_USERNAME`].
const FORWARDED: [&str; 4] = [
    "x-forwarded-access-token",
    "x-forwarded-email",
    "x-forwarded-user",
    "x-forwarded-preferred-username",
];
const TOKEN: usize = 0;
const EMAIL: usize = 1;
const USER: usize = 2;
const PREFERRED_USERNAME: usize = 3;

/// Up to this many header values, the headers a server reads (the forwarded ones here; `Host`
/// and `User-Agent` in `call`) are found in one pass over the map; above it, each is looked up
/// by name. A lookup hashes the name (up to 30 bytes) and compares it, and costs as much as a
/// pass over about ten values, while a pass costs a compare or two per value: the usual
/// request, a dozen headers or fewer, is read faster in one pass.
pub(crate) const ONE_PASS_MAX: usize = 16;

/// What a request sent of one forwarded header.
#[derive(Clone, Copy, Debug)]
enum Sent<'a> {
    Nothing,
    Once(&'a HeaderValue),
    Twice,
}

/// The forwarded headers of one request: found in one pass over a small map, looked up by name
/// (when asked for) in a large one.
enum Forwarded<'a> {
    Scanned([Sent<'a>; 4]),
    ByName(&'a HeaderMap),
}

impl<'a> Forwarded<'a> {
    fn of(headers: &'a HeaderMap) -> Forwarded<'a> {
        if headers.len() > ONE_PASS_MAX {
            return Forwarded::ByName(headers);
        }
        let mut sent = [Sent::Nothing; 4];
        for (name, value) in headers {
            let name = name.as_str();
            // Lengths first: most names are ruled out without reading their bytes.
            let Some(index) = FORWARDED
                .iter()
                .position(|forwarded| forwarded.len() == name.len() && *forwarded == name)
            else {
                continue;
            };
            sent[index] = match sent[index] {
                Sent::Nothing => Sent::Once(value),
                _ => Sent::Twice,
            };
        }
        Forwarded::Scanned(sent)
    }

    /// What the request sent of `name`, the [`FORWARDED`] header at `index`.
    fn get(&self, index: usize, name: &HeaderName) -> Sent<'a> {
        match self {
            Forwarded::Scanned(sent) => sent[index],
            Forwarded::ByName(headers) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => Sent::Nothing,
                    (Some(value), None) => Sent::Once(value),
                    (Some(_), Some(_)) => Sent::Twice,
                }
            }
        }
    }

    /// The one value of the [`FORWARDED`] header at `index` (`name`), trimmed, if sent;
    /// rejected when oversized, not UTF-8, empty or sent more than once.
    fn single(&self, index: usize, name: &HeaderName) -> Result<Option<&'a str>, RejectedHeader> {
        single(self.get(index, name), name)
    }
}

/// The one value of a header of which the request `sent` what it did, trimmed, if sent;
/// rejected (as `name`) when oversized, not UTF-8, empty or sent more than once.
fn single<'a>(sent: Sent<'a>, name: &HeaderName) -> Result<Option<&'a str>, RejectedHeader> {
    let reject = |reason| RejectedHeader {
        header: name.clone(),
        reason,
    };
    let value = match sent {
        Sent::Nothing => return Ok(None),
        Sent::Once(value) => value,
        Sent::Twice => return Err(reject(RejectReason::Duplicated)),
    };
    let bytes = value.as_bytes();
    if bytes.len() > MAX_FORWARDED_HEADER_LEN {
        return Err(reject(RejectReason::Oversized));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| reject(RejectReason::NotUtf8))?;
    // Whitespace (ASCII or not) can only be trimmed where an end is not a visible ASCII byte:
    // the usual value is taken as it is, without `trim`'s per-char Unicode test.
    let visible = |byte: Option<&u8>| byte.is_some_and(u8::is_ascii_graphic);
    let text = match visible(bytes.first()) && visible(bytes.last()) {
        true => text,
        false => text.trim(),
    };
    if text.is_empty() {
        return Err(reject(RejectReason::Empty));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const TOKEN: &str = "dapi0123456789abcdef";

    fn headers(pairs: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                (*name).clone(),
                HeaderValue::from_bytes(value).expect("valid header bytes"),
            );
        }
        map
    }

    fn rules() -> ForwardedHeaders {
        ForwardedHeaders::new().service_principal_id("sp-1")
    }

    #[test]
    fn caller_id_prefers_email_then_user_then_preferred_username() {
        let all = headers(&[
            (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
            (&X_FORWARDED_PREFERRED_USERNAME, b"pref"),
            (&X_FORWARDED_USER, b"user-7"),
            (&X_FORWARDED_EMAIL, b"a@x.com"),
        ]);
        let got = rules().context(&all, true);
        assert_eq!(got.context.mode, ExecutionMode::User);
        assert_eq!(got.context.caller_id.as_deref(), Some("a@x.com"));
        assert_eq!(
            got.context
                .user_token
                .as_ref()
                .map(SecretToken::expose_secret),
            Some(TOKEN)
        );
        assert!(got.rejected.is_none());

        let no_email = headers(&[
            (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
            (&X_FORWARDED_PREFERRED_USERNAME, b"pref"),
            (&X_FORWARDED_USER, b"user-7"),
        ]);
        assert_eq!(
            rules()
                .context(&no_email, true)
                .context
                .caller_id
                .as_deref(),
            Some("user-7")
        );
        let only_preferred = headers(&[
            (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
            (&X_FORWARDED_PREFERRED_USERNAME, b"pref"),
        ]);
        assert_eq!(
            rules()
                .context(&only_preferred, true)
                .context
                .caller_id
                .as_deref(),
            Some("pref")
        );
        let token_only = headers(&[(&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes())]);
        let got = rules().context(&token_only, true).context;
        assert_eq!(got.mode, ExecutionMode::User);
        assert_eq!(got.caller_id, None);
    }

    #[test]
    fn no_token_is_the_service_and_the_dev_flag_needs_dev_mode_and_an_obo_route() {
        let email_only = headers(&[(&X_FORWARDED_EMAIL, b"a@x.com")]);
        for (dev, obo, flag) in [
            (false, false, false),
            (false, true, false),
            (true, false, false),
            (true, true, true),
        ] {
            let got = rules().development_mode(dev).context(&email_only, obo);
            assert_eq!(got.context.mode, ExecutionMode::Service);
            assert_eq!(got.context.caller_id.as_deref(), Some("sp-1"));
            assert_eq!(got.context.user_token, None);
            assert_eq!(got.context.obo_dev_fallback, flag, "dev {dev} obo {obo}");
            assert!(got.rejected.is_none());
        }
        assert_eq!(
            ForwardedHeaders::new()
                .context(&HeaderMap::new(), true)
                .context,
            ExecutionContext::service()
        );
    }

    #[test]
    fn bad_headers_give_the_service_context_and_the_reason() {
        let long = vec![b'a'; MAX_FORWARDED_HEADER_LEN + 1];
        let just_fits = vec![b'a'; MAX_FORWARDED_HEADER_LEN];
        let cases: Vec<(HeaderMap, Option<(HeaderName, RejectReason)>)> = vec![
            (
                headers(&[(&X_FORWARDED_ACCESS_TOKEN, &long)]),
                Some((X_FORWARDED_ACCESS_TOKEN, RejectReason::Oversized)),
            ),
            (
                headers(&[
                    (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                    (&X_FORWARDED_EMAIL, &long),
                ]),
                Some((X_FORWARDED_EMAIL, RejectReason::Oversized)),
            ),
            (
                headers(&[
                    (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                    (&X_FORWARDED_EMAIL, b"caf\xe9@x.com"),
                ]),
                Some((X_FORWARDED_EMAIL, RejectReason::NotUtf8)),
            ),
            (
                headers(&[(&X_FORWARDED_ACCESS_TOKEN, b"")]),
                Some((X_FORWARDED_ACCESS_TOKEN, RejectReason::Empty)),
            ),
            (
                headers(&[
                    (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                    (&X_FORWARDED_USER, b"  \t "),
                ]),
                Some((X_FORWARDED_USER, RejectReason::Empty)),
            ),
            (
                headers(&[
                    (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                    (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                ]),
                Some((X_FORWARDED_ACCESS_TOKEN, RejectReason::Duplicated)),
            ),
            (
                headers(&[
                    (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                    (&X_FORWARDED_EMAIL, b"a@x.com"),
                    (&X_FORWARDED_EMAIL, b"b@x.com"),
                ]),
                Some((X_FORWARDED_EMAIL, RejectReason::Duplicated)),
            ),
            (
                headers(&[
                    (&X_FORWARDED_ACCESS_TOKEN, &just_fits),
                    (&X_FORWARDED_EMAIL, "café@x.com".as_bytes()),
                ]),
                None,
            ),
        ];
        for (map, expected) in cases {
            let got = rules().development_mode(true).context(&map, true);
            match expected {
                Some((header, reason)) => {
                    let rejected = got.rejected.expect("rejected");
                    assert_eq!((rejected.header, rejected.reason), (header, reason));
                    assert_eq!(got.context.mode, ExecutionMode::Service);
                    assert_eq!(got.context.caller_id.as_deref(), Some("sp-1"));
                    assert_eq!(got.context.user_token, None);
                    assert!(!got.context.obo_dev_fallback);
                }
                None => {
                    assert!(got.rejected.is_none());
                    assert_eq!(got.context.mode, ExecutionMode::User);
                    assert_eq!(got.context.caller_id.as_deref(), Some("café@x.com"));
                }
            }
        }
    }

    #[test]
    fn the_names_are_the_header_constants() {
        let constants = [
            X_FORWARDED_ACCESS_TOKEN,
            X_FORWARDED_EMAIL,
            X_FORWARDED_USER,
            X_FORWARDED_PREFERRED_USERNAME,
        ];
        for (name, constant) in FORWARDED.iter().zip(&constants) {
            assert_eq!(*name, constant.as_str());
        }
    }

    /// `map` with enough other headers that the forwarded ones are looked up by name.
    fn padded(mut map: HeaderMap) -> HeaderMap {
        for i in 0..=ONE_PASS_MAX {
            let name = HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap();
            map.append(name, HeaderValue::from_static("v"));
        }
        assert!(map.len() > ONE_PASS_MAX);
        map
    }

    #[test]
    fn a_large_map_is_read_by_the_same_rules() {
        let maps = [
            headers(&[
                (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                (&X_FORWARDED_USER, b"user-7"),
                (&X_FORWARDED_PREFERRED_USERNAME, b"pref"),
            ]),
            headers(&[
                (&X_FORWARDED_ACCESS_TOKEN, TOKEN.as_bytes()),
                (&X_FORWARDED_EMAIL, b"a@x.com"),
                (&X_FORWARDED_EMAIL, b"b@x.com"),
            ]),
            headers(&[(&X_FORWARDED_ACCESS_TOKEN, b" ")]),
            headers(&[(&X_FORWARDED_EMAIL, b"a@x.com")]),
        ];
        for map in maps {
            let small = rules().context(&map, true);
            let large = rules().context(&padded(map), true);
            assert_eq!(small.context, large.context);
            assert_eq!(small.rejected, large.rejected);
        }
    }

    #[test]
    fn a_rejection_never_shows_the_value() {
        let map = headers(&[(&X_FORWARDED_ACCESS_TOKEN, b"\xffdapiSECRET")]);
        let rejected = rules().context(&map, true).rejected.expect("rejected");
        let text = format!("{rejected} {rejected:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("x-forwarded-access-token"), "{text}");
    }
}
