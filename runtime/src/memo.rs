//! Answers kept until a deadline: a token verified, a token signed.
//!
//! Checking or making a signature costs tens of microseconds; the same
//! token comes back on every call of a session, so the answer is kept, for
//! no longer than it holds, in a map of bounded size.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Instant,
};

/// At most `capacity` answers, each given back until its deadline.
pub struct Memo<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer kept for `key`, unless its deadline has passed.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        match entries.get(key) {
            Some((value, until)) if Instant::now() < *until => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `key` until `until`. When full, the answers past
    /// their deadline go, and if that frees nothing, all of them: a burst of
    /// new keys costs some signatures again, never unbounded memory.
    pub fn remember(&self, key: K, value: V, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, until));
    }

    pub fn forget_all(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_answer_is_given_back_until_its_deadline_and_not_after() {
        let memo = Memo::new(8);
        let now = Instant::now();
        memo.remember("kept".to_owned(), 1, now + Duration::from_secs(60));
        memo.remember("past".to_owned(), 2, now);
        assert_eq!(memo.get("kept"), Some(1));
        assert_eq!(memo.get("past"), None, "an answer past its deadline is not kept");
        memo.remember("brief".to_owned(), 3, Instant::now() + Duration::from_millis(20));
        assert_eq!(memo.get("brief"), Some(3));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(memo.get("brief"), None);
        memo.forget_all();
        assert!(memo.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_live_answers_outlast_expired_ones() {
        let memo = Memo::new(4);
        let later = Instant::now() + Duration::from_secs(60);
        let soon = Instant::now() + Duration::from_millis(10);
        memo.remember(0, "live", later);
        for n in 1..4 {
            memo.remember(n, "brief", soon);
        }
        std::thread::sleep(Duration::from_millis(20));
        memo.remember(4, "new", later);
        assert_eq!(memo.get(&0), Some("live"), "full of expired answers: only those go");
        assert_eq!(memo.get(&4), Some("new"));
        for n in 5..100 {
            memo.remember(n, "live", later);
            assert!(memo.len() <= 4);
        }
    }
}
