//! The call span's callsite: the span declared once, with every field it may carry, and
//! [`new_span`], which creates it passing values only for the fields it starts with.
//!
//! `info_span!` hands a subscriber a value slot for every declared field (`Empty` for those
//! recorded later), and every subscriber that reads a new span's fields (a `fmt` layer,
//! OpenTelemetry, any recording layer) walks all of them. The call span declares 32 fields and
//! starts with about ten. So it is declared here as `info_span!` would declare it (name
//! `HTTP`, target `kasal_trace`, level INFO, the same field names in the same order, so
//! `Span::record` by name works as before), but opened with the start fields only; the others
//! are recorded later through [`fields`], looked up once.
//!
//! What this must never do: change a field's name, order or value type, or open the span where
//! `info_span!` would not (the static and the dynamic level filters and the callsite's
//! interest are asked in the same order as the macro asks them).

use std::sync::OnceLock;

use tracing::field::{Field, FieldSet, Value};
use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
use tracing::{Level, Metadata, Span};
use tracing_core::callsite::DefaultCallsite;
use tracing_core::metadata::Kind;

/// Every field of the call span, in declaration order; the constants below index it.
const NAMES: [&str; 32] = [
    "otel.kind",
    "otel.name",
    "otel.status_code",
    "otel.status_description",
    "http.request.method",
    "http.request.method_original",
    "http.route",
    "url.template",
    "url.full",
    "url.path",
    "url.scheme",
    "server.address",
    "server.port",
    "client.address",
    "user_agent.original",
    "network.protocol.version",
    "http.request.body.size",
    "http.response.status_code",
    "http.request.resend_count",
    "http.response.body.size",
    "error.type",
    "kasal.product",
    "kasal.outcome",
    "kasal.operation_id",
    "kasal.body_cut_short",
    "execution.context",
    "caller.id",
    "execution.obo_dev_fallback",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
];

pub(crate) const OTEL_KIND: usize = 0;
pub(crate) const OTEL_NAME: usize = 1;
pub(crate) const OTEL_STATUS_CODE: usize = 2;
pub(crate) const OTEL_STATUS_DESCRIPTION: usize = 3;
pub(crate) const METHOD: usize = 4;
pub(crate) const METHOD_ORIGINAL: usize = 5;
pub(crate) const ROUTE: usize = 6;
pub(crate) const URL_TEMPLATE: usize = 7;
pub(crate) const URL_FULL: usize = 8;
pub(crate) const URL_PATH: usize = 9;
pub(crate) const URL_SCHEME: usize = 10;
pub(crate) const SERVER_ADDRESS: usize = 11;
pub(crate) const SERVER_PORT: usize = 12;
pub(crate) const CLIENT_ADDRESS: usize = 13;
pub(crate) const USER_AGENT: usize = 14;
pub(crate) const PROTOCOL_VERSION: usize = 15;
pub(crate) const REQUEST_BODY_SIZE: usize = 16;
pub(crate) const STATUS_CODE: usize = 17;
pub(crate) const RESEND_COUNT: usize = 18;
pub(crate) const RESPONSE_BODY_SIZE: usize = 19;
pub(crate) const ERROR_TYPE: usize = 20;
pub(crate) const PRODUCT: usize = 21;
pub(crate) const OUTCOME: usize = 22;
pub(crate) const OPERATION_ID: usize = 23;
pub(crate) const BODY_CUT_SHORT: usize = 24;
pub(crate) const EXECUTION_CONTEXT: usize = 25;
pub(crate) const CALLER_ID: usize = 26;
pub(crate) const OBO_DEV_FALLBACK: usize = 27;
pub(crate) const REQUEST_MODEL: usize = 28;
pub(crate) const RESPONSE_MODEL: usize = 29;
pub(crate) const INPUT_TOKENS: usize = 30;
pub(crate) const OUTPUT_TOKENS: usize = 31;

/// How many fields a span can start with: every field [`new_span`] may be given a value for.
pub(crate) const AT_START: usize = 19;

/// The fields [`new_span`] takes, in declaration order, each with its value or `None`.
pub(crate) type StartValues<'a> = [(&'static Field, Option<&'a dyn Value>); AT_START];

static CALLSITE: DefaultCallsite = DefaultCallsite::new(&METADATA);

static METADATA: Metadata<'static> = Metadata::new(
    "HTTP",
    "kasal_trace",
    Level::INFO,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&NAMES, tracing_core::identify_callsite!(&CALLSITE)),
    Kind::SPAN,
);

/// The call span's fields, indexed by the constants of this module.
pub(crate) fn fields() -> &'static [Field; 32] {
    static FIELDS: OnceLock<[Field; 32]> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut all = METADATA.fields().iter();
        // `NAMES` has 32 entries: the field set yields exactly 32 fields.
        std::array::from_fn(|_| all.next().expect("the call span declares 32 fields"))
    })
}

/// The call span's field set, to record several fields in one dispatch.
pub(crate) fn field_set() -> &'static FieldSet {
    METADATA.fields()
}

/// Opens a call span (a child of the current span) with `values`. Only once [`enabled`] said
/// yes (else the span is `Span::none()`, as `info_span!` gives): the values are made only then.
pub(crate) fn new_span(values: &StartValues<'_>) -> Span {
    Span::new(&METADATA, &METADATA.fields().value_set(values))
}

/// Whether a call span opened now is enabled. What `info_span!` asks before it opens a span:
/// the compile-time and the current level filters, then the callsite's cached interest, then
/// (when the interest is "sometimes") the current subscriber.
#[inline]
pub(crate) fn enabled() -> bool {
    if Level::INFO > STATIC_MAX_LEVEL || Level::INFO > LevelFilter::current() {
        return false;
    }
    let interest = CALLSITE.interest();
    if interest.is_never() {
        return false;
    }
    interest.is_always() || tracing::dispatcher::get_default(|current| current.enabled(&METADATA))
}

#[cfg(test)]
mod tests {
    use http::{Extensions, HeaderMap, Method, Uri};
    use kasal_user_agent::Product;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::{CallSpan, Direction};

    fn call_span() -> Span {
        let call = CallSpan::start(
            &Product::Genie,
            Direction::Client,
            &Method::GET,
            &Uri::from_static("https://h.example/api/2.0/jobs/list"),
            &HeaderMap::new(),
            &Extensions::new(),
        );
        call.span().clone()
    }

    #[test]
    fn the_span_is_enabled_where_an_info_span_would_be() {
        let info = tracing_subscriber::registry().with(LevelFilter::INFO);
        tracing::subscriber::with_default(info, || {
            let span = call_span();
            assert!(!span.is_disabled());
            let metadata = span.metadata().expect("an enabled span has metadata");
            assert_eq!(
                (metadata.name(), metadata.target(), *metadata.level()),
                ("HTTP", "kasal_trace", Level::INFO)
            );
            assert!(metadata.is_span());
            assert_eq!(metadata.fields().len(), 32);
        });
        let warn = tracing_subscriber::registry().with(LevelFilter::WARN);
        tracing::subscriber::with_default(warn, || {
            assert!(call_span().is_disabled());
            assert!(tracing::info_span!("HTTP").is_disabled());
        });
    }

    #[test]
    fn the_constants_name_their_fields() {
        let named = [
            (OTEL_KIND, "otel.kind"),
            (OTEL_NAME, "otel.name"),
            (OTEL_STATUS_CODE, "otel.status_code"),
            (OTEL_STATUS_DESCRIPTION, "otel.status_description"),
            (METHOD, "http.request.method"),
            (METHOD_ORIGINAL, "http.request.method_original"),
            (ROUTE, "http.route"),
            (URL_TEMPLATE, "url.template"),
            (URL_FULL, "url.full"),
            (URL_PATH, "url.path"),
            (URL_SCHEME, "url.scheme"),
            (SERVER_ADDRESS, "server.address"),
            (SERVER_PORT, "server.port"),
            (CLIENT_ADDRESS, "client.address"),
            (USER_AGENT, "user_agent.original"),
            (PROTOCOL_VERSION, "network.protocol.version"),
            (REQUEST_BODY_SIZE, "http.request.body.size"),
            (STATUS_CODE, "http.response.status_code"),
            (RESEND_COUNT, "http.request.resend_count"),
            (RESPONSE_BODY_SIZE, "http.response.body.size"),
            (ERROR_TYPE, "error.type"),
            (PRODUCT, "kasal.product"),
            (OUTCOME, "kasal.outcome"),
            (OPERATION_ID, "kasal.operation_id"),
            (BODY_CUT_SHORT, "kasal.body_cut_short"),
            (EXECUTION_CONTEXT, "execution.context"),
            (CALLER_ID, "caller.id"),
            (OBO_DEV_FALLBACK, "execution.obo_dev_fallback"),
            (REQUEST_MODEL, "gen_ai.request.model"),
            (RESPONSE_MODEL, "gen_ai.response.model"),
            (INPUT_TOKENS, "gen_ai.usage.input_tokens"),
            (OUTPUT_TOKENS, "gen_ai.usage.output_tokens"),
        ];
        assert_eq!(named.len(), NAMES.len());
        for (index, name) in named {
            assert_eq!(fields()[index].name(), name);
            assert_eq!(field_set().field(name).as_ref(), Some(&fields()[index]));
        }
    }
}
