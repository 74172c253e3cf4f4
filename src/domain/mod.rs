//! Pure domain types: no I/O, no imports from the rest of the crate.
//!
//! Wire formats (`providers/`) and admin requests (`routes/`) are turned into these
//! types through their `parse` constructors, which normalise the input and name the
//! offending field when it is wrong; everything past that point trusts them.

pub mod call;
pub mod connector;
pub mod disposition;
pub mod ids;
pub mod lead;
pub mod phone;
pub mod template;
pub mod text;
pub mod time;
pub mod user;

/// Implements the OpenAPI schema of a type that serialises as a string.
macro_rules! string_schema {
    ($t:ty, $format:expr, $desc:expr) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
                let format: Option<SchemaFormat> = $format;
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(format)
                    .description(Some($desc))
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}
pub(crate) use string_schema;
