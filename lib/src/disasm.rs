//! Disassembly of the instructions a report cites, for reports a person reads (a display job, apart from the
//! ELF reader).

use crate::elf::{Object, RelocTarget};
use crate::helpers;
use crate::insn::{self, Names};

/// Helper names from the catalogue.
struct Catalogue;

impl Names for Catalogue {
    fn helper(&self, id: u32) -> Option<&str> {
        helpers::helper(id).map(|h| h.name)
    }
}

/// The instruction at `insn` of code section `section` of `obj`, in the kernel's notation, with helper and
/// relocation names; `None` when there is no such instruction or it does not decode.
pub fn disassemble(obj: &Object<'_>, section: &str, insn: usize) -> Option<String> {
    let cs = obj.section_named(section)?;
    let op = insn::decode(cs.insns.get(insn..)?).ok()?;
    let reloc = cs.relocs.get(&insn).map(|r| match r {
        RelocTarget::Map(m) | RelocTarget::MapValue { map: m, .. } => {
            obj.maps.get(*m).map(|m| m.name.clone()).unwrap_or_default()
        }
        RelocTarget::Code { symbol, .. } => symbol.clone(),
        RelocTarget::Extern { name } => name.clone(),
    });
    Some(insn::Display { op: &op, names: &Catalogue, reloc: reloc.as_deref() }.to_string())
}
