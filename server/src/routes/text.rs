//! Request strings whose rules the OpenAPI document states and the service checks.
//!
//! poem-openapi's validators would enforce a rule while parsing and answer with a generic
//! `invalid_request`; the service answers with a precise code (`password_too_short`,
//! `invalid_email`, ...). So these types only *document* the rule and take any JSON
//! string (but only a string), leaving the check and its error to the service.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::device::MAX_DEVICE_NAME_CHARS;
use crate::passwords::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};

/// The documented rule of a [`Text`].
pub trait TextRule: Send + Sync + 'static {
    /// The JSON schema of the string, constraints included.
    fn schema() -> MetaSchema;
}

/// A string documented with the rule `R`; any string parses.
pub struct Text<R> {
    text: String,
    rule: PhantomData<R>,
}

/// The empty string, for a field that may be left out (`#[oai(default)]`).
impl<R> Default for Text<R> {
    fn default() -> Self {
        Self {
            text: String::new(),
            rule: PhantomData,
        }
    }
}

impl<R> Text<R> {
    /// The string as sent.
    pub fn into_inner(self) -> String {
        self.text
    }
}

impl<R: TextRule> Type for Text<R> {
    const IS_REQUIRED: bool = true;

    type RawValueType = String;

    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(R::schema()))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.text)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<R: TextRule> ParseFromJSON for Text<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        // Strings only: `String` would also take a number or a boolean as its text, so a
        // body that breaks the documented type would be accepted.
        match value {
            Some(Value::String(text)) => Ok(Self {
                text,
                rule: PhantomData,
            }),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl<R: TextRule> ToJSON for Text<R> {
    fn to_json(&self) -> Option<Value> {
        self.text.to_json()
    }
}

/// A new password: `passwords::check_policy`'s length rule, in characters.
pub(super) struct Password;

impl TextRule for Password {
    fn schema() -> MetaSchema {
        MetaSchema {
            min_length: Some(MIN_PASSWORD_CHARS),
            max_length: Some(MAX_PASSWORD_CHARS),
            ..MetaSchema::new("string")
        }
    }
}

/// An email address to register: `auth::normalize_email`'s rule (an address of at most
/// 254 characters, RFC 5321's limit; surrounding spaces are trimmed).
pub(super) struct Email;

impl TextRule for Email {
    fn schema() -> MetaSchema {
        MetaSchema {
            max_length: Some(254),
            ..MetaSchema::new_with_format("string", "email")
        }
    }
}

/// A device name: at most 128 characters, none of them a control character.
pub(super) struct DeviceName;

impl TextRule for DeviceName {
    fn schema() -> MetaSchema {
        MetaSchema {
            max_length: Some(MAX_DEVICE_NAME_CHARS),
            // `char::is_control` is Unicode's Cc category: U+0000-U+001F and U+007F-U+009F.
            pattern: Some(r"^[^\u0000-\u001F\u007F-\u009F]*$".to_owned()),
            ..MetaSchema::new("string")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts;
    use crate::passwords::check_policy;

    fn schema<R: TextRule>() -> Value {
        serde_json::to_value(Text::<R>::schema_ref()).unwrap()
    }

    fn parse<R: TextRule>(value: Value) -> Option<String> {
        Text::<R>::parse_from_json(Some(value))
            .ok()
            .map(Text::into_inner)
    }

    /// Schemathesis found the documented bodies accepting any string where the service
    /// refuses short passwords, non-addresses and long device names: each rule is now in
    /// the document, and these tests keep it equal to the check that enforces it.
    #[test]
    fn the_documented_rules_are_the_enforced_ones() {
        let password = schema::<Password>();
        assert_eq!(password["minLength"], MIN_PASSWORD_CHARS);
        assert_eq!(password["maxLength"], MAX_PASSWORD_CHARS);
        assert!(check_policy(&"é".repeat(MIN_PASSWORD_CHARS)).is_ok());
        assert!(check_policy(&"é".repeat(MIN_PASSWORD_CHARS - 1)).is_err());
        assert!(check_policy(&"é".repeat(MAX_PASSWORD_CHARS)).is_ok());
        assert!(check_policy(&"é".repeat(MAX_PASSWORD_CHARS + 1)).is_err());

        let email = schema::<Email>();
        assert_eq!(email["format"], "email");
        assert_eq!(email["maxLength"], 254);
        let address = |last_label: usize| {
            let (a, b, c) = ("a".repeat(64), "b".repeat(63), "c".repeat(63));
            format!("{a}@{b}.{c}.{}.com", "d".repeat(last_label))
        };
        assert_eq!(address(57).chars().count(), 254);
        assert!(accounts::Email::parse(&address(57)).is_ok());
        assert!(accounts::Email::parse(&address(58)).is_err());

        let device = schema::<DeviceName>();
        assert_eq!(device["maxLength"], MAX_DEVICE_NAME_CHARS);
        assert_eq!(device["pattern"], r"^[^\u0000-\u001F\u007F-\u009F]*$");
        let longest = "x".repeat(MAX_DEVICE_NAME_CHARS);
        assert!(accounts::device_name(Some(&longest)).is_ok());
        assert!(accounts::device_name(Some(&format!("{longest}x"))).is_err());
        assert!(accounts::device_name(Some("\u{7f}")).is_err());
    }

    #[test]
    fn any_string_and_only_a_string_parses_so_the_service_picks_the_error() {
        assert_eq!(parse::<Password>("short".into()).unwrap(), "short");
        assert_eq!(
            parse::<Email>("not an email".into()).unwrap(),
            "not an email"
        );
        assert_eq!(
            parse::<DeviceName>("tab\there".into()).unwrap(),
            "tab\there"
        );
        // Only strings: a number or a boolean breaks the documented type (schemathesis
        // found `{"password": 12345678}` accepted at registration).
        for not_a_string in [
            serde_json::json!(123_456_789),
            serde_json::json!(true),
            serde_json::json!({"a": 1}),
        ] {
            assert!(parse::<Password>(not_a_string).is_none());
        }
    }
}
