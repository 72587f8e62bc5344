//! Property tests of redaction: secrets of every class planted at random positions in random
//! text, glued to it or separated from it, never survive; redacting is idempotent and bounded.
//!
//! The case count is proptest's default (256), raised with `PROPTEST_CASES` for a long run:
//! `PROPTEST_CASES=1000000 cargo test --release -p kasal-trace --test redact -- --nocapture`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::Uri;
use kasal_trace::{MAX_REDACTED_LEN, redact, redact_uri};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A planted secret: its rendering, and the parts of it that must not appear in the output.
#[derive(Clone, Debug)]
struct Secret {
    text: String,
    cores: Vec<String>,
}

fn mixed_case(word: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn pat() -> impl Strategy<Value = Secret> {
    (
        prop_oneof![mixed_case("dapi"), mixed_case("dkea"), mixed_case("dose")],
        "[0-9a-fA-F]{32}",
        prop_oneof![Just(String::new()), "-[0-9]".prop_map(String::from)],
    )
        .prop_map(|(prefix, hex, suffix)| Secret {
            text: format!("{prefix}{hex}{suffix}"),
            cores: vec![hex],
        })
}

fn jwt() -> impl Strategy<Value = Secret> {
    (
        "[A-Za-z0-9_-]{8,20}",
        "[A-Za-z0-9_-]{16,60}",
        "[A-Za-z0-9_-]{16,60}",
    )
        .prop_map(|(header, payload, signature)| Secret {
            text: format!("eyJ{header}.eyJ{payload}.{signature}"),
            cores: vec![payload, signature],
        })
}

fn scheme_credential() -> impl Strategy<Value = Secret> {
    (
        prop_oneof![mixed_case("bearer"), mixed_case("basic")],
        prop::sample::select(vec![" ", "%20", "\t", "+", "\u{a0}", "  ", "\u{2003}"]),
        "[A-Za-z0-9._~+/=-]{12,40}",
    )
        .prop_map(|(scheme, space, credential)| Secret {
            text: format!("{scheme}{space}{credential}"),
            cores: vec![credential],
        })
}

fn key_value() -> impl Strategy<Value = Secret> {
    let keys = prop_oneof![
        mixed_case("token"),
        mixed_case("access_token"),
        mixed_case("refresh_token"),
        mixed_case("id_token"),
        mixed_case("client_secret"),
        mixed_case("password"),
        mixed_case("passwd"),
        mixed_case("secret"),
        mixed_case("api_key"),
        mixed_case("x-forwarded-access-token"),
        mixed_case("db_password2"),
    ];
    let forms = prop::sample::select(vec![
        "{k}={v}",
        "{k}: {v}",
        "{k}:{v}",
        "{k} = {v}",
        "{k}:={v}",
        "\"{k}\":\"{v}\"",
        "\"{k}\" : \"{v}\"",
        "{\"{k}\": \"{v}\"}",
        "{\\\"{k}\\\":\\\"{v}\\\"}",
        "{'{k}': '{v}'}",
        "{k}%3D{v}",
        "{k}%3A%20{v}",
        "{k}%3D%22{v}%22",
        "\"{k}\":\n  \"{v}\"",
    ]);
    // Punctuation included (values run to their end, not to the first comma); no whitespace,
    // quotes, `\`, `%` or `&`, which end or escape a value by design.
    (
        keys,
        forms,
        "[A-Za-z0-9!#$()*+,./:;<=>?@\\[\\]^_{|}~-]{10,30}",
    )
        .prop_map(|(key, form, value)| Secret {
            text: form.replace("{k}", &key).replace("{v}", &value),
            cores: vec![value],
        })
}

fn userinfo() -> impl Strategy<Value = Secret> {
    let plain = (
        prop::sample::select(vec![
            "https://",
            "postgres://",
            "jdbc:mysql://",
            "//",
            "/home/alice:https://",
            "~//",
        ]),
        "[a-z]{2,8}",
        "[A-Za-z0-9/?#@:!$&'()*+,;=._~-]{10,24}",
        "[a-z]{3,10}\\.(com|net|internal)",
    )
        .prop_map(|(scheme, user, password, host)| Secret {
            text: format!("{scheme}{user}:{password}@{host}"),
            cores: vec![password],
        });
    let encoded =
        ("[a-z]{2,8}", "[A-Za-z0-9]{10,24}", "[a-z]{3,10}").prop_map(|(user, password, host)| {
            Secret {
                text: format!("https%3A%2F%2F{user}%3A{password}%40{host}"),
                cores: vec![password],
            }
        });
    prop_oneof![3 => plain, 1 => encoded]
}

fn home_dir() -> impl Strategy<Value = Secret> {
    (
        prop::sample::select(vec!["/home/", "/Users/", "C:\\Users\\", "c:\\\\users\\\\"]),
        "[a-z]{8,12}",
    )
        .prop_map(|(dir, user)| Secret {
            text: format!("{dir}{user}"),
            cores: vec![user],
        })
}

fn secret() -> impl Strategy<Value = Secret> {
    prop_oneof![
        pat(),
        jwt(),
        scheme_credential(),
        key_value(),
        userinfo(),
        home_dir()
    ]
}

/// Random surrounding text, including fragments of secrets' syntax.
fn filler() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        4 => "[a-zA-Z0-9 ]{1,12}".prop_map(String::from),
        2 => prop::sample::select(vec![
            " ", "\n", ", ", "; ", "=", ":", "\"", "'", "\\", "%", "@", "&", "/", "//", "_", ".",
            "é", "中文", "🙂", "{", "}", "token", "eyJ", "Bearer", "/home/", "dapi", "https://",
            "x_", "9", "ſ", "\u{212a}", "~",
        ])
        .prop_map(String::from),
    ];
    proptest::collection::vec(fragment, 0..6).prop_map(|parts| parts.concat())
}

/// What stands between a secret and its neighbours: nothing (glued) or a separator.
fn glue() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "", "", "", " ", "\n", ", ", "; ", "x_", "é", "9", "_", "\t",
    ])
}

#[derive(Clone, Debug)]
struct Planted {
    text: String,
    cores: Vec<String>,
}

fn planted() -> impl Strategy<Value = Planted> {
    (
        filler(),
        proptest::collection::vec((glue(), secret(), glue(), filler()), 1..5),
    )
        .prop_map(|(head, parts)| {
            let mut text = head;
            let mut cores = Vec::new();
            for (before, secret, after, tail) in parts {
                text.push_str(before);
                text.push_str(&secret.text);
                text.push_str(after);
                text.push_str(&tail);
                cores.extend(secret.cores);
            }
            Planted { text, cores }
        })
}

/// The shortest run of a secret whose presence counts as a survivor.
const WINDOW: usize = 8;

/// The parts of `core` found in `out` (any run of [`WINDOW`] characters).
fn survives(core: &str, out: &str) -> bool {
    let chars: Vec<char> = core.chars().collect();
    chars
        .windows(WINDOW.min(chars.len()))
        .any(|window| out.contains(&window.iter().collect::<String>()))
}

#[test]
fn planted_secrets_never_survive() {
    static PLANTED: AtomicU64 = AtomicU64::new(0);
    static SURVIVED: AtomicU64 = AtomicU64::new(0);
    // `Config::default()` reads `PROPTEST_CASES` (default 256).
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&planted(), |planted| {
        let out = redact(&planted.text);
        // Only what fits under the cap can survive; a secret cut off by it is gone.
        let fits = planted.text.len() <= MAX_REDACTED_LEN;
        for core in &planted.cores {
            PLANTED.fetch_add(1, Relaxed);
            if fits && survives(core, &out) {
                SURVIVED.fetch_add(1, Relaxed);
                prop_assert!(
                    false,
                    "{core:?} survived in {out:?} from {:?}",
                    planted.text
                );
            }
        }
        prop_assert_eq!(redact(&out), out.clone(), "not idempotent");
        Ok(())
    });
    eprintln!(
        "planted-secret property: {cases} cases, {} secrets planted, {} survived",
        PLANTED.load(Relaxed),
        SURVIVED.load(Relaxed)
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Arbitrary text, weighted towards secrets' syntax.
fn noisy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(prop_oneof![filler(), secret().prop_map(|s| s.text)], 0..12)
            .prop_map(|parts| parts.concat()),
    ]
}

proptest! {
    #[test]
    fn redaction_is_idempotent_and_bounded(text in noisy_text()) {
        let once = redact(&text);
        prop_assert!(once.len() <= MAX_REDACTED_LEN);
        prop_assert_eq!(redact(&once), once.clone());
    }

    #[test]
    fn redact_uri_never_panics_and_is_bounded(text in noisy_text(), query in noisy_text()) {
        for candidate in [text.clone(), format!("https://h.example/{text}?{query}")] {
            if let Ok(uri) = candidate.parse::<Uri>() {
                let out = redact_uri(&uri);
                prop_assert!(out.len() <= MAX_REDACTED_LEN, "{}", out.len());
            }
        }
    }
}

proptest! {
    // Texts of a few KB: fewer cases keep the suite fast.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn long_text_is_idempotent_and_bounded(
        parts in proptest::collection::vec(noisy_text(), 20..80),
    ) {
        let text = parts.concat();
        let once = redact(&text);
        prop_assert!(once.len() <= MAX_REDACTED_LEN);
        prop_assert_eq!(redact(&once), once.clone());
    }
}
