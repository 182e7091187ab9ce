//! The Pusher Channels protocol v7, sans-IO: client messages in, actions and ready-to-send
//! WebSocket frames out, plus the HTTP API's request verification and response shapes.
//!
//! Nothing here touches a socket, reads a clock or starts a thread: every input carries its
//! `now`, and every output is a value the caller (a shard) carries out. The per-connection
//! [`Session`] is kept small (socket id, app index, a short list of channel ids) because a
//! million of them live in one process; the channel table itself (name to subscribers, presence
//! rosters, cache slots) belongs to the shard, which uses [`PresenceRoster`] and [`CacheSlot`]
//! from here for the protocol parts of it.
//!
//! How a shard drives one connection:
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Instant;
//! use ringcast::pusher::apps::DevCredentials;
//! use ringcast::pusher::*;
//!
//! /// The shard's channel table, reduced to names and ids.
//! #[derive(Default)]
//! struct Table(HashMap<String, ChannelId>);
//! impl ChannelRegistry for Table {
//!     fn intern(&mut self, name: &str) -> ChannelId {
//!         let next = ChannelId(self.0.len() as u32);
//!         *self.0.entry(name.to_owned()).or_insert(next)
//!     }
//!     fn find(&self, name: &str) -> Option<ChannelId> {
//!         self.0.get(name).copied()
//!     }
//! }
//!
//! let apps = Apps::new(vec![AppConfig::development(DevCredentials::default(), [0; 32])]).unwrap();
//! let key = apps.iter().next().unwrap().key.clone();
//! let config = PusherConfig::default();
//! let now = Instant::now();
//! let target = format!("/app/{key}?protocol=7&client=js&version=8.4.0");
//! let request = ConnectRequest::parse(&target).unwrap();
//! let socket_id = SocketId { high: 1, low: 1 };
//! let (mut session, established) =
//!     Session::connect(&apps, &request, socket_id, Load::default(), &config, now).unwrap();
//! assert!(established.text().contains("pusher:connection_established"));
//!
//! let mut table = Table::default();
//! let mut actions = Vec::new();
//! let app = apps.app(session.app()).unwrap();
//! let text = r#"{"event":"pusher:subscribe","data":{"channel":"chat"}}"#;
//! session.handle_text(app, &mut table, text, now, &mut actions);
//! assert!(matches!(actions[0], Action::Subscribe { .. }));
//! assert!(matches!(&actions[1], Action::Send(f) if f.text().contains("subscription_succeeded")));
//!
//! // A publish is encoded once; each subscriber's outbox gets a clone (a reference count).
//! let frame = encode_event_frame("news", "chat", r#"{"headline":"hi"}"#, None);
//! let for_one_subscriber = frame.clone();
//! assert_eq!(for_one_subscriber.as_bytes().as_ptr(), frame.as_bytes().as_ptr());
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod apps;
pub mod auth;
pub(crate) mod cache;
mod channels;
mod codes;
mod frame;
mod json;
pub(crate) mod presence;
pub(crate) mod protocol;
mod session;
mod socket_id;
mod subscriptions;

pub use apps::{AppConfig, AppIndex, AppLimits, Apps};
pub use cache::CacheSlot;
pub use channels::{ChannelId, ChannelKind, ChannelRegistry, Occupancy};
pub use codes::{CloseCode, Limit};
pub use frame::{Frame, encode_event_frame};
pub use presence::{PresenceJoin, PresenceRoster, RosterSnapshot};
pub use session::{Action, ConnectRequest, Load, PusherConfig, Session};
pub use socket_id::SocketId;
