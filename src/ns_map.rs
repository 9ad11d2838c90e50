//! Compact keys for the operator's per-object tables, which hold an entry per token at 20,000
//! tokens. A `(String, String)` key costs two heap blocks per entry and repeats the namespace
//! in every one; [`NsMap`] keeps each namespace once and each name in one `Box<str>`, and
//! [`Version`] keeps a resourceVersion as the integer the apiserver issues, without a block.

use std::collections::HashMap;
use std::fmt;

/// Values by namespace and name; a namespace's map goes with its last entry.
pub struct NsMap<V> {
    by_ns: HashMap<Box<str>, HashMap<Box<str>, V>>,
    len: usize,
}

impl<V> Default for NsMap<V> {
    fn default() -> Self {
        Self {
            by_ns: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> NsMap<V> {
    pub fn get(&self, ns: &str, name: &str) -> Option<&V> {
        self.by_ns.get(ns)?.get(name)
    }

    pub fn get_mut(&mut self, ns: &str, name: &str) -> Option<&mut V> {
        self.by_ns.get_mut(ns)?.get_mut(name)
    }

    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.get(ns, name).is_some()
    }

    /// The entry of `ns`/`name`, made with `new` when absent.
    pub fn get_or_insert_with(&mut self, ns: &str, name: &str, new: impl FnOnce() -> V) -> &mut V {
        let len = &mut self.len;
        self.by_ns
            .entry(ns.into())
            .or_default()
            .entry(name.into())
            .or_insert_with(|| {
                *len += 1;
                new()
            })
    }

    /// Sets `ns`/`name` to `value`, giving back the value it replaces. Replacing allocates
    /// nothing (every watch event of a known object does).
    pub fn insert(&mut self, ns: &str, name: &str, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(ns, name) {
            return Some(std::mem::replace(slot, value));
        }
        self.by_ns
            .entry(ns.into())
            .or_default()
            .insert(name.into(), value);
        self.len += 1;
        None
    }

    pub fn remove(&mut self, ns: &str, name: &str) -> Option<V> {
        let names = self.by_ns.get_mut(ns)?;
        let value = names.remove(name)?;
        if names.is_empty() {
            self.by_ns.remove(ns);
        }
        self.len -= 1;
        Some(value)
    }

    /// Keeps the entries `keep` answers true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str, &mut V) -> bool) {
        let mut len = 0;
        self.by_ns.retain(|ns, names| {
            names.retain(|name, v| keep(ns, name, v));
            len += names.len();
            !names.is_empty()
        });
        self.len = len;
    }

    /// Every entry, as namespace, name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &V)> {
        self.by_ns.iter().flat_map(|(ns, names)| {
            names
                .iter()
                .map(move |(name, v)| (ns.as_ref(), name.as_ref(), v))
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives back the room of maps that emptied.
    pub fn shrink(&mut self) {
        for names in self.by_ns.values_mut() {
            crate::alloc::shrink(names);
        }
        crate::alloc::shrink(&mut self.by_ns);
    }
}

/// A resourceVersion. Opaque to clients, but the apiserver's etcd3 storage issues them as
/// increasing integers; ordering needs that, equality does not (one that does not parse is
/// kept as text and is never "fresher" than another).
#[derive(Clone, PartialEq, Eq)]
pub enum Version {
    Number(u64),
    Text(Box<str>),
}

impl Version {
    pub fn new(rv: &str) -> Self {
        match canonical(rv) {
            Some(n) => Self::Number(n),
            None => Self::Text(rv.into()),
        }
    }

    pub fn number(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(_) => None,
        }
    }
}

/// The number `rv` spells in its one canonical form: "05" and "+5" are text, not 5.
pub fn canonical(rv: &str) -> Option<u64> {
    let digits = !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_digit());
    if !digits || (rv.len() > 1 && rv.starts_with('0')) {
        return None;
    }
    rv.parse().ok()
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}", self = self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_by_namespace_and_name_and_a_namespace_goes_with_its_last() {
        let mut m: NsMap<u8> = NsMap::default();
        assert_eq!(m.insert("a", "x", 1), None);
        assert_eq!(m.insert("a", "x", 2), Some(1));
        m.insert("a", "y", 3);
        m.insert("b", "x", 4);
        assert_eq!(
            (m.len(), m.get("a", "x"), m.get("b", "y")),
            (3, Some(&2), None)
        );
        *m.get_or_insert_with("b", "y", || 9) += 1;
        assert_eq!(m.get("b", "y"), Some(&10));
        assert_eq!(m.remove("b", "x"), Some(4));
        assert_eq!(m.remove("b", "x"), None);
        m.remove("b", "y");
        assert!(!m.by_ns.contains_key("b"), "an empty namespace is dropped");
        m.retain(|_, name, _| name != "x");
        assert_eq!(m.len(), 1);
        let all: Vec<_> = m.iter().collect();
        assert_eq!(all, [("a", "y", &3)]);
        m.retain(|_, _, _| false);
        assert!(m.is_empty() && m.by_ns.is_empty());
    }

    #[test]
    fn a_version_compares_as_the_text_it_was_given() {
        for (rv, other, same) in [
            ("5", "5", true),
            ("5", "05", false),
            ("05", "5", false),
            ("05", "05", true),
            ("0", "0", true),
            ("0", "00", false),
            ("x", "x", true),
            ("x", "y", false),
            ("+5", "5", false),
            ("5", "+5", false),
            ("18446744073709551616", "18446744073709551616", true),
        ] {
            assert_eq!(
                Version::new(rv) == Version::new(other),
                same,
                "{rv} vs {other}"
            );
            assert_eq!(Version::new(rv).to_string(), rv);
        }
        assert_eq!(Version::new("12").number(), Some(12));
        assert_eq!(Version::new("012").number(), None);
        assert_eq!(Version::new("x").number(), None);
    }
}
