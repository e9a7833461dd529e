//! Everything that speaks Genesys Cloud's protocols: OAuth, REST, notification frames
//! and the notification socket.

pub mod api;
pub mod auth;
pub mod budget;
pub mod frames;
mod live;
pub mod stream;
pub mod subscriptions;
pub mod topics;
