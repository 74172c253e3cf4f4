//! Provider wire formats into domain types. Field names are matched
//! case-insensitively ([`Fields`]); each format names its fields in errors as the
//! spec spells them. Only `domain/` is imported here.

pub mod generic;
pub mod super_receptionist;

use crate::domain::call::{FieldError, RouteRequest};
use crate::domain::connector::RouteMode;
use crate::domain::phone::{Country, PhoneNumber};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A provider body's fields, looked up case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    by_lower: HashMap<String, (String, Value)>,
}

impl Fields {
    /// Builds the lookup from a JSON object. `canonical` maps a lowercased name to its
    /// spec spelling, used to name a field sent twice in different cases.
    ///
    /// # Errors
    /// Two keys that differ only in case: `InvalidField` naming that field.
    pub fn from_object(
        map: Map<String, Value>,
        canonical: impl Fn(&str) -> Option<&'static str>,
    ) -> Result<Self, FieldError> {
        let mut by_lower = HashMap::with_capacity(map.len());
        for (k, v) in map {
            let lower = k.to_ascii_lowercase();
            if k.contains('\0') || crate::domain::text::nul_path(&v).is_some() {
                let name = canonical(&lower).map_or(k.clone(), str::to_owned);
                return Err(FieldError::invalid(
                    &name,
                    "contains a NUL character, which no field may hold",
                ));
            }
            if by_lower.contains_key(&lower) {
                let name = canonical(&lower).map_or(k.clone(), str::to_owned);
                return Err(FieldError::invalid(
                    &name,
                    "sent twice with different letter case",
                ));
            }
            by_lower.insert(lower, (k, v));
        }
        Ok(Self { by_lower })
    }

    /// Builds the lookup from form fields (all strings).
    ///
    /// # Errors
    /// As [`Fields::from_object`].
    pub fn from_form(
        pairs: Vec<(String, String)>,
        canonical: impl Fn(&str) -> Option<&'static str>,
    ) -> Result<Self, FieldError> {
        let map = pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Self::from_object(map, canonical)
    }

    /// Sets a field (replacing one of the same name in any case).
    pub fn insert(&mut self, name: &str, value: Value) {
        self.by_lower
            .insert(name.to_ascii_lowercase(), (name.to_owned(), value));
    }

    /// Removes a field; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.by_lower
            .remove(&name.to_ascii_lowercase())
            .map(|(_, v)| v)
    }

    /// Whether a field is present with a non-empty value.
    pub fn has(&self, name: &str) -> bool {
        matches!(self.text(name), Ok(Some(_)))
    }

    /// Every field with its received name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.by_lower.values().map(|(k, v)| (k.as_str(), v))
    }

    /// The raw value of a field.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.by_lower
            .get(&name.to_ascii_lowercase())
            .map(|(_, v)| v)
    }

    /// A text field: strings are trimmed, numbers are read as their digits; an empty
    /// string or null is absent.
    ///
    /// # Errors
    /// A boolean, array or object: `InvalidField`.
    pub fn text(&self, name: &str) -> Result<Option<String>, FieldError> {
        match self.raw(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let t = s.trim();
                Ok((!t.is_empty()).then(|| t.to_owned()))
            }
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(FieldError::invalid(name, "must be a string")),
        }
    }

    /// Like [`Fields::text`] but absent is an error.
    ///
    /// # Errors
    /// Absent or empty: `MandatoryFieldMissing`; wrong type: `InvalidField`.
    pub fn required(&self, name: &str) -> Result<String, FieldError> {
        self.text(name)?.ok_or_else(|| FieldError::missing(name))
    }

    /// The fields as a JSON object with their received names, without the keys
    /// `accessKey`/`secretKey` (for telephony logs).
    pub fn to_logged_json(&self) -> Value {
        let mut map = Map::new();
        for (lower, (k, v)) in &self.by_lower {
            if lower != "accesskey" && lower != "secretkey" {
                map.insert(k.clone(), v.clone());
            }
        }
        Value::Object(map)
    }
}

/// Reads a call-route query (SPEC 2.3; the same names for every format): `caller_id`,
/// optional `virtual_number`, `route` (`lead`/`opportunity`), `format` (`json`/`text`).
///
/// # Errors
/// The first missing or invalid parameter.
pub fn parse_route(f: &Fields, country: Country) -> Result<RouteRequest, FieldError> {
    let number = |name: &str, raw: String| {
        PhoneNumber::parse(&raw, country).map_err(|e| FieldError::invalid(name, e))
    };
    let caller = number("caller_id", f.required("caller_id")?)?;
    let virtual_number = f
        .text("virtual_number")?
        .map(|v| number("virtual_number", v))
        .transpose()?;
    let mode = match f.text("route")?.map(|r| r.to_ascii_lowercase()).as_deref() {
        None => None,
        Some("lead") => Some(RouteMode::Lead),
        Some("opportunity") => Some(RouteMode::Opportunity),
        Some(_) => return Err(FieldError::invalid("route", "must be lead or opportunity")),
    };
    let text = match f.text("format")?.map(|r| r.to_ascii_lowercase()).as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return Err(FieldError::invalid("format", "must be json or text")),
    };
    Ok(RouteRequest {
        caller,
        virtual_number,
        mode,
        text,
    })
}
