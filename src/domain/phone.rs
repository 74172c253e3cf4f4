//! Phone numbers, extensions and countries for the gateway.
//!
//! Everything that accepts a phone number from the outside world goes
//! through this module so that numbers are compared in one canonical form.
//!
//! * [`Country`] is the ISO 3166-1 alpha-2 region used to read national
//!   numbers such as `08611795988` (India) or `020 7946 0958` (UK).
//! * [`PhoneNumber`] is a number that libphonenumber (through the
//!   `rlibphonenumber` port) parses **and** considers valid, stored in E.164
//!   form (`+918611795988`). `+91-8611795988`, `918611795988`,
//!   `08611795988` and `8611795988` read with country `IN` are all the same
//!   [`PhoneNumber`]; lookups compare the E.164 string.
//! * An *extension* is a string of 2–6 ASCII digits ([`is_extension`]). It is
//!   kept exactly as given (`"0101"` stays `"0101"`) and is never a customer
//!   (lead-side) number: [`PhoneNumber::parse`] rejects it with
//!   [`PhoneError::Extension`].
//! * [`AgentNumber`] is an agent-side number: an extension, matched literally
//!   before any parsing, or else a [`PhoneNumber`].
//!
//! Error messages never echo the input, which may be personal data; callers
//! add the name of the field that failed.

use std::fmt;
use std::str::FromStr;

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, Region};
use serde::de::{self, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// Longest input (in bytes) handed to the parser; libphonenumber uses the
/// same bound (`MAX_INPUT_STRING_LENGTH`). Longer input is rejected as
/// [`PhoneError::Unparsable`] without parsing.
const MAX_INPUT_LEN: usize = 250;

/// Shortest extension, in digits.
const EXTENSION_MIN_DIGITS: usize = 2;
/// Longest extension, in digits.
const EXTENSION_MAX_DIGITS: usize = 6;

/// Every two-letter code `"AA"`, `"AB"`, …, `"ZZ"` back to back, so that
/// [`Country::as_str`] can hand out a `&'static str` (the library only gives
/// an owned, stack-allocated code).
static TWO_LETTER_CODES: [u8; 2 * 26 * 26] = {
    let mut table = [0u8; 2 * 26 * 26];
    let mut i = 0;
    while i < 26 * 26 {
        table[2 * i] = b'A' + (i / 26) as u8;
        table[2 * i + 1] = b'A' + (i % 26) as u8;
        i += 1;
    }
    table
};

/// Why a phone number, extension or country was rejected.
///
/// The messages never contain the rejected input (it may be personal data);
/// callers prefix them with the name of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// The input was empty or only whitespace.
    #[error("phone number is empty")]
    Empty,
    /// libphonenumber could not read a phone number from the input.
    #[error("not a phone number")]
    Unparsable,
    /// The input parsed but is not a valid number for its region (or carries
    /// an extension, which E.164 cannot represent).
    #[error("not a valid phone number for its region")]
    Invalid,
    /// The input is an extension (2–6 digits) where a customer number was
    /// required.
    #[error("an extension is not a customer number")]
    Extension,
    /// The country is not an ISO 3166-1 alpha-2 region known to libphonenumber.
    #[error("unknown country code")]
    UnknownCountry,
}

// ---------------------------------------------------------------------------
// Country
// ---------------------------------------------------------------------------

/// ISO 3166-1 alpha-2 region used to read national numbers.
///
/// Only regions for which libphonenumber has metadata can be built, so every
/// `Country` can be used as a default region for [`PhoneNumber::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Country(Region);

impl Country {
    /// Parses a two-letter region code, case-insensitively (`"in"`, `"IN"`).
    ///
    /// Surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// [`PhoneError::UnknownCountry`] for anything that is not a two-letter
    /// region libphonenumber has metadata for (`"XX"`, `"UK"`, `"IND"`,
    /// `"001"`, …).
    pub fn parse(raw: &str) -> Result<Country, PhoneError> {
        let raw = raw.trim();
        if raw.len() != 2 || !raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(PhoneError::UnknownCountry);
        }
        // `Region` has a variant for every pair of letters; only regions with
        // libphonenumber metadata (and so a calling code) are countries here.
        let region = Region::from_code(raw).map_err(|_| PhoneError::UnknownCountry)?;
        if PHONE_NUMBER_UTIL
            .get_country_code_for_region(region)
            .is_none()
        {
            return Err(PhoneError::UnknownCountry);
        }
        Ok(Country(region))
    }

    /// The upper-case two-letter region code, e.g. `"IN"`.
    ///
    /// # Panics
    ///
    /// Never: [`Country::parse`] only builds two-letter regions.
    pub fn as_str(&self) -> &'static str {
        let code = self.0.as_region_str();
        let index = match code.as_bytes() {
            &[first @ b'A'..=b'Z', second @ b'A'..=b'Z'] => {
                Some(usize::from(first - b'A') * 26 + usize::from(second - b'A'))
            }
            _ => None,
        };
        index
            .and_then(|i| TWO_LETTER_CODES.get(2 * i..2 * i + 2))
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .expect("BUG: Country::parse only builds regions named by two ASCII letters")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Country {
    type Err = PhoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Country::parse(s)
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountryVisitor;

        impl Visitor<'_> for CountryVisitor {
            type Value = Country;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 3166-1 alpha-2 country code such as \"IN\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Country, E> {
                Country::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CountryVisitor)
    }
}

// ---------------------------------------------------------------------------
// Extensions
// ---------------------------------------------------------------------------

/// Whether `s` is an extension: 2–6 ASCII digits and nothing else.
///
/// `s` is checked exactly as given (no trimming), so `" 101"` is not an
/// extension; [`AgentNumber::parse`] trims before calling this.
pub fn is_extension(s: &str) -> bool {
    (EXTENSION_MIN_DIGITS..=EXTENSION_MAX_DIGITS).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------
// PhoneNumber
// ---------------------------------------------------------------------------

/// A valid phone number in E.164 form (private field, only built through parse).
///
/// Equality, hashing and ordering compare the E.164 string, so two inputs
/// that denote the same number compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a customer (lead-side) number with libphonenumber rules.
    ///
    /// Surrounding whitespace is trimmed and the separators libphonenumber
    /// accepts (spaces, dashes, dots, parentheses, …) are allowed. National
    /// numbers — with or without the trunk prefix, or preceded by the
    /// default country's calling code (`08611795988`, `8611795988`,
    /// `918611795988` in `IN`) — are read in `default_country`. Numbers in
    /// international form (`+44 …`, or after the default country's
    /// international prefix such as `00 44 …` in `IN`) may belong to any
    /// region.
    ///
    /// # Errors
    ///
    /// * [`PhoneError::Empty`] for empty or blank input;
    /// * [`PhoneError::Extension`] for 2–6 digits (an extension, not a
    ///   customer number);
    /// * [`PhoneError::Unparsable`] when no number can be read;
    /// * [`PhoneError::Invalid`] when the number parses but libphonenumber
    ///   does not consider it valid, or it carries an extension
    ///   (`"… ext. 12"`), which E.164 cannot hold.
    pub fn parse(raw: &str, default_country: Country) -> Result<PhoneNumber, PhoneError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(PhoneError::Empty);
        }
        if is_extension(raw) {
            return Err(PhoneError::Extension);
        }
        if raw.len() > MAX_INPUT_LEN {
            return Err(PhoneError::Unparsable);
        }
        let parsed = rlibphonenumber::PhoneNumber::parse(raw, Some(default_country.0))
            .map_err(|_| PhoneError::Unparsable)?;
        let has_extension = parsed
            .extension
            .as_deref()
            .is_some_and(|ext| !ext.is_empty());
        if has_extension || !parsed.is_valid() {
            return Err(PhoneError::Invalid);
        }
        Ok(PhoneNumber(
            parsed.format_as(PhoneNumberFormat::E164).into_owned(),
        ))
    }

    /// The number in E.164 form, e.g. `"+918611795988"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The national significant number: the E.164 digits without the country
    /// calling code and without any national trunk prefix, e.g.
    /// `"8611795988"` for `+918611795988` and `"2079460958"` for
    /// `+442079460958`.
    ///
    /// Leading zeros that belong to the number itself (Italian fixed lines,
    /// `+39 06 …` → `"06…"`) are kept, as in libphonenumber.
    pub fn national_significant(&self) -> String {
        // E.164 carries its calling code after the `+`, so no region is needed.
        match rlibphonenumber::PhoneNumber::parse(&self.0, None) {
            Ok(parsed) => parsed.get_national_significant_number(),
            // Only reachable for a malformed value from `from_e164_unchecked_db`.
            Err(_) => self.0.strip_prefix('+').unwrap_or(&self.0).to_owned(),
        }
    }

    /// Wraps a value read back from **our own database**, which was stored
    /// from [`PhoneNumber::as_str`] and is therefore already normalised
    /// E.164.
    ///
    /// No parsing or validation is done. Never use this for input from
    /// users, APIs, files or other systems; use [`PhoneNumber::parse`].
    pub fn from_e164_unchecked_db(s: String) -> PhoneNumber {
        PhoneNumber(s)
    }
}

impl fmt::Display for PhoneNumber {
    /// Writes the E.164 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// AgentNumber
// ---------------------------------------------------------------------------

/// An agent-side number: an extension (2–6 digits, kept as given) or a phone number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AgentNumber {
    /// 2–6 ASCII digits, exactly as given (leading zeros kept).
    Extension(String),
    /// Any other input, parsed and validated as a [`PhoneNumber`].
    Phone(PhoneNumber),
}

impl AgentNumber {
    /// Parses an agent-side number.
    ///
    /// The input is trimmed; 2–6 ASCII digits are an
    /// [`AgentNumber::Extension`] (matched literally, never parsed), anything
    /// else goes through [`PhoneNumber::parse`] with `default_country`.
    ///
    /// # Errors
    ///
    /// The errors of [`PhoneNumber::parse`], except that
    /// [`PhoneError::Extension`] cannot occur.
    pub fn parse(raw: &str, default_country: Country) -> Result<AgentNumber, PhoneError> {
        let raw = raw.trim();
        if is_extension(raw) {
            return Ok(AgentNumber::Extension(raw.to_owned()));
        }
        PhoneNumber::parse(raw, default_country).map(AgentNumber::Phone)
    }

    /// The extension as given, or the phone number in E.164 form.
    pub fn as_str(&self) -> &str {
        match self {
            AgentNumber::Extension(ext) => ext,
            AgentNumber::Phone(phone) => phone.as_str(),
        }
    }
}

impl Serialize for AgentNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

super::string_schema!(
    PhoneNumber,
    None,
    "a phone number in E.164, e.g. +918611795988"
);
super::string_schema!(
    AgentNumber,
    None,
    "a phone number in E.164, or an extension of 2 to 6 digits as given"
);
super::string_schema!(Country, None, "an ISO 3166 alpha-2 region, e.g. IN");

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn country(code: &str) -> Country {
        Country::parse(code).unwrap()
    }

    fn e164(raw: &str, code: &str) -> Result<String, PhoneError> {
        PhoneNumber::parse(raw, country(code)).map(|p| p.as_str().to_owned())
    }

    #[test]
    fn accepted_numbers_normalise_to_e164() {
        let cases: &[(&str, &str, &str)] = &[
            // The four equivalent Indian forms from the spec.
            ("+91-8611795988", "IN", "+918611795988"),
            ("918611795988", "IN", "+918611795988"),
            ("08611795988", "IN", "+918611795988"),
            ("8611795988", "IN", "+918611795988"),
            // Whitespace and other separators.
            ("  +91 86117 95988  ", "IN", "+918611795988"),
            ("086117-95988", "IN", "+918611795988"),
            ("+91.861.179.5988", "IN", "+918611795988"),
            ("+91 (861) 179-5988", "IN", "+918611795988"),
            ("\t8611795988\n", "IN", "+918611795988"),
            // US.
            ("+1 415 555 2671", "US", "+14155552671"),
            ("(415) 555-2671", "US", "+14155552671"),
            ("415.555.2671", "US", "+14155552671"),
            ("1 415 555 2671", "US", "+14155552671"),
            // A foreign number written with + is read in its own region.
            ("+44 20 7946 0958", "IN", "+442079460958"),
            ("+44 20 7946 0958", "US", "+442079460958"),
            // UK national form.
            ("020 7946 0958", "GB", "+442079460958"),
            ("(020) 7946-0958", "GB", "+442079460958"),
            ("07400 123456", "GB", "+447400123456"),
            // Italian fixed line keeps its leading zero.
            ("06 6982 1234", "IT", "+390669821234"),
        ];
        for &(raw, code, want) in cases {
            assert_eq!(e164(raw, code).as_deref(), Ok(want), "{raw:?} in {code}");
        }
    }

    #[test]
    fn rejected_numbers_use_the_right_variant() {
        let cases: &[(&str, &str, PhoneError)] = &[
            ("", "IN", PhoneError::Empty),
            ("   ", "IN", PhoneError::Empty),
            ("\t\n", "US", PhoneError::Empty),
            ("12", "IN", PhoneError::Extension),
            ("12", "US", PhoneError::Extension),
            ("abc", "IN", PhoneError::Unparsable),
            ("+999 123", "IN", PhoneError::Unparsable),
            ("123456789012345678", "IN", PhoneError::Unparsable),
            ("1234567", "IN", PhoneError::Invalid),
            ("1234567", "US", PhoneError::Invalid),
            ("0000000000", "IN", PhoneError::Invalid),
            ("+91 12345", "IN", PhoneError::Invalid),
            ("+1 415 555 2671 ext. 123", "US", PhoneError::Invalid),
        ];
        for (raw, code, want) in cases {
            assert_eq!(e164(raw, code).as_ref(), Err(want), "{raw:?} in {code}");
        }
    }

    #[test]
    fn overlong_input_is_unparsable() {
        let padded_inside = format!("+91{}8611795988", " ".repeat(MAX_INPUT_LEN));
        assert_eq!(e164(&padded_inside, "IN"), Err(PhoneError::Unparsable));
        // Surrounding whitespace is trimmed before the length check.
        let padded_outside = format!("{0}+91 8611795988{0}", " ".repeat(MAX_INPUT_LEN));
        assert_eq!(e164(&padded_outside, "IN").as_deref(), Ok("+918611795988"));
    }

    #[test]
    fn extensions() {
        let india = country("IN");
        let cases: &[&str] = &["10", "101", "0101", "123456", "000000"];
        for &ext in cases {
            assert!(is_extension(ext), "{ext:?}");
            assert_eq!(PhoneNumber::parse(ext, india), Err(PhoneError::Extension));
            assert_eq!(
                AgentNumber::parse(ext, india),
                Ok(AgentNumber::Extension(ext.to_owned()))
            );
        }
        let padded = AgentNumber::parse("  0101 ", india).unwrap();
        assert_eq!(padded, AgentNumber::Extension("0101".to_owned()));
        assert_eq!(padded.as_str(), "0101");
        assert_eq!(
            PhoneNumber::parse(" 101 ", india),
            Err(PhoneError::Extension)
        );

        let not_extensions: &[&str] = &["", "1", "1234567", "1a", " 101", "10 1", "١٠١", "+101"];
        for &s in not_extensions {
            assert!(!is_extension(s), "{s:?}");
        }
    }

    #[test]
    fn agent_numbers() {
        let india = country("IN");
        let phone = AgentNumber::parse(" 08611795988 ", india).unwrap();
        assert_eq!(
            phone,
            AgentNumber::Phone(PhoneNumber::parse("8611795988", india).unwrap())
        );
        assert_eq!(phone.as_str(), "+918611795988");
        assert_eq!(AgentNumber::parse("  ", india), Err(PhoneError::Empty));
        assert_eq!(AgentNumber::parse("1", india), Err(PhoneError::Unparsable));
        assert_eq!(
            AgentNumber::parse("1234567", india),
            Err(PhoneError::Invalid)
        );
    }

    #[test]
    fn national_significant_numbers() {
        let cases: &[(&str, &str, &str)] = &[
            ("+91-8611795988", "IN", "8611795988"),
            ("08611795988", "IN", "8611795988"),
            ("020 7946 0958", "GB", "2079460958"),
            ("+44 20 7946 0958", "IN", "2079460958"),
            ("(415) 555-2671", "US", "4155552671"),
            ("06 6982 1234", "IT", "0669821234"),
        ];
        for &(raw, code, want) in cases {
            let phone = PhoneNumber::parse(raw, country(code)).unwrap();
            assert_eq!(phone.national_significant(), want, "{raw:?} in {code}");
        }
        let from_db = PhoneNumber::from_e164_unchecked_db("+918611795988".to_owned());
        assert_eq!(from_db.national_significant(), "8611795988");
        // Malformed database values do not panic.
        for junk in ["", "+", "+9", "abc", "+999"] {
            let _ = PhoneNumber::from_e164_unchecked_db(junk.to_owned()).national_significant();
        }
    }

    #[test]
    fn display_serialize_and_db_round_trip() {
        let phone = PhoneNumber::parse("08611795988", country("IN")).unwrap();
        assert_eq!(phone.to_string(), "+918611795988");
        assert_eq!(serde_json::to_string(&phone).unwrap(), "\"+918611795988\"");
        assert_eq!(
            PhoneNumber::from_e164_unchecked_db(phone.as_str().to_owned()),
            phone
        );
    }

    #[test]
    fn countries() {
        assert_eq!(Country::parse("in").unwrap().as_str(), "IN");
        assert_eq!(Country::parse("IN").unwrap(), Country::parse("iN").unwrap());
        assert_eq!(Country::parse(" gb ").unwrap().to_string(), "GB");
        assert_eq!("us".parse::<Country>().unwrap().as_str(), "US");
        for bad in ["XX", "UK", "", "I", "IND", "001", "1N", "ìn", "zz"] {
            assert_eq!(
                Country::parse(bad),
                Err(PhoneError::UnknownCountry),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn country_serde() {
        let india = country("IN");
        assert_eq!(serde_json::to_string(&india).unwrap(), "\"IN\"");
        assert_eq!(serde_json::from_str::<Country>("\"in\"").unwrap(), india);
        let err = serde_json::from_str::<Country>("\"XX\"").unwrap_err();
        assert!(err.to_string().contains("unknown country code"), "{err}");
        assert!(serde_json::from_str::<Country>("91").is_err());
    }

    #[test]
    fn error_messages_do_not_echo_input() {
        let secret = "9999999999999";
        let err = PhoneNumber::parse(secret, country("IN")).unwrap_err();
        assert!(!err.to_string().contains(secret));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn indian_mobile_formats_agree(national in "[6-9][0-9]{9}") {
            let india = country("IN");
            let want = PhoneNumber::parse(&national, india);
            prop_assume!(want.is_ok());
            let want = want.unwrap();
            prop_assert_eq!(want.as_str(), format!("+91{national}"));
            prop_assert_eq!(want.national_significant(), national.clone());
            for raw in [
                format!("+91-{national}"),
                format!("91{national}"),
                format!("0{national}"),
                national.clone(),
            ] {
                prop_assert_eq!(PhoneNumber::parse(&raw, india), Ok(want.clone()), "{}", raw);
            }
        }

        #[test]
        fn parse_is_idempotent(
            raw in prop_oneof![
                "[+]?[0-9 ().-]{0,20}",
                "[6-9][0-9]{9}",
                "\\+[1-9][0-9]{6,14}",
                "0[0-9]{9,11}",
            ],
            code in prop::sample::select(vec!["IN", "US", "GB", "IT", "DE", "AU", "BR", "SG"]),
            other in prop::sample::select(vec!["IN", "US", "GB", "IT", "DE", "AU", "BR", "SG"]),
        ) {
            if let Ok(phone) = PhoneNumber::parse(&raw, country(code)) {
                // The E.164 form reparses to itself, whatever the default region.
                prop_assert_eq!(PhoneNumber::parse(phone.as_str(), country(code)), Ok(phone.clone()));
                prop_assert_eq!(PhoneNumber::parse(phone.as_str(), country(other)), Ok(phone.clone()));
                prop_assert!(phone.as_str().starts_with('+'));
                prop_assert!(phone.as_str()[1..].bytes().all(|b| b.is_ascii_digit()));
                prop_assert!(phone.as_str().ends_with(&phone.national_significant()));
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(raw in any::<String>(), code in "[A-Za-z]{2}") {
            let _ = is_extension(&raw);
            if let Ok(c) = Country::parse(&code) {
                let _ = c.as_str();
                let _ = PhoneNumber::parse(&raw, c);
                let _ = AgentNumber::parse(&raw, c);
            }
            let india = country("IN");
            let _ = PhoneNumber::parse(&raw, india);
            let _ = AgentNumber::parse(&raw, india);
            let _ = PhoneNumber::from_e164_unchecked_db(raw.clone()).national_significant();
        }

        #[test]
        fn phone_like_strings_never_panic(
            raw in "[+0-9 ()./x#*-]{0,40}|(tel:)?[+]?[0-9;=a-z-]{0,30}",
            code in prop::sample::select(vec!["IN", "US", "GB", "IT", "DE", "AR", "MX", "BR", "CN", "RU"]),
        ) {
            let _ = PhoneNumber::parse(&raw, country(code));
            let _ = AgentNumber::parse(&raw, country(code));
        }
    }
}
