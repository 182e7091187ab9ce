//! WebSocket traffic of a connection: decoding what arrived into events and answering them
//! (pings, closes, echoes), and encoding what the scenario sends.

use bytes::Bytes;
use ringcast::driver::ConnKey;
use ringcast::ws::{self, CloseCode, CloseFrame, OpCode};

use super::{Phase, Stage, State};
use crate::cause::Cause;
use crate::link::Act;
use crate::plan::Mode;

impl State {
    pub(super) fn send_frame(&mut self, key: ConnKey, opcode: OpCode, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + ws::MAX_HEADER_LEN);
        let mask = self.mask();
        ws::encode_masked_frame(&mut frame, true, opcode, payload, mask);
        self.acts.push(Act::Send(key, Bytes::from(frame)));
        self.counters.msgs_sent += 1;
    }

    /// An echo message stamped with `intended`, the time it was meant to leave.
    pub(super) fn send_echo(&mut self, key: ConnKey, intended: u64, now: u64) {
        let Mode::Echo(e) = self.plan.mode else {
            return;
        };
        let mut payload = vec![if e.binary { 0 } else { b'x' }; e.size];
        if e.binary {
            payload[..8].copy_from_slice(&intended.to_le_bytes());
        } else {
            payload[..16].copy_from_slice(format!("{intended:016x}").as_bytes());
        }
        if let Some(conn) = self.live(key) {
            conn.sent = conn.sent.wrapping_add(1);
            conn.stamp_ns = now;
        }
        let opcode = if e.binary {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        self.send_frame(key, opcode, &payload);
    }

    /// Sends our close frame with `code` (none: an empty close), unless one went out already.
    pub(super) fn send_close(&mut self, key: ConnKey, code: Option<CloseCode>) {
        let Some(conn) = self.live(key) else { return };
        let Some(wsc) = conn.ws.as_mut().filter(|w| !w.is_close_sent()) else {
            return;
        };
        wsc.handle_close_sent();
        let mut frame = Vec::new();
        let close = code.map(|code| CloseFrame { code, reason: "" });
        ws::encode_close(&mut frame, close, Some(self.rng.u32(..).to_ne_bytes()));
        self.acts.push(Act::Send(key, Bytes::from(frame)));
    }

    pub(super) fn send_text(&mut self, key: ConnKey, text: &str) {
        self.send_frame(key, OpCode::Text, text.as_bytes());
    }

    pub(super) fn handle_frames(&mut self, key: ConnKey, data: &mut [u8], now: u64) {
        let Some(conn) = self.conns.get_mut(key.slot as usize) else {
            return;
        };
        let Some(wsc) = conn.ws.as_mut() else { return };
        let mut arena = std::mem::take(&mut self.arena);
        arena.clear();
        let result = wsc.handle_read(&self.ws_cfg, data, &mut |ev| arena.push(ev));
        for &(kind, start, end, code) in &arena.events {
            let payload = arena.bytes.get(start..end).unwrap_or_default();
            self.handle_event(key, kind, payload, code, now);
        }
        self.arena = arena;
        if let Err(error) = result {
            if self.live(key).is_none() {
                return;
            }
            self.send_close(key, Some(CloseCode::from(error)));
            self.end_conn(key, Cause::Protocol, now);
        }
    }

    /// One WebSocket event.
    fn handle_event(
        &mut self,
        key: ConnKey,
        kind: Kind,
        payload: &[u8],
        code: Option<u16>,
        now: u64,
    ) {
        self.counters.msgs_received += u64::from(kind != Kind::Close);
        match kind {
            Kind::Ping => {
                let mut frame = Vec::new();
                ws::encode_masked_frame(&mut frame, true, OpCode::Pong, payload, self.mask());
                self.acts.push(Act::Send(key, Bytes::from(frame)));
            }
            Kind::Pong => {
                if let Some(sent) = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                {
                    self.record_latency(sent, now);
                }
            }
            Kind::Close => {
                let Some(conn) = self.live(key) else { return };
                let ours = conn.phase == Phase::Closing;
                self.send_close(key, code.map(CloseCode));
                if ours {
                    self.finish_close(key);
                } else {
                    self.end_conn(key, Cause::ServerClose, now);
                }
            }
            Kind::Text | Kind::Binary => match &self.plan.mode {
                Mode::Echo(e) => {
                    self.handle_echo(key, payload, e.binary, e.interval_ns.is_none(), now)
                }
                _ if self.plan.pusher && kind == Kind::Text => {
                    self.handle_pusher(key, payload, now)
                }
                _ => {}
            },
        }
    }

    fn handle_echo(
        &mut self,
        key: ConnKey,
        payload: &[u8],
        binary: bool,
        closed_loop: bool,
        now: u64,
    ) {
        let stamp = if binary {
            payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        } else {
            payload
                .get(..16)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        };
        let Some(stamp) = stamp else { return };
        self.record_latency(stamp, now);
        let Some(conn) = self.live(key) else { return };
        conn.received = conn.received.wrapping_add(1);
        if closed_loop && conn.phase == Phase::Open && self.stage == Stage::Running {
            self.send_echo(key, now, now);
        }
    }
}

/// What kind of WebSocket event an [`EventArena`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// The events of one read, copied out of the decoder's borrow into one reusable buffer so the
/// state can react with `&mut self` without allocating per message.
#[derive(Debug, Default)]
pub(super) struct EventArena {
    bytes: Vec<u8>,
    /// Kind, payload range in `bytes`, close code.
    events: Vec<(Kind, usize, usize, Option<u16>)>,
}

impl EventArena {
    fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }

    fn push(&mut self, ev: ws::Event<'_>) {
        let (kind, payload, code) = match ev {
            ws::Event::Text(t) => (Kind::Text, t.as_bytes(), None),
            ws::Event::Binary(b) => (Kind::Binary, b, None),
            ws::Event::Ping(p) => (Kind::Ping, p, None),
            ws::Event::Pong(p) => (Kind::Pong, p, None),
            ws::Event::Close(c) => (Kind::Close, &[][..], c.map(|c| c.code.0)),
        };
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.events.push((kind, start, self.bytes.len(), code));
    }
}
