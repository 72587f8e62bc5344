//! The Kasal product list and the `kasal_<product>` token.
//!
//! `Product` is the one place the product tokens are spelled. Parsing (`FromStr`,
//! [`Product::from_user_agent`]) maps a known token back to its variant, so a token has exactly
//! one representation. Parsing never splits a token on `_`: products such as `crew_gen` contain
//! underscores, so the token ends at the `/` before the version.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{PRODUCT_CHARS, UserAgentError, Violation, check};

/// The prefix of every Kasal User-Agent token: `kasal_<product>/<version>`.
pub(crate) const TOKEN_PREFIX: &str = "kasal_";

/// A Kasal product: the `<product>` in `kasal_<product>/<version>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Product {
    /// `jobs`
    Jobs,
    /// `genie`
    Genie,
    /// `vectorsearch`
    VectorSearch,
    /// `mcp`
    Mcp,
    /// `lakebase`
    Lakebase,
    /// `mlflow`
    Mlflow,
    /// `secret`
    Secret,
    /// `agent`
    Agent,
    /// `guardrail`
    Guardrail,
    /// `embedding`
    Embedding,
    /// `llm`
    Llm,
    /// `name_gen`
    NameGen,
    /// `task_gen`
    TaskGen,
    /// `agent_gen`
    AgentGen,
    /// `crew_gen`
    CrewGen,
    /// `template_gen`
    TemplateGen,
    /// `prompt_improve`
    PromptImprove,
    /// `intent`
    Intent,
    /// `conn_test`
    ConnTest,
    /// `agentbricks`
    AgentBricks,
    /// `deployment`
    Deployment,
    /// `volume`
    Volume,
    /// `dashboard`
    Dashboard,
    /// `powerbi`
    PowerBi,
    /// `telemetry`: the telemetry exporter's own calls.
    Telemetry,
    /// A custom product (`^[0-9a-z_]{1,64}$`), built with [`Product::custom`]: the name inside a
    /// [`CustomProduct`] has always been validated.
    Custom(CustomProduct),
}

/// The validated name of a [`Product::Custom`]. Only [`Product::custom`] (and parsing) make one,
/// so an invalid product cannot exist and rendering a User-Agent cannot fail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomProduct(Arc<str>);

impl CustomProduct {
    /// The name, e.g. `"my_tool"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Product {
    /// Every built-in product (all but [`Product::Custom`]), in declaration order.
    pub const KNOWN: &'static [Product] = &[
        Product::Jobs,
        Product::Genie,
        Product::VectorSearch,
        Product::Mcp,
        Product::Lakebase,
        Product::Mlflow,
        Product::Secret,
        Product::Agent,
        Product::Guardrail,
        Product::Embedding,
        Product::Llm,
        Product::NameGen,
        Product::TaskGen,
        Product::AgentGen,
        Product::CrewGen,
        Product::TemplateGen,
        Product::PromptImprove,
        Product::Intent,
        Product::ConnTest,
        Product::AgentBricks,
        Product::Deployment,
        Product::Volume,
        Product::Dashboard,
        Product::PowerBi,
        Product::Telemetry,
    ];

    /// A product by name, validated as `^[0-9a-z_]{1,64}$` and not starting with `kasal_`.
    ///
    /// A name that is a built-in token returns the built-in variant, so
    /// `Product::custom("mcp")` is `Product::Mcp`.
    ///
    /// ```
    /// use kasal_user_agent::Product;
    ///
    /// assert_eq!(Product::custom("crew_gen").unwrap(), Product::CrewGen);
    /// assert_eq!(Product::custom("my_tool").unwrap().as_str(), "my_tool");
    /// assert!(Product::custom("My Tool").is_err());
    /// ```
    pub fn custom(name: &str) -> Result<Product, UserAgentError> {
        let invalid = |violation| UserAgentError::InvalidProduct {
            name: name.to_owned(),
            violation,
        };
        check(name, PRODUCT_CHARS).map_err(invalid)?;
        if name.starts_with(TOKEN_PREFIX) {
            return Err(invalid(Violation::ReservedPrefix));
        }
        Ok(Product::known(name).unwrap_or_else(|| Product::Custom(CustomProduct(Arc::from(name)))))
    }

    /// The product of the first `kasal_<product>/...` token in a User-Agent string, wherever it
    /// stands among the other tokens.
    ///
    /// The product ends at the `/`, so multi-underscore products round-trip:
    ///
    /// ```
    /// use kasal_user_agent::Product;
    ///
    /// let ua = "python-requests/2.31 kasal_crew_gen/0.1.0 other/1";
    /// assert_eq!(Product::from_user_agent(ua), Some(Product::CrewGen));
    /// assert_eq!(Product::from_user_agent("curl/8.5.0"), None);
    /// ```
    pub fn from_user_agent(user_agent: &str) -> Option<Product> {
        user_agent.split_ascii_whitespace().find_map(|token| {
            let (name, _version) = token.strip_prefix(TOKEN_PREFIX)?.split_once('/')?;
            Product::custom(name).ok()
        })
    }

    /// The built-in variant spelled `token`, if any.
    fn known(token: &str) -> Option<Product> {
        Product::KNOWN.iter().find(|p| p.as_str() == token).cloned()
    }

    /// The exact token, e.g. `"crew_gen"`.
    pub fn as_str(&self) -> &str {
        match self {
            Product::Jobs => "jobs",
            Product::Genie => "genie",
            Product::VectorSearch => "vectorsearch",
            Product::Mcp => "mcp",
            Product::Lakebase => "lakebase",
            Product::Mlflow => "mlflow",
            Product::Secret => "secret",
            Product::Agent => "agent",
            Product::Guardrail => "guardrail",
            Product::Embedding => "embedding",
            Product::Llm => "llm",
            Product::NameGen => "name_gen",
            Product::TaskGen => "task_gen",
            Product::AgentGen => "agent_gen",
            Product::CrewGen => "crew_gen",
            Product::TemplateGen => "template_gen",
            Product::PromptImprove => "prompt_improve",
            Product::Intent => "intent",
            Product::ConnTest => "conn_test",
            Product::AgentBricks => "agentbricks",
            Product::Deployment => "deployment",
            Product::Volume => "volume",
            Product::Dashboard => "dashboard",
            Product::PowerBi => "powerbi",
            Product::Telemetry => "telemetry",
            Product::Custom(name) => name.as_str(),
        }
    }
}

impl fmt::Display for Product {
    /// The bare token, e.g. `crew_gen` (without `kasal_`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Product {
    type Err = UserAgentError;

    /// Parses a token with or without the `kasal_` prefix: `mcp` and `kasal_mcp` are both
    /// `Product::Mcp`. Unknown valid names become `Product::Custom`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Product::custom(s.strip_prefix(TOKEN_PREFIX).unwrap_or(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_lists_every_builtin_once() {
        assert_eq!(Product::KNOWN.len(), 25);
        let mut tokens: Vec<&str> = Product::KNOWN.iter().map(Product::as_str).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), 25, "duplicate token in KNOWN");
        assert!(
            !Product::KNOWN
                .iter()
                .any(|p| matches!(p, Product::Custom(_)))
        );
        assert!(Product::KNOWN.contains(&Product::Telemetry));
    }

    #[test]
    fn custom_with_a_builtin_name_is_the_builtin() {
        for product in Product::KNOWN {
            assert_eq!(&Product::custom(product.as_str()).unwrap(), product);
        }
        assert_eq!(
            Product::custom("my_tool_2").unwrap(),
            Product::Custom(CustomProduct(Arc::from("my_tool_2")))
        );
    }

    #[test]
    fn from_str_accepts_bare_and_prefixed_tokens() {
        for product in Product::KNOWN {
            let bare: Product = product.as_str().parse().unwrap();
            let prefixed: Product = format!("kasal_{product}").parse().unwrap();
            assert_eq!(&bare, product);
            assert_eq!(&prefixed, product);
        }
        assert_eq!("mcp".parse::<Product>().unwrap(), Product::Mcp);
        assert_eq!("kasal_mcp".parse::<Product>().unwrap(), Product::Mcp);
        assert_eq!(
            "kasal_my_tool".parse::<Product>().unwrap(),
            Product::custom("my_tool").unwrap()
        );
        assert!("kasal_".parse::<Product>().is_err());
        assert!("MCP".parse::<Product>().is_err());
    }

    #[test]
    fn display_is_the_bare_token() {
        assert_eq!(Product::CrewGen.to_string(), "crew_gen");
        assert_eq!(Product::custom("x_y").unwrap().to_string(), "x_y");
    }

    fn product_error(name: &str) -> Violation {
        match Product::custom(name) {
            Err(UserAgentError::InvalidProduct { name: n, violation }) => {
                assert_eq!(n, name, "the error names the bad input");
                violation
            }
            other => panic!("{name:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn rejects_every_invalid_name_class() {
        assert_eq!(product_error(""), Violation::Empty);
        for (name, ch, at) in [
            ("my tool", ' ', 2),
            ("my\rtool", '\r', 2),
            ("my\ntool", '\n', 2),
            ("tøol", 'ø', 1),
            ("my/tool", '/', 2),
            ("MyTool", 'M', 0),
            ("my-tool", '-', 2),
            ("my.tool", '.', 2),
        ] {
            assert_eq!(
                product_error(name),
                Violation::Character {
                    ch,
                    at,
                    allowed: "[0-9a-z_]"
                },
                "{name:?}"
            );
        }
        assert_eq!(
            product_error(&"a".repeat(65)),
            Violation::TooLong { len: 65, max: 64 }
        );
        assert!(Product::custom(&"a".repeat(64)).is_ok());
        assert_eq!(product_error("kasal_mcp"), Violation::ReservedPrefix);
    }

    #[test]
    fn error_message_names_the_input() {
        let err = Product::custom("Bad Name").unwrap_err().to_string();
        assert!(err.contains("\"Bad Name\""), "{err}");
        assert!(err.contains("'B'"), "{err}");
    }

    #[test]
    fn from_user_agent_round_trips_every_product_anywhere_in_the_string() {
        let custom = Product::custom("my_custom_tool").unwrap();
        for product in Product::KNOWN.iter().chain([&custom]) {
            let token = format!("kasal_{product}/0.1.0");
            for ua in [
                token.clone(),
                format!("their-ua/1.2 {token}"),
                format!("{token} their-ua/1.2 os/linux"),
                format!("a/1  {token}\tb/2"),
            ] {
                assert_eq!(
                    Product::from_user_agent(&ua).as_ref(),
                    Some(product),
                    "{ua}"
                );
            }
        }
    }

    #[test]
    fn from_user_agent_never_splits_on_the_first_underscore() {
        assert_eq!(
            Product::from_user_agent("kasal_crew_gen/0.1.0 other/1"),
            Some(Product::CrewGen)
        );
        assert_eq!(
            Product::from_user_agent("kasal_prompt_improve/2.0.0"),
            Some(Product::PromptImprove)
        );
    }

    #[test]
    fn from_user_agent_ignores_non_kasal_and_malformed_tokens() {
        assert_eq!(Product::from_user_agent(""), None);
        assert_eq!(Product::from_user_agent("curl/8.5.0"), None);
        assert_eq!(Product::from_user_agent("kasal_mcp"), None, "no version");
        assert_eq!(Product::from_user_agent("kasal_/1.0.0"), None);
        assert_eq!(Product::from_user_agent("kasal_MCP/1.0.0"), None);
        assert_eq!(Product::from_user_agent("xkasal_mcp/1.0.0"), None);
        // The first valid Kasal token wins.
        assert_eq!(
            Product::from_user_agent("kasal_Bad/1 kasal_genie/0.1.0 kasal_mcp/0.1.0"),
            Some(Product::Genie)
        );
    }
}
