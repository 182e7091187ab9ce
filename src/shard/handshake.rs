//! The HTTP side of a connection: its request head read under the handshake deadline, routed
//! (echo, dashboard feed, Pusher `/app/{key}`, admin answers, the Pusher HTTP API) and answered
//! with the 101 upgrade or an HTTP error.

use crate::driver::ConnKey;
use crate::http::{self, StatusCode};
use crate::limits::TokenBucket;
use crate::metrics::RejectReason;
use crate::ws;

use super::accept::{ProxyRefusal, reject_reason};
use super::conn::{Phase, Route};
use super::{Core, TICK};

/// The routing table: request path to what the connection serves. Later routes (`/health`,
/// `/metrics`) are rows here; `/app/{key}` ([`PUSHER_PREFIX`]) and the Pusher HTTP API
/// ([`crate::pusher::api::is_api_path`]) are matched by prefix.
const ROUTES: &[(&str, Route)] = &[
    ("/echo", Route::Echo),
    (crate::dashboard::FEED_PATH, Route::Feed),
];

/// Path prefix of Pusher client connections, `/app/{key}`.
const PUSHER_PREFIX: &str = "/app/";

/// The route of a WebSocket request path.
fn route_of(path: &str) -> Option<Route> {
    match ROUTES.iter().find(|(p, _)| *p == path) {
        Some(&(_, route)) => Some(route),
        None => path.starts_with(PUSHER_PREFIX).then_some(Route::Pusher),
    }
}

impl Core {
    /// Bytes of a connection still in its handshake: the PROXY header first when one is
    /// expected (a bad one closes the connection unanswered), then the request head.
    pub(super) fn handle_handshake_read(&mut self, key: ConnKey, data: &[u8]) {
        match self.clients.handle_proxy_header(key, data) {
            Ok(skip) => self.handle_head_bytes(key, data.get(skip..).unwrap_or_default()),
            Err(ProxyRefusal::Header(_)) => {
                self.observe
                    .stats
                    .record_reject(RejectReason::HandshakeError);
                self.close_now(key);
            }
            Err(ProxyRefusal::Limit(error)) => {
                self.observe.stats.record_reject(reject_reason(error));
                self.http_error(key, StatusCode::TOO_MANY_REQUESTS, &[]);
            }
        }
    }

    /// Request-head bytes (or an API request's body): answered once the head is complete.
    fn handle_head_bytes(&mut self, key: ConnKey, data: &[u8]) {
        if self.handle_api_bytes(key, data) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let reader = conn.head.get_or_insert_with(Default::default);
        match reader.handle_read(&self.config.http, data) {
            Ok(http::Status::Partial) => {}
            Ok(http::Status::Complete(_)) => self.answer_handshake(key),
            Err(e) => {
                self.observe
                    .stats
                    .record_reject(RejectReason::HandshakeError);
                self.http_error(key, e.status(), &[]);
            }
        }
    }

    /// The head is complete: route it, then upgrade or refuse.
    fn answer_handshake(&mut self, key: ConnKey) {
        self.clients.handle_head_complete(key);
        let draining = self.drain_until.is_some();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(reader) = conn.head.take() else {
            return;
        };
        let observe = &mut self.observe;
        let clients = &mut self.clients;
        let mut target = None;
        let outcome = match reader.parse(&self.config.http) {
            Err(e) => Err((e.status(), &[][..])),
            Ok(_) if draining => Err((StatusCode::SERVICE_UNAVAILABLE, &[][..])),
            Ok(req)
                if !req.is_websocket_upgrade() && observe.write_admin(req.path, &mut self.out) =>
            {
                conn.head = None;
                conn.enter(Phase::Flushing, self.now);
                self.push_out(key);
                self.schedule(key);
                return;
            }
            Ok(req) if crate::pusher::api::is_api_path(req.path) && !req.is_websocket_upgrade() => {
                let early = reader.buffered_after_head();
                self.begin_api(key, &req, early);
                return;
            }
            Ok(req) => match route_of(req.path) {
                None => Err((StatusCode::NOT_FOUND, &[][..])),
                Some(Route::Feed) if !observe.admin_on_main() => {
                    Err((StatusCode::NOT_FOUND, &[][..]))
                }
                Some(route) => match http::validate_upgrade(&req, &self.config.http) {
                    Ok(upgrade) => match clients.admit(key, &req, &self.config, &mut observe.stats)
                    {
                        Err(status) => Err((status, &[][..])),
                        Ok(()) => {
                            let accept = ws::accept_key(upgrade.key);
                            http::write_switching_protocols(&mut self.out, &accept, None);
                            if route == Route::Pusher {
                                target = Some(req.target.to_owned());
                            }
                            Ok(route)
                        }
                    },
                    Err(e) => Err((e.status(), e.extra_headers())),
                },
            },
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match outcome {
            Err((status, extra)) => {
                let reason = match status {
                    StatusCode::TOO_MANY_REQUESTS => None,
                    StatusCode::SERVICE_UNAVAILABLE => Some(RejectReason::Draining),
                    StatusCode::FORBIDDEN => Some(RejectReason::Origin),
                    _ => Some(RejectReason::HandshakeError),
                };
                if let Some(reason) = reason {
                    self.observe.stats.record_reject(reason);
                }
                self.http_error(key, status, extra)
            }
            Ok(route) => {
                let rate = self.config.message_rate;
                conn.route = route;
                conn.msg_bucket = TokenBucket::full(rate.messages_per_second, self.now);
                conn.byte_bucket = TokenBucket::full(rate.bytes_per_second, self.now);
                let handshake = TICK * self.now.saturating_sub(conn.since);
                self.observe.stats.record_accept(handshake);
                self.observe.handle_open(key, route == Route::Feed);
                conn.enter(Phase::Open, self.now);
                self.push_out(key);
                self.schedule(key);
                if let Some(target) = target {
                    self.open_pusher(key, &target);
                }
                let mut early = reader.into_after_head();
                if !early.is_empty() {
                    self.handle_ws_bytes(key, &mut early);
                }
            }
        }
    }

    /// Answers with an HTTP error `status` and closes once it is sent.
    pub(super) fn http_error(&mut self, key: ConnKey, status: StatusCode, extra: &[(&str, &str)]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.head = None;
        conn.enter(Phase::Flushing, self.now);
        http::write_error(&mut self.out, status, extra);
        self.push_out(key);
        self.schedule(key);
    }
}
