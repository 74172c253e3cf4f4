//! `@placeholder` templates (SPEC 5): parsed once when a setting is saved, filled per
//! call with values escaped for the slot they land in.

use std::fmt::Write as _;

/// Names usable as `@name` in every template.
pub const BASE_NAMES: &[&str] = &[
    "virtualNumber",
    "leadId",
    "customerNumber",
    "PhoneNumberWithCountryCode",
    "agentNumber",
    "agentName",
    "agentEmail",
    "opportunityId",
];

/// Names usable only in disposition-forwarding templates.
pub const FORWARD_NAMES: &[&str] = &["dispositionValue", "callSessionId", "notes"];

/// One slot of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `@{Lead:<field>,<default>}`
    Lead {
        /// The lead field's name.
        field: String,
        /// Used when the lead has no value.
        default: String,
    },
    /// `@{User:TeamId,<default>}`
    UserTeamId {
        /// Used when the user has no such team.
        default: String,
    },
    /// `@{User:GroupIds,<default>}`
    UserGroupIds {
        /// Used when the user has no groups.
        default: String,
    },
    /// `@name`
    Named(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Slot(Placeholder),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// A template that cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `@{` starts something that is not a known placeholder.
    #[error("unknown placeholder at character {0}")]
    UnknownPlaceholder(usize),
    /// A JSON body that is not valid JSON, or has a placeholder outside a string.
    #[error("a JSON body must be valid JSON with every placeholder inside a string")]
    JsonBody,
}

/// How values are escaped where they are inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Inserted as is (plain text bodies and headers).
    None,
    /// Percent-encoded as a URI component (URLs).
    UriComponent,
    /// Escaped for the inside of a JSON string literal.
    JsonString,
    /// `application/x-www-form-urlencoded`.
    Form,
}

impl Template {
    /// Parses `raw`, accepting `@name` for the [`BASE_NAMES`] and `extra_names`.
    ///
    /// # Errors
    /// [`TemplateError::UnknownPlaceholder`] for `@{` not followed by a known form.
    pub fn parse(raw: &str, extra_names: &[&'static str]) -> Result<Self, TemplateError> {
        let mut names: Vec<&'static str> = BASE_NAMES.iter().chain(extra_names).copied().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        let mut offset = 0;
        while let Some(at) = rest.find('@') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (slot, used) = if let Some(inner) = after.strip_prefix('{') {
                let close = inner
                    .find('}')
                    .ok_or(TemplateError::UnknownPlaceholder(offset + at))?;
                let slot = braced(&inner[..close])
                    .ok_or(TemplateError::UnknownPlaceholder(offset + at))?;
                (Some(slot), close + 2)
            } else {
                match names.iter().find(|n| {
                    after.starts_with(**n)
                        && !after[n.len()..]
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphanumeric())
                }) {
                    Some(n) => (Some(Placeholder::Named(n)), n.len()),
                    None => (None, 0),
                }
            };
            match slot {
                Some(slot) => {
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Slot(slot));
                }
                None => text.push('@'),
            }
            offset += at + 1 + used;
            rest = &after[used..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Self { segments })
    }

    /// Checks a `json` body template: valid JSON once each placeholder is replaced by a
    /// string, with every placeholder inside a string literal.
    ///
    /// # Errors
    /// [`TemplateError::JsonBody`].
    pub fn check_json_body(&self) -> Result<(), TemplateError> {
        // a value with a quote breaks the JSON unless every slot sits inside a string
        let probe = self.render(|_| "a\"b}".to_owned(), Escape::JsonString);
        serde_json::from_str::<serde_json::Value>(&probe)
            .map(|_| ())
            .map_err(|_| TemplateError::JsonBody)
    }

    /// Fills every slot with `value(slot)`, escaped by `escape`; text is kept as is.
    pub fn render(&self, value: impl Fn(&Placeholder) -> String, escape: Escape) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Slot(p) => {
                    let v = value(p);
                    match escape {
                        Escape::None => out.push_str(&v),
                        Escape::UriComponent => out.push_str(&percent_encode(&v)),
                        Escape::Form => out.push_str(&form_encode(&v)),
                        Escape::JsonString => {
                            let quoted = serde_json::Value::String(v).to_string();
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        }
                    }
                }
            }
        }
        out
    }
}

fn braced(inner: &str) -> Option<Placeholder> {
    let (kind, rest) = inner.split_once(':')?;
    let (name, default) = rest.split_once(',')?;
    match (kind, name) {
        ("Lead", field) if !field.is_empty() => Some(Placeholder::Lead {
            field: field.to_owned(),
            default: default.to_owned(),
        }),
        ("User", "TeamId") => Some(Placeholder::UserTeamId {
            default: default.to_owned(),
        }),
        ("User", "GroupIds") => Some(Placeholder::UserGroupIds {
            default: default.to_owned(),
        }),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn form_encode(s: &str) -> String {
    percent_encode(s).replace("%20", "+")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(p: &Placeholder) -> String {
        match p {
            Placeholder::Lead { field, default } if field == "first_name" => "Añi & \"Bo\"}".into(),
            Placeholder::Lead { default, .. } => default.clone(),
            Placeholder::Named("leadId") => "L1".into(),
            Placeholder::Named(n) => format!("<{n}>"),
            _ => String::new(),
        }
    }

    #[test]
    fn placeholders_are_filled_and_escaped_for_their_slot() {
        let t = Template::parse(
            "https://crm/x?id=@leadId&n=@{Lead:first_name,}&s=@{Lead:stage,new}&mail=a@b&@leadIds",
            &[],
        )
        .unwrap();
        assert_eq!(
            t.render(values, Escape::UriComponent),
            "https://crm/x?id=L1&n=A%C3%B1i%20%26%20%22Bo%22%7D&s=new&mail=a@b&@leadIds"
        );
    }

    #[test]
    fn unknown_braced_placeholders_are_refused() {
        assert_eq!(
            Template::parse("x@{Foo:bar,}", &[]),
            Err(TemplateError::UnknownPlaceholder(1))
        );
        assert!(Template::parse("@{Lead:first_name", &[]).is_err());
        assert!(
            Template::parse("@dispositionValue", &[])
                .unwrap()
                .segments
                .len()
                == 1
        );
        assert!(Template::parse("@dispositionValue", FORWARD_NAMES).is_ok());
    }

    #[test]
    fn json_bodies_keep_placeholders_inside_strings() {
        let ok = Template::parse(
            r#"{"to":"@customerNumber","agent":{"n":"@agentName @{Lead:stage,}"}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(ok.check_json_body(), Ok(()));
        for bad in [
            r#"{"to": @customerNumber}"#,
            r#"{"to":"@customerNumber""#,
            "@leadId",
        ] {
            assert_eq!(
                Template::parse(bad, &[]).unwrap().check_json_body(),
                Err(TemplateError::JsonBody),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn no_value_breaks_out_of_a_form_field(v in ".*") {
            let t = Template::parse("a=@agentName&b=@{Lead:first_name,}", &[]).unwrap();
            let body = t.render(|_| v.clone(), Escape::Form);
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
            prop_assert_eq!(pairs.len(), 2);
            prop_assert_eq!(&pairs[0].1, &v);
            prop_assert_eq!(&pairs[1].1, &v);
        }

        #[test]
        fn no_value_breaks_out_of_a_json_string(v in ".*") {
            let t = Template::parse(r#"{"name":"@{Lead:first_name,}"}"#, &[]).unwrap();
            let body = t.render(|_| v.clone(), Escape::JsonString);
            let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(parsed["name"].as_str().unwrap(), v.as_str());
        }

        #[test]
        fn no_value_breaks_out_of_a_url_component(v in ".*") {
            let t = Template::parse("https://p/c?a=@agentName&b=1", &[]).unwrap();
            let url = t.render(|_| v.clone(), Escape::UriComponent);
            prop_assert!(url.ends_with("&b=1"));
            prop_assert_eq!(url.matches('&').count(), 1);
        }
    }
}
