//! BTF blobs by hand: the header, type records and the string table of a `.BTF` section (or of a blob for
//! `BPF_BTF_LOAD`), in either byte order. Types are numbered from 1 in the order they are added.

pub const KIND_INT: u32 = 1;
pub const KIND_PTR: u32 = 2;
pub const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_FUNC: u32 = 12;
pub const KIND_FUNC_PROTO: u32 = 13;
pub const KIND_VAR: u32 = 14;
pub const KIND_DATASEC: u32 = 15;
pub const KIND_TYPE_TAG: u32 = 18;
/// `BTF_INT_SIGNED` in an int's encoding.
pub const INT_SIGNED: u32 = 1;

pub struct Btf {
    little_endian: bool,
    types: Vec<u32>,
    strs: Vec<u8>,
    count: u32,
}

impl Default for Btf {
    fn default() -> Self {
        Btf::new()
    }
}

impl Btf {
    /// Little-endian BTF.
    pub fn new() -> Btf {
        Btf::with_byte_order(true)
    }

    pub fn with_byte_order(little_endian: bool) -> Btf {
        Btf { little_endian, types: Vec::new(), strs: vec![0], count: 0 }
    }

    /// The offset of `name` in the string table, added when it is not there yet ("" is 0).
    pub fn str(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        // A string of the table: after a NUL, up to the next one.
        let mut at = 1;
        for s in self.strs[1..].split(|&b| b == 0) {
            if s == name.as_bytes() {
                return at as u32;
            }
            at += s.len() + 1;
        }
        let off = self.strs.len() as u32;
        self.strs.extend_from_slice(name.as_bytes());
        self.strs.push(0);
        off
    }

    /// A type record: `name`, `info` made of `kind`, `vlen` and `kind_flag`, `size_or_type`, then the kind's
    /// trailing words. Returns its type id.
    pub fn add(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, size_or_type: u32, tail: &[u32]) -> u32 {
        let name = self.str(name);
        let info = u32::from(kind_flag) << 31 | kind << 24 | vlen;
        self.types.extend([name, info, size_or_type]);
        self.types.extend_from_slice(tail);
        self.count += 1;
        self.count
    }

    /// An integer of `size` bytes (all bits used), `encoding` 0 or [`INT_SIGNED`].
    pub fn int(&mut self, name: &str, size: u32, encoding: u32) -> u32 {
        self.add(name, KIND_INT, 0, false, size, &[(encoding << 24) | (size * 8)])
    }
    pub fn ptr(&mut self, to: u32) -> u32 {
        self.add("", KIND_PTR, 0, false, to, &[])
    }
    /// A type tag (`__kptr`, `__kptr_untrusted`, ...) on `to`.
    pub fn type_tag(&mut self, tag: &str, to: u32) -> u32 {
        self.add(tag, KIND_TYPE_TAG, 0, false, to, &[])
    }
    /// A struct of `size` bytes with `(name, type, bit offset)` members.
    pub fn struct_(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.str(name); // before the members' names, as a compiler writes them
        let tail: Vec<u32> = members.iter().flat_map(|&(m, ty, bits)| [self.str(m), ty, bits]).collect();
        self.add(name, KIND_STRUCT, members.len() as u32, false, size, &tail)
    }

    /// The blob: header (version 1, no flags), types, strings.
    pub fn finish(self) -> Vec<u8> {
        let word = |v: u32| if self.little_endian { v.to_le_bytes() } else { v.to_be_bytes() };
        let magic: u16 = 0xeb9f;
        let types: Vec<u8> = self.types.iter().flat_map(|&w| word(w)).collect();
        let mut out = Vec::with_capacity(24 + types.len() + self.strs.len());
        out.extend_from_slice(&if self.little_endian { magic.to_le_bytes() } else { magic.to_be_bytes() });
        out.extend_from_slice(&[1, 0]); // version, flags
        let len = types.len() as u32;
        for w in [24, 0, len, len, self.strs.len() as u32] {
            out.extend_from_slice(&word(w)); // hdr_len, type_off, type_len, str_off, str_len
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&self.strs);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_struct_with_a_tagged_pointer() {
        let mut b = Btf::new();
        let int = b.int("int", 4, INT_SIGNED);
        let task = b.struct_("task_struct", 4, &[("pid", int, 0)]);
        let tag = b.type_tag("kptr_untrusted", task);
        let ptr = b.ptr(tag);
        assert_eq!(b.struct_("val", 8, &[("t", ptr, 0)]), 5);
        assert_eq!(b.str("int"), 1, "strings are shared");
        let blob = b.finish();
        assert_eq!(&blob[..4], &[0x9f, 0xeb, 1, 0]);
        let u32_at = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap());
        let (type_len, str_len) = (u32_at(12) as usize, u32_at(20) as usize);
        assert_eq!(blob.len(), 24 + type_len + str_len);
        assert_eq!(&blob[24 + type_len..], b"\0int\0task_struct\0pid\0kptr_untrusted\0val\0t\0");
    }
}
