//! Value types shared by several services' domains. Each constructor
//! validates, so a value that exists is a valid one; the error names what to
//! fix and the gRPC adapters put the field path in front of it.

use std::fmt;

/// An order's id: a UUID. Parsed from whatever case the caller wrote it
/// in, and always written (stored, sent, looked up) in the one canonical
/// form, lower-case and hyphenated, so text columns and UUID columns name
/// the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(uuid::Uuid);

impl OrderId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        uuid::Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| format!("{raw:?} is not an order id (a UUID such as 0190f3c4-2222-7000-8000-00000000000a)"))
    }

    pub fn uuid(self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for OrderId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A client-chosen idempotency key: 1-128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required: choose a unique key per intended order and reuse it on retries".into());
        }
        if raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be 1-128 printable ASCII characters without spaces".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock keeping unit: 1-64 of `A-Z 0-9 - _`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_first = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let valid_rest = raw
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if raw.is_empty() {
            Err("is required".into())
        } else if raw.len() > 64 || !valid_first || !valid_rest {
            Err(format!(
                "{raw:?} is not a SKU (1-64 of A-Z, 0-9, '-', '_', e.g. \"SKU-MUG-001\")"
            ))
        } else {
            Ok(Self(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Units of one line: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i32);

impl Quantity {
    pub const MAX: i32 = 10_000;

    pub fn new(raw: i32) -> Result<Self, String> {
        if raw <= 0 {
            Err(format!("must be positive, got {raw}"))
        } else if raw > Self::MAX {
            Err(format!("must be at most {}, got {raw}", Self::MAX))
        } else {
            Ok(Self(raw))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// An ISO 4217 currency code (three upper-case letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.as_bytes() {
            [a, b, c] if raw.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(format!("{raw:?} is not an ISO 4217 currency code such as \"EUR\"")),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Decimals of its minor unit (ISO 4217); two unless listed.
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

/// An amount of money in minor units. Arithmetic is checked: an overflow is
/// an error, never a wrapped total. Shown as people read it: `EUR 12.99`
/// from 1299, with the currency's number of decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub currency: Currency,
    pub minor: i64,
}

impl Money {
    pub fn new(currency: Currency, minor: i64) -> Self {
        Self { currency, minor }
    }

    /// `self * quantity`, or `None` on overflow.
    pub fn times(self, quantity: Quantity) -> Option<Self> {
        self.minor
            .checked_mul(i64::from(quantity.get()))
            .map(|minor| Self { minor, ..self })
    }

    /// `self + other`, or `None` on overflow or mixed currencies.
    pub fn plus(self, other: Self) -> Option<Self> {
        if self.currency != other.currency {
            return None;
        }
        self.minor.checked_add(other.minor).map(|minor| Self { minor, ..self })
    }

    pub fn to_proto(self) -> shop_proto::common::v1::Money {
        shop_proto::common::v1::Money {
            currency_code: self.currency.as_str().to_owned(),
            amount_minor: self.minor,
        }
    }

    pub fn from_proto(m: &shop_proto::common::v1::Money) -> Result<Self, String> {
        Ok(Self {
            currency: Currency::parse(&m.currency_code)?,
            minor: m.amount_minor,
        })
    }
}

/// Converts a chrono time to the proto Timestamp.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// How many items one page of a list holds: 1 to 100, and 0 (a request
/// that does not say) means 20. Every paged list of the platform reads it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u8);

impl PageSize {
    pub const DEFAULT: Self = Self(20);
    pub const MAX: i32 = 100;

    pub fn parse(raw: i32) -> Result<Self, String> {
        match raw {
            0 => Ok(Self::DEFAULT),
            1..=Self::MAX => Ok(Self(u8::try_from(raw).unwrap_or(u8::MAX))),
            n => Err(format!(
                "must be between 1 and {} (0 means {}), got {n}",
                Self::MAX,
                Self::DEFAULT.0
            )),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let currency = self.currency.as_str();
        let sign = if self.minor < 0 { "-" } else { "" };
        // unsigned_abs: i64::MIN has no positive i64 counterpart.
        let amount = self.minor.unsigned_abs();
        match self.currency.minor_digits() {
            0 => write!(f, "{currency} {sign}{amount}"),
            digits => {
                let scale = 10u64.pow(digits);
                let width = digits as usize;
                write!(f, "{currency} {sign}{}.{:0width$}", amount / scale, amount % scale)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_reads_with_its_currencys_decimals() {
        let money = |code: &str, minor| Money::new(Currency::parse(code).expect("a code"), minor);
        assert_eq!(money("EUR", 2598).to_string(), "EUR 25.98");
        assert_eq!(money("EUR", 5).to_string(), "EUR 0.05");
        assert_eq!(money("EUR", 0).to_string(), "EUR 0.00");
        assert_eq!(money("USD", -1250).to_string(), "USD -12.50");
        assert_eq!(money("JPY", 1500).to_string(), "JPY 1500");
        assert_eq!(money("KWD", 1234).to_string(), "KWD 1.234");
        assert_eq!(money("EUR", i64::MIN).to_string(), "EUR -92233720368547758.08");
    }

    use super::*;

    #[test]
    fn skus() {
        assert!(Sku::parse("SKU-MUG-001").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("-X").is_err());
        assert!(Sku::parse("sku-lower").is_err());
        assert!(Sku::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn quantities() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert!(Quantity::new(Quantity::MAX + 1).is_err());
        assert_eq!(Quantity::new(2).map(Quantity::get), Ok(2));
    }

    #[test]
    fn a_page_holds_1_to_100_items_and_20_when_unsaid() {
        assert_eq!(PageSize::parse(0).map(PageSize::get), Ok(20));
        assert_eq!(PageSize::parse(1).map(PageSize::get), Ok(1));
        assert_eq!(PageSize::parse(100).map(PageSize::get), Ok(100));
        assert_eq!(
            PageSize::parse(101),
            Err("must be between 1 and 100 (0 means 20), got 101".to_owned())
        );
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn money_arithmetic_is_checked() {
        let eur = Currency::parse("EUR").expect("valid");
        let usd = Currency::parse("USD").expect("valid");
        let q = Quantity::new(3).expect("valid");
        assert_eq!(Money::new(eur, 250).times(q), Some(Money::new(eur, 750)));
        assert_eq!(Money::new(eur, i64::MAX).times(q), None);
        assert_eq!(Money::new(eur, 1).plus(Money::new(usd, 1)), None);
        assert!(Currency::parse("eur").is_err());
    }
}
