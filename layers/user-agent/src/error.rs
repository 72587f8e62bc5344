//! Typed build-time errors, and the one validation routine every input goes through.
//!
//! Everything a caller can pass in (product names, versions, extra keys and values) is checked
//! here once, when the `UserAgent` is built, so the request path never has to check or fail.

use std::fmt;

/// The longest product name, version, extra key or extra value accepted, in bytes.
pub(crate) const MAX_LEN: usize = 64;

/// Why a `UserAgent` could not be built. The message names the rejected input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserAgentError {
    /// A product name is not 1..=64 characters of `[0-9a-z_]`, or starts with `kasal_`.
    #[error("invalid product name {name:?}: {violation}")]
    InvalidProduct {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        violation: Violation,
    },
    /// A version is not strict semver (`MAJOR.MINOR.PATCH[-pre][+build]`, at most 64 bytes).
    #[error("invalid version {version:?}: {violation}")]
    InvalidVersion {
        /// The rejected version.
        version: String,
        /// What is wrong with it.
        violation: Violation,
    },
    /// An extra key is not 1..=64 characters of `[0-9A-Za-z_.+-]`.
    #[error("invalid extra key {key:?}: {violation}")]
    InvalidExtraKey {
        /// The rejected key.
        key: String,
        /// What is wrong with it.
        violation: Violation,
    },
    /// More than [`UserAgent::MAX_EXTRAS`](crate::UserAgent::MAX_EXTRAS) extras were added.
    #[error("too many User-Agent extras: at most {max}")]
    TooManyExtras {
        /// The limit.
        max: usize,
    },
    /// The rendered User-Agent would be longer than
    /// [`UserAgent::MAX_LEN`](crate::UserAgent::MAX_LEN) bytes.
    #[error("User-Agent would be {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An extra value is not 1..=64 characters of `[0-9A-Za-z_.+-]`.
    #[error("invalid value {value:?} for extra key {key:?}: {violation}")]
    InvalidExtraValue {
        /// The key the value was given for.
        key: String,
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        violation: Violation,
    },
}

/// What exactly is wrong with a rejected input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The input is empty.
    Empty,
    /// The input is longer than the limit.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The input contains a character outside the allowed set (a space, CR/LF, `/`, an
    /// uppercase letter in a product name, any non-ASCII character, ...).
    Character {
        /// The first offending character.
        ch: char,
        /// Its byte offset in the input.
        at: usize,
        /// The allowed set, as a regex class.
        allowed: &'static str,
    },
    /// A product name starts with `kasal_`: the prefix is added when rendering.
    ReservedPrefix,
    /// A version is made of allowed characters but is not strict semver.
    NotSemver {
        /// The semver parser's explanation.
        reason: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Empty => f.write_str("it is empty"),
            Violation::TooLong { len, max } => {
                write!(f, "it is {len} bytes long, the limit is {max}")
            }
            Violation::Character { ch, at, allowed } => {
                write!(f, "character {ch:?} at byte {at} is not in {allowed}")
            }
            Violation::ReservedPrefix => {
                f.write_str("it must not start with `kasal_` (the prefix is added when rendering)")
            }
            Violation::NotSemver { reason } => write!(f, "it is not strict semver: {reason}"),
        }
    }
}

/// An allowed character set: a byte predicate and its regex spelling for messages.
#[derive(Clone, Copy)]
pub(crate) struct Charset {
    pub(crate) allows: fn(u8) -> bool,
    pub(crate) class: &'static str,
}

/// `[0-9a-z_]`: product names.
pub(crate) const PRODUCT_CHARS: Charset = Charset {
    allows: |b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_',
    class: "[0-9a-z_]",
};

/// `[0-9A-Za-z_.+-]`: extra keys and values, like the Databricks SDKs.
pub(crate) const TOKEN_CHARS: Charset = Charset {
    allows: |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'),
    class: "[0-9A-Za-z_.+-]",
};

/// `[0-9A-Za-z.+-]`: the characters semver can contain; checked before parsing so a space, CR/LF
/// or `/` is reported as such rather than as a parser message.
pub(crate) const SEMVER_CHARS: Charset = Charset {
    allows: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'),
    class: "[0-9A-Za-z.+-]",
};

/// Checks `input` is 1..=[`MAX_LEN`] bytes drawn from `charset`.
pub(crate) fn check(input: &str, charset: Charset) -> Result<(), Violation> {
    if input.is_empty() {
        return Err(Violation::Empty);
    }
    // Characters first: a long string of emoji is a character problem, not a length one.
    if let Some((at, ch)) = input
        .char_indices()
        .find(|&(_, ch)| !(ch.is_ascii() && (charset.allows)(ch as u8)))
    {
        return Err(Violation::Character {
            ch,
            at,
            allowed: charset.class,
        });
    }
    if input.len() > MAX_LEN {
        return Err(Violation::TooLong {
            len: input.len(),
            max: MAX_LEN,
        });
    }
    Ok(())
}
