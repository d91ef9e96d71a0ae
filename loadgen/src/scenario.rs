//! The scenario file: what traffic to send and what data to seed first.
//!
//! Parsing is strict (unknown fields are errors) and every error names the
//! field it is about, e.g. `mix.chekout: unknown field` or
//! `seed.price_cents: min 900 is above max 100`.

use std::path::Path;

use serde::Deserialize;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    pub name: String,
    #[serde(default)]
    pub seed: Seed,
    /// Relative weight of each operation; each request picks one at random.
    pub mix: Mix,
    #[serde(default)]
    pub browse: Browse,
    #[serde(default)]
    pub buy: Buy,
}

/// Data created through the public API before the load starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Seed {
    /// Products to create (needs admin credentials). 0: use the catalog
    /// already in the store.
    pub products: u32,
    pub stock_per_product: u32,
    pub price_cents: PriceRange,
    pub categories: Vec<String>,
    /// Customer accounts registered up front; virtual users share them
    /// round-robin.
    pub customers: u32,
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            products: 20,
            stock_per_product: 1_000_000,
            price_cents: PriceRange::default(),
            categories: vec!["books".into(), "garden".into(), "kitchen".into()],
            customers: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRange {
    pub min: u32,
    pub max: u32,
}

impl Default for PriceRange {
    fn default() -> Self {
        Self {
            min: 199,
            max: 9_999,
        }
    }
}

/// Weights of the operations. Missing ones weigh 0.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    /// `GET /products?limit=..`, sometimes filtered by category.
    pub browse_products: u32,
    /// `GET /products/{id}` of a seeded product.
    pub view_product: u32,
    /// `POST /auth/register` of a new account.
    pub register: u32,
    /// `POST /auth/login` of the virtual user's account.
    pub login: u32,
    /// `POST /purchases` with a fresh `Idempotency-Key`.
    pub buy: u32,
    /// `GET /purchases` of the virtual user.
    pub list_own_purchases: u32,
    /// `POST /purchases/{id}/cancel` of one of the user's own purchases (a
    /// buy when it has none yet).
    pub cancel: u32,
}

/// Every operation, in a fixed order (the report's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    BrowseProducts,
    ViewProduct,
    Register,
    Login,
    Buy,
    ListOwnPurchases,
    Cancel,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::BrowseProducts,
        Operation::ViewProduct,
        Operation::Register,
        Operation::Login,
        Operation::Buy,
        Operation::ListOwnPurchases,
        Operation::Cancel,
    ];

    /// The name used in the scenario file and the reports.
    pub fn name(self) -> &'static str {
        match self {
            Operation::BrowseProducts => "browse_products",
            Operation::ViewProduct => "view_product",
            Operation::Register => "register",
            Operation::Login => "login",
            Operation::Buy => "buy",
            Operation::ListOwnPurchases => "list_own_purchases",
            Operation::Cancel => "cancel",
        }
    }

    fn needs_products(self) -> bool {
        matches!(
            self,
            Operation::ViewProduct | Operation::Buy | Operation::Cancel
        )
    }

    fn needs_customers(self) -> bool {
        matches!(
            self,
            Operation::Login | Operation::Buy | Operation::ListOwnPurchases | Operation::Cancel
        )
    }
}

impl Mix {
    pub fn weight(&self, operation: Operation) -> u32 {
        match operation {
            Operation::BrowseProducts => self.browse_products,
            Operation::ViewProduct => self.view_product,
            Operation::Register => self.register,
            Operation::Login => self.login,
            Operation::Buy => self.buy,
            Operation::ListOwnPurchases => self.list_own_purchases,
            Operation::Cancel => self.cancel,
        }
    }

    /// Operations with a weight above 0.
    pub fn used(&self) -> impl Iterator<Item = Operation> + '_ {
        Operation::ALL
            .into_iter()
            .filter(|&operation| self.weight(operation) > 0)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Browse {
    /// Page size asked for, 1..=100 as the API allows.
    pub limit: u32,
    /// Share of browse requests that filter by a random seeded category.
    pub category_filter_percent: u32,
}

impl Default for Browse {
    fn default() -> Self {
        Self {
            limit: 20,
            category_filter_percent: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Buy {
    /// Distinct products in one purchase, 1..=max_lines.
    pub max_lines: u32,
    /// Quantity of each line, 1..=max_quantity.
    pub max_quantity: u32,
}

impl Default for Buy {
    fn default() -> Self {
        Self {
            max_lines: 3,
            max_quantity: 2,
        }
    }
}

/// A scenario file that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario file {path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|(field, message)| ScenarioError::Invalid {
            path: path.display().to_string(),
            field,
            message,
        })
    }

    /// Parses and validates; the error is `(field path, message)`.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        let scenario: Scenario = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." {
                "(top level)".to_owned()
            } else {
                field
            };
            (field, e.into_inner().to_string())
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if self.name.trim().is_empty() {
            return fail("name", "must not be empty".into());
        }
        if self.mix.used().next().is_none() {
            return fail("mix", "give at least one operation a weight above 0".into());
        }
        let seed = &self.seed;
        if seed.price_cents.min == 0 || seed.price_cents.min > seed.price_cents.max {
            return fail(
                "seed.price_cents",
                format!(
                    "need 1 <= min <= max, got min {} and max {}",
                    seed.price_cents.min, seed.price_cents.max
                ),
            );
        }
        if seed.products > 0 && seed.categories.is_empty() {
            return fail(
                "seed.categories",
                "list at least one category for seeded products".into(),
            );
        }
        if let Some(category) = seed
            .categories
            .iter()
            .find(|c| c.trim().is_empty() || c.len() > 64)
        {
            return fail(
                "seed.categories",
                format!("{category:?} is not a category name (1..=64 characters)"),
            );
        }
        if let Some(operation) = self.mix.used().find(|o| o.needs_customers())
            && seed.customers == 0
        {
            return fail(
                "seed.customers",
                format!(
                    "mix.{} needs signed-in customers: set at least 1",
                    operation.name()
                ),
            );
        }
        let buys = self.mix.buy > 0 || self.mix.cancel > 0;
        if buys && seed.products > 0 && seed.stock_per_product == 0 {
            // Stock 0 would make every buy a 409.
            return fail(
                "seed.stock_per_product",
                "must be above 0 when the mix buys".into(),
            );
        }
        if seed.stock_per_product > 1_000_000_000 {
            return fail(
                "seed.stock_per_product",
                format!(
                    "the store allows at most 1000000000, got {}",
                    seed.stock_per_product
                ),
            );
        }
        if !(1..=100).contains(&self.browse.limit) {
            return fail(
                "browse.limit",
                format!("must be 1..=100, got {}", self.browse.limit),
            );
        }
        if self.browse.category_filter_percent > 100 {
            return fail(
                "browse.category_filter_percent",
                format!(
                    "must be 0..=100, got {}",
                    self.browse.category_filter_percent
                ),
            );
        }
        if self.buy.max_lines == 0 || self.buy.max_lines > 50 {
            return fail(
                "buy.max_lines",
                format!("must be 1..=50, got {}", self.buy.max_lines),
            );
        }
        if self.buy.max_quantity == 0 || self.buy.max_quantity > 1000 {
            return fail(
                "buy.max_quantity",
                format!("must be 1..=1000, got {}", self.buy.max_quantity),
            );
        }
        Ok(())
    }

    /// Whether the traffic needs product ids.
    pub fn needs_products(&self) -> bool {
        self.mix.used().any(|o| o.needs_products())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> (String, String) {
        Scenario::parse(text).expect_err("the scenario is invalid")
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("scenarios dir") {
            let path = entry.expect("entry").path();
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
        assert!(seen >= 2, "found {seen} scenario files");
    }

    #[test]
    fn a_minimal_scenario_gets_defaults() {
        let scenario =
            Scenario::parse(r#"{"name": "views", "mix": {"view_product": 1}}"#).expect("valid");
        assert_eq!(scenario.seed.products, 20);
        assert_eq!(scenario.browse.limit, 20);
        assert_eq!(
            scenario.mix.used().collect::<Vec<_>>(),
            vec![Operation::ViewProduct]
        );
    }

    #[test]
    fn an_unknown_operation_is_named_with_its_path() {
        let (field, message) = error_of(r#"{"name": "x", "mix": {"chekout": 3}}"#);
        assert_eq!(field, "mix.chekout");
        assert!(message.contains("unknown field `chekout`"), "{message}");
        assert!(message.contains("buy"), "lists the known ones: {message}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_path() {
        let (field, message) = error_of(
            r#"{"name": "x", "mix": {"buy": 1}, "seed": {"price_cents": {"min": "cheap", "max": 5}}}"#,
        );
        assert_eq!(field, "seed.price_cents.min");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn a_negative_weight_is_refused() {
        let (field, _) = error_of(r#"{"name": "x", "mix": {"buy": -1}}"#);
        assert_eq!(field, "mix.buy");
    }

    #[test]
    fn a_missing_mix_is_named() {
        let (field, message) = error_of(r#"{"name": "x"}"#);
        assert_eq!(field, "(top level)");
        assert!(message.contains("missing field `mix`"), "{message}");
    }

    #[test]
    fn an_all_zero_mix_is_refused() {
        let (field, _) = error_of(r#"{"name": "x", "mix": {"buy": 0}}"#);
        assert_eq!(field, "mix");
    }

    #[test]
    fn an_inverted_price_range_is_refused() {
        let (field, message) = error_of(
            r#"{"name": "x", "mix": {"browse_products": 1}, "seed": {"price_cents": {"min": 900, "max": 100}}}"#,
        );
        assert_eq!(field, "seed.price_cents");
        assert!(message.contains("900"), "{message}");
    }

    #[test]
    fn buying_without_customers_is_refused() {
        let (field, message) =
            error_of(r#"{"name": "x", "mix": {"buy": 1}, "seed": {"customers": 0}}"#);
        assert_eq!(field, "seed.customers");
        assert!(message.contains("mix.buy"), "{message}");
    }

    #[test]
    fn stock_is_checked_against_what_the_store_accepts_and_only_when_buying() {
        let (field, message) = error_of(
            r#"{"name": "x", "mix": {"view_product": 1}, "seed": {"stock_per_product": 2000000000}}"#,
        );
        assert_eq!(field, "seed.stock_per_product");
        assert!(message.contains("1000000000"), "{message}");
        Scenario::parse(
            r#"{"name": "x", "mix": {"view_product": 1}, "seed": {"stock_per_product": 0}}"#,
        )
        .expect("viewing needs no stock");
        let (field, _) =
            error_of(r#"{"name": "x", "mix": {"buy": 1}, "seed": {"stock_per_product": 0}}"#);
        assert_eq!(field, "seed.stock_per_product");
    }

    #[test]
    fn an_out_of_range_page_size_is_refused() {
        let (field, _) =
            error_of(r#"{"name": "x", "mix": {"browse_products": 1}, "browse": {"limit": 500}}"#);
        assert_eq!(field, "browse.limit");
    }

    #[test]
    fn broken_json_says_where() {
        let (_, message) = error_of(r#"{"name": "x", "mix": {"buy": 1,}}"#);
        assert!(message.contains("line 1"), "{message}");
    }
}
