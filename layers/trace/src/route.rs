//! `url.template` inference: the route template of a request path, for spans, records, rollup
//! keys and metric attributes, when the caller gave no [`Route`](crate::Route).
//!
//! [`infer`] tries, in order:
//!
//! 1. the table of Databricks REST API templates ([`DATABRICKS_ROUTES`]): serving endpoints,
//!    vector search, secrets, managed MCP servers, Genie, jobs, SQL statements and warehouses,
//!    Unity Catalog, files and DBFS, workspace, Lakebase, apps, OAuth and the telemetry
//!    endpoints. A match returns the table's `&'static str`: no allocation;
//! 2. otherwise, the path with every id-like segment collapsed to `{id}` ([`collapse_ids`]):
//!    numbers, UUIDs, hex strings, e-mail addresses, long or mixed letter-and-digit tokens and
//!    anything with characters outside `[A-Za-z0-9._~-]`.
//!
//! What it must never do: return a raw id, name or e-mail from the path (cardinality, and paths
//! can hold names that are personal data), take more than linear time, or return an unbounded
//! string: a collapsed template has at most [`MAX_SEGMENTS`] segments (the rest becomes
//! `{rest}`) and at most [`MAX_TEMPLATE_LEN`] bytes.
//!
//! ```
//! use kasal_trace::route;
//!
//! assert_eq!(
//!     route::infer("/serving-endpoints/my-llm/invocations"),
//!     "/serving-endpoints/{name}/invocations"
//! );
//! assert_eq!(
//!     route::infer("/api/2.0/sql/statements/01ef-9a2b?row_limit=10"),
//!     "/api/2.0/sql/statements/{statement_id}"
//! );
//! assert_eq!(route::infer("/v1/orders/123/items/alice@example.com"), "/v1/orders/{id}/items/{id}");
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use crate::last::LastText;

/// Segments kept in a collapsed template; the rest of the path becomes one `{rest}` segment.
pub const MAX_SEGMENTS: usize = 12;

/// Longest collapsed template, in bytes (segments past it become `{rest}`).
pub const MAX_TEMPLATE_LEN: usize = 256;

/// Longest segment kept as it is; a longer one is an id (`{id}`).
const MAX_SEGMENT_LEN: usize = 32;

/// The Databricks REST API route templates [`infer`] recognises, most specific first.
///
/// `{placeholder}` matches one non-empty path segment; a final `{path}` matches one or more
/// (file paths). Paths from the Databricks SDKs (Go, Python, Java) and the REST reference.
pub const DATABRICKS_ROUTES: &[&str] = &[
    // Model serving: data plane (invocations, OpenAI-compatible) and control plane.
    "/serving-endpoints/chat/completions",
    "/serving-endpoints/completions",
    "/serving-endpoints/embeddings",
    "/serving-endpoints/{name}/invocations",
    "/serving-endpoints/{name}/served-models/{served_model_name}/invocations",
    "/api/2.0/serving-endpoints",
    "/api/2.0/serving-endpoints/{name}",
    "/api/2.0/serving-endpoints/{name}/config",
    "/api/2.0/serving-endpoints/{name}/ai-gateway",
    "/api/2.0/serving-endpoints/{name}/rate-limits",
    "/api/2.0/serving-endpoints/{name}/openapi",
    "/api/2.0/serving-endpoints/{name}/metrics",
    "/api/2.0/serving-endpoints/{name}/served-models/{served_model_name}/logs",
    "/api/2.0/serving-endpoints/{name}/served-models/{served_model_name}/build-logs",
    // Vector search.
    "/api/2.0/vector-search/endpoints",
    "/api/2.0/vector-search/endpoints/{endpoint_name}",
    "/api/2.0/vector-search/indexes",
    "/api/2.0/vector-search/indexes/{index_name}",
    "/api/2.0/vector-search/indexes/{index_name}/query",
    "/api/2.0/vector-search/indexes/{index_name}/query-next-page",
    "/api/2.0/vector-search/indexes/{index_name}/scan",
    "/api/2.0/vector-search/indexes/{index_name}/sync",
    "/api/2.0/vector-search/indexes/{index_name}/upsert-data",
    "/api/2.0/vector-search/indexes/{index_name}/delete-data",
    // Secrets.
    "/api/2.0/secrets/get",
    "/api/2.0/secrets/put",
    "/api/2.0/secrets/delete",
    "/api/2.0/secrets/list",
    "/api/2.0/secrets/scopes/list",
    "/api/2.0/secrets/scopes/create",
    "/api/2.0/secrets/scopes/delete",
    "/api/2.0/secrets/acls/get",
    "/api/2.0/secrets/acls/list",
    "/api/2.0/secrets/acls/put",
    "/api/2.0/secrets/acls/delete",
    // Databricks managed MCP servers.
    "/api/2.0/mcp/genie/{genie_space_id}",
    "/api/2.0/mcp/functions/{catalog}/{schema}",
    "/api/2.0/mcp/functions/{catalog}/{schema}/{function}",
    "/api/2.0/mcp/vector-search/{catalog}/{schema}",
    "/api/2.0/mcp/vector-search/{catalog}/{schema}/{index}",
    "/api/2.0/mcp/external/{connection_name}",
    "/api/2.0/mcp/sql",
    // Genie.
    "/api/2.0/genie/spaces",
    "/api/2.0/genie/spaces/{space_id}",
    "/api/2.0/genie/spaces/{space_id}/start-conversation",
    "/api/2.0/genie/spaces/{space_id}/conversations",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/execute-query",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/query-result",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/feedback",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/query-result/{attachment_id}",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/attachments/{attachment_id}/query-result",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/attachments/{attachment_id}/execute-query",
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}/attachments/{attachment_id}/download",
    // Jobs (2.1 and 2.2 share their paths).
    "/api/2.1/jobs/create",
    "/api/2.1/jobs/get",
    "/api/2.1/jobs/list",
    "/api/2.1/jobs/reset",
    "/api/2.1/jobs/update",
    "/api/2.1/jobs/delete",
    "/api/2.1/jobs/run-now",
    "/api/2.1/jobs/runs/submit",
    "/api/2.1/jobs/runs/get",
    "/api/2.1/jobs/runs/get-output",
    "/api/2.1/jobs/runs/list",
    "/api/2.1/jobs/runs/cancel",
    "/api/2.1/jobs/runs/cancel-all",
    "/api/2.1/jobs/runs/delete",
    "/api/2.1/jobs/runs/export",
    "/api/2.1/jobs/runs/repair",
    "/api/2.2/jobs/create",
    "/api/2.2/jobs/get",
    "/api/2.2/jobs/list",
    "/api/2.2/jobs/reset",
    "/api/2.2/jobs/update",
    "/api/2.2/jobs/delete",
    "/api/2.2/jobs/run-now",
    "/api/2.2/jobs/runs/submit",
    "/api/2.2/jobs/runs/get",
    "/api/2.2/jobs/runs/get-output",
    "/api/2.2/jobs/runs/list",
    "/api/2.2/jobs/runs/cancel",
    "/api/2.2/jobs/runs/repair",
    // SQL statement execution and warehouses.
    "/api/2.0/sql/statements",
    "/api/2.0/sql/statements/{statement_id}",
    "/api/2.0/sql/statements/{statement_id}/cancel",
    "/api/2.0/sql/statements/{statement_id}/result/chunks/{chunk_index}",
    "/api/2.0/sql/warehouses",
    "/api/2.0/sql/warehouses/{id}",
    "/api/2.0/sql/warehouses/{id}/start",
    "/api/2.0/sql/warehouses/{id}/stop",
    // Unity Catalog.
    "/api/2.1/unity-catalog/catalogs",
    "/api/2.1/unity-catalog/catalogs/{name}",
    "/api/2.1/unity-catalog/schemas",
    "/api/2.1/unity-catalog/schemas/{full_name}",
    "/api/2.1/unity-catalog/tables",
    "/api/2.1/unity-catalog/tables/{full_name}",
    "/api/2.1/unity-catalog/tables/{full_name}/exists",
    "/api/2.1/unity-catalog/table-summaries",
    "/api/2.1/unity-catalog/volumes",
    "/api/2.1/unity-catalog/volumes/{name}",
    "/api/2.1/unity-catalog/functions",
    "/api/2.1/unity-catalog/functions/{name}",
    "/api/2.1/unity-catalog/permissions/{securable_type}/{full_name}",
    "/api/2.1/unity-catalog/effective-permissions/{securable_type}/{full_name}",
    // Files (Unity Catalog volumes) and DBFS.
    "/api/2.0/fs/files/{path}",
    "/api/2.0/fs/directories/{path}",
    "/api/2.0/dbfs/get-status",
    "/api/2.0/dbfs/list",
    "/api/2.0/dbfs/read",
    "/api/2.0/dbfs/put",
    "/api/2.0/dbfs/create",
    "/api/2.0/dbfs/add-block",
    "/api/2.0/dbfs/close",
    "/api/2.0/dbfs/delete",
    "/api/2.0/dbfs/mkdirs",
    "/api/2.0/dbfs/move",
    // Workspace objects.
    "/api/2.0/workspace/get-status",
    "/api/2.0/workspace/list",
    "/api/2.0/workspace/export",
    "/api/2.0/workspace/import",
    "/api/2.0/workspace/mkdirs",
    "/api/2.0/workspace/delete",
    // Lakebase (database instances).
    "/api/2.0/database/instances",
    "/api/2.0/database/instances/{name}",
    "/api/2.0/database/credentials",
    // Apps.
    "/api/2.0/apps",
    "/api/2.0/apps/{name}",
    "/api/2.0/apps/{name}/deployments",
    "/api/2.0/apps/{name}/deployments/{deployment_id}",
    // MLflow.
    "/api/2.0/mlflow/experiments/get-by-name",
    "/api/2.0/mlflow/experiments/create",
    "/api/2.0/mlflow/runs/create",
    "/api/2.0/mlflow/runs/update",
    "/api/2.0/mlflow/runs/log-batch",
    "/api/2.0/mlflow/runs/search",
    "/api/3.0/mlflow/traces",
    "/api/3.0/mlflow/traces/{trace_id}",
    // Identity and OAuth.
    "/api/2.0/preview/scim/v2/Me",
    "/oidc/v1/token",
    // Telemetry and feature flags (the exporter's own calls).
    "/telemetry-ext",
    "/telemetry-unauth",
    "/api/2.0/connector-service/feature-flags/{client}/{version}",
];

/// The `url.template` of a request path (a query or fragment is ignored): the Databricks route
/// template if [`DATABRICKS_ROUTES`] has one, else the path with id-like segments collapsed
/// ([`collapse_ids`]). See the [module docs](self).
pub fn infer(path: &str) -> Cow<'static, str> {
    let path = strip_query(path);
    match lookup(path) {
        Some(template) => Cow::Borrowed(template),
        None => collapse_ids(path),
    }
}

/// [`infer`] as a shared string, as spans and records hold it: a table match clones a cached
/// `Arc` (no allocation); a collapsed path allocates once.
pub fn infer_shared(path: &str) -> Arc<str> {
    infer_path_shared(strip_query(path))
}

/// [`infer_shared`] for a path that has no query or fragment (`Uri::path`): what every client
/// call span asks.
pub(crate) fn infer_path_shared(path: &str) -> Arc<str> {
    match lookup_index(path) {
        Some(index) => table().shared[index].clone(),
        None => Arc::from(collapse_ids(path)),
    }
}

/// [`infer_path_shared`], and, for a table match, the template's index in
/// [`DATABRICKS_ROUTES`] and whether [`redact`](crate::redact()) would leave the path as it
/// is (no segment holds a needle of its prefilter: the literal segments were checked when the
/// table was built, so only the others are read; a needle never holds a `/`, so the path is
/// clean exactly when each segment is).
///
/// A thread keeps its last clean table match (a path of at most [`LAST_PATH_MAX`] bytes that
/// passed the prefilter: never one that may hold a secret) and answers the same path again
/// from it: a client calls the same endpoint (a statement it polls, a serving endpoint) call
/// after call, and a compare is a fraction of a walk.
pub(crate) fn infer_path_indexed(path: &str) -> (Arc<str>, Option<(usize, bool)>) {
    crate::last::answer(
        &LAST_MATCH,
        path,
        LAST_PATH_MAX,
        |row| (table().shared[row].clone(), Some((row, true))),
        || {
            let found = walk_path(path);
            let clean_row = match found.1 {
                Some((row, true)) => Some(row),
                _ => None,
            };
            (found, clean_row)
        },
    )
}

/// The longest path a thread keeps with its match (see [`infer_path_indexed`]), in bytes.
const LAST_PATH_MAX: usize = 256;

thread_local! {
    /// A thread's last clean table match: the path and its row.
    static LAST_MATCH: RefCell<LastText<usize>> = const { RefCell::new(LastText::new()) };
}

/// [`infer_path_indexed`] without the thread's last match.
fn walk_path(path: &str) -> (Arc<str>, Option<(usize, bool)>) {
    match table().walk(0, path.as_bytes(), 0) {
        Some((index, clean)) => (table().shared[index].clone(), Some((index, clean))),
        None => (Arc::from(collapse_ids(path)), None),
    }
}

/// The [`DATABRICKS_ROUTES`] template that matches `path` (without query), if any.
pub fn lookup(path: &str) -> Option<&'static str> {
    lookup_index(strip_query(path)).map(|index| DATABRICKS_ROUTES[index])
}

/// The index in [`DATABRICKS_ROUTES`] of the template that matches `path` (without query): the
/// first one in the table's order, as if each row were tried in turn. A walk down a trie of
/// the templates' segments (literal segments first, then a placeholder), one pass over the
/// path, no allocation, no hashing.
fn lookup_index(path: &str) -> Option<usize> {
    table().walk(0, path.as_bytes(), 0).map(|(index, _)| index)
}

/// The table as a trie over segments: each node has its literal children, at most one
/// placeholder child (`{name}`: any one segment), and the rows that end there (`end`) or go on
/// with a final `{path}` (`rest`: one or more segments). Built once; a tree, so a lookup visits
/// each node at most once whatever the path.
struct Table {
    nodes: Vec<Node>,
    /// Each row's template as the `Arc` spans and records share.
    shared: Box<[Arc<str>]>,
}

#[derive(Default)]
struct Node {
    /// The first byte of each literal child, in the order of `literals`: one byte compare per
    /// child rejects nearly all of them before any other work (no scan for the segment's end).
    firsts: Vec<u8>,
    /// `(segment, child, clean)`: `clean` when the redaction prefilter passes the segment.
    literals: Vec<(&'static [u8], usize, bool)>,
    placeholder: Option<usize>,
    /// The first row that ends at this node.
    end: Option<usize>,
    /// The first row that ends at this node with a final `{path}`.
    rest: Option<usize>,
}

impl Table {
    /// The first row (lowest index) that matches the segments of `path` from byte `at` on,
    /// from `node` on, and whether those segments are clean (see [`infer_path_indexed`]).
    ///
    /// A literal child is matched in place (its bytes, then a `/` or the end of the path), so
    /// only a placeholder's segment is scanned for its end. A node with one way on (only
    /// literals, or only a placeholder) is followed in a loop; only a node where two ways may
    /// match (a literal and a placeholder, or a `{path}` row) recurses, to keep the first row.
    fn walk(&self, mut node: usize, path: &[u8], mut at: usize) -> Option<(usize, bool)> {
        let mut clean = true;
        loop {
            let here = &self.nodes[node];
            // Empty segments are skipped (`//a` is `/a`).
            let start = match path.get(at..)?.iter().position(|&byte| byte != b'/') {
                Some(skip) => at + skip,
                None => return here.end.map(|row| (row, clean)),
            };
            let rest = &path[start..];
            let literal = here.literal(rest);
            match (literal, here.placeholder, here.rest) {
                (Some((end, child, literal_clean)), None, None) => {
                    clean &= literal_clean;
                    (node, at) = (child, start + end);
                }
                (None, Some(child), None) => {
                    let end = segment_end(rest);
                    clean = clean && !crate::redact::might_hold_secret_bytes(&rest[..end]);
                    (node, at) = (child, start + end);
                }
                (None, None, None) => return None,
                _ => {
                    let found = self.branch(here, path, start, literal);
                    return found.map(|(row, rest)| (row, rest && clean));
                }
            }
        }
    }

    /// [`walk`](Self::walk) at a node where more than one way may match the segment at
    /// `start` (`literal` is the node's literal child for it): the first row of them all.
    fn branch(
        &self,
        node: &Node,
        path: &[u8],
        start: usize,
        literal: Option<(usize, usize, bool)>,
    ) -> Option<(usize, bool)> {
        let rest = &path[start..];
        // A `{path}` row matches whatever follows (one segment or more).
        let mut best = node.rest.map(|row| (row, all_clean(rest)));
        if let Some((end, child, clean)) = literal {
            let found = self.walk(child, path, start + end);
            best = first(best, found.map(|(row, rest)| (row, rest && clean)));
        }
        if let Some(child) = node.placeholder {
            let end = segment_end(rest);
            let found = self.walk(child, path, start + end);
            let clean = || !crate::redact::might_hold_secret_bytes(&rest[..end]);
            best = first(best, found.map(|(row, rest)| (row, rest && clean())));
        }
        best
    }

    fn child(&mut self, node: usize, segment: &'static str) -> usize {
        let existing = match segment.starts_with('{') {
            true => self.nodes[node].placeholder,
            false => self.nodes[node]
                .literal(segment.as_bytes())
                .map(|(_, child, _)| child),
        };
        if let Some(child) = existing {
            return child;
        }
        let child = self.nodes.len();
        self.nodes.push(Node::default());
        match segment.starts_with('{') {
            true => self.nodes[node].placeholder = Some(child),
            false => {
                let clean = !crate::redact::might_hold_secret(segment);
                let parent = &mut self.nodes[node];
                // Table segments are never empty (`segments` skips empty ones).
                parent.firsts.push(segment.as_bytes()[0]);
                parent.literals.push((segment.as_bytes(), child, clean));
            }
        }
        child
    }
}

impl Node {
    /// The literal child whose segment starts `rest` (followed by `/` or the end): the
    /// segment's length, the child, and whether the segment is clean. Literals of one node are
    /// distinct whole segments, so at most one matches.
    #[inline]
    fn literal(&self, rest: &[u8]) -> Option<(usize, usize, bool)> {
        let first = *rest.first()?;
        for (at, &candidate) in self.firsts.iter().enumerate() {
            if candidate != first {
                continue;
            }
            let (literal, child, clean) = self.literals[at];
            let whole = rest.get(literal.len()).is_none_or(|&next| next == b'/');
            if whole && rest.starts_with(literal) {
                return Some((literal.len(), child, clean));
            }
        }
        None
    }
}

/// The match with the lower row index, either possibly absent.
fn first(a: Option<(usize, bool)>, b: Option<(usize, bool)>) -> Option<(usize, bool)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The length of the segment `rest` starts with (up to the next `/`, which is ASCII: a char
/// boundary).
fn segment_end(rest: &[u8]) -> usize {
    rest.iter()
        .position(|&byte| byte == b'/')
        .unwrap_or(rest.len())
}

/// Whether every segment of `path` passes the redaction prefilter.
fn all_clean(path: &[u8]) -> bool {
    path.split(|&byte| byte == b'/')
        .all(|segment| !crate::redact::might_hold_secret_bytes(segment))
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Table {
            nodes: vec![Node::default()],
            shared: DATABRICKS_ROUTES.iter().map(|&t| Arc::from(t)).collect(),
        };
        for (index, template) in DATABRICKS_ROUTES.iter().enumerate() {
            let segments: Vec<&'static str> = segments(template).collect();
            let rest = segments.last() == Some(&"{path}");
            let fixed = &segments[..segments.len() - usize::from(rest)];
            let mut node = 0;
            for &segment in fixed {
                node = table.child(node, segment);
            }
            let slot = match rest {
                true => &mut table.nodes[node].rest,
                false => &mut table.nodes[node].end,
            };
            // Earlier rows win, as when the rows are tried in order.
            slot.get_or_insert(index);
        }
        table
    })
}

/// `path` (without query) with every id-like segment replaced by `{id}`, empty segments
/// dropped, at most [`MAX_SEGMENTS`] segments and [`MAX_TEMPLATE_LEN`] bytes (the rest becomes
/// `{rest}`). Borrows nothing from `path` when nothing needed collapsing.
pub fn collapse_ids(path: &str) -> Cow<'static, str> {
    let path = strip_query(path);
    let mut out = String::with_capacity(path.len().min(MAX_TEMPLATE_LEN) + 8);
    for (index, segment) in segments(path).enumerate() {
        let piece = if is_id_like(segment) { "{id}" } else { segment };
        if index == MAX_SEGMENTS || out.len() + 1 + piece.len() > MAX_TEMPLATE_LEN - "/{rest}".len()
        {
            out.push_str("/{rest}");
            break;
        }
        out.push('/');
        out.push_str(piece);
    }
    if out.is_empty() {
        return Cow::Borrowed("/");
    }
    Cow::Owned(out)
}

/// Whether a path segment is an identifier rather than a fixed part of the route: numbers,
/// UUIDs, hex strings (8+ characters with a digit), e-mail addresses, segments longer than 32
/// bytes, tokens of 8+ characters with 2+ digits, and anything with a character outside
/// `[A-Za-z0-9._~-]` (percent-encoding, `@`, `:`, `=`, ...).
pub fn is_id_like(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    if bytes.len() > MAX_SEGMENT_LEN {
        return true;
    }
    let mut digits = 0;
    let mut hex = true;
    for &byte in bytes {
        match byte {
            b'0'..=b'9' => digits += 1,
            b'a'..=b'f' | b'A'..=b'F' => {}
            // UUID dashes keep a segment "hex" for this test.
            b'-' => {}
            b'g'..=b'z' | b'G'..=b'Z' | b'.' | b'_' | b'~' => hex = false,
            // Outside the unreserved set: percent-encoded, e-mail, `key=value`, ...
            _ => return true,
        }
    }
    let dashes = bytes.iter().filter(|&&b| b == b'-').count();
    // A version such as `2.0` or `v1` is kept: it has a dot or a letter and few digits.
    (digits == bytes.len())
        || (hex && digits > 0 && bytes.len() - dashes >= 8)
        || (digits >= 2 && bytes.len() >= 8)
}

/// The path without its query string or fragment.
fn strip_query(path: &str) -> &str {
    let end = path
        .bytes()
        .position(|byte| byte == b'?' || byte == b'#')
        .unwrap_or(path.len());
    // `?` and `#` are ASCII: `end` is a char boundary.
    &path[..end]
}

/// The non-empty segments of a path (a byte scan: this runs on every client call).
fn segments(path: &str) -> Segments<'_> {
    Segments { rest: path }
}

#[derive(Clone)]
struct Segments<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.rest.as_bytes();
        let start = bytes.iter().position(|&byte| byte != b'/')?;
        let end = bytes[start..]
            .iter()
            .position(|&byte| byte == b'/')
            .map_or(bytes.len(), |at| start + at);
        // `/` is ASCII: both ends are char boundaries.
        let segment = &self.rest[start..end];
        self.rest = &self.rest[end..];
        Some(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a template's placeholders with realistic values (names, ids, nested file paths).
    fn example(template: &str) -> String {
        template
            .replace(
                "{path}",
                "Volumes/main/raw/alice@example.com/report 2024.csv",
            )
            .replace("{statement_id}", "01ef9a2b-3c4d-1e2f-8a9b-0c1d2e3f4a5b")
            .replace("{chunk_index}", "3")
            .replace("{space_id}", "01ef1234abcd5678ef90")
            .replace("{conversation_id}", "01ef5678abcd1234ef90")
            .replace("{message_id}", "01efabcd12345678ef90")
            .replace("{attachment_id}", "01ef0000aaaa1111bbbb")
            .replace("{id}", "abc123def4567890")
            .replace("{full_name}", "main.sales.orders")
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "my-thing_01"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The table's meaning, row by row: the first row whose segments match (`{x}` any one
    /// segment, a final `{path}` one or more).
    fn first_matching_row(path: &str) -> Option<usize> {
        let parts: Vec<&str> = segments(strip_query(path)).collect();
        DATABRICKS_ROUTES.iter().position(|template| {
            let row: Vec<&str> = segments(template).collect();
            let rest = row.last() == Some(&"{path}");
            let fixed = &row[..row.len() - usize::from(rest)];
            let count_ok = match rest {
                true => parts.len() > fixed.len(),
                false => parts.len() == fixed.len(),
            };
            count_ok
                && fixed
                    .iter()
                    .zip(&parts)
                    .all(|(pattern, segment)| pattern.starts_with('{') || pattern == segment)
        })
    }

    #[test]
    fn the_trie_finds_the_first_matching_row() {
        let mut paths = vec![String::new(), "/".into(), "/api".into(), "/api/2.0".into()];
        for &template in DATABRICKS_ROUTES {
            let filled = example(template);
            let parts: Vec<&str> = filled.split('/').collect();
            // The row itself, every prefix of it, and it with one more segment or two.
            for end in 0..=parts.len() {
                paths.push(parts[..end].join("/"));
            }
            paths.push(format!("{filled}/extra"));
            paths.push(format!("{filled}/extra/more"));
            // Placeholders filled with the literal segments of other rows.
            paths.push(
                template
                    .replace("{name}", "chat")
                    .replace("{space_id}", "spaces"),
            );
            paths.push(template.replace(['{', '}'], ""));
        }
        for path in &paths {
            assert_eq!(
                lookup_index(strip_query(path)),
                first_matching_row(path),
                "{path}"
            );
        }
    }

    #[test]
    fn url_full_of_a_table_path_is_what_redaction_gives() {
        use crate::redact::RedactedUri;
        let fillers = [
            "abc",
            "token=abc",
            "dapi0123456789",
            "a@b.c",
            "x%2Fy",
            "Bearer",
            "home",
        ];
        for &template in DATABRICKS_ROUTES {
            for filler in fillers {
                let path = template
                    .split('/')
                    .map(|segment| match segment.starts_with('{') {
                        true => filler,
                        false => segment,
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                for tail in ["/?page=2", ""] {
                    let Ok(uri) = format!("https://h.example{path}{tail}").parse::<http::Uri>()
                    else {
                        // A path that parses with the query parses without it too.
                        assert!(!tail.is_empty(), "{path}");
                        break;
                    };
                    let clean = infer_path_indexed(uri.path())
                        .1
                        .is_some_and(|(_, clean)| clean);
                    assert_eq!(
                        RedactedUri::new(&uri).path_clean(clean).to_string(),
                        RedactedUri::new(&uri).to_string(),
                        "{uri}"
                    );
                }
            }
        }
        // Secrets in a `{path}` tail are seen.
        let (_, found) = infer_path_indexed("/api/2.0/fs/files/Volumes/a/token=abc");
        assert!(matches!(found, Some((_, false))), "{found:?}");
        let (_, found) = infer_path_indexed("/api/2.0/fs/files/Volumes/a/b.csv");
        assert!(matches!(found, Some((_, true))), "{found:?}");
    }

    #[test]
    fn the_last_clean_match_answers_a_repeat_and_nothing_else() {
        let paths = [
            "/api/2.0/sql/statements/01ef-9a2b",
            "/api/2.0/sql/statements/01ef-9a2b",
            "/api/2.0/sql/statements/01ef-9a2c",
            "/api/2.0/fs/files/Volumes/a/token=abc",
            "/api/2.0/fs/files/Volumes/a/token=abc",
            "/v1/orders/123",
            "/api/2.0/sql/statements/01ef-9a2c",
            "/api/2.0/sql/statements",
        ];
        for path in paths {
            assert_eq!(infer_path_indexed(path), walk_path(path), "{path}");
        }
        let long = format!("/api/2.0/fs/files/{}", "a/".repeat(LAST_PATH_MAX));
        assert_eq!(infer_path_indexed(&long), walk_path(&long));
        let kept = || LAST_MATCH.with(|last| last.borrow().kept().map(str::to_owned));
        infer_path_indexed("/api/2.0/sql/statements/01ef-9a2b");
        assert_eq!(kept().as_deref(), Some("/api/2.0/sql/statements/01ef-9a2b"));
        // A path that may hold a secret is never kept, nor one that is not in the table: the
        // last clean match stays.
        infer_path_indexed("/api/2.0/fs/files/Volumes/a/token=abc");
        assert_eq!(kept().as_deref(), Some("/api/2.0/sql/statements/01ef-9a2b"));
        infer_path_indexed("/v1/orders/123");
        assert_eq!(kept().as_deref(), Some("/api/2.0/sql/statements/01ef-9a2b"));
    }

    #[test]
    fn every_table_row_matches_itself_filled_in() {
        for &template in DATABRICKS_ROUTES {
            let path = example(template);
            assert_eq!(infer(&path), template, "path {path}");
            let with_query = format!("{path}?name=alice&token=x#frag");
            assert_eq!(infer(&with_query), template, "path {with_query}");
        }
    }

    #[test]
    fn table_rows_are_distinct_and_well_formed() {
        for (i, &a) in DATABRICKS_ROUTES.iter().enumerate() {
            assert!(a.starts_with('/'), "{a}");
            assert!(lookup(a).is_some(), "{a}");
            // No earlier row shadows a later one.
            assert_eq!(lookup(&example(a)), Some(a), "{a} is shadowed");
            for &b in &DATABRICKS_ROUTES[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn named_rows() {
        let rows = [
            (
                "/serving-endpoints/databricks-meta-llama/invocations",
                "/serving-endpoints/{name}/invocations",
            ),
            (
                "/serving-endpoints/chat/completions",
                "/serving-endpoints/chat/completions",
            ),
            (
                "/api/2.0/vector-search/indexes/main.default.docs_index/query",
                "/api/2.0/vector-search/indexes/{index_name}/query",
            ),
            ("/api/2.0/secrets/get", "/api/2.0/secrets/get"),
            (
                "/api/2.0/secrets/scopes/list",
                "/api/2.0/secrets/scopes/list",
            ),
            (
                "/api/2.0/mcp/genie/01ef1234abcd",
                "/api/2.0/mcp/genie/{genie_space_id}",
            ),
            (
                "/api/2.0/mcp/functions/system/ai",
                "/api/2.0/mcp/functions/{catalog}/{schema}",
            ),
            (
                "/api/2.0/genie/spaces/abc/conversations/def/messages/ghi",
                "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}",
            ),
            ("/api/2.1/jobs/runs/get", "/api/2.1/jobs/runs/get"),
            (
                "/api/2.0/sql/statements/01ef-aa/result/chunks/7",
                "/api/2.0/sql/statements/{statement_id}/result/chunks/{chunk_index}",
            ),
            (
                "/api/2.1/unity-catalog/tables/main.sales.orders",
                "/api/2.1/unity-catalog/tables/{full_name}",
            ),
            (
                "/api/2.1/unity-catalog/volumes/main.raw.landing",
                "/api/2.1/unity-catalog/volumes/{name}",
            ),
            (
                "/api/2.0/fs/files/Volumes/main/raw/landing/a.csv",
                "/api/2.0/fs/files/{path}",
            ),
            ("/api/2.0/fs/files/x", "/api/2.0/fs/files/{path}"),
        ];
        for (path, template) in rows {
            assert_eq!(infer(path), template, "{path}");
        }
        // `{path}` needs at least one segment; a placeholder is never empty.
        assert_eq!(infer("/api/2.0/fs/files"), "/api/2.0/fs/files");
        assert_eq!(infer("/api/2.0/fs/files/"), "/api/2.0/fs/files");
        assert_eq!(
            infer("/serving-endpoints//invocations"),
            "/serving-endpoints/invocations"
        );
    }

    #[test]
    fn collapses_id_like_segments() {
        let rows = [
            ("/v1/orders/123", "/v1/orders/{id}"),
            (
                "/things/550e8400-e29b-41d4-a716-446655440000/parts",
                "/things/{id}/parts",
            ),
            ("/blobs/deadbeefcafe0123", "/blobs/{id}"),
            ("/users/alice@example.com/profile", "/users/{id}/profile"),
            ("/users/alice%40example.com", "/users/{id}"),
            ("/runs/run20240101x", "/runs/{id}"),
            ("/k/AKIAABCDEFGHIJKLMNOPQRSTUVWXYZ123456", "/k/{id}"),
            ("/key=value/x", "/{id}/x"),
            // Versions and words stay.
            ("/api/2.0/clusters/list", "/api/2.0/clusters/list"),
            ("/v1/health", "/v1/health"),
            ("/oauth2/authorize", "/oauth2/authorize"),
            ("/", "/"),
            ("", "/"),
            ("//a//b/", "/a/b"),
            ("/x/42?q=alice#f", "/x/{id}"),
        ];
        for (path, template) in rows {
            assert_eq!(infer(path), template, "{path}");
        }
    }

    #[test]
    fn id_rules_one_by_one() {
        for id in [
            "0",
            "1234567890",
            "550e8400-e29b-41d4-a716-446655440000",
            "01ef9a2b3c4d1e2f",
            "DEADBEEF01",
            "a@b.c",
            "abcd1234",
            "x".repeat(33).as_str(),
            "a%20b",
            "a:b",
        ] {
            assert!(is_id_like(id), "{id} is an id");
        }
        for word in [
            "api",
            "2.0",
            "v1",
            "v2.1",
            "serving-endpoints",
            "deadbeef",
            "face",
            "Me",
            "my_index",
            "oauth2",
            "",
        ] {
            assert!(!is_id_like(word), "{word} is not an id");
        }
    }

    #[test]
    fn shared_is_the_same_template_and_reuses_table_rows() {
        let a = infer_shared("/api/2.0/secrets/get?scope=s");
        let b = infer_shared("/api/2.0/secrets/get");
        assert_eq!(&*a, "/api/2.0/secrets/get");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*infer_shared("/v1/orders/9"), "/v1/orders/{id}");
    }

    #[test]
    fn output_is_bounded() {
        let deep = "/seg".repeat(1000);
        let template = infer(&deep);
        assert!(template.len() <= MAX_TEMPLATE_LEN);
        assert!(template.ends_with("/{rest}"));
        assert_eq!(template.matches('/').count(), MAX_SEGMENTS + 1);

        let wide = format!("/{}", "abcdefghijklmnopqrstuvwxyzABCDEF/".repeat(50));
        let template = infer(&wide);
        assert!(template.len() <= MAX_TEMPLATE_LEN, "{}", template.len());
        assert!(template.ends_with("/{rest}"));
    }

    #[test]
    fn linear_on_hostile_input() {
        // A long path of separators and near-matches finishes fast and stays bounded.
        let hostile = "/api/2.0/genie/spaces/".repeat(20_000);
        let start = std::time::Instant::now();
        let template = infer(&hostile);
        assert!(template.len() <= MAX_TEMPLATE_LEN);
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn ten_thousand_raw_paths_give_few_templates() {
        let mut templates = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let path = match i % 8 {
                0 => format!("/serving-endpoints/endpoint-{}/invocations", i % 977),
                1 => format!("/api/2.0/sql/statements/{:08x}-aaaa-bbbb-cccc-{i:012}", i),
                2 => format!("/api/2.0/genie/spaces/{i:x}0000/conversations/{i}/messages"),
                3 => format!("/api/2.0/fs/files/Volumes/main/raw/user{i}/file-{i}.csv"),
                4 => format!("/v1/orders/{i}/items/{}", i * 7),
                5 => format!("/users/user{i}@example.com/settings"),
                6 => format!("/blobs/{:016x}", u64::from(i) * 0x9e37_79b9),
                _ => format!("/api/2.1/unity-catalog/tables/main.schema_{i}.table_{i}"),
            };
            templates.insert(infer(&path).into_owned());
        }
        assert!(templates.len() <= 8, "{templates:?}");
    }
}
