//! The Pusher HTTP API on the shard's listener: a plain request to `/apps/...` (or
//! `/users/...`) is read whole (head, then a `Content-Length` body capped before it is read),
//! verified and decided by [`crate::pusher::api::handle_request`], carried out (publishes go
//! through the same fan-out as client events; queries read the [`super::hub::Hub`]'s index) and
//! answered with one JSON response, after which the connection closes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::driver::ConnKey;
use crate::http::{self, StatusCode};
use crate::mesh::MeshMessage;
use crate::pusher::api::{self, ApiError, ApiRequest, response};

use super::Core;
use super::conn::Phase;

/// Slack over the largest batch's event data for the JSON around it (names, channel lists,
/// escaping of the data string): 64 KiB, far above what 10 events of 100 channels need.
const BODY_SLACK: usize = 64 * 1024;

/// An API request whose body is still arriving.
#[derive(Debug)]
pub(super) struct PendingApi {
    method: String,
    target: String,
    body: Vec<u8>,
    expected: usize,
}

impl Core {
    /// Largest body any app's requests may carry: its batch of largest events plus JSON slack.
    fn api_body_limit(&self) -> usize {
        let most = self
            .pusher
            .hub
            .apps()
            .iter()
            .map(|app| {
                app.limits
                    .max_event_payload_bytes
                    .saturating_mul(app.limits.max_batch_events.max(1))
            })
            .max()
            .unwrap_or(0);
        most.saturating_add(BODY_SLACK)
    }

    /// A complete API request head arrived; `early` are the body bytes read with it. Answers
    /// 413 before reading a body over the limit.
    pub(super) fn begin_api(&mut self, key: ConnKey, request: &http::Request<'_>, early: &[u8]) {
        let expected = match request.content_length() {
            Ok(length) => length.unwrap_or(0),
            Err(e) => return self.http_error(key, e.status(), &[]),
        };
        let limit = self.api_body_limit();
        if expected > limit {
            return self.answer_api(key, Err(ApiError::payload_too_large(limit)));
        }
        let mut body = Vec::with_capacity(expected);
        body.extend_from_slice(&early[..early.len().min(expected)]);
        let pending = PendingApi {
            method: request.method.to_owned(),
            target: request.target.to_owned(),
            body,
            expected,
        };
        self.continue_api(key, pending);
    }

    /// More body bytes of a pending request; `false` when the connection has none pending.
    pub(super) fn handle_api_bytes(&mut self, key: ConnKey, data: &[u8]) -> bool {
        let Some(mut pending) = self.api_pending.remove(&key) else {
            return false;
        };
        let room = pending.expected - pending.body.len();
        pending
            .body
            .extend_from_slice(&data[..data.len().min(room)]);
        self.continue_api(key, pending);
        true
    }

    fn continue_api(&mut self, key: ConnKey, pending: PendingApi) {
        if pending.body.len() < pending.expected {
            self.api_pending.insert(key, pending);
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let hub = Arc::clone(&self.pusher.hub);
        let decided = api::handle_request(
            hub.apps(),
            &pending.method,
            &pending.target,
            &pending.body,
            now,
        );
        let answer = decided.map(|request| self.carry_out(request));
        self.answer_api(key, answer);
    }

    /// Does what the request asks; the JSON body of the 200.
    fn carry_out(&mut self, request: ApiRequest) -> String {
        let hub = Arc::clone(&self.pusher.hub);
        match request {
            ApiRequest::Events { app, events, batch } => {
                for event in &events {
                    for channel in &event.channels {
                        let frame = event.frame(channel);
                        self.publish_everywhere(app, channel.as_str().into(), frame, event.exclude);
                    }
                }
                if batch {
                    let rows: Vec<_> = events
                        .iter()
                        .filter_map(|e| {
                            let channel = e.channels.first()?;
                            Some((channel.as_str(), e.info, hub.cluster_stats(app, channel)))
                        })
                        .collect();
                    response::batch_events(rows.iter().copied())
                } else {
                    let Some(event) = events.first() else {
                        return response::empty();
                    };
                    response::events(
                        event.info,
                        event
                            .channels
                            .iter()
                            .map(|c| (c.as_str(), hub.cluster_stats(app, c))),
                    )
                }
            }
            ApiRequest::Channels {
                app,
                filter_by_prefix,
                info,
            } => {
                let list = hub.cluster_occupied(app, filter_by_prefix.as_deref().unwrap_or(""));
                response::channels(info, list.iter().map(|(n, s)| (n.as_str(), *s)))
            }
            ApiRequest::Channel { app, channel, info } => {
                response::channel(&channel, info, hub.cluster_stats(app, &channel))
            }
            ApiRequest::Users { app, channel } => {
                let users = hub.users(app, &channel);
                response::users(users.iter().map(String::as_str))
            }
            ApiRequest::TerminateUserConnections { app, user_id } => {
                let user_id: Arc<str> = user_id.into();
                for shard in 0..hub.shards() {
                    if shard == self.pusher.shard {
                        continue;
                    }
                    if let Some(peer) = hub.peer(shard) {
                        // A full control lane drops it; the receiving shard counts it.
                        let _ = peer.send(
                            self.pusher.shard,
                            MeshMessage::TerminateUser {
                                app,
                                user_id: Arc::clone(&user_id),
                            },
                        );
                    }
                }
                if let Some(bridge) = hub.bridge() {
                    bridge.terminate_user(app, Arc::clone(&user_id));
                }
                self.terminate_user(app, &user_id);
                response::empty()
            }
        }
    }

    /// Writes the response and closes the connection once it is sent.
    fn answer_api(&mut self, key: ConnKey, answer: Result<String, ApiError>) {
        let (status, body) = match answer {
            Ok(body) => (200, body),
            Err(e) => (e.status, e.body),
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.head = None;
        conn.enter(Phase::Flushing, self.now);
        http::write_response(
            &mut self.out,
            StatusCode(status),
            "application/json",
            &[("Connection", "close")],
            body.as_bytes(),
        );
        self.push_out(key);
        self.schedule(key);
    }
}
