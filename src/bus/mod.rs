//! The message bus: how processes talk to each other (`pie:core/messaging`) and to their
//! users (`pie:core/session`). Plain Rust, no wasmtime: the host glue in `src/inferlet/`
//! adapts it to the WIT, the admin server feeds and drains sessions.
//!
//! Everything is bounded, and nothing is lost silently: a full queue makes its pusher wait,
//! a full inbox refuses the sender with an error, and buffers that must not block (topic
//! backlogs, a session's outbox while nobody follows) drop their oldest items and report
//! how many.

pub mod mailbox;
pub mod messaging;
pub mod session;

pub use messaging::{Bus, BusError, Subscription, TenantBus};
pub use session::{Following, Outgoing, Session, SessionError};
