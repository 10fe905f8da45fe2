//! A map of values read from elsewhere (a KV bucket, a projection), kept in memory only while
//! a watch on their source (a stream) is running to drop each entry when its source changes.
//!
//! Every change the watch sees has a stream sequence, and every read says the sequence it
//! reflects (the KV entry's revision, the projection's checkpoint). The rules that keep the
//! map from serving an old value:
//! - nothing is answered from memory unless the watch is running (before it starts, after it
//!   fails, until it runs again), and a watch that (re)starts begins from an empty map;
//! - a read is kept only if it reflects every change the watch has seen of its source: a
//!   read that raced with a change, or came from a lagging replica or a projection that had
//!   not applied the change yet, is used once and not kept.
//!
//! Written here rather than taken from a crate: the caching crates (moka, quick_cache) expire
//! by time or size, not by "this read is at least as new as every change seen", which is the
//! rule that makes a watched cache never serve a value older than its last change.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A watched map of `V` by `K`, whose entries come from sources `S` (the same as `K` when
/// each entry is its own source): cheap to clone (clones share the entries).
pub struct WatchedMap<K, V, S = K> {
    state: Arc<Mutex<State<K, V, S>>>,
    max: usize,
}

impl<K, V, S> Clone for WatchedMap<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            max: self.max,
        }
    }
}

struct State<K, V, S> {
    watching: bool,
    /// Reads must reflect at least this sequence to be kept (where the stream was when the
    /// watch started: changes before that are not seen one by one).
    floor: u64,
    /// Changes when the watch (re)starts or stops: a read begun before is not kept.
    generation: u64,
    /// Lookups that had to read the source.
    misses: u64,
    entries: HashMap<K, V>,
    /// The sequence of the last change the watch saw, per source.
    seen: HashMap<S, u64>,
}

impl<K, V, S> State<K, V, S> {
    fn restart(&mut self, watching: bool, floor: u64) {
        self.floor = floor;
        self.generation += 1;
        self.entries.clear();
        self.seen.clear();
        self.watching = watching;
    }
}

/// A lookup that missed: hand it back with what was read, to keep it.
#[must_use]
pub struct Miss {
    generation: u64,
}

impl<K: Eq + Hash, V: Clone, S: Eq + Hash> WatchedMap<K, V, S> {
    /// An empty map of at most `max` entries and sources (beyond that it starts over), not
    /// watching yet.
    pub fn new(max: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                watching: false,
                floor: 0,
                generation: 0,
                misses: 0,
                entries: HashMap::new(),
                seen: HashMap::new(),
            })),
            max: max.max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<K, V, S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value in memory, when the watch vouches for it; else the miss to read and keep.
    pub fn get(&self, key: &K) -> Result<V, Miss> {
        let mut state = self.state();
        if state.watching
            && let Some(value) = state.entries.get(key)
        {
            return Ok(value.clone());
        }
        state.misses += 1;
        Err(Miss {
            generation: state.generation,
        })
    }

    /// Keeps what a missed lookup read from `source` as of sequence `read_at`, unless the
    /// watch has seen a newer change of that source (or restarted since the miss).
    pub fn keep(&self, miss: Miss, key: K, value: V, source: &S, read_at: u64) {
        let mut state = self.state();
        if !state.watching || state.generation != miss.generation || read_at < state.floor {
            return;
        }
        if state.seen.get(source).is_some_and(|seen| *seen > read_at) {
            return;
        }
        if state.entries.len() >= self.max {
            state.entries.clear();
        }
        state.entries.insert(key, value);
    }

    /// The watch saw `source` change at sequence `at`: the entries `affected` says come from
    /// it go.
    pub fn changed(&self, source: S, at: u64, affected: impl Fn(&K, &V) -> bool) {
        let mut state = self.state();
        if state.seen.len() >= self.max && !state.seen.contains_key(&source) {
            // Too many sources to remember: start over rather than forget one.
            let (watching, floor) = (state.watching, state.floor);
            state.restart(watching, floor);
        }
        let seen = state.seen.entry(source).or_insert(at);
        *seen = (*seen).max(at);
        state.entries.retain(|k, v| !affected(k, v));
    }

    /// Forgets the entries `affected` says, without a sequence (the caller knows its own
    /// write changed them; the watch will see it too).
    pub fn forget(&self, affected: impl Fn(&K, &V) -> bool) {
        self.state().entries.retain(|k, v| !affected(k, v));
    }

    /// The watch started (from an empty map) or stopped (and the map is emptied).
    pub fn set_watching(&self, watching: bool) {
        self.state().restart(watching, 0);
    }

    /// The watch started, the stream at sequence `floor` then: a read is kept only if it
    /// reflects at least that (for sources whose reads carry the stream's position, like a
    /// projection's checkpoint).
    pub fn watching_from(&self, floor: u64) {
        self.state().restart(true, floor);
    }

    pub fn is_watching(&self) -> bool {
        self.state().watching
    }

    /// How many lookups missed so far.
    pub fn misses(&self) -> u64 {
        self.state().misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same<K: PartialEq>(key: K) -> impl Fn(&K, &u32) -> bool {
        move |k, _| *k == key
    }

    #[test]
    fn nothing_is_answered_from_memory_before_the_watch_runs() {
        let map: WatchedMap<&str, u32> = WatchedMap::new(10);
        let miss = map.get(&"a").expect_err("empty");
        map.keep(miss, "a", 1, &"a", 5);
        assert!(map.get(&"a").is_err(), "kept only while watching");
        map.set_watching(true);
        let miss = map.get(&"a").expect_err("empty");
        map.keep(miss, "a", 1, &"a", 5);
        assert_eq!(map.get(&"a").ok(), Some(1));
        map.set_watching(false);
        assert!(map.get(&"a").is_err(), "a stopped watch empties the map");
        assert_eq!(map.misses(), 4);
    }

    #[test]
    fn a_read_older_than_a_change_the_watch_saw_is_not_kept() {
        let map: WatchedMap<&str, u32> = WatchedMap::new(10);
        map.set_watching(true);
        // The read began, the watch saw the key change at 7, then the (old, 5) value came.
        let miss = map.get(&"a").expect_err("empty");
        map.changed("a", 7, same("a"));
        map.keep(miss, "a", 1, &"a", 5);
        assert!(map.get(&"a").is_err(), "the old value was not kept");
        // A lagging read after the change: not kept either.
        let miss = map.get(&"a").expect_err("empty");
        map.keep(miss, "a", 1, &"a", 6);
        assert!(map.get(&"a").is_err());
        // A read that has the change is.
        let miss = map.get(&"a").expect_err("empty");
        map.keep(miss, "a", 2, &"a", 7);
        assert_eq!(map.get(&"a").ok(), Some(2));
        map.changed("a", 8, same("a"));
        assert!(map.get(&"a").is_err());
    }

    #[test]
    fn reads_behind_where_the_stream_was_when_the_watch_started_are_not_kept() {
        let map: WatchedMap<&str, u32> = WatchedMap::new(10);
        map.watching_from(20);
        let miss = map.get(&"a").expect_err("empty");
        map.keep(miss, "a", 1, &"a", 19);
        assert!(map.get(&"a").is_err(), "the projection had not caught up");
        let miss = map.get(&"a").expect_err("empty");
        map.keep(miss, "a", 1, &"a", 20);
        assert_eq!(map.get(&"a").ok(), Some(1));
    }

    #[test]
    fn a_restart_between_the_miss_and_the_read_drops_the_read() {
        let map: WatchedMap<&str, u32> = WatchedMap::new(10);
        map.set_watching(true);
        let miss = map.get(&"a").expect_err("empty");
        map.set_watching(true);
        map.keep(miss, "a", 1, &"a", 5);
        assert!(map.get(&"a").is_err());
    }

    #[test]
    fn entries_and_sources_stay_within_their_bound() {
        let map: WatchedMap<u32, u32> = WatchedMap::new(3);
        map.set_watching(true);
        for i in 0..10 {
            let miss = map.get(&i).expect_err("new");
            map.keep(miss, i, i, &i, 1);
            map.changed(100 + i, 1, |_, _| false);
            let state = map.state();
            assert!(state.entries.len() <= 3 && state.seen.len() <= 3);
        }
        assert!(
            map.is_watching(),
            "a restart for too many sources keeps watching"
        );
    }
}
