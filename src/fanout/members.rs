//! The local connections in one room, indexed by socket id: joining, leaving and finding one
//! cost the same however many the room holds, so a mass disconnect of one room is linear in the
//! connections that leave, not quadratic in the room's size.

use std::collections::HashMap;

use crate::transport::Sid;

/// Values kept in insertion-independent order, each found by its socket id in O(1).
pub struct Indexed<T> {
    items: Vec<(Sid, T)>,
    at: HashMap<Sid, usize>,
}

impl<T> Default for Indexed<T> {
    fn default() -> Self {
        Indexed {
            items: Vec::new(),
            at: HashMap::new(),
        }
    }
}

impl<T> Indexed<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Puts `value` under `sid`, replacing what was there.
    pub fn insert(&mut self, sid: Sid, value: T) {
        match self.at.get(&sid) {
            Some(&i) => self.items[i].1 = value,
            None => {
                self.at.insert(sid, self.items.len());
                self.items.push((sid, value));
            }
        }
    }

    /// Takes out what `sid` holds: the last item moves into its place.
    pub fn remove(&mut self, sid: Sid) -> Option<T> {
        let i = self.at.remove(&sid)?;
        let (_, value) = self.items.swap_remove(i);
        if let Some((moved, _)) = self.items.get(i) {
            self.at.insert(*moved, i);
        }
        Some(value)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the items `keep` accepts: each one it refuses costs O(1) to take out.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        let refused: Vec<Sid> = self
            .items
            .iter_mut()
            .filter_map(|(sid, v)| (!keep(v)).then_some(*sid))
            .collect();
        for sid in refused {
            self.remove(sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_keeps_every_other_item_findable() {
        let mut set = Indexed::default();
        let sids: Vec<Sid> = (0..5).map(|_| Sid::new()).collect();
        for (n, sid) in sids.iter().enumerate() {
            set.insert(*sid, n);
        }
        assert_eq!(set.remove(sids[1]), Some(1));
        assert_eq!(set.remove(sids[1]), None, "gone");
        assert_eq!(set.remove(sids[4]), Some(4), "the one moved into its place");
        set.insert(sids[0], 10);
        assert_eq!(set.len(), 3, "replaced, not added");
        set.retain(|v| *v != 2);
        let mut left: Vec<usize> = set.iter_mut().map(|v| *v).collect();
        left.sort();
        assert_eq!(left, [3, 10]);
        assert_eq!(set.remove(sids[3]), Some(3));
        assert_eq!(set.remove(sids[0]), Some(10));
        assert!(set.is_empty());
    }
}
