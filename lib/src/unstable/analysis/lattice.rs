//! The abstract values: what a register or stack slot may point to, joined over paths.

use super::MAX_STACK;
use crate::insn::Size;

// Pointer kinds a value may have.
pub(super) const SCALAR: u16 = 1 << 0;
pub(super) const CTX: u16 = 1 << 1;
pub(super) const STACK: u16 = 1 << 2;
/// A pointer into some caller's stack frame (a stack pointer passed as an argument).
pub(super) const FOREIGN: u16 = 1 << 3;
pub(super) const PACKET: u16 = 1 << 4;
/// A BTF-typed kernel pointer: loads through it read kernel memory.
pub(super) const BTF: u16 = 1 << 5;
pub(super) const ARENA: u16 = 1 << 6;
pub(super) const FUNC: u16 = 1 << 7;

/// Map sets are bitmasks; maps at index 127 and above, and maps the object does not name (inner maps, raw fds),
/// share the last bit, which is read as "any of those".
pub(super) const OTHER_MAPS: u32 = 127;

pub(super) fn map_bit(i: usize) -> u128 {
    1u128 << (i.min(OTHER_MAPS as usize) as u32)
}

pub(super) const NO_FUNC: u32 = u32::MAX;
pub(super) const MANY_FUNCS: u32 = u32::MAX - 1;

/// The abstract value of a register or stack slot. The empty value is "uninitialized".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Value {
    pub(super) kinds: u16,
    /// Offset from the frame pointer, when `kinds` has STACK and it is known.
    pub(super) stack_off: Option<i32>,
    /// Function id, when `kinds` has FUNC (NO_FUNC / MANY_FUNCS otherwise).
    pub(super) func: u32,
    pub(super) map_ptr: u128,
    pub(super) map_val: u128,
}

impl Value {
    pub(super) const BOTTOM: Value = Value { kinds: 0, stack_off: None, func: NO_FUNC, map_ptr: 0, map_val: 0 };
    pub(super) const SCALAR: Value = Value { kinds: SCALAR, ..Value::BOTTOM };

    pub(super) fn kind(kinds: u16) -> Value {
        Value { kinds, ..Value::BOTTOM }
    }
    pub(super) fn stack(off: i32) -> Value {
        Value { kinds: STACK, stack_off: Some(off), ..Value::BOTTOM }
    }
    /// Anything a register may hold that matters: not a plain scalar.
    pub(super) fn is_pointer(&self) -> bool {
        self.kinds & !SCALAR != 0 || self.map_ptr != 0 || self.map_val != 0
    }
    pub(super) fn join(&self, o: &Value) -> Value {
        let stack_off = match (self.kinds & STACK != 0, o.kinds & STACK != 0) {
            (true, true) if self.stack_off == o.stack_off => self.stack_off,
            (true, true) => None,
            (true, false) => self.stack_off,
            (false, true) => o.stack_off,
            (false, false) => None,
        };
        let func = match (self.func, o.func) {
            (NO_FUNC, f) | (f, NO_FUNC) => f,
            (a, b) if a == b => a,
            _ => MANY_FUNCS,
        };
        Value {
            kinds: self.kinds | o.kinds,
            stack_off,
            func,
            map_ptr: self.map_ptr | o.map_ptr,
            map_val: self.map_val | o.map_val,
        }
    }
    /// The value as seen by a callee: the caller's stack becomes a foreign stack.
    pub(super) fn into_callee(self) -> Value {
        if self.kinds & STACK != 0 {
            Value { kinds: (self.kinds & !STACK) | FOREIGN, stack_off: None, ..self }
        } else {
            self
        }
    }
    /// A value returned to a caller: a pointer into the callee's frame would be dangling; one into a caller's
    /// frame is (conservatively) somewhere in this caller's own stack.
    pub(super) fn into_caller(self) -> Value {
        let mut v = self;
        v.kinds &= !STACK;
        if v.kinds & FOREIGN != 0 {
            v.kinds |= STACK;
            v.stack_off = None;
        }
        v
    }
}

/// The stack slots that hold something other than `stack_rest`, sorted by offset. A sorted vector, not a
/// B-tree: a state is copied at every basic block and joined at every edge, and with the few slots a frame
/// holds pointers in, a copy is one memcpy and a join one merge (the B-tree's node allocations, clones and
/// drops were a third of the analysis' time on large programs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Slots(Vec<(i32, Value)>);

impl Slots {
    pub(super) const fn new() -> Slots {
        Slots(Vec::new())
    }
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
    fn find(&self, off: i32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&off, |&(o, _)| o)
    }
    pub(super) fn get(&self, off: &i32) -> Option<&Value> {
        self.find(*off).ok().map(|i| &self.0[i].1)
    }
    pub(super) fn insert(&mut self, off: i32, v: Value) {
        match self.find(off) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => self.0.insert(i, (off, v)),
        }
    }
    pub(super) fn remove(&mut self, off: &i32) {
        if let Ok(i) = self.find(*off) {
            self.0.remove(i);
        }
    }
    pub(super) fn values(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().map(|(_, v)| v)
    }
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.0.iter_mut().map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for &'a Slots {
    type Item = (&'a i32, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (i32, Value)>, fn(&'a (i32, Value)) -> (&'a i32, &'a Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(o, v)| (o, v))
    }
}

/// Abstract machine state: r0-r10 and the pointer-holding stack slots (absent slots hold `stack_rest`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct State {
    pub(super) regs: [Value; 11],
    pub(super) stack: Slots,
    pub(super) stack_rest: Value,
}

impl Clone for State {
    fn clone(&self) -> State {
        State { regs: self.regs, stack: self.stack.clone(), stack_rest: self.stack_rest }
    }
    /// In place, without the temporary the default builds: states are copied on every basic block.
    fn clone_from(&mut self, o: &State) {
        self.regs = o.regs;
        self.stack.clone_from(&o.stack);
        self.stack_rest = o.stack_rest;
    }
}

impl State {
    pub(super) const BOTTOM: State =
        State { regs: [Value::BOTTOM; 11], stack: Slots::new(), stack_rest: Value::BOTTOM };

    pub(super) fn join_from(&mut self, o: &State) -> bool {
        let mut grew = false;
        let mut join = |a: &mut Value, b: &Value| {
            // Joining a value with itself changes nothing, unless it keeps a stale stack offset without STACK
            // (the join drops it): skip the common case.
            if a == b && (a.kinds & STACK != 0 || a.stack_off.is_none()) {
                return;
            }
            let j = a.join(b);
            if j != *a {
                *a = j;
                grew = true;
            }
        };
        for (a, b) in self.regs.iter_mut().zip(o.regs.iter()) {
            join(a, b);
        }
        // A merge of the two sorted slot lists: a slot one side lacks holds that side's `stack_rest`. In place
        // when `o` has no slot `self` lacks (the common case once a block's entry state is set).
        let (a, b) = (&mut self.stack.0, &o.stack.0);
        let mut i = 0;
        let mut new = false;
        for &(off, ref v) in b {
            while i < a.len() && a[i].0 < off {
                join(&mut a[i].1, &o.stack_rest);
                i += 1;
            }
            if i < a.len() && a[i].0 == off {
                join(&mut a[i].1, v);
                i += 1;
            } else {
                new = true;
            }
        }
        for slot in a.iter_mut().skip(i) {
            join(&mut slot.1, &o.stack_rest);
        }
        if new {
            // Slots only `o` has: `self`'s rest joined with `o`'s value, inserted in order.
            let rest = self.stack_rest;
            let mut merged = Vec::with_capacity(a.len() + b.len());
            let (mut x, mut y) = (0, 0);
            while x < a.len() || y < b.len() {
                match (a.get(x), b.get(y)) {
                    (Some(&(ka, va)), Some(&(kb, _))) if ka < kb => {
                        merged.push((ka, va));
                        x += 1;
                    }
                    (Some(&(ka, va)), Some(&(kb, _))) if ka == kb => {
                        merged.push((ka, va));
                        x += 1;
                        y += 1;
                    }
                    (_, Some(&(kb, vb))) => {
                        let mut v = rest;
                        join(&mut v, &vb);
                        merged.push((kb, v));
                        y += 1;
                    }
                    (Some(&(ka, va)), None) => {
                        merged.push((ka, va));
                        x += 1;
                    }
                    (None, None) => break,
                }
            }
            *a = merged;
        }
        join(&mut self.stack_rest, &o.stack_rest);
        grew
    }
    pub(super) fn slot(&self, off: i32) -> Value {
        self.stack.get(&off).copied().unwrap_or(self.stack_rest)
    }
    pub(super) fn all_slots(&self) -> Value {
        self.stack.values().fold(self.stack_rest, |acc, v| acc.join(v))
    }
    /// A write the analysis cannot place: every slot may now hold `v`.
    pub(super) fn weak_update_all(&mut self, v: &Value) {
        for slot in self.stack.values_mut() {
            *slot = slot.join(v);
        }
        self.stack_rest = self.stack_rest.join(v);
    }
}

/// The frame offset of an access at `off` from a stack pointer at `base`, if it is inside the kernel's frame
/// ([`MAX_STACK`]) and, for an 8-byte access, 8-byte aligned (the verifier wants stack accesses aligned); any
/// other access is treated as one at an unknown offset. Only 8-byte accesses move pointers, so at most 64 slots
/// can hold one.
pub(super) fn in_frame(base: i32, off: i16, size: Size) -> Option<i32> {
    let aligned = |o: &i32| size != Size::DW || o % 8 == 0;
    base.checked_add(i32::from(off)).filter(|o| (-MAX_STACK..0).contains(o) && aligned(o))
}
