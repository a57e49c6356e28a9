//! The report: what the interpretation found, as a program's metadata.

use super::*;

impl Ctx<'_, '_> {
    pub(super) fn finish(&mut self) -> Analyzed {
        let obj = self.obj;
        let prog = self.prog;
        let info = &prog.info;
        // fmod_ret programs replace the traced function's return value by construction.
        if info.attach_type == Some(AttachType::ModifyReturn) {
            self.facts.class(Capability::OverrideReturn, 0);
        }
        let mut facts = std::mem::take(&mut self.facts);
        let name_of = |i: usize| obj.maps.get(i).map(|m| m.name.clone()).unwrap_or_else(|| UNKNOWN_MAP.into());
        // One entry per map name, sorted by name (maps sharing a name share an entry).
        let (reads, writes) = (facts.reads, facts.writes);
        let mut maps: Vec<MapAccess> = Vec::new();
        let mut access = |i: usize| {
            let (read, write) = (reads & map_bit(i) != 0, writes & map_bit(i) != 0);
            maps.push(MapAccess { name: name_of(i), read, write });
        };
        let mut low = (reads | writes) & (map_bit(OTHER_MAPS as usize) - 1);
        while low != 0 {
            access(low.trailing_zeros() as usize);
            low &= low - 1;
        }
        // At most MAX_SHARED_MAPS of them (checked in `run`).
        if (reads | writes) & map_bit(OTHER_MAPS as usize) != 0 {
            (OTHER_MAPS as usize..obj.maps.len()).for_each(&mut access);
        }
        if facts.unknown_map.0 || facts.unknown_map.1 {
            let (read, write) = facts.unknown_map;
            maps.push(MapAccess { name: UNKNOWN_MAP.into(), read, write });
        }
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        maps.dedup_by(|dup, kept| {
            let same = dup.name == kept.name;
            if same {
                kept.read |= dup.read;
                kept.write |= dup.write;
            }
            same
        });
        facts.tail_calls.sort_by_key(|&(insn, _)| insn);
        facts.tail_calls.dedup_by(|dup, kept| {
            let same = dup.0 == kept.0;
            if same {
                kept.1 |= dup.1;
            }
            same
        });
        let named = if obj.maps.len() >= OTHER_MAPS as usize {
            map_bit(OTHER_MAPS as usize) - 1
        } else {
            (1u128 << obj.maps.len()) - 1
        };
        let tail_calls = facts
            .tail_calls
            .iter()
            .map(|&(insn, set)| {
                // Named only when exactly one map the object names (below the shared bit) may be the prog array.
                let set = set & named;
                let map = (set.count_ones() == 1).then(|| name_of(set.trailing_zeros() as usize));
                TailCall { insn, map }
            })
            .collect();
        let subprogram = |f: &Func| Subprogram {
            name: match obj.sections[f.section].func_name(f.start) {
                Some(name) => name.to_owned(),
                None => format!("{}+{}", obj.sections[f.section].name, f.start),
            },
            section: obj.sections[f.section].name.clone(),
            start: f.layout,
            section_offset: f.start as u32,
        };
        // Analyzed (entered) functions, and those linked in but never reached (see `run`).
        let (subprograms, unreached_subprograms) = {
            let (reached, unreached): (Vec<&Func>, Vec<&Func>) = self.funcs.iter().skip(1).partition(|f| f.entered);
            (reached.into_iter().map(subprogram).collect(), unreached.into_iter().map(subprogram).collect())
        };
        let insn_count = self.funcs.iter().map(|f| (f.end - f.start) as u32).sum();
        let mut capabilities = Vec::new();
        let mut evidence = BTreeMap::new();
        for (c, mut at) in Capability::ALL.into_iter().zip(facts.evidence) {
            if !at.is_empty() {
                at.sort_unstable();
                at.dedup();
                capabilities.push(c);
                evidence.insert(c, at);
            }
        }
        facts.helpers.sort_unstable();
        facts.helpers.dedup();
        facts.kfuncs.sort_unstable();
        facts.kfuncs.dedup();
        let (funcs, calls) = self.layout();
        let metadata = ProgramMetadata {
            name: prog.name.clone(),
            kernel_name: prog.kernel_name.clone(),
            loaders: prog.loaders.clone(),
            section: obj.sections[prog.section].name.clone(),
            section_offset: prog.start as u32,
            prog_type: info.prog_type,
            attach_type: info.attach_type,
            attach_target: info.attach_target.clone(),
            sleepable: info.sleepable,
            unspec_reason: info.unspec_reason.clone(),
            license: obj.license.clone(),
            insn_count,
            helpers: facts.helpers.iter().map(|&id| HelperRef { id, name: helper_name(id) }).collect(),
            kfuncs: facts.kfuncs.iter().map(|&k| k.to_owned()).collect(),
            subprograms,
            unreached_subprograms,
            tail_calls,
            maps,
            capabilities,
            evidence,
            kernel_view: KernelView::default(),
            notes: prog.notes.clone(),
        };
        Analyzed { metadata, funcs, calls }
    }

    /// The linked program's functions, `(section, start, end)` in layout order, and the calls between them (call
    /// instruction, callee's first instruction; linked indexes): known once discovery ends ([`Analyzed`]).
    pub(super) fn layout(&self) -> Layout {
        let calls = self
            .buf
            .calls
            .iter()
            .filter_map(|&(caller, target, pc)| {
                let site = self.at(caller, pc);
                Some((site, self.funcs.get(self.buf.func_at(target)?)?.layout))
            })
            .collect();
        (self.funcs.iter().map(|f| (f.section, f.start, f.end)).collect(), calls)
    }
}

/// A linked program's functions and calls ([`Ctx::layout`]).
pub(super) type Layout = (Vec<(usize, usize, usize)>, Vec<(u32, u32)>);

/// What a report counts against [`MAX_OBJECT_WORK`]: [`ENTRY_WORK`] per entry, a unit per byte of its names and
/// per evidence instruction.
pub(super) fn report_work(m: &ProgramMetadata) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let program = ENTRY_WORK + m.name.len() + m.section.len() + opt(&m.attach_target) + opt(&m.unspec_reason);
    let subprograms: usize = (m.subprograms.iter().chain(&m.unreached_subprograms))
        .map(|s| ENTRY_WORK + s.name.len() + s.section.len())
        .sum();
    let maps: usize = m.maps.iter().map(|a| ENTRY_WORK + a.name.len()).sum();
    let kfuncs: usize = m.kfuncs.iter().map(|k| ENTRY_WORK + k.len()).sum();
    let tail_calls: usize = m.tail_calls.iter().map(|t| ENTRY_WORK + opt(&t.map)).sum();
    let evidence: usize = m.evidence.values().map(Vec::len).sum();
    program + opt(&m.license) + subprograms + maps + kfuncs + tail_calls + evidence + ENTRY_WORK * m.helpers.len()
}

/// A helper call's name in reports: the catalogue's, libbpf's poison ([`crate::target::Poison::name`]), or
/// `unknown`.
pub(crate) fn helper_name(id: u32) -> String {
    match (helpers::helper(id), crate::target::poison(id)) {
        (Some(h), _) => h.name.to_owned(),
        (None, Some(p)) => p.name(),
        (None, None) => "unknown".into(),
    }
}
