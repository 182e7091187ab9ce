//! Frame builders and the split-everything driver the case groups share.

use ringcast::ws::{CloseCode, Connection, Event, OpCode, Role, WsConfig, WsError};

/// An event copied out of the callback, so outcomes can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl Owned {
    fn from_event(event: Event<'_>) -> Self {
        match event {
            Event::Text(text) => Self::Text(text.to_owned()),
            Event::Binary(data) => Self::Binary(data.to_vec()),
            Event::Ping(data) => Self::Ping(data.to_vec()),
            Event::Pong(data) => Self::Pong(data.to_vec()),
            Event::Close(close) => Self::Close(close.map(|c| (c.code.0, c.reason.to_owned()))),
        }
    }
}

/// Shorthands for expected events.
pub fn text(s: &str) -> Owned {
    Owned::Text(s.to_owned())
}
pub fn binary(data: &[u8]) -> Owned {
    Owned::Binary(data.to_vec())
}
pub fn ping(data: &[u8]) -> Owned {
    Owned::Ping(data.to_vec())
}
pub fn pong(data: &[u8]) -> Owned {
    Owned::Pong(data.to_vec())
}
pub fn close(code: u16, reason: &str) -> Owned {
    Owned::Close(Some((code, reason.to_owned())))
}

/// What decoding a byte stream produced: the events, then `Ok` or the error that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<Owned>,
    pub result: Result<(), WsError>,
}

impl Outcome {
    pub fn ok(events: Vec<Owned>) -> Self {
        Self {
            events,
            result: Ok(()),
        }
    }
    pub fn err(events: Vec<Owned>, error: WsError) -> Self {
        Self {
            events,
            result: Err(error),
        }
    }
}

/// Small deterministic generator for random splits (xorshift64*), so failures reproduce.
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Chunk lengths for a split of `len` bytes: whole, byte by byte, random small and random large.
pub fn splits(len: usize) -> Vec<Vec<usize>> {
    let mut all = vec![vec![len], vec![1; len]];
    for seed in 0..6u64 {
        let mut rng = Xorshift::new(seed + 1);
        let max_chunk = if seed % 2 == 0 { 7 } else { (len / 3).max(2) };
        let mut chunks = Vec::new();
        let mut left = len;
        while left > 0 {
            let n = (1 + rng.below(max_chunk)).min(left);
            chunks.push(n);
            left -= n;
        }
        all.push(chunks);
    }
    all
}

/// Decodes `wire` fed in chunks of the given lengths. Checks the sticky-error contract on the
/// way: after an error every later call returns the same error and delivers nothing.
pub fn decode_chunks(role: Role, cfg: &WsConfig, wire: &[u8], chunks: &[usize]) -> Outcome {
    let mut conn = Connection::new(role);
    let mut events = Vec::new();
    let mut input = wire.to_vec();
    let mut rest = input.as_mut_slice();
    for &n in chunks {
        let (chunk, tail) = rest.split_at_mut(n);
        rest = tail;
        if let Err(error) = conn.handle_read(cfg, chunk, &mut |e| events.push(Owned::from_event(e)))
        {
            let mut again = [0x81, 0x80, 0, 0, 0, 0];
            let mut extra = 0;
            assert_eq!(
                conn.handle_read(cfg, &mut again, &mut |_| extra += 1),
                Err(error)
            );
            assert_eq!(extra, 0, "a failed connection delivers nothing");
            assert_eq!(conn.error(), Some(error));
            return Outcome::err(events, error);
        }
    }
    Outcome::ok(events)
}

/// Decodes `wire` under every split of [`splits`], asserts they all agree, returns the outcome.
pub fn decode_with(role: Role, cfg: &WsConfig, wire: &[u8]) -> Outcome {
    let mut outcomes = splits(wire.len()).into_iter().map(|chunks| {
        let outcome = decode_chunks(role, cfg, wire, &chunks);
        (chunks, outcome)
    });
    let (_, first) = outcomes
        .next()
        .unwrap_or_else(|| (vec![], Outcome::ok(vec![])));
    for (chunks, outcome) in outcomes {
        assert_eq!(
            outcome, first,
            "split {chunks:?} disagrees with the whole read"
        );
    }
    first
}

/// Server-side decode with the default limits.
pub fn decode(wire: &[u8]) -> Outcome {
    decode_with(Role::Server, &WsConfig::default(), wire)
}

/// Asserts a server-side decode of `wire` gives `events` then `error`, which maps to `code`.
pub fn assert_fails(wire: &[u8], events: Vec<Owned>, error: WsError, code: u16) {
    assert_eq!(decode(wire), Outcome::err(events, error));
    assert_eq!(CloseCode::from(error), CloseCode(code));
}

/// A frame with a raw first byte (FIN, RSV, opcode bits), masked with `mask` when given.
pub fn raw_frame(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first_byte];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Key used by client frames in the cases; not all-zero so masking is really exercised.
pub const KEY: [u8; 4] = [0xA1, 0x5C, 0x0F, 0x93];

/// A masked client frame.
pub fn client(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    raw_frame(u8::from(fin) << 7 | opcode.bits(), payload, Some(KEY))
}

/// A close frame's payload: code and reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// Concatenates frames into one byte stream.
pub fn wire(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}
