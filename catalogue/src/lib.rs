//! The helper and kfunc catalogue: the single source of truth for which capability classes a BPF helper or kfunc
//! call proves, and what the analysis must know about its arguments.
//!
//! The data is two hand-written, reviewed files, `catalogue/helpers.tsv` and `catalogue/kfuncs.tsv` (their header
//! comments document the columns and tokens). They are embedded with `include_str!` so build scripts need no paths.
//! This crate parses and validates them, and renders
//! - Rust source that `lib/src/helpers.rs` includes ([`rust_source`]), and
//! - a C header for the in-kernel gate ([`c_header`]).
//!
//! It has no dependencies, so it builds quickly as a build-dependency.

use std::collections::HashMap;
use std::fmt;

/// `catalogue/helpers.tsv`, embedded.
pub const HELPERS_TSV: &str = include_str!("../helpers.tsv");
/// `catalogue/kfuncs.tsv`, embedded.
pub const KFUNCS_TSV: &str = include_str!("../kfuncs.tsv");
/// Name used for the helpers file in errors and generated comments.
pub const HELPERS_FILE: &str = "catalogue/helpers.tsv";
/// Name used for the kfuncs file in errors and generated comments.
pub const KFUNCS_FILE: &str = "catalogue/kfuncs.tsv";

/// Number of kernel helper ids: `BPF_FUNC_unspec` (0) through `BPF_FUNC_cgrp_storage_delete` (211).
pub const HELPER_COUNT: u32 = 212;

/// Capability class names in bit order: bit `i` of a class mask is `CLASS_NAMES[i]`.
///
/// This must equal `bpfgate::metadata::Capability::ALL` names in order; a unit test in `lib/src/helpers.rs` checks it.
pub const CLASS_NAMES: [&str; 13] = [
    "kernel_read",
    "user_read",
    "user_write",
    "send_signal",
    "override_return",
    "sys_bpf",
    "map_write",
    "tail_call",
    "destructive",
    "trace_printk",
    "packet_write",
    "redirect",
    "unknown",
];

/// Highest argument register a helper or kfunc takes.
const MAX_ARG_REG: u8 = 5;

/// What the analysis must know about a helper's or kfunc's arguments and return value. Registers are 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads the map whose pointer is in the register.
    MapRead(u8),
    /// Writes the map whose pointer is in the register.
    MapWrite(u8),
    /// r0 may point into a value of the map in the register.
    RetMapValue(u8),
    /// Writes the memory the register points to.
    WriteMem(u8),
    /// r0 is a BTF-typed kernel pointer.
    RetKernelPtr,
    /// The register holds a callback subprogram.
    Callback(u8),
}

impl Effect {
    /// Parses a catalogue token such as `map_read=r1` or `ret_kernel_ptr`.
    fn parse(token: &str) -> Result<Effect, EffectError> {
        if token == "ret_kernel_ptr" {
            return Ok(Effect::RetKernelPtr);
        }
        let (key, value) = token.split_once('=').ok_or(EffectError::Unknown)?;
        let make: fn(u8) -> Effect = match key {
            "map_read" => Effect::MapRead,
            "map_write" => Effect::MapWrite,
            "ret_map_value" => Effect::RetMapValue,
            "write_mem" => Effect::WriteMem,
            "callback" => Effect::Callback,
            _ => return Err(EffectError::Unknown),
        };
        let reg = value
            .strip_prefix('r')
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|r| (1..=MAX_ARG_REG).contains(r))
            .ok_or(EffectError::BadRegister)?;
        Ok(make(reg))
    }

    /// The Rust expression for this effect, for code that has the `Effect` enum in scope.
    fn rust_expr(self) -> String {
        match self {
            Effect::MapRead(r) => format!("Effect::MapRead({r})"),
            Effect::MapWrite(r) => format!("Effect::MapWrite({r})"),
            Effect::RetMapValue(r) => format!("Effect::RetMapValue({r})"),
            Effect::WriteMem(r) => format!("Effect::WriteMem({r})"),
            Effect::RetKernelPtr => "Effect::RetKernelPtr".to_owned(),
            Effect::Callback(r) => format!("Effect::Callback({r})"),
        }
    }
}

impl fmt::Display for Effect {
    /// The catalogue token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::MapRead(r) => write!(f, "map_read=r{r}"),
            Effect::MapWrite(r) => write!(f, "map_write=r{r}"),
            Effect::RetMapValue(r) => write!(f, "ret_map_value=r{r}"),
            Effect::WriteMem(r) => write!(f, "write_mem=r{r}"),
            Effect::RetKernelPtr => f.write_str("ret_kernel_ptr"),
            Effect::Callback(r) => write!(f, "callback=r{r}"),
        }
    }
}

/// Why an effect token did not parse; turned into a [`CatalogueError`] with its place.
enum EffectError {
    Unknown,
    BadRegister,
}

/// One line of `helpers.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperEntry {
    pub id: u32,
    /// Without the `bpf_` prefix.
    pub name: String,
    /// Class bitmask, bit `i` = [`CLASS_NAMES`]`[i]`.
    pub classes: u32,
    pub effects: Vec<Effect>,
    pub reason: String,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// One line of `kfuncs.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KfuncEntry {
    pub name: String,
    /// Class bitmask, bit `i` = [`CLASS_NAMES`]`[i]`.
    pub classes: u32,
    pub effects: Vec<Effect>,
    pub reason: String,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// A problem in a catalogue file, with the file and 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogueError {
    /// A data line has the wrong number of tab-separated columns.
    Columns { file: String, line: usize, expected: usize, found: usize },
    /// The id column is not a decimal number.
    BadId { file: String, line: usize, text: String },
    /// Helper ids must be dense and in order: this line has the wrong one.
    IdOrder { file: String, line: usize, expected: u32, found: u32 },
    /// The helpers file ends before (or runs past) the last kernel helper id.
    HelperCount { file: String, expected: u32, found: u32 },
    /// A name is empty or not a C identifier.
    BadName { file: String, line: usize, name: String },
    /// A name appears twice.
    DuplicateName { file: String, line: usize, name: String, first_line: usize },
    /// A class token is not one of [`CLASS_NAMES`].
    UnknownClass { file: String, line: usize, class: String },
    /// A class token is listed twice on one line.
    DuplicateClass { file: String, line: usize, class: String },
    /// An effect token is not one of the documented forms.
    UnknownEffect { file: String, line: usize, effect: String },
    /// An effect names a register outside r1..r5.
    BadRegister { file: String, line: usize, effect: String },
    /// An effect token is listed twice on one line.
    DuplicateEffect { file: String, line: usize, effect: String },
    /// The reason column is empty.
    EmptyReason { file: String, line: usize },
}

impl fmt::Display for CatalogueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogueError::Columns { file, line, expected, found } => {
                write!(f, "{file}:{line}: expected {expected} tab-separated columns, found {found}")
            }
            CatalogueError::BadId { file, line, text } => {
                write!(f, "{file}:{line}: helper id `{text}` is not a number")
            }
            CatalogueError::IdOrder { file, line, expected, found } => {
                write!(
                    f,
                    "{file}:{line}: expected helper id {expected}, found {found} (ids must be dense and in order)"
                )
            }
            CatalogueError::HelperCount { file, expected, found } => {
                write!(f, "{file}: expected {expected} helpers (ids 0..{expected}), found {found}")
            }
            CatalogueError::BadName { file, line, name } => {
                write!(f, "{file}:{line}: name `{name}` is not a C identifier")
            }
            CatalogueError::DuplicateName { file, line, name, first_line } => {
                write!(f, "{file}:{line}: name `{name}` already appears on line {first_line}")
            }
            CatalogueError::UnknownClass { file, line, class } => {
                write!(f, "{file}:{line}: unknown class `{class}` (known: {})", CLASS_NAMES.join(", "))
            }
            CatalogueError::DuplicateClass { file, line, class } => {
                write!(f, "{file}:{line}: class `{class}` listed twice")
            }
            CatalogueError::UnknownEffect { file, line, effect } => write!(
                f,
                "{file}:{line}: unknown effect `{effect}` (known: map_read=rN, map_write=rN, ret_map_value=rN, \
                 write_mem=rN, ret_kernel_ptr, callback=rN)"
            ),
            CatalogueError::BadRegister { file, line, effect } => {
                write!(f, "{file}:{line}: effect `{effect}` needs an argument register r1..r5")
            }
            CatalogueError::DuplicateEffect { file, line, effect } => {
                write!(f, "{file}:{line}: effect `{effect}` listed twice")
            }
            CatalogueError::EmptyReason { file, line } => write!(f, "{file}:{line}: the reason column is empty"),
        }
    }
}

impl std::error::Error for CatalogueError {}

/// The parsed, validated catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    /// Every helper, index == id.
    pub helpers: Vec<HelperEntry>,
    /// Every kfunc, sorted by name (byte order) so lookups can binary search.
    pub kfuncs: Vec<KfuncEntry>,
}

impl Catalogue {
    /// The embedded catalogue.
    pub fn load() -> Result<Catalogue, CatalogueError> {
        Catalogue::parse(HELPERS_FILE, HELPERS_TSV, KFUNCS_FILE, KFUNCS_TSV)
    }

    /// Parses and validates catalogue text; the file names only label errors.
    pub fn parse(
        helpers_file: &str,
        helpers_text: &str,
        kfuncs_file: &str,
        kfuncs_text: &str,
    ) -> Result<Catalogue, CatalogueError> {
        Ok(Catalogue {
            helpers: parse_helpers(helpers_file, helpers_text)?,
            kfuncs: parse_kfuncs(kfuncs_file, kfuncs_text)?,
        })
    }

    /// Rust source defining `HELPERS`, `KFUNCS` and `CATALOGUE_CLASS_NAMES`, for a module that has `Helper`, `Kfunc`,
    /// `Effect` and `ClassSet` in scope (see `lib/src/helpers.rs`).
    pub fn render_rust(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "// @generated by bpfgate-catalogue from {HELPERS_FILE} and {KFUNCS_FILE}. Do not edit.\n\n"
        ));
        out.push_str("/// Capability class names in bit order, as the catalogue crate knows them; a unit test compares them with\n");
        out.push_str("/// the includer's own list.\n");
        out.push_str("#[allow(dead_code)]\n");
        out.push_str(&format!("pub(crate) const CATALOGUE_CLASS_NAMES: [&str; {}] = [\n", CLASS_NAMES.len()));
        for name in CLASS_NAMES {
            out.push_str(&format!("    {name:?},\n"));
        }
        out.push_str("];\n\n");

        out.push_str("/// Every kernel helper, indexed by `BPF_FUNC_*` id.\n");
        out.push_str("pub static HELPERS: &[Helper] = &[\n");
        for h in &self.helpers {
            out.push_str(&format!(
                "    Helper {{ id: {}, name: {:?}, classes: ClassSet({:#x}), effects: {}, reason: {:?} }},\n",
                h.id,
                h.name,
                h.classes,
                rust_effects(&h.effects),
                h.reason
            ));
        }
        out.push_str("];\n\n");

        out.push_str("/// Every catalogued kfunc, sorted by name.\n");
        out.push_str("pub static KFUNCS: &[Kfunc] = &[\n");
        for k in &self.kfuncs {
            out.push_str(&format!(
                "    Kfunc {{ name: {:?}, classes: ClassSet({:#x}), effects: {}, reason: {:?} }},\n",
                k.name,
                k.classes,
                rust_effects(&k.effects),
                k.reason
            ));
        }
        out.push_str("];\n");
        out
    }

    /// A C header for the BPF side: class bit defines in `Capability` order, the helper count and a table of the
    /// classes each helper id proves. The includer provides `__u32` (vmlinux.h or linux/types.h).
    pub fn render_c_header(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("/* @generated by bpfgate-catalogue from {HELPERS_FILE}. Do not edit. */\n"));
        out.push_str("#ifndef BPFGATE_CATALOGUE_H\n#define BPFGATE_CATALOGUE_H\n\n");
        out.push_str("/* Capability class bits, in bpfgate::metadata::Capability order. */\n");
        for (bit, name) in CLASS_NAMES.iter().enumerate() {
            out.push_str(&format!("#define {} (1U << {bit})\n", c_class_macro(name)));
        }
        out.push_str(&format!("#define BPFGATE_CLASS_COUNT {}\n", CLASS_NAMES.len()));
        out.push_str(&format!("#define BPFGATE_CLASS_ALL {:#x}U\n\n", (1u32 << CLASS_NAMES.len()) - 1));
        out.push_str(&format!("#define BPFGATE_HELPER_COUNT {}\n\n", self.helpers.len()));
        out.push_str("/* Classes a call to each helper proves, indexed by BPF_FUNC_* id. */\n");
        out.push_str(&format!("static const __u32 bpfgate_helper_classes[{}] = {{\n", self.helpers.len()));
        for h in &self.helpers {
            out.push_str(&format!("\t/* {:3} {} */ {},\n", h.id, h.name, c_class_expr(h.classes)));
        }
        out.push_str("};\n\n#endif /* BPFGATE_CATALOGUE_H */\n");
        out
    }
}

/// The embedded catalogue rendered as Rust source (see [`Catalogue::render_rust`]).
pub fn rust_source() -> Result<String, CatalogueError> {
    Ok(Catalogue::load()?.render_rust())
}

/// The embedded catalogue rendered as a C header (see [`Catalogue::render_c_header`]).
pub fn c_header() -> Result<String, CatalogueError> {
    Ok(Catalogue::load()?.render_c_header())
}

/// Parses `helpers.tsv`: id, name, classes, effects, reason. Ids must run 0..[`HELPER_COUNT`] in order.
pub fn parse_helpers(file: &str, text: &str) -> Result<Vec<HelperEntry>, CatalogueError> {
    let mut helpers: Vec<HelperEntry> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, cols) in data_lines::<5>(file, text)? {
        let [id_text, name, classes, effects, reason] = cols;
        let id: u32 = id_text.parse().map_err(|_| CatalogueError::BadId {
            file: file.to_owned(),
            line,
            text: id_text.to_owned(),
        })?;
        // Dense and in order, so the table index is the id.
        let expected = u32::try_from(helpers.len()).unwrap_or(u32::MAX);
        if id != expected {
            return Err(CatalogueError::IdOrder { file: file.to_owned(), line, expected, found: id });
        }
        check_name(file, line, name, &mut seen)?;
        helpers.push(HelperEntry {
            id,
            name: name.to_owned(),
            classes: parse_classes(file, line, classes)?,
            effects: parse_effects(file, line, effects)?,
            reason: parse_reason(file, line, reason)?,
            line,
        });
    }
    let found = u32::try_from(helpers.len()).unwrap_or(u32::MAX);
    if found != HELPER_COUNT {
        return Err(CatalogueError::HelperCount { file: file.to_owned(), expected: HELPER_COUNT, found });
    }
    Ok(helpers)
}

/// Parses `kfuncs.tsv`: name, classes, effects, reason. The result is sorted by name.
pub fn parse_kfuncs(file: &str, text: &str) -> Result<Vec<KfuncEntry>, CatalogueError> {
    let mut kfuncs = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, cols) in data_lines::<4>(file, text)? {
        let [name, classes, effects, reason] = cols;
        check_name(file, line, name, &mut seen)?;
        kfuncs.push(KfuncEntry {
            name: name.to_owned(),
            classes: parse_classes(file, line, classes)?,
            effects: parse_effects(file, line, effects)?,
            reason: parse_reason(file, line, reason)?,
            line,
        });
    }
    kfuncs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(kfuncs)
}

/// The data lines of a file as (1-based line number, exactly `N` trimmed columns); comments and blank lines skipped.
fn data_lines<'a, const N: usize>(file: &str, text: &'a str) -> Result<Vec<(usize, [&'a str; N])>, CatalogueError> {
    let mut rows = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = content.split('\t').map(str::trim).collect();
        let found = cols.len();
        let cols: [&str; N] =
            cols.try_into().map_err(|_| CatalogueError::Columns { file: file.to_owned(), line, expected: N, found })?;
        rows.push((line, cols));
    }
    Ok(rows)
}

/// Names must be C identifiers (they become C comments and Rust strings) and unique within the file.
fn check_name(file: &str, line: usize, name: &str, seen: &mut HashMap<String, usize>) -> Result<(), CatalogueError> {
    let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        return Err(CatalogueError::BadName { file: file.to_owned(), line, name: name.to_owned() });
    }
    if let Some(&first_line) = seen.get(name) {
        return Err(CatalogueError::DuplicateName { file: file.to_owned(), line, name: name.to_owned(), first_line });
    }
    seen.insert(name.to_owned(), line);
    Ok(())
}

fn parse_classes(file: &str, line: usize, text: &str) -> Result<u32, CatalogueError> {
    let mut mask = 0u32;
    if text == "-" {
        return Ok(mask);
    }
    for token in text.split(',').map(str::trim) {
        let bit = CLASS_NAMES.iter().position(|c| *c == token).ok_or_else(|| CatalogueError::UnknownClass {
            file: file.to_owned(),
            line,
            class: token.to_owned(),
        })?;
        let flag = 1u32 << bit;
        if mask & flag != 0 {
            return Err(CatalogueError::DuplicateClass { file: file.to_owned(), line, class: token.to_owned() });
        }
        mask |= flag;
    }
    Ok(mask)
}

fn parse_effects(file: &str, line: usize, text: &str) -> Result<Vec<Effect>, CatalogueError> {
    let mut effects = Vec::new();
    if text == "-" {
        return Ok(effects);
    }
    for token in text.split(',').map(str::trim) {
        let effect = Effect::parse(token).map_err(|e| match e {
            EffectError::Unknown => {
                CatalogueError::UnknownEffect { file: file.to_owned(), line, effect: token.to_owned() }
            }
            EffectError::BadRegister => {
                CatalogueError::BadRegister { file: file.to_owned(), line, effect: token.to_owned() }
            }
        })?;
        if effects.contains(&effect) {
            return Err(CatalogueError::DuplicateEffect { file: file.to_owned(), line, effect: token.to_owned() });
        }
        effects.push(effect);
    }
    Ok(effects)
}

fn parse_reason(file: &str, line: usize, text: &str) -> Result<String, CatalogueError> {
    if text.is_empty() {
        return Err(CatalogueError::EmptyReason { file: file.to_owned(), line });
    }
    Ok(text.to_owned())
}

fn rust_effects(effects: &[Effect]) -> String {
    let items: Vec<String> = effects.iter().map(|e| e.rust_expr()).collect();
    format!("&[{}]", items.join(", "))
}

/// `kernel_read` -> `BPFGATE_CLASS_KERNEL_READ`.
fn c_class_macro(name: &str) -> String {
    format!("BPFGATE_CLASS_{}", name.to_ascii_uppercase())
}

/// A class mask as an OR of the class macros, `0` when empty.
fn c_class_expr(mask: u32) -> String {
    let names: Vec<String> = CLASS_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u32 << bit) != 0)
        .map(|(_, name)| c_class_macro(name))
        .collect();
    if names.is_empty() {
        "0".to_owned()
    } else {
        names.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A helpers file with ids 0..HELPER_COUNT, line `at` (0-based id) replaced by `line`.
    fn helpers_with(at: u32, line: &str) -> String {
        let mut text = String::from("# header\n");
        for id in 0..HELPER_COUNT {
            if id == at {
                text.push_str(line);
            } else {
                text.push_str(&format!("{id}\th{id}\t-\t-\tfiller"));
            }
            text.push('\n');
        }
        text
    }

    fn helpers_err(at: u32, line: &str) -> CatalogueError {
        match parse_helpers("h.tsv", &helpers_with(at, line)) {
            Err(e) => e,
            Ok(_) => panic!("expected an error for {line:?}"),
        }
    }

    fn kfuncs_err(text: &str) -> CatalogueError {
        match parse_kfuncs("k.tsv", text) {
            Err(e) => e,
            Ok(_) => panic!("expected an error for {text:?}"),
        }
    }

    #[test]
    fn embedded_catalogue_is_valid() {
        let cat = Catalogue::load().unwrap();
        assert_eq!(cat.helpers.len(), HELPER_COUNT as usize);
        for (i, h) in cat.helpers.iter().enumerate() {
            assert_eq!(h.id as usize, i);
        }
        assert!(cat.kfuncs.windows(2).all(|w| w[0].name < w[1].name));
        assert_eq!(cat.helpers[0].name, "unspec");
        assert_eq!(cat.helpers[211].name, "cgrp_storage_delete");
    }

    #[test]
    fn embedded_spot_checks() {
        let cat = Catalogue::load().unwrap();
        let bit = |name: &str| 1u32 << CLASS_NAMES.iter().position(|c| *c == name).unwrap();
        let helper = |name: &str| cat.helpers.iter().find(|h| h.name == name).unwrap();
        assert_eq!(helper("probe_write_user").classes, bit("user_write"));
        assert_eq!(helper("probe_read_kernel").classes, bit("kernel_read"));
        assert_eq!(helper("override_return").classes, bit("override_return"));
        assert_eq!(helper("tail_call").effects, vec![Effect::MapRead(2)]);
        assert_eq!(helper("map_lookup_elem").effects, vec![Effect::MapRead(1), Effect::RetMapValue(1)]);
        let crash = cat.kfuncs.iter().find(|k| k.name == "crash_kexec").unwrap();
        assert_eq!(crash.classes, bit("destructive"));
    }

    #[test]
    fn parses_a_helper_line() {
        let text = helpers_with(5, "5\tprobe_read_kernel\tkernel_read, user_read\twrite_mem=r1,callback=r3\t gate ");
        let helpers = parse_helpers("h.tsv", &text).unwrap();
        let h = &helpers[5];
        assert_eq!(h.name, "probe_read_kernel");
        assert_eq!(h.classes, 0b11);
        assert_eq!(h.effects, vec![Effect::WriteMem(1), Effect::Callback(3)]);
        assert_eq!(h.reason, "gate");
        assert_eq!(h.line, 7);
    }

    #[test]
    fn parses_every_effect_token() {
        let text = "f\t-\tmap_read=r1,map_write=r2,ret_map_value=r3,write_mem=r4,ret_kernel_ptr,callback=r5\tr\n";
        let k = parse_kfuncs("k.tsv", text).unwrap();
        let effects = vec![
            Effect::MapRead(1),
            Effect::MapWrite(2),
            Effect::RetMapValue(3),
            Effect::WriteMem(4),
            Effect::RetKernelPtr,
            Effect::Callback(5),
        ];
        assert_eq!(k[0].effects, effects);
        let tokens: Vec<String> = effects.iter().map(ToString::to_string).collect();
        assert_eq!(
            tokens.join(","),
            "map_read=r1,map_write=r2,ret_map_value=r3,write_mem=r4,ret_kernel_ptr,callback=r5"
        );
    }

    #[test]
    fn accepts_crlf_and_sorts_kfuncs() {
        let k = parse_kfuncs("k.tsv", "zeta\t-\t-\tz\r\n\n# c\nalpha\tunknown\t-\ta\r\n").unwrap();
        let names: Vec<&str> = k.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(k[0].classes, 1 << 12);
        assert_eq!(k[0].line, 4);
    }

    #[test]
    fn rejects_wrong_column_count() {
        assert_eq!(
            helpers_err(3, "3\tname\t-\t-"),
            CatalogueError::Columns { file: "h.tsv".into(), line: 5, expected: 5, found: 4 }
        );
        assert_eq!(
            kfuncs_err("a\t-\t-\tr\textra\n"),
            CatalogueError::Columns { file: "k.tsv".into(), line: 1, expected: 4, found: 5 }
        );
    }

    #[test]
    fn rejects_bad_or_out_of_order_ids() {
        assert_eq!(
            helpers_err(2, "x\th\t-\t-\tr"),
            CatalogueError::BadId { file: "h.tsv".into(), line: 4, text: "x".into() }
        );
        assert_eq!(
            helpers_err(2, "3\th\t-\t-\tr"),
            CatalogueError::IdOrder { file: "h.tsv".into(), line: 4, expected: 2, found: 3 }
        );
        let short: String = helpers_with(0, "0\tunspec\t-\t-\tr").lines().take(100).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            parse_helpers("h.tsv", &short),
            Err(CatalogueError::HelperCount { file: "h.tsv".into(), expected: HELPER_COUNT, found: 99 })
        );
        let long = format!("{}{}\textra\t-\t-\tr\n", helpers_with(0, "0\tunspec\t-\t-\tr"), HELPER_COUNT);
        assert_eq!(
            parse_helpers("h.tsv", &long),
            Err(CatalogueError::HelperCount { file: "h.tsv".into(), expected: HELPER_COUNT, found: HELPER_COUNT + 1 })
        );
    }

    #[test]
    fn rejects_bad_and_duplicate_names() {
        assert_eq!(
            helpers_err(1, "1\tbad-name\t-\t-\tr"),
            CatalogueError::BadName { file: "h.tsv".into(), line: 3, name: "bad-name".into() }
        );
        assert_eq!(
            helpers_err(1, "1\t\t-\t-\tr"),
            CatalogueError::BadName { file: "h.tsv".into(), line: 3, name: String::new() }
        );
        assert_eq!(
            helpers_err(4, "4\th2\t-\t-\tr"),
            CatalogueError::DuplicateName { file: "h.tsv".into(), line: 6, name: "h2".into(), first_line: 4 }
        );
        assert_eq!(
            kfuncs_err("a\t-\t-\tr\nb\t-\t-\tr\na\t-\t-\tr\n"),
            CatalogueError::DuplicateName { file: "k.tsv".into(), line: 3, name: "a".into(), first_line: 1 }
        );
    }

    #[test]
    fn rejects_bad_classes() {
        assert_eq!(
            kfuncs_err("a\tkernel_reads\t-\tr\n"),
            CatalogueError::UnknownClass { file: "k.tsv".into(), line: 1, class: "kernel_reads".into() }
        );
        assert_eq!(
            kfuncs_err("a\t\t-\tr\n"),
            CatalogueError::UnknownClass { file: "k.tsv".into(), line: 1, class: String::new() }
        );
        assert_eq!(
            kfuncs_err("a\tmap_write,map_write\t-\tr\n"),
            CatalogueError::DuplicateClass { file: "k.tsv".into(), line: 1, class: "map_write".into() }
        );
    }

    #[test]
    fn rejects_bad_effects() {
        assert_eq!(
            kfuncs_err("a\t-\tmap_reads=r1\tr\n"),
            CatalogueError::UnknownEffect { file: "k.tsv".into(), line: 1, effect: "map_reads=r1".into() }
        );
        assert_eq!(
            kfuncs_err("a\t-\tret_kernel_ptr=r1\tr\n"),
            CatalogueError::UnknownEffect { file: "k.tsv".into(), line: 1, effect: "ret_kernel_ptr=r1".into() }
        );
        for bad in ["map_read=r0", "map_read=r6", "map_read=1", "map_read=", "write_mem=r1x"] {
            assert_eq!(
                kfuncs_err(&format!("a\t-\t{bad}\tr\n")),
                CatalogueError::BadRegister { file: "k.tsv".into(), line: 1, effect: bad.into() }
            );
        }
        assert_eq!(
            kfuncs_err("a\t-\tcallback=r2,callback=r2\tr\n"),
            CatalogueError::DuplicateEffect { file: "k.tsv".into(), line: 1, effect: "callback=r2".into() }
        );
    }

    #[test]
    fn rejects_empty_reason() {
        assert_eq!(kfuncs_err("a\t-\t-\t \n"), CatalogueError::EmptyReason { file: "k.tsv".into(), line: 1 });
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = kfuncs_err("a\t-\t-\tr\na\tbogus\t-\tr\n");
        assert_eq!(e.to_string(), "k.tsv:2: name `a` already appears on line 1");
        let e = kfuncs_err("a\tbogus\t-\tr\n");
        assert!(e.to_string().starts_with("k.tsv:1: unknown class `bogus`"));
    }

    fn small_catalogue() -> Catalogue {
        let helpers = helpers_with(1, "1\tmap_lookup_elem\t-\tmap_read=r1,ret_map_value=r1\tsays \"hi\"\\");
        let helpers =
            helpers.replace("2\th2\t-\t-\tfiller", "2\tmap_update_elem\tmap_write,kernel_read\tmap_write=r1\tw");
        let kfuncs = "zz\tdestructive\t-\tz\naa\t-\tret_kernel_ptr\ta\n";
        Catalogue::parse("h.tsv", &helpers, "k.tsv", kfuncs).unwrap()
    }

    #[test]
    fn renders_rust() {
        let rust = small_catalogue().render_rust();
        assert!(rust.contains("pub(crate) const CATALOGUE_CLASS_NAMES: [&str; 13] = [\n    \"kernel_read\",\n"));
        assert!(rust.contains(
            "    Helper { id: 1, name: \"map_lookup_elem\", classes: ClassSet(0x0), \
             effects: &[Effect::MapRead(1), Effect::RetMapValue(1)], reason: \"says \\\"hi\\\"\\\\\" },\n"
        ));
        assert!(rust.contains("    Helper { id: 2, name: \"map_update_elem\", classes: ClassSet(0x41), effects: &[Effect::MapWrite(1)], reason: \"w\" },\n"));
        let aa = rust
            .find("Kfunc { name: \"aa\", classes: ClassSet(0x0), effects: &[Effect::RetKernelPtr], reason: \"a\" }")
            .unwrap();
        let zz = rust.find("Kfunc { name: \"zz\", classes: ClassSet(0x100), effects: &[], reason: \"z\" }").unwrap();
        assert!(aa < zz);
        assert_eq!(rust.matches("    Helper {").count(), HELPER_COUNT as usize);
    }

    #[test]
    fn renders_c_header() {
        let c = small_catalogue().render_c_header();
        assert!(c.contains("#define BPFGATE_HELPER_COUNT 212\n"));
        assert!(c.contains("#define BPFGATE_CLASS_KERNEL_READ (1U << 0)\n"));
        assert!(c.contains("#define BPFGATE_CLASS_MAP_WRITE (1U << 6)\n"));
        assert!(c.contains("#define BPFGATE_CLASS_UNKNOWN (1U << 12)\n"));
        assert!(c.contains("#define BPFGATE_CLASS_ALL 0x1fffU\n"));
        assert!(c.contains("static const __u32 bpfgate_helper_classes[212] = {\n"));
        assert!(c.contains("\t/*   1 map_lookup_elem */ 0,\n"));
        assert!(c.contains("\t/*   2 map_update_elem */ BPFGATE_CLASS_KERNEL_READ | BPFGATE_CLASS_MAP_WRITE,\n"));
        assert!(c.contains("\t/* 211 h211 */ 0,\n};\n"));
        assert_eq!(c.matches("\t/* ").count(), HELPER_COUNT as usize);
    }

    #[test]
    fn class_macros_are_in_bit_order() {
        let c = Catalogue::load().unwrap().render_c_header();
        for (bit, name) in CLASS_NAMES.iter().enumerate() {
            assert!(c.contains(&format!("#define BPFGATE_CLASS_{} (1U << {bit})\n", name.to_ascii_uppercase())));
        }
    }
}
