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
pub mod time;
pub mod user;
