//! Parsing the `Retry-After` response header (RFC 9110 §10.2.3), sans-IO.
//!
//! The caller passes the current time, so the functions are deterministic and testable. They
//! never panic and never allocate: a malformed value is reported as an error for the caller to
//! ignore (and count), never surfaced to the application.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

/// A `Retry-After` value that is neither delta-seconds nor an HTTP-date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedRetryAfter;

impl fmt::Display for MalformedRetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed Retry-After value")
    }
}

impl std::error::Error for MalformedRetryAfter {}

/// Parses one `Retry-After` value into the delay it asks for, relative to `now`.
///
/// Accepts delta-seconds (`"120"`) and every HTTP-date form (`"Wed, 21 Oct 2015 07:28:00 GMT"`,
/// plus the obsolete RFC 850 and asctime forms). A date in the past gives [`Duration::ZERO`].
/// Surrounding whitespace is ignored; anything else is [`MalformedRetryAfter`]. The result is not
/// capped: callers apply their own cap (see [`DefaultClassifier::max_retry_after`]).
///
/// [`DefaultClassifier::max_retry_after`]: crate::DefaultClassifier::max_retry_after
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use kasal_classify::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("5"), now), Ok(Duration::from_secs(5)));
/// assert_eq!(
///     parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"), now),
///     Ok(Duration::from_secs(10)),
/// );
/// assert!(parse_retry_after(&HeaderValue::from_static("soon"), now).is_err());
/// ```
pub fn parse_retry_after(
    value: &HeaderValue,
    now: SystemTime,
) -> Result<Duration, MalformedRetryAfter> {
    parse_with(value.as_bytes(), || now)
}

/// The parser behind [`parse_retry_after`]; reads the clock only for HTTP-dates, so the common
/// delta-seconds form costs no system call.
pub(crate) fn parse_with(
    value: &[u8],
    now: impl FnOnce() -> SystemTime,
) -> Result<Duration, MalformedRetryAfter> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(MalformedRetryAfter);
    }
    if value.iter().all(u8::is_ascii_digit) {
        // Saturate: any huge value ends up at the caller's cap anyway.
        let secs = value.iter().fold(0u64, |acc, d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        return Ok(Duration::from_secs(secs));
    }
    let text = std::str::from_utf8(value).map_err(|_| MalformedRetryAfter)?;
    let at = httpdate::parse_http_date(text).map_err(|_| MalformedRetryAfter)?;
    Ok(at.duration_since(now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(value: &str, now: SystemTime) -> Result<Duration, MalformedRetryAfter> {
        parse_retry_after(&HeaderValue::from_str(value).unwrap(), now)
    }

    #[test]
    fn delta_seconds() {
        let now = at(1_000);
        assert_eq!(parse("0", now), Ok(Duration::ZERO));
        assert_eq!(parse("5", now), Ok(Duration::from_secs(5)));
        assert_eq!(parse(" 120 ", now), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse("99999999999999999999999999", now),
            Ok(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn http_date_all_three_forms() {
        // 1445412480 = Wed, 21 Oct 2015 07:28:00 GMT
        let now = at(1_445_412_480 - 30);
        for form in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(parse(form, now), Ok(Duration::from_secs(30)), "{form}");
        }
    }

    #[test]
    fn past_date_is_zero() {
        let now = at(1_445_412_480 + 3_600);
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let now = at(1_000);
        for bad in [
            "",
            " ",
            "-1",
            "1.5",
            "5s",
            "soon",
            "0x10",
            "+5",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse(bad, now), Err(MalformedRetryAfter), "{bad:?}");
        }
        let non_utf8 = HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap();
        assert_eq!(parse_retry_after(&non_utf8, now), Err(MalformedRetryAfter));
    }

    #[test]
    fn clock_is_read_only_for_dates() {
        let parsed = parse_with(b"7", || panic!("clock read for delta-seconds"));
        assert_eq!(parsed, Ok(Duration::from_secs(7)));
    }
}
