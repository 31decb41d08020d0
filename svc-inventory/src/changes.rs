//! What an admin may change of a product: its name, description, price and
//! category, each checked here as the database's constraints have it, so
//! the store only ever sees a change it can make.

use shop_runtime::values::Money;

use crate::browse::{Invalid, is_category_name};

const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// A validated UpdateProduct request: the fields to set, at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProductChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<Money>,
    pub category: Option<String>,
}

impl ProductChanges {
    pub(crate) fn parse(
        name: Option<&str>,
        description: Option<&str>,
        price: Option<&shop_proto::common::v1::Money>,
        category: Option<&str>,
    ) -> Result<Self, Invalid> {
        let invalid = |field, reason: String| Invalid { field, reason };
        if let Some(name) = name {
            let chars = name.chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS || name.trim() != name {
                return Err(invalid(
                    "name",
                    format!("must be 1 to {MAX_NAME_CHARS} characters, without leading or trailing spaces"),
                ));
            }
        }
        if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
            return Err(invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let price = price
            .map(|p| {
                let money = Money::from_proto(p).map_err(|reason| invalid("price.currency_code", reason))?;
                if money.minor < 0 {
                    return Err(invalid(
                        "price.amount_minor",
                        format!("must not be negative, got {}", money.minor),
                    ));
                }
                Ok(money)
            })
            .transpose()?;
        if let Some(category) = category.filter(|c| !is_category_name(c)) {
            return Err(invalid(
                "category",
                format!("{category:?} is not a category name (lower-case letters, digits and dashes)"),
            ));
        }
        let changes = Self {
            name: name.map(str::to_owned),
            description: description.map(str::to_owned),
            price,
            category: category.map(str::to_owned),
        };
        if changes == Self::NONE {
            return Err(invalid(
                "name",
                "set at least one of name, description, price and category".into(),
            ));
        }
        Ok(changes)
    }

    const NONE: Self = Self {
        name: None,
        description: None,
        price: None,
        category: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(currency: &str, minor: i64) -> shop_proto::common::v1::Money {
        shop_proto::common::v1::Money {
            currency_code: currency.into(),
            amount_minor: minor,
        }
    }

    #[test]
    fn only_the_fields_given_change() {
        let changes = ProductChanges::parse(None, None, Some(&price("EUR", 1_250)), None).expect("valid");
        assert_eq!(
            changes.price.map(|p| (p.currency.as_str().to_owned(), p.minor)),
            Some(("EUR".into(), 1_250))
        );
        assert_eq!(
            (changes.name, changes.description, changes.category),
            (None, None, None)
        );
        let renamed = ProductChanges::parse(Some("Mug, blue"), Some(""), None, Some("kitchen")).expect("valid");
        assert_eq!(renamed.name.as_deref(), Some("Mug, blue"));
        assert_eq!(renamed.description.as_deref(), Some(""));
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |r: Result<ProductChanges, Invalid>| r.expect_err("invalid").field;
        assert_eq!(field(ProductChanges::parse(None, None, None, None)), "name");
        assert_eq!(field(ProductChanges::parse(Some(""), None, None, None)), "name");
        assert_eq!(field(ProductChanges::parse(Some(" Mug"), None, None, None)), "name");
        assert_eq!(
            field(ProductChanges::parse(Some(&"m".repeat(201)), None, None, None)),
            "name"
        );
        assert_eq!(
            field(ProductChanges::parse(None, Some(&"d".repeat(2_001)), None, None)),
            "description"
        );
        assert_eq!(
            field(ProductChanges::parse(None, None, Some(&price("EUR", -1)), None)),
            "price.amount_minor"
        );
        assert_eq!(
            field(ProductChanges::parse(None, None, Some(&price("euro", 1)), None)),
            "price.currency_code"
        );
        assert_eq!(
            field(ProductChanges::parse(None, None, None, Some("Kitchen"))),
            "category"
        );
    }
}
