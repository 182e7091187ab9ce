//! Drain: the shard stops accepting, answers handshakes in progress with 503, closes open
//! connections (1001, Pusher 4200) and stops once they are gone or the drain timeout passes.

use crate::driver::{ConnKey, Driver};
use crate::http::StatusCode;
use crate::metrics::DisconnectReason;
use crate::ws::CloseCode;

use super::Core;
use super::conn::{Phase, Route};
use super::stream::set_reason;

impl Core {
    /// Whether a drain is under way and over: every connection gone, or its timeout passed.
    pub(super) fn drain_done(&self) -> bool {
        self.drain_until
            .is_some_and(|until| self.conns.is_empty() || self.now >= until)
    }

    /// Starts the drain (once): stop accepting, 503 to handshakes, close open connections.
    pub(super) fn begin_drain(&mut self, driver: &mut impl Driver) {
        if self.drain_until.is_some() {
            return;
        }
        driver.stop_accepting();
        self.observe.handle_drain();
        self.drain_until = Some(self.now.saturating_add(self.ticks.drain));
        let keys: Vec<ConnKey> = self.conns.keys().collect();
        for key in keys {
            match self.conns.get(key).map(|conn| conn.phase) {
                Some(Phase::Handshake) => {
                    self.http_error(key, StatusCode::SERVICE_UNAVAILABLE, &[]);
                }
                Some(Phase::Open)
                    if self.conns.get(key).map(|c| c.route) == Some(Route::Pusher) =>
                {
                    // 4200: pusher-js reconnects at once, to another instance.
                    let code = crate::pusher::CloseCode::Reconnect;
                    self.start_close(key, code.into(), "server draining")
                }
                Some(Phase::Open) => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        set_reason(conn, DisconnectReason::Drain, Some(CloseCode::GOING_AWAY));
                    }
                    self.start_close(key, CloseCode::GOING_AWAY, "server draining")
                }
                _ => {}
            }
        }
    }
}
