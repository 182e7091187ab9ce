//! The pubsub publisher: each event loop publishes the channels it owns (`channel % loops ==
//! loop`) through the Pusher HTTP API, signed like the SDKs, over a few keep-alive HTTP/1.1
//! connections driven by the same driver as the WebSocket connections.
//!
//! A channel always goes through the same HTTP connection with one request in flight, so its
//! events reach the server in sequence order and any reordering seen by subscribers is the
//! server's. Sequence `k` of a channel is due at a fixed time of an open-loop schedule; the
//! event carries that intended time, so a publisher that falls behind shows up in the
//! publish-to-delivery latency instead of hiding it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringcast::driver::ConnKey;

use crate::delivery::delivery_data;
use crate::link::{Act, Link};
use crate::plan::{Plan, PubsubPlan, channel_name};
use crate::sign::AppCredentials;
use crate::sweep::Sweep;

/// HTTP connections per event loop at most: enough to keep a few thousand publishes per second
/// in flight on loopback, few enough not to matter to the server.
const POOL: usize = 4;
/// Wait before reconnecting a failed API connection.
const RECONNECT_NS: u64 = 100_000_000;
/// Sweep visits per loop turn at most (bounded work per turn).
const PUBLISH_PER_TURN: u64 = 1024;
/// Largest API answer accepted (head and body); the server's are tens of bytes.
const MAX_RESPONSE: usize = 64 * 1024;
/// Most header fields read from an API answer.
const MAX_RESPONSE_HEADERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpPhase {
    /// Not connected; reconnect at the time given.
    Down(u64),
    Connecting,
    Ready,
    Closed,
}

/// One publish waiting for or in flight on an HTTP connection.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Index into the publisher's channels.
    chan: usize,
    seq: u32,
    intended: u64,
}

#[derive(Debug)]
struct HttpConn {
    link: Link,
    phase: HttpPhase,
    queue: VecDeque<Pending>,
    inflight: Option<Pending>,
    response: Vec<u8>,
}

/// One channel a publisher owns: both ways of publishing (HTTP API and client events) count
/// with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub(crate) id: u32,
    /// Sequences handed out so far (the last one published).
    pub(crate) seq: u32,
    pub(crate) failed: u64,
}

/// The channels event loop `runner` of `runners` publishes to: channel `c` belongs to loop
/// `c % runners`, so every channel has exactly one publisher.
pub(crate) fn owned_channels(p: &PubsubPlan, runner: u64, runners: u64) -> Vec<Channel> {
    (0..p.channels)
        .filter(|c| u64::from(*c) % runners == runner)
        .map(|id| Channel {
            id,
            seq: 0,
            failed: 0,
        })
        .collect()
}

/// The publisher of one event loop.
#[derive(Debug)]
pub struct Publisher {
    base_slot: u32,
    conns: Vec<HttpConn>,
    channels: Vec<Channel>,
    sweep: Sweep,
    api: SocketAddr,
    host: String,
    app: AppCredentials,
    size: usize,
    requests: u64,
    reported_error: bool,
}

impl Publisher {
    /// The publisher of loop `runner` of `runners`, whose API connections use slots from
    /// `base_slot` on; `None` when the loop owns no channel.
    pub fn new(
        plan: &Plan,
        p: &PubsubPlan,
        t0: u64,
        runner: u64,
        runners: u64,
        base_slot: u32,
    ) -> Option<Self> {
        let channels = owned_channels(p, runner, runners);
        if channels.is_empty() {
            return None;
        }
        let pool = channels.len().min(POOL);
        let conns = (0..pool)
            .map(|_| HttpConn {
                link: Link::default(),
                phase: HttpPhase::Down(0),
                queue: VecDeque::new(),
                inflight: None,
                response: Vec::new(),
            })
            .collect();
        let target = plan.targets.first()?;
        let sweep = Sweep {
            start_ns: t0 + p.publish_after_ns,
            period_ns: p.publish_interval_ns,
            n: channels.len() as u64,
            done: 0,
        };
        Some(Self {
            base_slot,
            conns,
            channels,
            sweep,
            api: target.addr,
            host: target.host.clone(),
            app: plan.app.clone(),
            size: p.size,
            requests: 0,
            reported_error: false,
        })
    }

    /// Whether `slot` is one of the publisher's HTTP connections.
    pub fn owns_slot(&self, slot: u32) -> bool {
        slot >= self.base_slot && ((slot - self.base_slot) as usize) < self.conns.len()
    }

    /// Where the API is.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// The send state of one of the publisher's slots.
    pub fn link(&mut self, slot: u32) -> Option<&mut Link> {
        let i = slot.checked_sub(self.base_slot)? as usize;
        self.conns.get_mut(i).map(|c| &mut c.link)
    }

    fn conn(&mut self, key: ConnKey) -> Option<(usize, &mut HttpConn)> {
        let i = key.slot.checked_sub(self.base_slot)? as usize;
        let conn = self
            .conns
            .get_mut(i)
            .filter(|c| c.link.generation == key.generation)?;
        Some((i, conn))
    }

    /// When the next publish is due.
    pub fn next_ns(&self) -> u64 {
        let reconnect = self.conns.iter().filter_map(|c| match c.phase {
            HttpPhase::Down(at) => Some(at),
            _ => None,
        });
        reconnect.fold(self.sweep.next_ns(), u64::min)
    }

    /// API requests sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests
    }

    /// `(channel, published, failed)` for every owned channel.
    pub fn tallies(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.channels
            .iter()
            .map(|c| (c.id, u64::from(c.seq), c.failed))
    }

    /// Reconnects what is down and queues the publishes due by `now`.
    pub fn handle_timeout(&mut self, now: u64, acts: &mut Vec<Act>) {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            if matches!(conn.phase, HttpPhase::Down(at) if at <= now) {
                conn.link.generation = conn.link.generation.wrapping_add(1);
                conn.phase = HttpPhase::Connecting;
                conn.response.clear();
                acts.push(Act::Connect(conn.link.key(self.base_slot + i as u32)));
            }
        }
        let due = self.sweep.due(now).min(self.sweep.done + PUBLISH_PER_TURN);
        let pool = self.conns.len();
        while self.sweep.done < due {
            let v = self.sweep.done;
            self.sweep.done += 1;
            let chan = (v % self.sweep.n) as usize;
            let Some(channel) = self.channels.get_mut(chan) else {
                continue;
            };
            channel.seq += 1;
            let pending = Pending {
                chan,
                seq: channel.seq,
                intended: self.sweep.intended(v),
            };
            if let Some(conn) = self.conns.get_mut(chan % pool) {
                conn.queue.push_back(pending);
            }
            self.dispatch(chan % pool, acts);
        }
    }

    /// Sends the next queued publish on connection `i` when it is free.
    fn dispatch(&mut self, i: usize, acts: &mut Vec<Act>) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.phase != HttpPhase::Ready || conn.inflight.is_some() {
            return;
        }
        let Some(pending) = conn.queue.pop_front() else {
            return;
        };
        let Some(channel) = self.channels.get(pending.chan) else {
            return;
        };
        let request = events_request(
            &self.app,
            &self.host,
            channel.id,
            pending.seq,
            pending.intended,
            self.size,
        );
        conn.inflight = Some(pending);
        acts.push(Act::Send(
            conn.link.key(self.base_slot + i as u32),
            Bytes::from(request),
        ));
        self.requests += 1;
    }

    /// A connect finished.
    pub fn handle_connected(
        &mut self,
        key: ConnKey,
        result: std::io::Result<()>,
        now: u64,
        acts: &mut Vec<Act>,
    ) {
        let Some((i, conn)) = self.conn(key) else {
            return;
        };
        if result.is_ok() {
            conn.phase = HttpPhase::Ready;
            self.dispatch(i, acts);
        } else {
            self.report_error(&format!(
                "cannot connect to the HTTP API at {}: {:?}",
                self.api, result
            ));
            self.handle_eof(key, now, acts);
        }
    }

    /// The API connection closed or failed: what was in flight counts as failed.
    pub fn handle_eof(&mut self, key: ConnKey, now: u64, acts: &mut Vec<Act>) {
        let Some((_, conn)) = self.conn(key) else {
            return;
        };
        if conn.phase == HttpPhase::Closed {
            return;
        }
        conn.phase = HttpPhase::Down(now + RECONNECT_NS);
        conn.response.clear();
        let lost = conn.inflight.take();
        acts.push(Act::Close(key));
        if let Some(c) = lost.and_then(|p| self.channels.get_mut(p.chan)) {
            c.failed += 1;
        }
    }

    /// Answer bytes arrived.
    pub fn handle_recv(&mut self, key: ConnKey, data: &[u8], now: u64, acts: &mut Vec<Act>) {
        let Some((i, conn)) = self.conn(key) else {
            return;
        };
        conn.response.extend_from_slice(data);
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            let (status, used, close) = match parse_response(&conn.response) {
                Response::Partial if conn.response.len() <= MAX_RESPONSE => return,
                Response::Partial | Response::Malformed => {
                    self.report_error("the HTTP API answered something that is not HTTP/1.1");
                    self.handle_eof(key, now, acts);
                    return;
                }
                Response::Complete { status, len, close } => (status, len, close),
            };
            let body = String::from_utf8_lossy(
                conn.response
                    .get(used.saturating_sub(256)..used)
                    .unwrap_or_default(),
            )
            .into_owned();
            conn.response.drain(..used);
            let done = conn.inflight.take();
            if !(200..300).contains(&status) {
                if let Some(c) = done.and_then(|p| self.channels.get_mut(p.chan)) {
                    c.failed += 1;
                }
                self.report_error(&format!(
                    "the HTTP API refused a publish with {status}: {body}"
                ));
            }
            if close {
                // The server ends the connection after this answer, as HTTP/1.1 allows: nothing
                // failed, so open the next one at once rather than after the failure back-off.
                self.handle_eof(key, now, acts);
                if let Some(conn) = self.conns.get_mut(i) {
                    conn.phase = HttpPhase::Down(now);
                }
                return;
            }
            self.dispatch(i, acts);
            if self.conns.get(i).is_none_or(|c| c.response.is_empty()) {
                return;
            }
        }
    }

    /// Closes every API connection at the end of the run; publishes never sent count as failed.
    pub fn close_all(&mut self, acts: &mut Vec<Act>) {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            let unsent = conn.queue.drain(..).chain(conn.inflight.take());
            for p in unsent {
                if let Some(c) = self.channels.get_mut(p.chan) {
                    c.failed += 1;
                }
            }
            if conn.phase != HttpPhase::Closed {
                acts.push(Act::Close(conn.link.key(self.base_slot + i as u32)));
                conn.phase = HttpPhase::Closed;
            }
        }
    }

    fn report_error(&mut self, what: &str) {
        if !self.reported_error {
            self.reported_error = true;
            eprintln!("ringcast-loadgen: {what}");
        }
    }
}

/// An HTTP API answer so far.
#[derive(Debug, PartialEq, Eq)]
enum Response {
    Partial,
    Malformed,
    /// A whole answer of `len` bytes; `close` when the server will close the connection.
    Complete {
        status: u16,
        len: usize,
        close: bool,
    },
}

fn parse_response(buf: &[u8]) -> Response {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Response::Partial,
        Err(_) => return Response::Malformed,
    };
    let mut body = 0usize;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => body = n,
                None => return Response::Malformed,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value.eq_ignore_ascii_case(b"close")
        {
            close = true;
        }
    }
    let Some(status) = resp.code else {
        return Response::Malformed;
    };
    if chunked {
        return match chunked_len(&buf[head..]) {
            Some(Some(n)) => Response::Complete {
                status,
                len: head + n,
                close,
            },
            Some(None) => Response::Partial,
            None => Response::Malformed,
        };
    }
    if buf.len() < head + body {
        return Response::Partial;
    }
    Response::Complete {
        status,
        len: head + body,
        close,
    }
}

/// Length of a complete chunked body at the start of `buf`: `Some(None)` when incomplete,
/// `None` when malformed. Trailers are not expected from the API and count as malformed.
fn chunked_len(buf: &[u8]) -> Option<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Some(None);
        };
        let line = std::str::from_utf8(&buf[at..at + eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at += eol + 2;
        if size == 0 {
            return match buf.get(at..at + 2) {
                Some(b"\r\n") => Some(Some(at + 2)),
                Some(_) => None,
                None => Some(None),
            };
        }
        if buf.len() < at + size + 2 {
            return Some(None);
        }
        if buf.get(at + size..at + size + 2) != Some(b"\r\n") {
            return None;
        }
        at += size + 2;
    }
}

/// `POST /apps/{id}/events` publishing sequence `seq` of channel `channel`, stamped with its
/// intended send time; the data is padded to `size` bytes.
fn events_request(
    app: &AppCredentials,
    host: &str,
    channel: u32,
    seq: u32,
    intended: u64,
    size: usize,
) -> Vec<u8> {
    let data = delivery_data(seq, intended, size);
    let body = format!(
        r#"{{"name":"seq","channels":["{}"],"data":"{data}"}}"#,
        channel_name(channel, false)
    );
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let target = app.signed_events_target(body.as_bytes(), timestamp);
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::parse_delivery;

    #[test]
    fn responses_parse() {
        let cases: &[(&[u8], Response)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                Response::Complete {
                    status: 200,
                    len: 40,
                    close: false,
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{",
                Response::Partial,
            ),
            (
                b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                Response::Complete {
                    status: 401,
                    len: 67,
                    close: true,
                },
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n",
                Response::Complete {
                    status: 200,
                    len: 19,
                    close: true,
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                Response::Malformed,
            ),
            (b"HTTP/1.1 200", Response::Partial),
            (b"\x16\x03\x01", Response::Malformed),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nHTTP",
                Response::Complete {
                    status: 200,
                    len: 59,
                    close: false,
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
                Response::Partial,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Response::Malformed,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_response(input),
                *want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn requests_carry_sequence_and_stamp() {
        let app = AppCredentials {
            app_id: "7".into(),
            key: "k".into(),
            secret: "s".into(),
        };
        let req = events_request(&app, "127.0.0.1:1", 3, 42, 123_456, 40);
        let text = String::from_utf8(req).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /apps/7/events?auth_key=k&auth_timestamp="),
            "{head}"
        );
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["channels"][0], "loadgen-3");
        assert_eq!(v["data"].as_str().unwrap().len(), 40);
        // What a subscriber receives carries the data string as is.
        let delivered = format!(
            r#"{{"event":"seq","channel":"loadgen-3","data":{}}}"#,
            v["data"]
        );
        assert_eq!(parse_delivery(delivered.as_bytes()), Some((42, 123_456)));
    }
}
