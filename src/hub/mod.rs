//! Real-time delivery to agents' browser sockets, with no business rules: a registry
//! of sessions per user ([`registry::Hub`]), one bounded writer per socket
//! ([`session`]) and the frame shapes ([`protocol`]). `routes/agent.rs` reads client
//! frames and turns them into service calls; `service/` hands events to the hub.

pub mod bus;
pub mod protocol;
pub mod registry;
pub mod session;

pub use bus::Bus;
pub use registry::Hub;
