//! Cache channels (`cache-`, `private-cache-`, `presence-cache-`, `private-encrypted-cache-`):
//! the shard keeps each one's last event and replays it to every new subscriber, or answers
//! `pusher:cache_miss` when there is none or it expired.

use std::time::{Duration, Instant};

use crate::pusher::frame::Frame;
use crate::pusher::protocol;

/// How long a cached event stays replayable; Pusher documents 30 minutes.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// The last event of one cache channel, held by the shard's channel table entry.
#[derive(Debug, Clone, Default)]
pub struct CacheSlot {
    last: Option<(Frame, Instant)>,
}

impl CacheSlot {
    /// Remembers `frame`, the event just published on the channel.
    pub fn handle_publish(&mut self, frame: &Frame, now: Instant) {
        self.last = Some((frame.clone(), now));
    }

    /// What a new subscriber of `channel` receives after `subscription_succeeded`: the cached
    /// event while it is younger than [`CACHE_TTL`], `pusher:cache_miss` otherwise.
    pub fn replay(&mut self, channel: &str, now: Instant) -> Frame {
        match &self.last {
            Some((frame, at)) if now.saturating_duration_since(*at) < CACHE_TTL => frame.clone(),
            _ => {
                self.last = None;
                protocol::cache_miss(channel)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::frame::encode_event_frame;

    #[test]
    fn replays_the_last_event_until_it_expires() {
        let t0 = Instant::now();
        let mut slot = CacheSlot::default();
        assert_eq!(slot.replay("cache-a", t0), protocol::cache_miss("cache-a"));
        let first = encode_event_frame("e", "cache-a", "1", None);
        let second = encode_event_frame("e", "cache-a", "2", None);
        slot.handle_publish(&first, t0);
        slot.handle_publish(&second, t0 + Duration::from_secs(1));
        assert_eq!(slot.replay("cache-a", t0 + Duration::from_secs(2)), second);
        let stale = t0 + Duration::from_secs(1) + CACHE_TTL;
        assert_eq!(
            slot.replay("cache-a", stale),
            protocol::cache_miss("cache-a")
        );
        assert_eq!(
            slot.replay("cache-a", t0 + Duration::from_secs(2)),
            protocol::cache_miss("cache-a")
        );
    }
}
