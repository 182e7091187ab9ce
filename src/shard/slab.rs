//! The shard's connection table: a `slab::Slab` whose keys carry a generation, so that an event
//! or timer entry for a closed connection can never reach the connection that reused its slot.

use crate::driver::{ConnKey, MAX_SLOTS};

/// An entry and the generation its slot had when it was inserted.
#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: T,
}

/// A slab of connections addressed by generation-checked [`ConnKey`]s.
#[derive(Debug)]
pub(crate) struct ConnSlab<T> {
    entries: slab::Slab<Entry<T>>,
    /// Generation handed to the next insert. Shard-wide rather than per slot, so no per-slot
    /// counter outlives its entry; it wraps after 2^32 inserts, and a stale key would then also
    /// need to name the very slot reused at that exact count.
    next_generation: u32,
}

impl<T> Default for ConnSlab<T> {
    fn default() -> Self {
        Self {
            entries: slab::Slab::new(),
            next_generation: 1,
        }
    }
}

impl<T> ConnSlab<T> {
    /// Upper bound of the bytes one connection takes in the slab's vector: the value, its
    /// generation, and the slab crate's vacant/occupied tag (at most a word).
    #[cfg(test)]
    pub(crate) const ENTRY_BYTES: usize = size_of::<Entry<T>>() + size_of::<usize>();

    /// Inserts `value`; `None` when every addressable slot ([`MAX_SLOTS`]) is taken.
    pub(crate) fn insert(&mut self, value: T) -> Option<ConnKey> {
        let vacant = self.entries.vacant_entry();
        let slot = u32::try_from(vacant.key())
            .ok()
            .filter(|&slot| slot < MAX_SLOTS)?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        vacant.insert(Entry { generation, value });
        Some(ConnKey { slot, generation })
    }

    /// The entry under `key`, if it is still the one the key was made for.
    pub(crate) fn get(&self, key: ConnKey) -> Option<&T> {
        self.entries
            .get(key.slot as usize)
            .filter(|entry| entry.generation == key.generation)
            .map(|entry| &entry.value)
    }

    /// Mutable [`ConnSlab::get`].
    pub(crate) fn get_mut(&mut self, key: ConnKey) -> Option<&mut T> {
        self.entries
            .get_mut(key.slot as usize)
            .filter(|entry| entry.generation == key.generation)
            .map(|entry| &mut entry.value)
    }

    /// Removes and returns the entry under `key`, if it is still the one the key was made for.
    pub(crate) fn remove(&mut self, key: ConnKey) -> Option<T> {
        self.get(key)?;
        self.entries
            .try_remove(key.slot as usize)
            .map(|entry| entry.value)
    }

    /// Connections held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no connection is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys of every connection held.
    pub(crate) fn keys(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.entries.iter().map(|(slot, entry)| ConnKey {
            slot: slot as u32,
            generation: entry.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_key_misses_after_slot_reuse() {
        let mut slab = ConnSlab::default();
        let first = slab.insert("first").expect("insert");
        assert_eq!(slab.remove(first), Some("first"));
        let second = slab.insert("second").expect("insert");
        assert_eq!(first.slot, second.slot, "the slab reuses the freed slot");
        assert_ne!(first.generation, second.generation);
        assert_eq!(slab.get(first), None);
        assert_eq!(slab.get_mut(first), None);
        assert_eq!(slab.remove(first), None);
        assert_eq!(slab.get(second), Some(&"second"));
    }

    #[test]
    fn keys_lists_live_entries_only() {
        let mut slab = ConnSlab::default();
        let a = slab.insert(1).expect("insert");
        let b = slab.insert(2).expect("insert");
        slab.remove(a);
        assert_eq!(slab.keys().collect::<Vec<_>>(), vec![b]);
        assert_eq!(slab.len(), 1);
        assert!(!slab.is_empty());
    }

    #[test]
    fn generation_skips_zero_on_wrap() {
        let mut slab = ConnSlab::<()> {
            next_generation: u32::MAX,
            ..ConnSlab::default()
        };
        let last = slab.insert(()).expect("insert");
        let next = slab.insert(()).expect("insert");
        assert_eq!(last.generation, u32::MAX);
        assert_eq!(next.generation, 1);
    }
}
