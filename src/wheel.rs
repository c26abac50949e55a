//! The timer wheel: which connection is due next.
//!
//! endlessh keeps its clients in a FIFO, and the FIFO *is* its timer: every
//! client waits the same delay, so the one at the front is always the next
//! one due. Our delays are jittered per connection (random trickle gaps, greet
//! pauses, idle limits, session ends), so the order in which connections were
//! last served says nothing about the order in which they come due. A binary
//! heap would restore that order, but at O(log n) for every push and pop, with
//! no cheap cancel (a heap of stale entries grows with every reschedule; an
//! indexed heap needs a position per key), and in one more allocation that
//! moves as it grows. A hierarchical wheel (Varghese & Lauck, "Hashed and
//! hierarchical timing wheels", 1987; the layout follows tokio's
//! `runtime/time/wheel`) inserts, cancels and expires in O(1).
//!
//! # Cost
//!
//! 16 bytes per key: a `Node` with the deadline and two `u32` list links, in
//! a `Vec` indexed by the key (the connection's slab index). The `Vec` grows
//! only when a key beyond its end is inserted, by amortised doubling, so there
//! is no allocation per insert; [`Wheel::with_capacity`] reserves it once, and
//! pages of it that are never touched cost no RSS. The fixed part is six
//! levels of a 64-bit bitmap and 64 list heads, about 1.6 KB. Each cascade
//! moves a key at least one level down, so a key within reach is cascaded at
//! most five times before it fires: expiry is amortised O(1).
//!
//! # Time
//!
//! Time is `u64` milliseconds (the daemon's monotonic clock since start) with
//! a resolution of 1 ms. Level `l` has 64 slots of 64^l ms each, so it spans
//! 64^(l+1) ms; six levels reach 2^36 ms, about 795 days. A deadline further
//! away than that is clamped into the top level: it sits in the top-level slot
//! of its own bits 30..36, which comes round every 2^36 ms; each time it does,
//! the key is looked at and filed again, lower once its deadline is in reach.
//! It never fires early and costs one extra cascade per 795 days.
//!
//! # What the caller must know
//!
//! - Drain with `while let Some(key) = wheel.poll(now)`. Keys come out in no
//!   particular order within a millisecond, never before their deadline, and
//!   all of them by the first poll at or after it. A key re-inserted during
//!   the drain with a deadline `<= now` comes out again in the same drain: a
//!   caller that always does so never leaves the loop.
//! - [`Wheel::next_deadline`] is a lower bound, not the exact earliest
//!   deadline: past the current 64 ms it may be the start of a coarse slot.
//!   Sleep until then, poll (which may return `None` after cascading), and
//!   ask again. If something is already due it is at or before the current
//!   time.
//! - Keys are slab indices and must stay below `u32::MAX - 1` (two values are
//!   the lists' sentinels).

/// Each level has 2^6 = 64 slots; a level's slot is 64 times the width of the
/// slot below.
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Six levels reach 2^36 ms, far beyond any session; see "Time" above for
/// what happens past that.
const LEVELS: usize = 6;
const TOP: usize = LEVELS - 1;
/// The wheel reaches 2^36 ms; deadlines that differ from the current time
/// above this bit are the far ones, clamped into the top level.
const REACH_BITS: u32 = SLOT_BITS * LEVELS as u32;

/// The end of a list.
const NIL: u32 = u32::MAX;
/// `Node::prev` of a key in no list: the key is not scheduled.
const UNSCHEDULED: u32 = u32::MAX - 1;

/// One key's place in the wheel: 16 bytes, held by a test.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// When the key is due, exactly as inserted (never rounded or clamped, so
    /// the list the key is in can be derived from it; see `list_for`).
    deadline: u64,
    /// The previous key in the same list, `NIL` at the head, `UNSCHEDULED`
    /// when the key is in no list.
    prev: u32,
    /// The next key in the same list, or `NIL`.
    next: u32,
}

impl Node {
    const IDLE: Node = Node {
        deadline: 0,
        prev: UNSCHEDULED,
        next: NIL,
    };

    fn is_scheduled(&self) -> bool {
        self.prev != UNSCHEDULED
    }
}

/// One level of 64 slots, each slot a doubly linked list of keys.
#[derive(Clone, Copy)]
struct Level {
    /// Bit `s` is set iff `heads[s] != NIL`, so the next occupied slot is one
    /// `trailing_zeros` away instead of a scan.
    occupied: u64,
    heads: [u32; SLOTS],
}

impl Level {
    const EMPTY: Level = Level {
        occupied: 0,
        heads: [NIL; SLOTS],
    };
}

/// Which list a scheduled key is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    /// Already due: deadline `<= elapsed`.
    Due,
    Slot {
        level: usize,
        slot: usize,
    },
}

/// A hierarchical timer wheel of `u32` keys and `u64` millisecond deadlines.
pub struct Wheel {
    /// The wheel's time: the largest `now` polled, or the start of the slot
    /// being cascaded. Every key in a slot is due after it; every key in
    /// `due` at or before it.
    elapsed: u64,
    levels: [Level; LEVELS],
    /// Keys already due, handed out by `poll` before anything else.
    due: u32,
    /// At or before every deadline in `due` (not raised as keys leave it, so
    /// a lower bound); meaningful only while `due != NIL`.
    due_floor: u64,
    len: usize,
    nodes: Vec<Node>,
}

impl Default for Wheel {
    fn default() -> Wheel {
        Wheel::new()
    }
}

impl Wheel {
    /// An empty wheel whose current time is 0.
    pub fn new() -> Wheel {
        Wheel::with_capacity(0)
    }

    /// An empty wheel with node storage reserved for keys `0..keys`, so that
    /// inserting them never reallocates.
    pub fn with_capacity(keys: usize) -> Wheel {
        Wheel {
            elapsed: 0,
            levels: [Level::EMPTY; LEVELS],
            due: NIL,
            due_floor: 0,
            len: 0,
            nodes: Vec::with_capacity(keys),
        }
    }

    /// Schedules `key` at `deadline`, replacing its earlier deadline if it
    /// was scheduled. A deadline at or before the current time is due at the
    /// next poll.
    ///
    /// # Panics
    ///
    /// If `key` is `u32::MAX - 1` or `u32::MAX`, the lists' sentinels.
    pub fn insert(&mut self, key: u32, deadline: u64) {
        assert!(key < UNSCHEDULED, "timer key {key} is a list sentinel");
        let i = key as usize;
        if i >= self.nodes.len() {
            self.nodes.resize(i + 1, Node::IDLE);
        }
        if self.nodes[i].is_scheduled() {
            self.unlink(key);
        } else {
            self.len += 1;
        }
        self.nodes[i].deadline = deadline;
        self.link(key);
    }

    /// Unschedules `key`; does nothing if it is not scheduled.
    pub fn cancel(&mut self, key: u32) {
        if self.deadline(key).is_some() {
            self.unlink(key);
            self.len -= 1;
        }
    }

    /// The deadline `key` is scheduled at, if it is.
    pub fn deadline(&self, key: u32) -> Option<u64> {
        self.nodes
            .get(key as usize)
            .filter(|node| node.is_scheduled())
            .map(|node| node.deadline)
    }

    /// A time at or before the earliest scheduled deadline, or `None` if
    /// nothing is scheduled. It is after the wheel's current time unless
    /// something is already due. It may be the start of a coarse slot rather
    /// than a deadline: the caller sleeps until then and polls, which cascades
    /// that slot, and asks again. O(levels).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.due != NIL {
            return Some(self.due_floor);
        }
        self.next_expiration().map(|(_, _, start)| start)
    }

    /// Advances the wheel's time to `now` (a `now` before the current time is
    /// taken as the current time) and returns one key whose deadline is at or
    /// before it, unscheduled; `None` once nothing more is due. Call it until
    /// `None`: only then have all due keys come out and the time reached
    /// `now`.
    pub fn poll(&mut self, now: u64) -> Option<u32> {
        self.poll_deadline(now).map(|(key, _)| key)
    }

    /// As [`Wheel::poll`], with the deadline the key had: the loop measures
    /// how late its timers run.
    pub fn poll_deadline(&mut self, now: u64) -> Option<(u32, u64)> {
        let now = now.max(self.elapsed);
        if now - self.elapsed >= level_range(TOP) {
            // Past a full turn of the top level, every slot would come due,
            // and a far key once per turn: one O(n) refiling is cheaper, and
            // only a clock jump of 795 days (or a test) gets here.
            self.refile_all(now);
        }
        loop {
            if self.due != NIL {
                let key = self.due;
                let deadline = self.nodes[key as usize].deadline;
                self.unlink(key);
                self.len -= 1;
                return Some((key, deadline));
            }
            match self.next_expiration() {
                Some((level, slot, start)) if start <= now => {
                    self.elapsed = start;
                    self.cascade(level, slot);
                }
                _ => {
                    self.elapsed = now;
                    return None;
                }
            }
        }
    }

    /// How many keys are scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Which list a key with this deadline is in now.
    ///
    /// This is not stored; it follows from the deadline and `elapsed`, and
    /// stays the same from filing until the slot is cascaded. A key filed at
    /// level `l` agrees with `elapsed` in every bit above level `l`'s six, and
    /// is ahead in those six. `elapsed` only moves forward, and never past the
    /// start of an occupied slot: `poll` stops at the earliest one, and moves
    /// to that start only to empty the slot and file its keys again. Every
    /// time between filing and that start keeps the same upper bits and is
    /// still behind in level `l`'s six, so `level_for` and `slot_for` give the
    /// same answer all along. Far keys clamped into the top level keep their
    /// slot too: it comes round before their deadline's own 2^30 ms block,
    /// and until then the difference is at least 2^30, which is the top level.
    /// A due key stays due because time never goes back.
    fn list_for(&self, deadline: u64) -> List {
        if deadline <= self.elapsed {
            return List::Due;
        }
        let level = level_for(self.elapsed, deadline);
        List::Slot {
            level,
            slot: slot_for(deadline, level),
        }
    }

    fn head(&self, list: List) -> u32 {
        match list {
            List::Due => self.due,
            List::Slot { level, slot } => self.levels[level].heads[slot],
        }
    }

    /// Puts `key` at the head of the list its deadline belongs to.
    fn link(&mut self, key: u32) {
        let deadline = self.nodes[key as usize].deadline;
        let list = self.list_for(deadline);
        let head = self.head(list);
        if head != NIL {
            self.nodes[head as usize].prev = key;
        }
        self.nodes[key as usize].prev = NIL;
        self.nodes[key as usize].next = head;
        match list {
            List::Due => {
                self.due = key;
                self.due_floor = if head == NIL {
                    deadline
                } else {
                    self.due_floor.min(deadline)
                };
            }
            List::Slot { level, slot } => {
                let now_slot = slot_for(self.elapsed, level);
                // Below the top, a key is always ahead of the current slot in
                // its level (see `list_for`); only a far key, clamped into the
                // top level, can sit at or behind the current top slot.
                let far = deadline >> REACH_BITS > self.elapsed >> REACH_BITS;
                debug_assert!(
                    slot > now_slot || (level == TOP && far),
                    "key {key} deadline {deadline} filed behind the time: \
                     elapsed {} level {level} slot {slot} now_slot {now_slot}",
                    self.elapsed
                );
                let lvl = &mut self.levels[level];
                lvl.heads[slot] = key;
                lvl.occupied |= 1 << slot;
            }
        }
    }

    /// Takes `key` out of its list and marks it unscheduled.
    fn unlink(&mut self, key: u32) {
        let Node {
            deadline,
            prev,
            next,
        } = self.nodes[key as usize];
        debug_assert!(prev != UNSCHEDULED, "unlink of unscheduled key {key}");
        let list = self.list_for(deadline);
        if prev == NIL {
            // A wrong head here means the derivation in `list_for` broke.
            debug_assert!(
                self.head(list) == key,
                "key {key} deadline {deadline} is no head of {list:?} (head {}) at elapsed {}",
                self.head(list),
                self.elapsed
            );
            match list {
                List::Due => self.due = next,
                List::Slot { level, slot } => {
                    self.levels[level].heads[slot] = next;
                    if next == NIL {
                        self.levels[level].occupied &= !(1 << slot);
                    }
                }
            }
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        self.nodes[key as usize] = Node {
            deadline,
            ..Node::IDLE
        };
    }

    /// The next slot of `level` to come due: `(slot, start time)`.
    fn level_expiration(&self, level: usize) -> Option<(usize, u64)> {
        let occupied = self.levels[level].occupied;
        if occupied == 0 {
            return None;
        }
        // Search from the slot after the current one: below the top, the
        // current slot and those behind it are always empty (see `link`); in
        // the top level they hold far keys, whose slot comes round only on
        // the next turn, so the current slot is the last in line, not the
        // first (starting the search at the current slot would let a far key
        // there hide a nearer slot after it).
        let now_slot = slot_for(self.elapsed, level);
        let first = (now_slot + 1) % SLOTS;
        let slot = (first + occupied.rotate_right(first as u32).trailing_zeros() as usize) % SLOTS;
        let level_start = self.elapsed & !(level_range(level) - 1);
        let mut start = level_start + slot as u64 * slot_range(level);
        if slot <= now_slot {
            debug_assert!(
                level == TOP,
                "slot {slot} of level {level} is behind the time: \
                 elapsed {} occupied {occupied:#066b}",
                self.elapsed
            );
            start += level_range(level);
        }
        debug_assert!(
            start > self.elapsed,
            "level {level} slot {slot} starts at {start}, not after elapsed {}",
            self.elapsed
        );
        Some((slot, start))
    }

    /// The next slot to come due in the whole wheel: `(level, slot, start)`.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        // A slot of a level ends before the next slot of the level above
        // begins, so the lowest occupied level has the earliest slot.
        let (level, (slot, start)) =
            (0..LEVELS).find_map(|level| Some((level, self.level_expiration(level)?)))?;
        debug_assert!(
            (level + 1..LEVELS).all(|l| self.level_expiration(l).is_none_or(|(_, s)| s > start)),
            "level {level} slot {slot} at {start} is not the earliest: elapsed {}",
            self.elapsed
        );
        Some((level, slot, start))
    }

    /// Empties a slot that has come due and files its keys again, relative to
    /// `elapsed`, now the slot's start: into `due` or into a lower level (or,
    /// for a far key still out of reach, into the top level again).
    fn cascade(&mut self, level: usize, slot: usize) {
        // Detach the whole list first: a far key goes back into this very
        // slot, and must not be met again in this walk.
        let mut key = std::mem::replace(&mut self.levels[level].heads[slot], NIL);
        self.levels[level].occupied &= !(1 << slot);
        while key != NIL {
            let Node { deadline, next, .. } = self.nodes[key as usize];
            debug_assert!(
                deadline <= self.elapsed
                    || level_for(self.elapsed, deadline) < level
                    || level == TOP,
                "key {key} deadline {deadline} cascaded from level {level} slot {slot} \
                 does not go down: elapsed {}",
                self.elapsed
            );
            self.link(key);
            key = next;
        }
    }

    /// Moves the time to `now` and files every key in the wheel again.
    fn refile_all(&mut self, now: u64) {
        let levels = std::mem::replace(&mut self.levels, [Level::EMPTY; LEVELS]);
        self.elapsed = now;
        for level in &levels {
            for &head in &level.heads {
                let mut key = head;
                while key != NIL {
                    let next = self.nodes[key as usize].next;
                    self.link(key);
                    key = next;
                }
            }
        }
    }

    /// Checks every list against the derivation, the bitmaps and `len`.
    /// O(keys); for tests.
    #[cfg(test)]
    fn check(&self) {
        let mut lists = vec![(List::Due, self.due)];
        for (level, lvl) in self.levels.iter().enumerate() {
            for (slot, &head) in lvl.heads.iter().enumerate() {
                assert_eq!(
                    lvl.occupied & (1 << slot) != 0,
                    head != NIL,
                    "level {level} slot {slot}: bitmap {:#066b} disagrees with head {head}",
                    lvl.occupied
                );
                lists.push((List::Slot { level, slot }, head));
            }
        }
        let mut count = 0;
        for (list, head) in lists {
            let (mut prev, mut key) = (NIL, head);
            while key != NIL {
                let node = self.nodes[key as usize];
                assert_eq!(node.prev, prev, "key {key} in {list:?}: prev");
                assert_eq!(
                    self.list_for(node.deadline),
                    list,
                    "key {key} deadline {} at elapsed {}",
                    node.deadline,
                    self.elapsed
                );
                if list == List::Due {
                    assert!(self.due_floor <= node.deadline, "due floor above key {key}");
                }
                count += 1;
                assert!(count <= self.len, "a list loops or len is short");
                (prev, key) = (key, node.next);
            }
        }
        assert_eq!(count, self.len, "keys in lists vs len");
        let scheduled = self.nodes.iter().filter(|n| n.is_scheduled()).count();
        assert_eq!(scheduled, self.len, "scheduled nodes vs len");
    }
}

/// The level a deadline is filed at: the highest group of six bits in which
/// it differs from `elapsed`, clamped to the top level.
fn level_for(elapsed: u64, deadline: u64) -> usize {
    // With the low six bits set, a deadline equal to `elapsed`, or differing
    // only within level 0's bits, still has a significant bit to find: 5,
    // which is level 0.
    let masked = (elapsed ^ deadline) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros();
    ((significant / SLOT_BITS) as usize).min(TOP)
}

/// The slot of `level` that a deadline falls in.
fn slot_for(deadline: u64, level: usize) -> usize {
    (deadline >> (level as u32 * SLOT_BITS)) as usize & (SLOTS - 1)
}

/// Milliseconds covered by one slot of `level`.
fn slot_range(level: usize) -> u64 {
    1 << (level as u32 * SLOT_BITS)
}

/// Milliseconds covered by all 64 slots of `level`.
fn level_range(level: usize) -> u64 {
    1 << ((level as u32 + 1) * SLOT_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// 2^36 ms: the reach of the whole wheel.
    const REACH: u64 = 1 << REACH_BITS;

    /// Polls until `None`, returning the keys sorted.
    fn drain(wheel: &mut Wheel, now: u64) -> Vec<u32> {
        let mut keys = Vec::new();
        while let Some(key) = wheel.poll(now) {
            keys.push(key);
        }
        keys.sort_unstable();
        keys
    }

    #[test]
    fn node_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }

    #[test]
    fn level_for_table() {
        let cases: &[(u64, u64, usize)] = &[
            (0, 0, 0),
            (0, 1, 0),
            (0, 63, 0),
            (0, 64, 1),
            (0, 4095, 1),
            (0, 4096, 2),
            (0, (1 << 18) - 1, 2),
            (0, 1 << 18, 3),
            (0, (1 << 24) - 1, 3),
            (0, 1 << 24, 4),
            (0, (1 << 30) - 1, 4),
            (0, 1 << 30, 5),
            (0, REACH - 1, 5),
            // Beyond the reach: clamped to the top level.
            (0, REACH, 5),
            (0, u64::MAX, 5),
            // One millisecond apart across a slot boundary is the level above.
            (63, 64, 1),
            (4095, 4096, 2),
            (REACH - 1, REACH, 5),
            (64, 127, 0),
            (100, 200, 1),
            (REACH + 1, REACH + 2, 0),
            (5, REACH + 4, 5),
            (u64::MAX - 1, u64::MAX, 0),
        ];
        for &(elapsed, deadline, level) in cases {
            assert_eq!(
                level_for(elapsed, deadline),
                level,
                "level_for({elapsed}, {deadline}) -- xor {:b}",
                elapsed ^ deadline
            );
        }
        for level in 1..LEVELS {
            for slot in 1..SLOTS as u64 {
                let start = slot << (level as u32 * SLOT_BITS);
                assert_eq!(level_for(0, start), level, "slot start {start}");
                assert_eq!(level_for(0, start + 1), level, "slot start {start} + 1");
                let end = start + slot_range(level) - 1;
                assert_eq!(level_for(0, end), level, "slot end {end}");
            }
        }
    }

    #[test]
    fn slot_for_table() {
        let cases: &[(u64, usize, usize)] = &[
            (0, 0, 0),
            (63, 0, 63),
            (64, 0, 0),
            (64, 1, 1),
            (4095, 1, 63),
            (4096, 1, 0),
            (4096, 2, 1),
            (REACH + (5 << 30), 5, 5),
            (REACH + (5 << 30), 0, 0),
            (u64::MAX, 0, 63),
            (u64::MAX, 5, 63),
        ];
        for &(deadline, level, slot) in cases {
            assert_eq!(
                slot_for(deadline, level),
                slot,
                "slot_for({deadline}, {level})"
            );
        }
        for level in 0..LEVELS {
            for slot in 0..SLOTS {
                let start = (slot as u64) << (level as u32 * SLOT_BITS);
                assert_eq!(slot_for(start, level), slot);
                assert_eq!(slot_for(start + slot_range(level) - 1, level), slot);
            }
        }
    }

    #[test]
    fn fires_at_its_deadline_and_not_before() {
        for start in [0, 1, 63, 1000, REACH - 3] {
            for delay in [
                1,
                2,
                62,
                63,
                64,
                65,
                4095,
                4096,
                100_000,
                1 << 30,
                REACH - 1,
            ] {
                let deadline = start + delay;
                let mut wheel = Wheel::new();
                assert_eq!(wheel.poll(start), None);
                wheel.insert(7, deadline);
                assert_eq!(wheel.len(), 1);
                assert_eq!(wheel.deadline(7), Some(deadline));
                assert_eq!(wheel.poll(deadline - 1), None, "{start} + {delay}");
                assert_eq!(wheel.deadline(7), Some(deadline), "{start} + {delay}");
                assert_eq!(wheel.poll(deadline), Some(7), "{start} + {delay}");
                assert_eq!(wheel.poll(deadline), None);
                assert_eq!(wheel.deadline(7), None);
                assert!(wheel.is_empty());
                assert_eq!(wheel.next_deadline(), None);
                wheel.check();
            }
        }
    }

    #[test]
    fn reinsert_replaces_the_deadline() {
        let mut wheel = Wheel::new();
        wheel.insert(1, 100);
        wheel.insert(1, 50);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.deadline(1), Some(50));
        assert_eq!(drain(&mut wheel, 50), [1]);
        assert_eq!(drain(&mut wheel, 100), []);

        wheel.insert(2, 60);
        wheel.insert(2, 5000);
        assert_eq!(drain(&mut wheel, 60), []);
        assert_eq!(drain(&mut wheel, 4999), []);
        assert_eq!(drain(&mut wheel, 5000), [2]);

        // Out of the due list and back into the wheel.
        wheel.insert(3, 0);
        wheel.insert(3, 6000);
        wheel.check();
        assert_eq!(drain(&mut wheel, 5999), []);
        assert_eq!(drain(&mut wheel, 6000), [3]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn cancel_unschedules_and_ignores_unscheduled_keys() {
        let mut wheel = Wheel::new();
        wheel.cancel(0);
        wheel.cancel(1_000_000);
        wheel.insert(4, 10);
        wheel.insert(5, 10);
        wheel.insert(6, 0);
        wheel.cancel(4);
        wheel.cancel(4);
        wheel.cancel(6);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.deadline(4), None);
        assert_eq!(wheel.deadline(6), None);
        wheel.check();
        assert_eq!(drain(&mut wheel, 1000), [5]);
        wheel.cancel(5);
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadline_in_the_past_is_due_at_the_next_poll() {
        let mut wheel = Wheel::new();
        assert_eq!(drain(&mut wheel, 1000), []);
        wheel.insert(1, 10);
        wheel.insert(2, 1000);
        wheel.insert(3, 0);
        assert_eq!(wheel.next_deadline(), Some(0));
        // A stale `now` is the current time.
        assert_eq!(drain(&mut wheel, 500), [1, 2, 3]);
        assert_eq!(wheel.next_deadline(), None);
        assert_eq!(drain(&mut wheel, 1000), []);
    }

    #[test]
    fn far_deadline_beyond_the_top_level_fires_on_time() {
        let deadline = (1 << 40) + 7;
        let mut wheel = Wheel::new();
        assert_eq!(wheel.poll(5), None);
        wheel.insert(9, deadline);
        wheel.insert(10, u64::MAX);
        // Sleep until each next deadline, as the daemon does.
        let mut wakeups = 0;
        loop {
            let at = wheel.next_deadline().unwrap();
            assert!(at <= deadline, "woke at {at}, after {deadline}");
            wakeups += 1;
            let fired = drain(&mut wheel, at);
            wheel.check();
            if !fired.is_empty() {
                assert_eq!((fired, at), (vec![9], deadline));
                break;
            }
        }
        // Each far key wakes the sleeper once per turn of the top level
        // (2^40 / 2^36 turns), then key 9 once per level on its way down.
        assert!(wakeups <= 2 * 16 + LEVELS, "{wakeups} wakeups");
        assert_eq!(wheel.deadline(10), Some(u64::MAX));
        assert_eq!(drain(&mut wheel, u64::MAX - 1), []);
        assert_eq!(drain(&mut wheel, u64::MAX), [10]);
    }

    #[test]
    fn far_key_in_the_current_top_slot_hides_no_nearer_slot() {
        let mut wheel = Wheel::new();
        assert_eq!(wheel.poll(5), None);
        // Top slot 0, the current one, but only on the next turn.
        wheel.insert(1, REACH + 4);
        // Top slot 1, this turn.
        wheel.insert(2, 1 << 30);
        assert_eq!(wheel.next_deadline(), Some(1 << 30));
        assert_eq!(drain(&mut wheel, 1 << 30), [2]);
        assert_eq!(wheel.next_deadline(), Some(REACH));
        assert_eq!(drain(&mut wheel, REACH + 3), []);
        assert_eq!(drain(&mut wheel, REACH + 4), [1]);
    }

    #[test]
    fn next_deadline_is_a_lower_bound_after_the_current_time() {
        let mut wheel = Wheel::new();
        assert_eq!(wheel.next_deadline(), None);
        assert_eq!(wheel.poll(1000), None);
        wheel.insert(1, 1010);
        assert_eq!(wheel.next_deadline(), Some(1010), "exact within 64 ms");
        wheel.insert(2, 1005);
        assert_eq!(wheel.next_deadline(), Some(1005));
        wheel.cancel(2);
        wheel.cancel(1);
        wheel.insert(3, 1_000_000);
        let at = wheel.next_deadline().unwrap();
        assert!(at > 1000 && at <= 1_000_000, "{at}");
        wheel.insert(4, 999);
        assert_eq!(wheel.next_deadline(), Some(999), "due: at or before now");
        assert_eq!(drain(&mut wheel, 1000), [4]);
        // Each wakeup lands on a later slot start until it is exact.
        let mut last = 1000;
        loop {
            let at = wheel.next_deadline().unwrap();
            assert!(at > last && at <= 1_000_000, "{at} after {last}");
            last = at;
            if !drain(&mut wheel, at).is_empty() {
                assert_eq!(at, 1_000_000);
                break;
            }
        }
    }

    #[test]
    fn many_keys_in_one_slot_fire_together_once() {
        let mut wheel = Wheel::with_capacity(10_000);
        for key in 0..10_000 {
            wheel.insert(key, 123_456);
        }
        assert_eq!(wheel.len(), 10_000);
        wheel.check();
        assert_eq!(drain(&mut wheel, 123_455), []);
        assert_eq!(drain(&mut wheel, 123_456), (0..10_000).collect::<Vec<_>>());
        assert!(wheel.is_empty());
        wheel.check();
    }

    #[test]
    fn cancel_at_head_middle_and_tail_of_a_slot() {
        // Keys are pushed at the head, so after inserting 1, 2, 3 the list
        // reads 3 (head), 2, 1 (tail).
        for deadline in [0, 40, 100_000] {
            for cancelled in [3, 2, 1] {
                let mut wheel = Wheel::new();
                assert_eq!(wheel.poll(10), None);
                for key in [1, 2, 3] {
                    wheel.insert(key, deadline);
                }
                wheel.cancel(cancelled);
                wheel.check();
                let rest: Vec<u32> = [1, 2, 3].into_iter().filter(|&k| k != cancelled).collect();
                assert_eq!(drain(&mut wheel, deadline.max(10)), rest, "{deadline}");
                assert!(wheel.is_empty());
            }
        }
    }

    #[test]
    #[should_panic(expected = "sentinel")]
    fn sentinel_keys_are_refused() {
        Wheel::new().insert(u32::MAX - 1, 1);
    }

    #[test]
    fn growing_keys_and_len() {
        let mut wheel = Wheel::new();
        assert!(wheel.is_empty());
        wheel.insert(70_000, 5);
        wheel.insert(3, 5);
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.deadline(69_999), None);
        assert_eq!(drain(&mut wheel, 5), [3, 70_000]);
    }

    #[test]
    fn key_reinserted_during_the_drain_comes_back_in_it() {
        let mut wheel = Wheel::new();
        wheel.insert(1, 10);
        let mut fired = 0;
        while let Some(key) = wheel.poll(10) {
            fired += 1;
            if fired < 3 {
                wheel.insert(key, 10);
            }
        }
        assert_eq!(fired, 3);
    }

    /// xorshift64*: enough randomness for a model test, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A span picked from every level's range, and beyond the top.
        fn span(&mut self) -> u64 {
            match self.below(9) {
                0 => 0,
                1 => self.below(64),
                2 => self.below(1 << 12),
                3 => self.below(1 << 18),
                4 => self.below(1 << 24),
                5 => self.below(1 << 30),
                6 => self.below(REACH),
                7 => REACH - 2 + self.below(4),
                _ => REACH + self.below(4 * REACH),
            }
        }

        fn deadline(&mut self, now: u64) -> u64 {
            if self.below(8) == 0 {
                now.saturating_sub(self.below(100))
            } else {
                now + self.span()
            }
        }
    }

    /// Random inserts, cancels and advances against an ordered map.
    fn model_test(seed: u64, steps: usize) {
        const KEYS: u64 = 300;
        let mut rng = Rng(seed);
        let mut wheel = Wheel::new();
        let mut model: BTreeMap<u32, u64> = BTreeMap::new();
        let mut now = 0u64;
        for step in 0..steps {
            match rng.below(10) {
                0..=4 => {
                    let key = rng.below(KEYS) as u32;
                    let deadline = rng.deadline(now);
                    wheel.insert(key, deadline);
                    model.insert(key, deadline);
                }
                5 | 6 => {
                    let key = rng.below(KEYS) as u32;
                    wheel.cancel(key);
                    model.remove(&key);
                }
                _ => {
                    // Now and then a stale `now`, which must act as the
                    // wheel's current time.
                    let polled = if rng.below(16) == 0 {
                        now.saturating_sub(rng.below(1000))
                    } else {
                        now += match rng.below(16) {
                            0..=9 => rng.below(70),
                            10 => 0,
                            _ => rng.span(),
                        };
                        now
                    };
                    let mut reinserts = 0;
                    while let Some(key) = wheel.poll(polled) {
                        let deadline = model.remove(&key).unwrap_or_else(|| {
                            panic!("seed {seed} step {step}: key {key} fired, not scheduled")
                        });
                        assert!(
                            deadline <= now,
                            "seed {seed} step {step}: key {key} fired early: {deadline} > {now}"
                        );
                        // The caller may reschedule and cancel mid-drain.
                        if rng.below(4) == 0 && reinserts < 20 {
                            reinserts += 1;
                            let key = rng.below(KEYS) as u32;
                            let deadline = rng.deadline(now);
                            wheel.insert(key, deadline);
                            model.insert(key, deadline);
                        }
                        if rng.below(8) == 0 {
                            let key = rng.below(KEYS) as u32;
                            wheel.cancel(key);
                            model.remove(&key);
                        }
                    }
                    if let Some((key, deadline)) = model.iter().find(|&(_, &d)| d <= now) {
                        panic!(
                            "seed {seed} step {step}: key {key} due at {deadline} not out at {now}"
                        );
                    }
                }
            }
            assert_eq!(wheel.len(), model.len(), "seed {seed} step {step}: len");
            let earliest = model.values().min().copied();
            match (wheel.next_deadline(), earliest) {
                (None, None) => {}
                (Some(at), Some(earliest)) => {
                    assert!(
                        at <= earliest,
                        "seed {seed} step {step}: next_deadline {at} after the earliest {earliest}"
                    );
                    if earliest > now {
                        assert!(
                            at > now,
                            "seed {seed} step {step}: next_deadline {at} not after {now}"
                        );
                    }
                }
                (at, earliest) => {
                    panic!("seed {seed} step {step}: next_deadline {at:?} vs model {earliest:?}")
                }
            }
            let key = rng.below(KEYS) as u32;
            assert_eq!(
                wheel.deadline(key),
                model.get(&key).copied(),
                "seed {seed} step {step}: deadline of {key}"
            );
            if step % 64 == 0 {
                wheel.check();
            }
        }
        wheel.check();
    }

    #[test]
    fn model_seed_1() {
        model_test(1, 100_000);
    }

    #[test]
    fn model_seed_2() {
        model_test(0x9e37_79b9_7f4a_7c15, 100_000);
    }

    #[test]
    fn model_seed_3() {
        model_test(0xdead_beef_cafe_f00d, 100_000);
    }

    #[test]
    fn model_seed_4() {
        model_test(42, 100_000);
    }

    #[test]
    fn model_many_seeds() {
        for seed in 100..140 {
            model_test(seed, 5_000);
        }
    }
}
