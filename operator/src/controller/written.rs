//! The status berth last wrote per object, for as long as the watch cache has not shown it yet.
//!
//! A reconcile gets its object from the controller's cache, which trails the API server: a
//! reconcile that runs right after the previous one wrote status (woken by that set's own
//! Docker events, say) still sees the status from before the write. Comparing against that,
//! it would find its (identical) new status different and write it again: two status writes
//! for one change, and at 10k sets, 10k needless writes. So the status to compare with and to
//! build on is the one berth wrote, as long as the cache still shows the very version that
//! write replaced; once the cache has moved on, the object's own status is the truth again
//! (and the entry is dropped, so the map holds only writes in flight).

use std::collections::HashMap;
use std::sync::Mutex;

/// Per object key (`namespace/name`): the `resourceVersion` a status write replaced, and the
/// status it wrote.
pub struct Written<T> {
    objects: Mutex<HashMap<String, (String, T)>>,
}

impl<T> Default for Written<T> {
    fn default() -> Self {
        Written { objects: Mutex::new(HashMap::new()) }
    }
}

impl<T: Clone> Written<T> {
    /// The status a reconcile should take as current: berth's last write when the cached
    /// object is still at `resource_version` that write replaced, else `cached`.
    pub fn current(&self, key: &str, resource_version: Option<&str>, cached: Option<&T>) -> Option<T> {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        match objects.get(key) {
            Some((replaced, status)) if Some(replaced.as_str()) == resource_version => Some(status.clone()),
            Some(_) => {
                objects.remove(key);
                cached.cloned()
            }
            None => cached.cloned(),
        }
    }

    /// Note that berth wrote `status` over the object at `replaced`.
    pub fn wrote(&self, key: &str, replaced: Option<&str>, status: T) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        match replaced {
            Some(rv) => objects.insert(key.to_string(), (rv.to_string(), status)),
            None => objects.remove(key),
        };
    }

    /// Forget an object (deleted).
    pub fn forget(&self, key: &str) {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_cache_shows_the_status_berth_wrote_until_it_catches_up() {
        let w = Written::default();
        let old = "converging".to_string();
        assert_eq!(w.current("ns/web", Some("5"), Some(&old)), Some(old.clone()), "nothing written yet");
        w.wrote("ns/web", Some("5"), "ready".to_string());
        assert_eq!(w.current("ns/web", Some("5"), Some(&old)).as_deref(), Some("ready"), "the cache still shows 5");
        assert_eq!(w.current("ns/api", Some("5"), None), None, "per object");
        // The cache caught up (or someone else wrote since): the object's own status counts.
        let later = "edited".to_string();
        assert_eq!(w.current("ns/web", Some("6"), Some(&later)), Some(later.clone()));
        assert_eq!(w.current("ns/web", Some("5"), Some(&old)), Some(old), "the entry is gone once passed");
        w.wrote("ns/web", Some("6"), "ready".to_string());
        w.forget("ns/web");
        assert_eq!(w.current("ns/web", Some("6"), Some(&later)), Some(later));
    }
}
