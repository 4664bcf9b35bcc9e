//! The consistent hash ring that maps a resource to the node that owns it
//! (DESIGN §5, normative).
//!
//! Routing "by resource" must pick the same node on every member of the
//! cluster, whatever language it is written in, so the placement is fixed
//! to the byte:
//!
//! - every node has [`VIRTUAL_POINTS`] (100) points; point `i` of node `n`
//!   is [`point_hash`]`(n, i)`: the first 8 bytes, big-endian, of
//!   `MD5("<n>#<i>")`, where `<n>` is the node id as 32 lowercase hex
//!   digits without dashes and `<i>` is `i` in decimal;
//! - a key is [`key_hash`]`(key)`: the first 8 bytes, big-endian, of
//!   `MD5(key)`, over the exact UTF-8 bytes of the key (no normalisation:
//!   a dashed and an undashed UUID are different keys);
//! - the owner of a key is the node of the first point whose value is
//!   greater than or equal to the key's hash, wrapping around to the
//!   smallest point past the largest;
//! - when two points have the same value (two nodes whose points collide),
//!   the point of the node with the smaller id comes first, so it is the
//!   one found. Node ids order as their 32-hex form orders as a string.
//!   A collision of 64-bit MD5 prefixes is practically never seen, but the
//!   rule makes the result independent of the order nodes joined in.
//!
//! Many virtual points per node spread each node's share over the whole
//! ring, which keeps the shares near `1/n` and means that a node joining
//! takes about `1/(n+1)` of the keys, a little from every other node, and a
//! node leaving hands its keys out to all the others rather than to one
//! neighbour.

use std::fmt;

use md5::{Digest, Md5};

use crate::NodeId;

/// How many points each node has on the ring. Normative (DESIGN §5):
/// every member of a cluster must use the same value, or they disagree on
/// owners. [`HashRing::with_points`] changes it for tests only.
pub const VIRTUAL_POINTS: u32 = 100;

/// The ring value of a key: the first 8 bytes, big-endian, of `MD5(key)`.
///
/// Public so that other implementations can check themselves against it.
/// Does not allocate: this runs for every message routed by resource.
pub fn key_hash(key: &str) -> u64 {
    prefix(Md5::digest(key.as_bytes()).as_slice())
}

/// The ring value of point `i` of `node`: the first 8 bytes, big-endian,
/// of `MD5("<node>#<i>")`, with the node id as 32 lowercase hex digits.
///
/// Public so that other implementations can check themselves against it.
/// This formats a string; it only runs when the membership changes.
pub fn point_hash(node: NodeId, i: u32) -> u64 {
    prefix(Md5::digest(format!("{node}#{i}").as_bytes()).as_slice())
}

fn prefix(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A consistent hash ring over node ids.
///
/// Lookups ([`owner`](Self::owner)) are hot and membership changes are
/// rare, so the points live in one vector sorted by `(value, node)`: a
/// lookup is one MD5 and one binary search, without allocating; a change
/// re-sorts the vector. Share a ring between threads behind an `Arc` and
/// replace it on change rather than locking it.
#[derive(Clone, PartialEq, Eq)]
pub struct HashRing {
    points_per_node: u32,
    /// The members, sorted, without duplicates.
    nodes: Vec<NodeId>,
    /// Every point of every member, sorted by value then node id (the
    /// tie-break of the module docs falls out of the tuple order).
    points: Vec<(u64, NodeId)>,
}

impl HashRing {
    /// An empty ring with the normative [`VIRTUAL_POINTS`] per node.
    pub fn new() -> Self {
        Self::with_points(VIRTUAL_POINTS)
    }

    /// An empty ring with `points_per_node` points per node.
    ///
    /// Only for tests and experiments: a cluster must use
    /// [`VIRTUAL_POINTS`] to agree with its other members.
    ///
    /// # Panics
    ///
    /// If `points_per_node` is 0: a member without points would own
    /// nothing, and a ring with members but no points could not answer.
    pub fn with_points(points_per_node: u32) -> Self {
        assert!(points_per_node > 0, "a node needs at least one point");
        Self {
            points_per_node,
            nodes: Vec::new(),
            points: Vec::new(),
        }
    }

    /// How many points each node has.
    pub fn points_per_node(&self) -> u32 {
        self.points_per_node
    }

    /// Adds a node. Returns whether it was not already there.
    pub fn insert(&mut self, node: NodeId) -> bool {
        let Err(at) = self.nodes.binary_search(&node) else {
            return false;
        };
        self.nodes.insert(at, node);
        self.points.extend(self.points_of(node));
        self.points.sort_unstable();
        true
    }

    /// Removes a node; its keys go to the nodes of the points that follow
    /// its points. Returns whether it was there.
    pub fn remove(&mut self, node: NodeId) -> bool {
        let Ok(at) = self.nodes.binary_search(&node) else {
            return false;
        };
        self.nodes.remove(at);
        // Removing keeps the rest sorted.
        self.points.retain(|&(_, n)| n != node);
        true
    }

    /// Whether `node` is on the ring.
    pub fn contains(&self, node: NodeId) -> bool {
        self.nodes.binary_search(&node).is_ok()
    }

    /// The members, sorted by id.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// How many nodes are on the ring.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring has no node, so no key has an owner.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node that owns `key` (a resource UUID, or any string), or
    /// `None` on an empty ring. Does not allocate.
    pub fn owner(&self, key: &str) -> Option<NodeId> {
        self.owner_of_hash(key_hash(key))
    }

    /// The node of the first point at or after `hash`, wrapping around.
    fn owner_of_hash(&self, hash: u64) -> Option<NodeId> {
        let at = self.points.partition_point(|&(value, _)| value < hash);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map(|&(_, node)| node)
    }

    /// Every point of `node` on this ring, unsorted.
    fn points_of(&self, node: NodeId) -> impl Iterator<Item = (u64, NodeId)> + use<> {
        (0..self.points_per_node).map(move |i| (point_hash(node, i), node))
    }
}

impl Default for HashRing {
    /// The same as [`HashRing::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HashRing {
    /// The members, not the hundreds of points.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashRing")
            .field("points_per_node", &self.points_per_node)
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl Extend<NodeId> for HashRing {
    /// Adds every node, sorting the points once rather than per node.
    fn extend<I: IntoIterator<Item = NodeId>>(&mut self, nodes: I) {
        let before = self.points.len();
        for node in nodes {
            if let Err(at) = self.nodes.binary_search(&node) {
                self.nodes.insert(at, node);
                self.points.extend(self.points_of(node));
            }
        }
        if self.points.len() != before {
            self.points.sort_unstable();
        }
    }
}

impl FromIterator<NodeId> for HashRing {
    /// A ring with the normative number of points over these nodes.
    fn from_iter<I: IntoIterator<Item = NodeId>>(nodes: I) -> Self {
        let mut ring = Self::new();
        ring.extend(nodes);
        ring
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Node `n` of the test vectors: the id whose 32-hex form is `n` with
    /// leading zeros, e.g. `00000000000000000000000000000001`.
    fn node(n: u128) -> NodeId {
        format!("{n:032x}").parse().unwrap()
    }

    /// `n` keys that are the same on every run.
    fn keys(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("{i:032x}"))
    }

    // The expected values below come from Python, independently of this
    // code, so that every implementation can check itself against them:
    //
    // python3 -c '
    // import hashlib, bisect
    // h = lambda s: int.from_bytes(hashlib.md5(s.encode()).digest()[:8], "big")
    // ring = lambda ns: sorted((h(f"{n:032x}#{i}"), n) for n in ns for i in range(100))
    // owner = lambda r, k: r[bisect.bisect_left(r, (h(k), 0)) % len(r)][1]
    // print("%016x" % h("00000000000000000000000000000001#0"), "%016x" % h("vm-1"))
    // k = "5d418dbd02ac1097f9ca517b13c92edb"
    // print(owner(ring([1, 2, 3]), k), owner(ring([1, 3]), k))'
    //
    // The keys are md5("key<i>") in hex for i in 0, 1, 8, 23, 36, 352:
    // just strings that look like ZStack resource UUIDs.

    #[test]
    fn point_hashes_match_the_test_vectors() {
        let vectors = [
            (1, 0, 0xbb5b89d44987f55d),
            (1, 1, 0xf04174c3b20b4dd4),
            (1, 99, 0x77eff90974f3ca38),
            (2, 0, 0xf447742d6496cf80),
            (2, 1, 0xc91cf6d01ebf0325),
            (2, 99, 0x99d04ffd7bdb5a1d),
            (3, 0, 0xc5df6f82dbefd8f3),
            (3, 1, 0x53b55d9173d5f07a),
            (3, 99, 0x64198d1eac135c95),
        ];
        for (n, i, expected) in vectors {
            assert_eq!(point_hash(node(n), i), expected, "point {i} of node {n}");
        }
    }

    #[test]
    fn key_hashes_match_the_test_vectors() {
        let vectors = [
            ("", 0xd41d8cd98f00b204),
            ("vm-1", 0x8d4f7b9cc5444954),
            ("0123456789abcdef0123456789abcdef", 0x8516ac99dc606032),
            ("21f402f25b1a0fd722b83169e10509f8", 0x1b1ffd1254254fd9),
            ("191fb10a8eaaa71e50495183fc123ce8", 0xff8a31af495f529d),
        ];
        for (key, expected) in vectors {
            assert_eq!(key_hash(key), expected, "key {key:?}");
        }
    }

    /// Owners with nodes 1, 2 and 3, then without node 2. The last key
    /// hashes above the largest point (0xfedd36e3cf118924, node 1), so it
    /// wraps around to the smallest (0x020abab53fc0e11f, node 2).
    #[test]
    fn owners_match_the_test_vectors() {
        let vectors = [
            ("21f402f25b1a0fd722b83169e10509f8", 3, 3),
            ("c2add694bf942dc77b376592d9c862cd", 1, 1),
            ("5d418dbd02ac1097f9ca517b13c92edb", 2, 3),
            ("de8297196545d1d595aea4b7ff4b9eca", 2, 1),
            ("dcfb113069f19d91d58f5c2d3a53a969", 3, 3),
            ("191fb10a8eaaa71e50495183fc123ce8", 2, 1),
        ];
        let mut ring: HashRing = [node(1), node(2), node(3)].into_iter().collect();
        let smallest = ring.points.first().copied();
        let largest = ring.points.last().copied();
        assert_eq!(smallest, Some((0x020abab53fc0e11f, node(2))));
        assert_eq!(largest, Some((0xfedd36e3cf118924, node(1))));
        for (key, with_all, _) in vectors {
            assert_eq!(ring.owner(key), Some(node(with_all)), "key {key}");
        }
        assert!(ring.remove(node(2)));
        for (key, _, without_2) in vectors {
            assert_eq!(ring.owner(key), Some(node(without_2)), "key {key}");
        }
    }

    /// The ring against the definition, computed the slow way: the
    /// smallest point at or after the hash, else the smallest point.
    #[test]
    fn owner_agrees_with_a_linear_scan() {
        let ring: HashRing = (1..=5).map(node).collect();
        let all: Vec<(u64, NodeId)> = ring
            .nodes()
            .iter()
            .flat_map(|&n| ring.points_of(n))
            .collect();
        for key in keys(2_000) {
            let hash = key_hash(&key);
            let expected = all
                .iter()
                .filter(|p| p.0 >= hash)
                .min()
                .or_else(|| all.iter().min())
                .map(|p| p.1);
            assert_eq!(ring.owner(&key), expected, "key {key}");
        }
    }

    #[test]
    fn a_hash_equal_to_a_point_belongs_to_that_point() {
        let ring: HashRing = [node(1), node(2), node(3)].into_iter().collect();
        for &(value, owner) in &ring.points {
            assert_eq!(ring.owner_of_hash(value), Some(owner));
        }
        assert_eq!(ring.owner_of_hash(0), Some(node(2)));
        assert_eq!(ring.owner_of_hash(u64::MAX), Some(node(2)));
    }

    #[test]
    fn equal_points_go_to_the_smaller_node_id() {
        // Real points never collide among these nodes, so plant a collision.
        let mut ring = HashRing::with_points(1);
        ring.nodes = vec![node(1), node(2)];
        ring.points = vec![(10, node(2)), (10, node(1))];
        ring.points.sort_unstable();
        assert_eq!(ring.owner_of_hash(10), Some(node(1)));
        assert_eq!(ring.owner_of_hash(11), Some(node(1)));
        assert!(ring.remove(node(1)));
        assert_eq!(ring.owner_of_hash(10), Some(node(2)));
    }

    #[test]
    fn an_empty_ring_has_no_owner() {
        let mut ring = HashRing::new();
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.owner("vm-1"), None);
        assert_eq!(ring.owner(""), None);
        ring.insert(node(1));
        ring.remove(node(1));
        assert_eq!(ring.owner("vm-1"), None);
        assert_eq!(ring, HashRing::default());
    }

    #[test]
    fn a_single_node_owns_every_key() {
        let ring: HashRing = [node(7)].into_iter().collect();
        for key in keys(1_000) {
            assert_eq!(ring.owner(&key), Some(node(7)));
        }
    }

    #[test]
    fn insert_and_remove_say_whether_they_changed_the_ring() {
        let mut ring = HashRing::new();
        assert!(ring.insert(node(2)));
        assert!(ring.insert(node(1)));
        let before = ring.clone();
        assert!(!ring.insert(node(2)));
        assert_eq!(ring, before);
        assert_eq!(ring.points.len(), 2 * VIRTUAL_POINTS as usize);
        assert_eq!(ring.nodes(), &[node(1), node(2)]);
        assert!(ring.contains(node(1)));
        assert!(!ring.contains(node(3)));
        assert!(!ring.remove(node(3)));
        assert_eq!(ring, before);
        assert!(ring.remove(node(1)));
        assert!(!ring.contains(node(1)));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.points.len(), VIRTUAL_POINTS as usize);
    }

    #[test]
    fn the_order_nodes_join_in_does_not_matter() {
        let mut one_by_one = HashRing::new();
        for n in [3, 1, 2] {
            one_by_one.insert(node(n));
        }
        let at_once: HashRing = [node(2), node(3), node(1), node(2)].into_iter().collect();
        assert_eq!(one_by_one, at_once);
        assert_eq!(at_once.nodes(), &[node(1), node(2), node(3)]);
    }

    #[test]
    fn with_points_sets_the_points_per_node() {
        let mut ring = HashRing::with_points(3);
        assert_eq!(ring.points_per_node(), 3);
        ring.insert(node(1));
        let mut expected: Vec<u64> = (0..3).map(|i| point_hash(node(1), i)).collect();
        expected.sort_unstable();
        let values: Vec<u64> = ring.points.iter().map(|p| p.0).collect();
        assert_eq!(values, expected);
    }

    #[test]
    #[should_panic(expected = "at least one point")]
    fn zero_points_per_node_is_refused() {
        HashRing::with_points(0);
    }

    fn shares(ring: &HashRing, n: usize) -> HashMap<NodeId, f64> {
        let mut counts: HashMap<NodeId, usize> = HashMap::new();
        for key in keys(n) {
            *counts.entry(ring.owner(&key).unwrap()).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(node, count)| (node, count as f64 / n as f64))
            .collect()
    }

    /// 3 nodes, 100 points each, 100,000 keys: the measured shares are
    /// 0.332, 0.326 and 0.343 (ideal 1/3). With 30 sets of random node ids
    /// they ranged over 0.287..0.406, so the bound 0.25..0.42 holds with a
    /// margin and still catches a ring that ignores its virtual points.
    #[test]
    fn three_nodes_share_the_keys_evenly() {
        let ring: HashRing = [node(1), node(2), node(3)].into_iter().collect();
        let shares = shares(&ring, 100_000);
        assert_eq!(shares.len(), 3);
        for (node, share) in shares {
            assert!((0.25..=0.42).contains(&share), "{node} owns {share}");
        }
    }

    /// Adding node 4 to nodes 1, 2 and 3 moves 0.278 of 100,000 keys
    /// (ideal 1/4; 0.213..0.303 with 30 sets of random node ids), all of
    /// them to node 4, taken from all three others (10001, 8734, 9055).
    #[test]
    fn a_new_node_takes_about_its_share_and_only_that() {
        let before: HashRing = [node(1), node(2), node(3)].into_iter().collect();
        let mut after = before.clone();
        assert!(after.insert(node(4)));
        let n = 100_000;
        let mut moved = 0;
        for key in keys(n) {
            let (old, new) = (before.owner(&key), after.owner(&key));
            if old != new {
                moved += 1;
                assert_eq!(
                    new,
                    Some(node(4)),
                    "key {key} moved from {old:?} to {new:?}"
                );
            }
        }
        let fraction = moved as f64 / n as f64;
        assert!(
            (0.18..=0.32).contains(&fraction),
            "{fraction} of the keys moved"
        );
    }

    /// Removing node 2 of 3 moves exactly node 2's keys, and spreads them
    /// over both others (measured: 20648 to node 1, 11919 to node 3).
    #[test]
    fn a_leaving_node_hands_out_only_its_own_keys() {
        let before: HashRing = [node(1), node(2), node(3)].into_iter().collect();
        let mut after = before.clone();
        assert!(after.remove(node(2)));
        let mut to: HashMap<NodeId, usize> = HashMap::new();
        for key in keys(100_000) {
            let (old, new) = (before.owner(&key).unwrap(), after.owner(&key).unwrap());
            if old == node(2) {
                *to.entry(new).or_default() += 1;
            } else {
                assert_eq!(old, new, "key {key} of {old} moved to {new}");
            }
        }
        assert_eq!(to.len(), 2, "{to:?}");
        assert!(to.values().all(|&count| count > 5_000), "{to:?}");
    }
}
