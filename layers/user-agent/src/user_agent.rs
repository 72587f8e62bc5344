//! `UserAgent`: the rendered `kasal_<product>/<version> [key/value ...]` value, and the sans-IO
//! rule that applies it to a `HeaderMap`.
//!
//! All validation and rendering happen when the `UserAgent` is built; [`UserAgent::apply`] only
//! clones a precomputed `HeaderValue` (or, when the caller already sent a User-Agent, joins bytes
//! once). It must never panic, never leave more than one User-Agent header, and never drop the
//! caller's own User-Agent.

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;
use http::header::{Entry, OccupiedEntry, USER_AGENT};
use http::{HeaderMap, HeaderValue};

use crate::error::{SEMVER_CHARS, TOKEN_CHARS, UserAgentError, Violation, check};
use crate::product::{Product, TOKEN_PREFIX};

/// This crate's version: the default `<version>`.
const DEFAULT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Used only if rendering ever failed, which validation rules out; rendering must not panic.
const FALLBACK: &str = concat!("kasal_custom/", env!("CARGO_PKG_VERSION"));

/// A Kasal User-Agent: `kasal_<product>/<version>` followed by optional ` key/value` extras.
///
/// Build it once; every input is validated here, so applying it to requests cannot fail.
///
/// ```
/// use kasal_user_agent::{Product, UserAgent};
///
/// let ua = UserAgent::new(Product::VectorSearch)
///     .with_version("1.4.0-rc.1")?
///     .with_extra("client", "claude-desktop")?;
/// assert_eq!(ua.to_string(), "kasal_vectorsearch/1.4.0-rc.1 client/claude-desktop");
/// assert_eq!(ua.header_value(), "kasal_vectorsearch/1.4.0-rc.1 client/claude-desktop");
/// # Ok::<(), kasal_user_agent::UserAgentError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAgent {
    product: Product,
    version: Arc<str>,
    extras: Arc<[(Box<str>, Box<str>)]>,
    /// The rendered value; it starts with the product token `kasal_<product>/`.
    header: HeaderValue,
}

impl UserAgent {
    /// The most ` key/value` extras a User-Agent carries.
    pub const MAX_EXTRAS: usize = 16;

    /// The longest rendered User-Agent, in bytes.
    pub const MAX_LEN: usize = 512;

    /// `kasal_<product>/<this crate's version>`.
    ///
    /// Infallible: every [`Product`] is valid by construction (see [`Product::custom`]).
    pub fn new(product: Product) -> Self {
        let version: Arc<str> = Arc::from(DEFAULT_VERSION);
        let extras: Arc<[(Box<str>, Box<str>)]> = Arc::from([]);
        let header = render(&product, &version, &extras);
        UserAgent {
            product,
            version,
            extras,
            header,
        }
    }

    /// Replaces the version. Only strict semver is accepted (`1.2.3`, `1.2.3-rc.1+build.5`);
    /// `1.0`, `v1.0.0`, `01.0.0`, empty, spaces and anything over 64 bytes are errors.
    pub fn with_version(mut self, version: &str) -> Result<Self, UserAgentError> {
        let invalid = |violation| UserAgentError::InvalidVersion {
            version: version.to_owned(),
            violation,
        };
        check(version, SEMVER_CHARS).map_err(invalid)?;
        semver::Version::parse(version).map_err(|err| {
            invalid(Violation::NotSemver {
                reason: err.to_string(),
            })
        })?;
        check_total(&self.product, version, &self.extras)?;
        self.version = Arc::from(version);
        self.header = render(&self.product, &self.version, &self.extras);
        Ok(self)
    }

    /// Appends a ` key/value` token. Keys and values are 1..=64 characters of
    /// `[0-9A-Za-z_.+-]`, like the Databricks SDKs' extras; at most [`MAX_EXTRAS`](Self::MAX_EXTRAS)
    /// extras, and the whole header at most [`MAX_LEN`](Self::MAX_LEN) bytes.
    pub fn with_extra(mut self, key: &str, value: &str) -> Result<Self, UserAgentError> {
        check(key, TOKEN_CHARS).map_err(|violation| UserAgentError::InvalidExtraKey {
            key: key.to_owned(),
            violation,
        })?;
        check(value, TOKEN_CHARS).map_err(|violation| UserAgentError::InvalidExtraValue {
            key: key.to_owned(),
            value: value.to_owned(),
            violation,
        })?;
        if self.extras.len() >= Self::MAX_EXTRAS {
            return Err(UserAgentError::TooManyExtras {
                max: Self::MAX_EXTRAS,
            });
        }
        let mut extras = self.extras.to_vec();
        extras.push((Box::from(key), Box::from(value)));
        check_total(&self.product, &self.version, &extras)?;
        self.extras = Arc::from(extras);
        self.header = render(&self.product, &self.version, &self.extras);
        Ok(self)
    }

    /// The product.
    pub fn product(&self) -> &Product {
        &self.product
    }

    /// The version, e.g. `0.1.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The extras, in the order they were added.
    pub fn extras(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.extras.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The precomputed header value; cloning it is a reference-count increment.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// Applies this User-Agent to request headers, leaving exactly one `User-Agent` header:
    ///
    /// - no User-Agent: ours is set;
    /// - a User-Agent that does not start with our product token `kasal_<product>/`: ours is
    ///   prepended, `kasal_mcp/0.1.0 their-ua/1.2` (several values are joined with spaces);
    /// - a User-Agent already starting with our product token: left as it is, so applying twice
    ///   is a no-op.
    ///
    /// Existing bytes are kept as they are, even when they are not UTF-8.
    ///
    /// ```
    /// use http::{HeaderMap, header::USER_AGENT};
    /// use kasal_user_agent::{Product, UserAgent};
    ///
    /// let ua = UserAgent::new(Product::Mcp).with_version("0.1.0")?;
    /// let mut headers = HeaderMap::new();
    /// headers.insert(USER_AGENT, "their-ua/1.2".parse()?);
    /// ua.apply(&mut headers);
    /// ua.apply(&mut headers);
    /// assert_eq!(headers[USER_AGENT], "kasal_mcp/0.1.0 their-ua/1.2");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut values = headers.get_all(USER_AGENT).iter();
        match values.next() {
            // The hot path. A lookup then `insert` measures faster than `entry` + `VacantEntry::
            // insert`: `insert` appends in place, the vacant entry goes through the general
            // Robin Hood placement. A full map (`MaxSizeReached`) leaves the request as it is.
            None => {
                let _ = headers.try_insert(USER_AGENT, self.header.clone());
            }
            // Already ours: a stack wrapped twice, or a retried request.
            Some(only) if values.next().is_none() && only.as_bytes().starts_with(self.token()) => {}
            Some(_) => {
                if let Ok(Entry::Occupied(slot)) = headers.try_entry(USER_AGENT) {
                    self.merge(slot);
                }
            }
        }
    }

    /// The product token `kasal_<product>/`, as the leading bytes of the rendered value.
    fn token(&self) -> &[u8] {
        let len = TOKEN_PREFIX.len() + self.product.as_str().len() + 1;
        let header = self.header.as_bytes();
        // `get`, not indexing: even the unreachable fallback rendering must not panic.
        header.get(..len).unwrap_or(header)
    }

    /// Prepends ours to the caller's value(s), or joins several values that already start with
    /// ours, into one header. Out of line so the hot path stays small enough to inline.
    #[inline(never)]
    fn merge(&self, mut slot: OccupiedEntry<'_, HeaderValue>) {
        let token = self.token();
        // Caller values, trimmed, empty ones dropped; walked twice instead of collected.
        let existing = || {
            slot.iter()
                .map(|v| v.as_bytes().trim_ascii())
                .filter(|v| !v.is_empty())
        };
        let ours_first = existing().next().is_some_and(|v| v.starts_with(token));
        let capacity = self.header.len() + existing().map(|v| v.len() + 1).sum::<usize>();
        // One allocation: the joined bytes become the header value without another copy.
        let mut joined = BytesMut::with_capacity(capacity);
        if !ours_first {
            joined.extend_from_slice(self.header.as_bytes());
        }
        for value in existing() {
            if !joined.is_empty() {
                joined.extend_from_slice(b" ");
            }
            joined.extend_from_slice(value);
        }
        // Every byte comes from a valid HeaderValue or is a space, so this cannot fail; if it
        // somehow did, the request keeps its headers untouched rather than panicking.
        if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
            slot.insert(value);
        }
    }
}

impl fmt::Display for UserAgent {
    /// The rendered value, e.g. `kasal_mcp/0.1.0 client/x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rendered from validated ASCII, so `to_str` always succeeds.
        f.write_str(self.header.to_str().unwrap_or(FALLBACK))
    }
}

/// The length `render` would produce, checked against [`UserAgent::MAX_LEN`].
fn check_total(
    product: &Product,
    version: &str,
    extras: &[(Box<str>, Box<str>)],
) -> Result<(), UserAgentError> {
    let len = TOKEN_PREFIX.len()
        + product.as_str().len()
        + 1
        + version.len()
        + extras
            .iter()
            .map(|(k, v)| 2 + k.len() + v.len())
            .sum::<usize>();
    if len > UserAgent::MAX_LEN {
        return Err(UserAgentError::TooLong {
            len,
            max: UserAgent::MAX_LEN,
        });
    }
    Ok(())
}

/// Renders the header once; inputs are validated, so the fallback is unreachable in practice.
fn render(product: &Product, version: &str, extras: &[(Box<str>, Box<str>)]) -> HeaderValue {
    let mut text = format!("{TOKEN_PREFIX}{product}/{version}");
    for (key, value) in extras {
        text.push(' ');
        text.push_str(key);
        text.push('/');
        text.push_str(value);
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(FALLBACK))
}

#[cfg(test)]
mod tests {

    use http::header::{ACCEPT, USER_AGENT};
    use http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn headers_with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(USER_AGENT, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn user_agents(headers: &HeaderMap) -> Vec<&[u8]> {
        headers
            .get_all(USER_AGENT)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    fn mcp() -> UserAgent {
        UserAgent::new(Product::Mcp).with_version("0.1.0").unwrap()
    }

    #[test]
    fn extras_are_limited_in_count_and_total_length() {
        let mut ua = UserAgent::new(Product::Mcp);
        for i in 0..UserAgent::MAX_EXTRAS {
            ua = ua.with_extra(&format!("k{i}"), "v").unwrap();
        }
        assert_eq!(
            ua.clone().with_extra("one", "more"),
            Err(UserAgentError::TooManyExtras {
                max: UserAgent::MAX_EXTRAS
            })
        );
        // 200 extras (the issue's 25 KB header) cannot be built.
        let mut ua = Ok(UserAgent::new(Product::Mcp));
        for i in 0..200 {
            ua = ua.and_then(|ua| ua.with_extra(&format!("key{i}"), &"v".repeat(64)));
        }
        let error = ua.unwrap_err();
        assert!(
            matches!(error, UserAgentError::TooLong { max: 512, .. }),
            "{error}"
        );
        let ok = UserAgent::new(Product::Mcp)
            .with_extra("a", &"v".repeat(64))
            .unwrap();
        assert!(ok.header_value().len() <= UserAgent::MAX_LEN);
    }

    #[test]
    fn default_version_is_the_crate_version() {
        assert_eq!(DEFAULT_VERSION, "0.1.0");
        assert_eq!(UserAgent::new(Product::Mcp).version(), "0.1.0");
    }

    #[test]
    fn every_product_renders_its_exact_header() {
        let expected = [
            "kasal_jobs/0.1.0",
            "kasal_genie/0.1.0",
            "kasal_vectorsearch/0.1.0",
            "kasal_mcp/0.1.0",
            "kasal_lakebase/0.1.0",
            "kasal_mlflow/0.1.0",
            "kasal_secret/0.1.0",
            "kasal_agent/0.1.0",
            "kasal_guardrail/0.1.0",
            "kasal_embedding/0.1.0",
            "kasal_llm/0.1.0",
            "kasal_name_gen/0.1.0",
            "kasal_task_gen/0.1.0",
            "kasal_agent_gen/0.1.0",
            "kasal_crew_gen/0.1.0",
            "kasal_template_gen/0.1.0",
            "kasal_prompt_improve/0.1.0",
            "kasal_intent/0.1.0",
            "kasal_conn_test/0.1.0",
            "kasal_agentbricks/0.1.0",
            "kasal_deployment/0.1.0",
            "kasal_volume/0.1.0",
            "kasal_dashboard/0.1.0",
            "kasal_powerbi/0.1.0",
            "kasal_telemetry/0.1.0",
        ];
        assert_eq!(Product::KNOWN.len(), expected.len());
        for (product, header) in Product::KNOWN.iter().zip(expected) {
            let ua = UserAgent::new(product.clone());
            assert_eq!(ua.header_value(), header, "{product:?}");
            assert_eq!(ua.to_string(), header);
            assert_eq!(ua.product(), product);
        }
        let custom = UserAgent::new(Product::custom("my_tool").unwrap());
        assert_eq!(custom.header_value(), "kasal_my_tool/0.1.0");
    }

    #[test]
    fn version_and_extras_render_in_order() {
        let ua = UserAgent::new(Product::CrewGen)
            .with_version("2.10.3-beta.1+sha.5114f85")
            .unwrap()
            .with_extra("client", "claude")
            .unwrap()
            .with_extra("os", "linux-x86_64")
            .unwrap();
        assert_eq!(
            ua.header_value(),
            "kasal_crew_gen/2.10.3-beta.1+sha.5114f85 client/claude os/linux-x86_64"
        );
        assert_eq!(ua.version(), "2.10.3-beta.1+sha.5114f85");
        assert_eq!(
            ua.extras().collect::<Vec<_>>(),
            [("client", "claude"), ("os", "linux-x86_64")]
        );
        // The version can be changed after extras; extras stay.
        let ua = ua.with_version("3.0.0").unwrap();
        assert_eq!(
            ua.header_value(),
            "kasal_crew_gen/3.0.0 client/claude os/linux-x86_64"
        );
    }

    fn version_error(version: &str) -> Violation {
        match UserAgent::new(Product::Mcp).with_version(version) {
            Err(UserAgentError::InvalidVersion {
                version: v,
                violation,
            }) => {
                assert_eq!(v, version, "the error names the bad input");
                violation
            }
            other => panic!("{version:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn rejects_every_invalid_version_class() {
        assert_eq!(version_error(""), Violation::Empty);
        for (version, ch) in [
            ("1.0.0 ", ' '),
            (" 1.0.0", ' '),
            ("1.0.0\r", '\r'),
            ("1.0.0\n", '\n'),
            ("1.0.0/x", '/'),
            ("1.0.0-é", 'é'),
            ("1.0.0_1", '_'),
        ] {
            assert!(
                matches!(version_error(version), Violation::Character { ch: c, .. } if c == ch),
                "{version:?}"
            );
        }
        for version in [
            "1.0", "1", "v1.0.0", "01.0.0", "1.01.0", "1.0.0-", "1.0.0+", "a.b.c",
        ] {
            assert!(
                matches!(version_error(version), Violation::NotSemver { .. }),
                "{version:?}"
            );
        }
        let long = format!("1.0.0-{}", "a".repeat(59));
        assert_eq!(
            version_error(&long),
            Violation::TooLong { len: 65, max: 64 }
        );
        assert!(
            UserAgent::new(Product::Mcp)
                .with_version(&long[..64])
                .is_ok()
        );
        let message = UserAgent::new(Product::Mcp)
            .with_version("v1.0.0")
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"v1.0.0\""), "{message}");
    }

    #[test]
    fn rejects_every_invalid_extra_class() {
        let bad = [
            "",
            "a b",
            "a\rb",
            "a\nb",
            "naïve",
            "a/b",
            "a:b",
            &"k".repeat(65),
        ];
        for input in bad {
            let key = UserAgent::new(Product::Mcp).with_extra(input, "v");
            assert!(
                matches!(&key, Err(UserAgentError::InvalidExtraKey { key, .. }) if key == input),
                "key {input:?}: {key:?}"
            );
            let value = UserAgent::new(Product::Mcp).with_extra("k", input);
            assert!(
                matches!(&value, Err(UserAgentError::InvalidExtraValue { key, value, .. })
                    if key == "k" && value == input),
                "value {input:?}: {value:?}"
            );
        }
        let ok = UserAgent::new(Product::Mcp)
            .with_extra(&"K".repeat(64), "A-z_0.9+")
            .unwrap();
        assert_eq!(
            ok.to_string(),
            format!("kasal_mcp/0.1.0 {}/A-z_0.9+", "K".repeat(64))
        );
    }

    #[test]
    fn sets_when_absent() {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.1.0"]);
        assert_eq!(headers[ACCEPT], "*/*");
    }

    #[test]
    fn prepends_to_a_foreign_user_agent() {
        let mut headers = headers_with(&[b"their-ua/1.2"]);
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.1.0 their-ua/1.2"]);
    }

    #[test]
    fn prepends_before_another_kasal_product() {
        let mut headers = headers_with(&[b"kasal_genie/0.1.0"]);
        mcp().apply(&mut headers);
        assert_eq!(
            user_agents(&headers),
            [b"kasal_mcp/0.1.0 kasal_genie/0.1.0"]
        );
        // `kasal_mcpx/` is not our token even though it starts with `kasal_mcp`.
        let mut headers = headers_with(&[b"kasal_mcpx/1.0.0"]);
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.1.0 kasal_mcpx/1.0.0"]);
    }

    #[test]
    fn joins_several_values_into_one_header() {
        let mut headers = headers_with(&[b"a/1", b"  ", b" b/2 "]);
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.1.0 a/1 b/2"]);
        // Ours already first, but split over two values: joined, not prepended again.
        let mut headers = headers_with(&[b"kasal_mcp/0.0.9", b"b/2"]);
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.0.9 b/2"]);
        // Ours behind stray whitespace: trimmed, not prepended again.
        let mut headers = headers_with(&[b" kasal_mcp/0.0.9 "]);
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.0.9"]);
    }

    #[test]
    fn empty_existing_value_is_replaced() {
        let mut headers = headers_with(&[b""]);
        mcp().apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/0.1.0"]);
    }

    #[test]
    fn applying_twice_is_a_no_op() {
        let ua = mcp();
        let starts: [&[&[u8]]; 3] = [&[], &[b"their-ua/1.2"], &[b"x/1", b"y/2"]];
        for start in starts {
            let mut headers = headers_with(start);
            ua.apply(&mut headers);
            let once = headers.clone();
            ua.apply(&mut headers);
            assert_eq!(headers, once, "{start:?}");
        }
        // Any version of our product token counts as already applied.
        let mut headers = headers_with(&[b"kasal_mcp/9.9.9 their/1"]);
        ua.apply(&mut headers);
        assert_eq!(user_agents(&headers), [b"kasal_mcp/9.9.9 their/1"]);
    }

    #[test]
    fn keeps_non_utf8_bytes_and_prepends() {
        let odd: &[u8] = b"caf\xe9/1 \xff\tx";
        let mut headers = headers_with(&[odd]);
        mcp().apply(&mut headers);
        let mut expected = b"kasal_mcp/0.1.0 ".to_vec();
        expected.extend_from_slice(odd);
        assert_eq!(user_agents(&headers), [&expected[..]]);
    }

    #[test]
    fn extras_are_part_of_what_is_prepended() {
        let ua = mcp().with_extra("client", "x").unwrap();
        let mut headers = headers_with(&[b"their-ua/1.2"]);
        ua.apply(&mut headers);
        assert_eq!(
            user_agents(&headers),
            [b"kasal_mcp/0.1.0 client/x their-ua/1.2"]
        );
    }

    fn custom_name() -> impl Strategy<Value = String> {
        "[0-9a-z_]{1,64}".prop_filter("reserved prefix", |s| !s.starts_with("kasal_"))
    }

    fn identifier() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u32>().prop_map(|n| n.to_string()),
            "[A-Za-z-][0-9A-Za-z-]{0,7}",
        ]
    }

    fn semver_version() -> impl Strategy<Value = String> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(identifier()),
            proptest::option::of("[0-9A-Za-z-]{1,8}"),
        )
            .prop_map(|(major, minor, patch, pre, build)| {
                let mut v = format!("{major}.{minor}.{patch}");
                if let Some(pre) = pre {
                    v = format!("{v}-{pre}");
                }
                if let Some(build) = build {
                    v = format!("{v}+{build}");
                }
                v
            })
    }

    fn extra_token() -> impl Strategy<Value = String> {
        "[0-9A-Za-z_.+-]{1,64}"
    }

    proptest! {
        #[test]
        fn accepted_inputs_render_and_parse_back(
            name in custom_name(),
            version in semver_version(),
            extras in proptest::collection::vec((extra_token(), extra_token()), 0..4),
            caller in proptest::option::of("[ -~]{0,40}"),
        ) {
            let product = Product::custom(&name).unwrap();
            let mut ua = UserAgent::new(product.clone()).with_version(&version).unwrap();
            for (key, value) in &extras {
                ua = ua.with_extra(key, value).unwrap();
            }
            let mut expected = format!("kasal_{name}/{version}");
            for (key, value) in &extras {
                expected.push_str(&format!(" {key}/{value}"));
            }
            let text = ua.header_value().to_str().unwrap();
            prop_assert_eq!(text, &expected);
            prop_assert_eq!(HeaderValue::from_str(&expected).unwrap(), ua.header_value());
            prop_assert_eq!(Product::from_user_agent(text), Some(product.clone()));
            prop_assert_eq!(name.parse::<Product>().unwrap(), product.clone());

            let mut headers = HeaderMap::new();
            if let Some(caller) = &caller {
                headers.insert(USER_AGENT, HeaderValue::from_str(caller).unwrap());
            }
            ua.apply(&mut headers);
            let once = headers.clone();
            ua.apply(&mut headers);
            prop_assert_eq!(&headers, &once);
            prop_assert_eq!(headers.get_all(USER_AGENT).iter().count(), 1);
            let applied = headers[USER_AGENT].to_str().unwrap();
            prop_assert_eq!(Product::from_user_agent(applied), Some(product));
        }

        #[test]
        fn arbitrary_strings_never_panic(input in any::<String>(), other in "\\PC{0,80}") {
            let _ = Product::custom(&input);
            let _ = input.parse::<Product>();
            let _ = Product::from_user_agent(&input);
            let _ = Product::from_user_agent(&other);
            let ua = UserAgent::new(Product::Mcp);
            for built in [
                ua.clone().with_version(&input),
                ua.clone().with_version(&other),
                ua.clone().with_extra(&input, "v"),
                ua.clone().with_extra("k", &other),
            ]
            .into_iter()
            .flatten()
            {
                let text = built.header_value().to_str().unwrap();
                prop_assert_eq!(Product::from_user_agent(text), Some(Product::Mcp));
            }
        }

        #[test]
        fn any_existing_header_bytes_end_as_one_header_starting_with_ours(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
        ) {
            let ua = mcp();
            let mut headers = HeaderMap::new();
            for value in values {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.append(USER_AGENT, value);
                }
            }
            ua.apply(&mut headers);
            let all = user_agents(&headers);
            prop_assert_eq!(all.len(), 1);
            prop_assert!(all[0].starts_with(b"kasal_mcp/"));
        }
    }
}
