//! A reqwest request's `Url` as the `http::Uri` the call core reads, built from the parts the
//! `Url` has already parsed rather than by parsing its whole text again.

use http::Uri;
use http::uri::{Parts, PathAndQuery, Scheme};
use kasal_trace::shared_authority;
use reqwest::Url;
use url::Position;

/// `url` as a `Uri`: the scheme as `http`'s constant, the authority shared from this thread's
/// last one when it is the same (a client calls the same few hosts), and only the path and
/// query parsed. A URL these parts do not fit is parsed whole, as before; one `http` cannot
/// hold at all (reqwest then fails the call too) is the empty `Uri`.
pub(super) fn uri_of(url: &Url) -> Uri {
    from_parts(url).unwrap_or_else(|| Uri::try_from(url.as_str()).unwrap_or_default())
}

fn from_parts(url: &Url) -> Option<Uri> {
    let scheme = match url.scheme() {
        "http" => Scheme::HTTP,
        "https" => Scheme::HTTPS,
        _ => return None,
    };
    let authority = shared_authority(url.authority())?;
    let path_and_query =
        PathAndQuery::try_from(&url[Position::BeforePath..Position::AfterQuery]).ok()?;
    let mut parts = Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts give the same `Uri` as parsing the whole URL, for every shape reqwest sends.
    #[test]
    fn the_uri_from_parts_is_the_uri_of_the_whole_url() {
        for text in [
            "http://127.0.0.1:8080/api/2.0/genie/spaces?page=2",
            "https://example.cloud.databricks.com/api/2.0/sql/statements/01ef",
            "https://example.cloud.databricks.com",
            "http://user:secret@host.example:81/a/b?token=x&y=%20z",
            "http://[::1]:9000/v1?q",
            "https://host.example/path#fragment",
            "https://host.example/caf%C3%A9?x=1#f",
            "https://host.example/a?",
            "ftp://host.example/file",
        ] {
            let url = Url::parse(text).unwrap();
            let whole = Uri::try_from(url.as_str()).unwrap();
            for _ in 0..2 {
                let uri = uri_of(&url);
                assert_eq!(uri, whole, "{text}");
                assert_eq!(uri.to_string(), whole.to_string(), "{text}");
                assert_eq!(uri.authority(), whole.authority(), "{text}");
                assert_eq!(uri.path_and_query(), whole.path_and_query(), "{text}");
            }
        }
    }
}
