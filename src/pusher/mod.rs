//! The Pusher Channels protocol v7, sans-IO: client messages in, actions and ready-to-send
//! WebSocket frames out, plus the HTTP API's request verification and response shapes.
//!
//! Nothing here touches a socket, reads a clock or starts a thread: every input carries its
//! `now`, and every output is a value the caller (a shard) carries out. The per-connection
//! [`Session`] is kept small (socket id, app index, a short list of channel ids) because a
//! million of them live in one process; the channel table itself (name to subscribers, presence
//! rosters, cache slots) belongs to the shard, which uses [`PresenceRoster`] and [`CacheSlot`]
//! from here for the protocol parts of it.
#![forbid(unsafe_code)]

pub mod api;
pub mod apps;
pub mod auth;
pub mod cache;
pub mod channels;
pub mod codes;
pub mod frame;
mod json;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod session;
pub mod socket_id;
pub mod subscriptions;

pub use apps::{AppConfig, AppIndex, AppLimits, Apps};
pub use cache::CacheSlot;
pub use channels::{ChannelId, ChannelKind, ChannelRegistry};
pub use codes::CloseCode;
pub use frame::{Frame, encode_event_frame};
pub use presence::PresenceRoster;
pub use session::{Action, ConnectRequest, Load, PusherConfig, Session};
pub use socket_id::SocketId;
