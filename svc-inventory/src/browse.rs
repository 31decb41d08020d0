//! What a shopper may ask of the catalog: one page of products, of a
//! category, matching a text search. Validated here, so the store only ever
//! sees a query it can run.

use shop_runtime::values::{PageSize, Sku};

/// Longest text search accepted.
const MAX_QUERY_CHARS: usize = 100;

/// A validated ListProducts request without SKUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Browse {
    pub size: PageSize,
    /// The last SKU of the previous page.
    pub after: Option<Sku>,
    pub category: Option<String>,
    /// Every word must match the start of a word of the product.
    pub words: Vec<String>,
}

/// The field that is wrong and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Browse {
    pub(crate) fn parse(page_size: i32, page_token: &str, category: &str, query: &str) -> Result<Self, Invalid> {
        let invalid = |field, reason: String| Invalid { field, reason };
        let size = PageSize::parse(page_size).map_err(|reason| invalid("page_size", reason))?;
        let after = match page_token {
            "" => None,
            token => Some(Sku::parse(token).map_err(|_| {
                invalid(
                    "page_token",
                    "is not a token returned by ListProducts; omit it for the first page".into(),
                )
            })?),
        };
        let category = match category {
            "" => None,
            name if is_category_name(name) => Some(name.to_owned()),
            name => {
                return Err(invalid(
                    "category",
                    format!("{name:?} is not a category name (lower-case letters, digits and dashes)"),
                ));
            }
        };
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(invalid(
                "query",
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        Ok(Self {
            size,
            after,
            category,
            words: words(query),
        })
    }

    /// The words as a PostgreSQL `tsquery` of prefixes (`mu:* & enam:*`),
    /// or `None` when there is nothing to search for.
    pub(crate) fn tsquery(&self) -> Option<String> {
        (!self.words.is_empty()).then(|| {
            self.words
                .iter()
                .map(|w| format!("{w}:*"))
                .collect::<Vec<_>>()
                .join(" & ")
        })
    }
}

/// As the database's `products_category_format` constraint has it.
pub(crate) fn is_category_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 40
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The search's words, lower-cased, with everything that is not a letter or
/// a digit taken as a separator: no character of the text reaches the
/// `tsquery` syntax.
fn words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_becomes_prefixes_and_nothing_of_its_syntax_passes() {
        let browse = Browse::parse(0, "", "", "  Enamel MU | !x:*&( ").expect("valid");
        assert_eq!(browse.tsquery().as_deref(), Some("enamel:* & mu:* & x:*"));
        assert_eq!(Browse::parse(0, "", "", " -- ").expect("valid").tsquery(), None);
        assert_eq!(browse.size, PageSize::DEFAULT);
    }

    #[test]
    fn bad_tokens_sizes_categories_and_queries_name_their_field() {
        let field = |r: Result<Browse, Invalid>| r.expect_err("invalid").field;
        assert_eq!(field(Browse::parse(101, "", "", "")), "page_size");
        assert_eq!(field(Browse::parse(-1, "", "", "")), "page_size");
        assert_eq!(field(Browse::parse(10, "not a token!", "", "")), "page_token");
        assert_eq!(field(Browse::parse(10, "", "Kitchen", "")), "category");
        assert_eq!(field(Browse::parse(10, "", "", &"a".repeat(101))), "query");
        let page = Browse::parse(10, "SKU-MUG-001", "kitchen", "mug").expect("valid");
        assert_eq!(page.after.as_ref().map(Sku::as_str), Some("SKU-MUG-001"));
        assert_eq!(page.category.as_deref(), Some("kitchen"));
    }
}
