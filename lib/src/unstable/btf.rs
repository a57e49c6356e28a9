//! A minimal, panic-free BTF reader: the `.BTF` section of a BPF object (header, types, strings) and the
//! libbpf BTF-defined maps of its `.maps` DATASEC.
//!
//! The format is the kernel's (`include/uapi/linux/btf.h`). Parsing checks what libbpf's `btf_parse()` checks,
//! so a section libbpf would refuse is refused here too: header and section bounds, string section framing,
//! every type's size against the data left, every referenced type id and name offset. Counts (`vlen`) are
//! checked against the bytes left before anything is allocated for them. Kinds 1..=19 are decoded; a later
//! kind is skipped when the optional layout section (newer headers, `hdr_len` >= 32) says how big it is, and is
//! an error otherwise. Byte offsets in errors are from the start of the `.BTF` section.

use std::borrow::Cow;
use std::fmt;

/// `BTF_MAGIC`.
pub const BTF_MAGIC: u16 = 0xeb9f;
/// The only BTF version there is.
pub const BTF_VERSION: u8 = 1;
/// Size of the header fields every BTF has (`magic` .. `str_len`).
const HEADER_LEN: u32 = 24;
/// Header length that includes `layout_off` and `layout_len`.
const HEADER_LEN_WITH_LAYOUT: u32 = 32;
/// `struct btf_type`.
const TYPE_LEN: u64 = 12;
/// libbpf's `MAX_RESOLVE_DEPTH`: typedef and modifier chains longer than this are treated as broken (cycles).
const MAX_RESOLVE_DEPTH: usize = 32;
/// BPF is a 64-bit target.
const PTR_SIZE: u32 = 8;

pub const KIND_INT: u32 = 1;
pub const KIND_PTR: u32 = 2;
pub const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_ENUM: u32 = 6;
pub const KIND_FWD: u32 = 7;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_VOLATILE: u32 = 9;
pub const KIND_CONST: u32 = 10;
pub const KIND_RESTRICT: u32 = 11;
pub const KIND_FUNC: u32 = 12;
pub const KIND_FUNC_PROTO: u32 = 13;
pub const KIND_VAR: u32 = 14;
pub const KIND_DATASEC: u32 = 15;
pub const KIND_FLOAT: u32 = 16;
pub const KIND_DECL_TAG: u32 = 17;
pub const KIND_TYPE_TAG: u32 = 18;
pub const KIND_ENUM64: u32 = 19;

/// The kernel's name of a BTF kind number (`STRUCT`, `FUNC_PROTO`, ...), `UNKNOWN` past the known ones.
pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        0 => "VOID",
        KIND_INT => "INT",
        KIND_PTR => "PTR",
        KIND_ARRAY => "ARRAY",
        KIND_STRUCT => "STRUCT",
        KIND_UNION => "UNION",
        KIND_ENUM => "ENUM",
        KIND_FWD => "FWD",
        KIND_TYPEDEF => "TYPEDEF",
        KIND_VOLATILE => "VOLATILE",
        KIND_CONST => "CONST",
        KIND_RESTRICT => "RESTRICT",
        KIND_FUNC => "FUNC",
        KIND_FUNC_PROTO => "FUNC_PROTO",
        KIND_VAR => "VAR",
        KIND_DATASEC => "DATASEC",
        KIND_FLOAT => "FLOAT",
        KIND_DECL_TAG => "DECL_TAG",
        KIND_TYPE_TAG => "TYPE_TAG",
        KIND_ENUM64 => "ENUM64",
        _ => "UNKNOWN",
    }
}

/// Why a `.BTF` section or its map definitions could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("BTF header truncated: {len} bytes, need at least 24")]
    HeaderTruncated { len: usize },
    #[error("bad BTF magic {magic:#06x}, expected 0xeb9f")]
    BadMagic { magic: u16 },
    #[error("BTF magic is byte-swapped: the data is not {} as the ELF header says", if *.little_endian { "little-endian" } else { "big-endian" })]
    WrongEndianness { little_endian: bool },
    #[error("unsupported BTF version {version}, expected 1")]
    UnsupportedVersion { version: u8 },
    #[error("BTF header length {hdr_len} is below 24 or beyond the {len} bytes of the section")]
    BadHeaderLength { hdr_len: u32, len: usize },
    #[error("BTF {section} section at {off}+{len} exceeds the {avail} bytes after the header")]
    SectionOutOfBounds { section: &'static str, off: u32, len: u32, avail: usize },
    #[error("BTF {first} section ends at {first_end}, after the {second} section starts at {second_off}")]
    SectionsOverlap { first: &'static str, first_end: u64, second: &'static str, second_off: u32 },
    #[error("BTF {section} section offset {off} is not 4-byte aligned")]
    Misaligned { section: &'static str, off: u32 },
    #[error("BTF layout section length {len} is not a multiple of 4")]
    BadLayoutSection { len: u32 },
    #[error("BTF string section of {len} bytes is empty or does not start and end with NUL")]
    BadStringSection { len: u32 },
    #[error("BTF type {type_id} ({}) at byte offset {offset}: needs {need} bytes, {avail} left", kind_name(*.kind))]
    TypeTruncated { type_id: u32, offset: u64, kind: u32, need: u64, avail: u64 },
    #[error("BTF type {type_id} at byte offset {offset}: unknown kind {kind}")]
    UnknownKind { type_id: u32, offset: u64, kind: u32 },
    #[error("BTF type {type_id} at byte offset {offset}: layout of kind {kind} has sizes {info_sz}/{elem_sz}, not multiples of 4")]
    BadKindLayout { type_id: u32, offset: u64, kind: u32, info_sz: u8, elem_sz: u8 },
    #[error("BTF type {type_id}: {what} offset {name_off} is outside the {str_len}-byte string section")]
    BadNameOffset { type_id: u32, what: &'static str, name_off: u32, str_len: u32 },
    #[error("BTF type {type_id}: references type {target}, but the last type id is {last}")]
    BadTypeRef { type_id: u32, target: u32, last: u32 },
    #[error("BTF type {type_id}: FUNC references type {target} ({}), not FUNC_PROTO", kind_name(*.kind))]
    FuncNotProto { type_id: u32, target: u32, kind: u32 },
    #[error(".maps variable #{index} is BTF type {type_id} ({}), not VAR", kind_name(*.kind))]
    MapNotVar { index: usize, type_id: u32, kind: u32 },
    #[error(".maps variable #{index} (BTF type {type_id}) has no name")]
    MapNoName { index: usize, type_id: u32 },
    #[error("map {map}: definition is BTF type {type_id} ({}), not STRUCT", kind_name(*.kind))]
    MapDefNotStruct { map: String, type_id: u32, kind: u32 },
    #[error("map {map}: field {field}: typedef or modifier chain from BTF type {type_id} does not end")]
    MapFieldUnresolvable { map: String, field: String, type_id: u32 },
    #[error("map {map}: field {field}: BTF type {type_id} is {}, expected PTR", kind_name(*.kind))]
    MapFieldNotPtr { map: String, field: String, type_id: u32, kind: u32 },
    #[error("map {map}: field {field}: BTF type {type_id} is {}, expected ARRAY", kind_name(*.kind))]
    MapFieldNotArray { map: String, field: String, type_id: u32, kind: u32 },
    #[error("map {map}: field {field}: BTF type {type_id} is {} with {count} values, expected PTR or a one-value ENUM", kind_name(*.kind))]
    MapFieldBadEnum { map: String, field: String, type_id: u32, kind: u32, count: usize },
    #[error("map {map}: field {field}: size of BTF type {type_id} is unknown")]
    MapFieldSizeUnknown { map: String, field: String, type_id: u32 },
    #[error("map {map}: conflicting {field} sizes {first} and {second}")]
    MapSizeConflict { map: String, field: &'static str, first: u32, second: u32 },
    #[error("map {map}: map type is not specified")]
    MapTypeMissing { map: String },
}

/// One BTF type (ids start at 1; id 0 is `void` and has no entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfType {
    /// Offset of the name in the string section; 0 for anonymous types.
    pub name_off: u32,
    /// `kind_flag`: bitfield member offsets (STRUCT/UNION), union (FWD), signed (ENUM/ENUM64), attribute tag.
    pub kind_flag: bool,
    pub kind: BtfKind,
}

/// A type's kind and kind-specific data. Type ids refer to [`Btf::type_by_id`]; 0 is `void`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfKind {
    /// `encoding` is `BTF_INT_SIGNED` (1) | `BTF_INT_CHAR` (2) | `BTF_INT_BOOL` (4).
    Int {
        size: u32,
        encoding: u8,
        offset: u8,
        bits: u8,
    },
    Ptr {
        type_id: u32,
    },
    Array {
        elem_type: u32,
        index_type: u32,
        nelems: u32,
    },
    Struct {
        size: u32,
        members: Vec<BtfMember>,
    },
    Union {
        size: u32,
        members: Vec<BtfMember>,
    },
    Enum {
        size: u32,
        values: Vec<BtfEnumValue>,
    },
    Fwd,
    Typedef {
        type_id: u32,
    },
    Volatile {
        type_id: u32,
    },
    Const {
        type_id: u32,
    },
    Restrict {
        type_id: u32,
    },
    /// `linkage`: 0 static, 1 global, 2 extern.
    Func {
        proto: u32,
        linkage: u32,
    },
    FuncProto {
        ret: u32,
        params: Vec<BtfParam>,
    },
    /// `linkage`: 0 static, 1 global allocated, 2 extern.
    Var {
        type_id: u32,
        linkage: u32,
    },
    Datasec {
        size: u32,
        vars: Vec<BtfVarSecinfo>,
    },
    Float {
        size: u32,
    },
    /// `component_idx` -1 tags the type itself, otherwise a member or parameter.
    DeclTag {
        type_id: u32,
        component_idx: i32,
    },
    TypeTag {
        type_id: u32,
    },
    Enum64 {
        size: u32,
        values: Vec<BtfEnum64Value>,
    },
    /// A kind newer than this reader, skipped using the layout section; its data is not decoded.
    Unknown {
        kind: u32,
        vlen: u32,
        size_or_type: u32,
    },
}

impl BtfKind {
    /// The kernel's kind number.
    pub fn number(&self) -> u32 {
        match self {
            BtfKind::Int { .. } => KIND_INT,
            BtfKind::Ptr { .. } => KIND_PTR,
            BtfKind::Array { .. } => KIND_ARRAY,
            BtfKind::Struct { .. } => KIND_STRUCT,
            BtfKind::Union { .. } => KIND_UNION,
            BtfKind::Enum { .. } => KIND_ENUM,
            BtfKind::Fwd => KIND_FWD,
            BtfKind::Typedef { .. } => KIND_TYPEDEF,
            BtfKind::Volatile { .. } => KIND_VOLATILE,
            BtfKind::Const { .. } => KIND_CONST,
            BtfKind::Restrict { .. } => KIND_RESTRICT,
            BtfKind::Func { .. } => KIND_FUNC,
            BtfKind::FuncProto { .. } => KIND_FUNC_PROTO,
            BtfKind::Var { .. } => KIND_VAR,
            BtfKind::Datasec { .. } => KIND_DATASEC,
            BtfKind::Float { .. } => KIND_FLOAT,
            BtfKind::DeclTag { .. } => KIND_DECL_TAG,
            BtfKind::TypeTag { .. } => KIND_TYPE_TAG,
            BtfKind::Enum64 { .. } => KIND_ENUM64,
            BtfKind::Unknown { kind, .. } => *kind,
        }
    }
}

impl fmt::Display for BtfKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(kind_name(self.number()))
    }
}

/// A STRUCT or UNION member. `offset` is in bits; with the type's `kind_flag` set, bits 24..32 hold the bitfield
/// size and bits 0..24 the offset (see [`BtfMember::bit_offset`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfMember {
    pub name_off: u32,
    pub type_id: u32,
    pub offset: u32,
}

impl BtfMember {
    /// Bit offset of the member, given the owning type's `kind_flag`.
    pub fn bit_offset(&self, kind_flag: bool) -> u32 {
        if kind_flag {
            self.offset & 0x00ff_ffff
        } else {
            self.offset
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfEnumValue {
    pub name_off: u32,
    pub value: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfEnum64Value {
    pub name_off: u32,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfParam {
    pub name_off: u32,
    pub type_id: u32,
}

/// One entry of a DATASEC: a VAR (or, in `.ksyms`, a FUNC) at `offset` in the section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfVarSecinfo {
    pub type_id: u32,
    pub offset: u32,
    pub size: u32,
}

/// A DATASEC entry with its name resolved, from [`Btf::datasec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasecVar {
    /// Name of the VAR or FUNC (empty if it has none or it is not UTF-8).
    pub name: String,
    /// Id of the VAR (or FUNC) entry itself.
    pub var_id: u32,
    /// Type of the variable: the VAR's `type`; for anything but a VAR, `var_id` again.
    pub type_id: u32,
    pub offset: u32,
    pub size: u32,
}

/// A libbpf BTF-defined map from the `.maps` DATASEC, as declared (no loader defaults applied: libbpf's own
/// adjustments at load time, such as perf event array sizes or ring buffer rounding, are not made here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfMapDef {
    pub name: String,
    /// `type`: kernel `enum bpf_map_type`.
    pub map_type: u32,
    /// `key_size`, or the size of `key`'s pointee; 0 when neither is given.
    pub key_size: u32,
    /// `value_size`, the size of `value`'s pointee, or 4 with `values`; 0 when none is given.
    pub value_size: u32,
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// `pinning`: 0 none, 1 by name. Passed through unchecked.
    pub pinning: u32,
    pub numa_node: u32,
    pub map_extra: u64,
    /// Pointee of `key`, when declared by type.
    pub key_type_id: Option<u32>,
    /// Pointee of `value`, when declared by type.
    pub value_type_id: Option<u32>,
    /// A `values` member is present: a map-in-map inner definition or prog array initial values (not decoded).
    pub has_values: bool,
}

/// Parsed BTF: types and the string section, every type decoded. [`index`] checks the same and decodes on demand.
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<BtfType>,
    strings: Vec<u8>,
    /// The type section as read, and where each type starts in it: what [`Btf::index`] reads.
    type_data: Vec<u8>,
    offsets: Vec<u32>,
    datasecs: Vec<u32>,
    funcs: Vec<u32>,
    func_tags: Vec<u32>,
    little_endian: bool,
}

/// Equal types and strings are equal BTF, whatever the byte order of the section they were read from.
impl PartialEq for Btf {
    fn eq(&self, other: &Btf) -> bool {
        self.types == other.types && self.strings == other.strings
    }
}

impl Eq for Btf {}

/// Endian-aware reads that return `None` instead of panicking past the end.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    data: &'a [u8],
    le: bool,
}

impl<'a> Reader<'a> {
    fn u16(&self, off: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(off..off.checked_add(2)?)?.try_into().ok()?;
        Some(if self.le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }

    fn u32(&self, off: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(if self.le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
}

fn to_usize(v: u64) -> usize {
    // Only called on values already bounded by a slice length.
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Parses a `.BTF` section in the byte order of its ELF file, decoding every type.
pub fn parse(data: &[u8], little_endian: bool) -> Result<Btf, BtfError> {
    let index = index(data, little_endian)?;
    let types = (1..=index.type_count()).filter_map(|id| index.raw(id)).map(|t| index.decode(t)).collect();
    Ok(Btf {
        types,
        strings: index.strings.to_vec(),
        type_data: index.types.data.to_vec(),
        offsets: index.offsets.into_owned(),
        datasecs: index.datasecs.into_owned(),
        funcs: index.funcs.into_owned(),
        func_tags: index.func_tags.into_owned(),
        little_endian,
    })
}

/// Checks a `.BTF` section as [`parse`] does, without decoding the types: lookups decode what they read. For
/// a reader that needs a few types (maps, externs) out of many.
pub fn index(data: &[u8], little_endian: bool) -> Result<BtfIndex<'_>, BtfError> {
    let (types, strings, layout, base) = sections(data, little_endian)?;
    let walk = type_offsets(types, layout, base, u32::try_from(strings.len()).unwrap_or(u32::MAX))?;
    let index = BtfIndex {
        types,
        strings,
        offsets: Cow::Owned(walk.offsets),
        datasecs: Cow::Owned(walk.datasecs),
        funcs: Cow::Owned(walk.func_ids),
        func_tags: Cow::Owned(walk.func_tags),
    };
    // The walk found everything `validate` checks in order to word the first problem; it is only run then.
    let funcs_ok = walk.funcs.iter().all(|&proto| index.kind_of(proto) == KIND_FUNC_PROTO);
    if !walk.names_ok || walk.max_ref > index.type_count() || !funcs_ok {
        index.validate()?;
    }
    Ok(index)
}

/// What [`index`] found by walking every type, kept to look the same section up again without the walk: see
/// [`index_again`].
#[derive(Debug, Clone)]
pub(crate) struct IndexParts {
    offsets: Vec<u32>,
    datasecs: Vec<u32>,
    funcs: Vec<u32>,
    func_tags: Vec<u32>,
}

impl BtfIndex<'_> {
    /// The walk's results, for [`index_again`] on the same bytes.
    pub(crate) fn into_parts(self) -> IndexParts {
        IndexParts {
            offsets: self.offsets.into_owned(),
            datasecs: self.datasecs.into_owned(),
            funcs: self.funcs.into_owned(),
            func_tags: self.func_tags.into_owned(),
        }
    }
}

/// The index of a section [`index`] accepted before and gave `parts` for, without walking its types again.
/// `None` if the header no longer reads (other bytes than those `parts` came from).
pub(crate) fn index_again<'a>(data: &'a [u8], little_endian: bool, parts: &'a IndexParts) -> Option<BtfIndex<'a>> {
    let (types, strings, _, _) = sections(data, little_endian).ok()?;
    Some(BtfIndex {
        types,
        strings,
        offsets: Cow::Borrowed(&parts.offsets),
        datasecs: Cow::Borrowed(&parts.datasecs),
        funcs: Cow::Borrowed(&parts.funcs),
        func_tags: Cow::Borrowed(&parts.func_tags),
    })
}

/// The type section (as a reader), the strings, the kind layout section (empty without one) and the offset of the
/// type section in the blob.
type Sections<'a> = (Reader<'a>, &'a [u8], &'a [u8], u64);

/// The header's checks, and where its sections are.
fn sections(data: &[u8], little_endian: bool) -> Result<Sections<'_>, BtfError> {
    let r = Reader { data, le: little_endian };
    let header_err = || BtfError::HeaderTruncated { len: data.len() };
    if data.len() < HEADER_LEN as usize {
        return Err(header_err());
    }
    let magic = r.u16(0).ok_or_else(header_err)?;
    if magic != BTF_MAGIC {
        return Err(if magic.swap_bytes() == BTF_MAGIC {
            BtfError::WrongEndianness { little_endian }
        } else {
            BtfError::BadMagic { magic }
        });
    }
    let version = data.get(2).copied().ok_or_else(header_err)?;
    if version != BTF_VERSION {
        return Err(BtfError::UnsupportedVersion { version });
    }
    let field = |off: usize| r.u32(off).ok_or_else(header_err);
    let hdr_len = field(4)?;
    if hdr_len < HEADER_LEN || to_usize(u64::from(hdr_len)) > data.len() {
        return Err(BtfError::BadHeaderLength { hdr_len, len: data.len() });
    }
    let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
    let body = data.get(to_usize(u64::from(hdr_len))..).unwrap_or_default();
    let avail = body.len();

    let str_end = u64::from(str_off) + u64::from(str_len);
    if str_end > avail as u64 {
        return Err(BtfError::SectionOutOfBounds { section: "string", off: str_off, len: str_len, avail });
    }
    let type_end = u64::from(type_off) + u64::from(type_len);
    if type_end > u64::from(str_off) {
        return Err(BtfError::SectionsOverlap {
            first: "type",
            first_end: type_end,
            second: "string",
            second_off: str_off,
        });
    }
    if type_off % 4 != 0 {
        return Err(BtfError::Misaligned { section: "type", off: type_off });
    }

    // Optional kind layout section (newer headers): sizes of kinds this reader may not know.
    let mut layout: &[u8] = &[];
    if hdr_len >= HEADER_LEN_WITH_LAYOUT {
        let (layout_off, layout_len) = (field(24)?, field(28)?);
        if layout_len != 0 {
            if layout_off % 4 != 0 {
                return Err(BtfError::Misaligned { section: "layout", off: layout_off });
            }
            if layout_len % 4 != 0 {
                return Err(BtfError::BadLayoutSection { len: layout_len });
            }
            if u64::from(layout_off) < type_end {
                return Err(BtfError::SectionsOverlap {
                    first: "type",
                    first_end: type_end,
                    second: "layout",
                    second_off: layout_off,
                });
            }
            let layout_end = u64::from(layout_off) + u64::from(layout_len);
            if layout_end > u64::from(str_off) {
                return Err(BtfError::SectionsOverlap {
                    first: "layout",
                    first_end: layout_end,
                    second: "string",
                    second_off: str_off,
                });
            }
            layout = body.get(to_usize(u64::from(layout_off))..to_usize(layout_end)).unwrap_or_default();
        }
    }

    let strings = body.get(to_usize(u64::from(str_off))..to_usize(str_end)).unwrap_or_default();
    if strings.first() != Some(&0) || strings.last() != Some(&0) {
        return Err(BtfError::BadStringSection { len: str_len });
    }
    let type_data = body.get(to_usize(u64::from(type_off))..to_usize(type_end)).unwrap_or_default();
    // Offsets in errors count from the start of the section.
    let base = u64::from(hdr_len) + u64::from(type_off);
    let types = Reader { data: type_data, le: little_endian };
    Ok((types, strings, layout, base))
}

/// What [`type_offsets`] found.
struct Walk {
    offsets: Vec<u32>,
    datasecs: Vec<u32>,
    /// Every name offset is inside the string section.
    names_ok: bool,
    /// The largest type id referred to.
    max_ref: u32,
    /// The prototype of every FUNC.
    funcs: Vec<u32>,
    /// The ids of the FUNCs.
    func_ids: Vec<u32>,
    /// The ids of the DECL_TAGs on a whole type (component -1).
    func_tags: Vec<u32>,
}

/// Where each type starts in the type section, checking that each fits and has a known size; the ids of the
/// DATASECs, which lookups by section name search; and, in the same pass, what `validate` checks (names inside the
/// `str_len` bytes of strings, referenced ids, FUNC prototypes), without wording it.
///
/// Arithmetic below cannot overflow: sums are u64 of u32 operands, products are of a 24-bit `vlen` and a size of
/// at most 255, and `usize` positions stay below the slice length.
fn type_offsets(r: Reader<'_>, layout: &[u8], base: u64, str_len: u32) -> Result<Walk, BtfError> {
    if r.le {
        type_offsets_in::<true>(r.data, layout, base, str_len)
    } else {
        type_offsets_in::<false>(r.data, layout, base, str_len)
    }
}

/// The bytes a type of `kind` takes after its 12-byte header: a fixed part and a part per `vlen` item, for the
/// kinds this reader knows (index: kind; `None` for the others, sized by the kind layout section).
const KIND_SIZES: [Option<(u64, u64)>; 32] = {
    let mut t = [None; 32];
    let mut k = 1;
    while k <= KIND_ENUM64 as usize {
        t[k] = Some((0, 0));
        k += 1;
    }
    t[KIND_INT as usize] = Some((4, 0));
    t[KIND_VAR as usize] = Some((4, 0));
    t[KIND_DECL_TAG as usize] = Some((4, 0));
    t[KIND_ARRAY as usize] = Some((12, 0));
    t[KIND_STRUCT as usize] = Some((0, 12));
    t[KIND_UNION as usize] = Some((0, 12));
    t[KIND_DATASEC as usize] = Some((0, 12));
    t[KIND_ENUM64 as usize] = Some((0, 12));
    t[KIND_ENUM as usize] = Some((0, 8));
    t[KIND_FUNC_PROTO as usize] = Some((0, 8));
    t
};

/// [`type_offsets`] for one byte order, `LE` a constant so that every word read is one load (a third of the
/// walk's instructions went to testing the byte order per word). The per-type work is kept small: a large
/// object's BTF (GCC emits every kernel type a program names) has ~10,000 types, and this walk was most of
/// inspecting it.
fn type_offsets_in<const LE: bool>(data: &[u8], layout: &[u8], base: u64, str_len: u32) -> Result<Walk, BtfError> {
    let len = data.len();
    let mut walk = Walk {
        offsets: Vec::with_capacity(len / TYPE_LEN as usize),
        datasecs: Vec::new(),
        names_ok: true,
        max_ref: 0,
        funcs: Vec::new(),
        func_ids: Vec::new(),
        func_tags: Vec::new(),
    };
    // The largest name offset and type id seen: every name is in bounds if the largest is.
    let mut names = 0u32;
    let mut refs = 0u32;
    let mut pos = 0usize;
    // At most len / 12 types, so the id fits in u32 whenever the type section length does.
    let mut type_id = 0u32;
    while pos < len {
        type_id = type_id.saturating_add(1);
        let offset = base + pos as u64;
        let left = (len - pos) as u64;
        let truncated = |kind: u32, need: u64| BtfError::TypeTruncated { type_id, offset, kind, need, avail: left };
        let Some(head) = data.get(pos..pos + TYPE_LEN as usize) else {
            return Err(truncated(0, TYPE_LEN));
        };
        let info = word(LE, &head[4..]);
        let size_or_type = word(LE, &head[8..]);
        names = names.max(word(LE, head));
        let kind = (info >> 24) & 0x7f;
        let vlen = u64::from(info & 0x00ff_ffff);
        let extra = match KIND_SIZES[kind as usize & 31] {
            Some((fixed, per_item)) if kind < 32 => fixed + per_item * vlen,
            _ => {
                let entry = to_usize(u64::from(kind) * 4);
                let (Some(&info_sz), Some(&elem_sz)) = (layout.get(entry), layout.get(entry.saturating_add(1))) else {
                    return Err(BtfError::UnknownKind { type_id, offset, kind });
                };
                if info_sz % 4 != 0 || elem_sz % 4 != 0 {
                    return Err(BtfError::BadKindLayout { type_id, offset, kind, info_sz, elem_sz });
                }
                u64::from(info_sz) + u64::from(elem_sz) * vlen
            }
        };
        let need = TYPE_LEN + extra;
        if need > left {
            return Err(truncated(kind, need));
        }
        // The type is in bounds: its items' names and type ids, as `validate` tells them apart.
        let items = data.get(pos + TYPE_LEN as usize..pos + to_usize(need)).unwrap_or_default();
        match kind {
            KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_VAR | KIND_TYPE_TAG => {
                refs = refs.max(size_or_type);
            }
            KIND_STRUCT | KIND_UNION => {
                for m in items.chunks_exact(12) {
                    names = names.max(word(LE, m));
                    refs = refs.max(word(LE, &m[4..]));
                }
            }
            KIND_FUNC => {
                refs = refs.max(size_or_type);
                walk.funcs.push(size_or_type);
                walk.func_ids.push(type_id);
            }
            KIND_FUNC_PROTO => {
                refs = refs.max(size_or_type);
                for p in items.chunks_exact(8) {
                    names = names.max(word(LE, p));
                    refs = refs.max(word(LE, &p[4..]));
                }
            }
            KIND_ENUM => items.chunks_exact(8).for_each(|v| names = names.max(word(LE, v))),
            KIND_ENUM64 => items.chunks_exact(12).for_each(|v| names = names.max(word(LE, v))),
            KIND_ARRAY => refs = refs.max(word(LE, items)).max(word(LE, items.get(4..).unwrap_or_default())),
            KIND_DATASEC => {
                items.chunks_exact(12).for_each(|v| refs = refs.max(word(LE, v)));
                walk.datasecs.push(type_id);
            }
            KIND_DECL_TAG => {
                refs = refs.max(size_or_type);
                if word(LE, items) as i32 == -1 {
                    walk.func_tags.push(type_id);
                }
            }
            _ => {}
        }
        // pos < len <= u32::MAX: the type section length is a u32.
        walk.offsets.push(u32::try_from(pos).unwrap_or(u32::MAX));
        pos += to_usize(need);
    }
    walk.names_ok = names < str_len;
    walk.max_ref = refs;
    Ok(walk)
}

/// The u32 at the start of `b` (0 if it is shorter), in the given byte order.
fn word(le: bool, b: &[u8]) -> u32 {
    match b.first_chunk::<4>() {
        Some(&w) if le => u32::from_le_bytes(w),
        Some(&w) => u32::from_be_bytes(w),
        None => 0,
    }
}

/// A type's fixed header, and where its kind-specific data starts in the type section.
#[derive(Debug, Clone, Copy)]
struct RawType {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    data: usize,
}

impl RawType {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x7f
    }
    fn vlen(&self) -> usize {
        (self.info & 0x00ff_ffff) as usize
    }
}

/// Checked BTF whose types are read from the section as they are looked up (see [`index`]).
#[derive(Debug, Clone)]
pub struct BtfIndex<'a> {
    types: Reader<'a>,
    strings: &'a [u8],
    offsets: Cow<'a, [u32]>,
    /// Ids of the DATASEC types, in id order.
    datasecs: Cow<'a, [u32]>,
    /// Ids of the FUNC types, in id order.
    funcs: Cow<'a, [u32]>,
    /// Ids of the DECL_TAG types on a whole type (component -1), in id order.
    func_tags: Cow<'a, [u32]>,
}

impl<'a> BtfIndex<'a> {
    /// Number of types, not counting `void`: the last valid type id.
    pub fn type_count(&self) -> u32 {
        u32::try_from(self.offsets.len()).unwrap_or(u32::MAX)
    }

    fn raw(&self, id: u32) -> Option<RawType> {
        let start = to_usize(u64::from(*self.offsets.get(usize::try_from(id.checked_sub(1)?).ok()?)?));
        Some(RawType {
            name_off: self.types.u32(start)?,
            info: self.types.u32(start + 4)?,
            size_or_type: self.types.u32(start + 8)?,
            data: start + TYPE_LEN as usize,
        })
    }

    /// The type with this id, decoded; `None` for 0 (`void`) and ids past the last.
    pub fn type_by_id(&self, id: u32) -> Option<BtfType> {
        self.raw(id).map(|t| self.decode(t))
    }

    /// `(kind number, name offset)` of a type without decoding it: for scans over every type.
    pub fn kind_and_name(&self, id: u32) -> Option<(u32, u32)> {
        self.raw(id).map(|t| (t.kind(), t.name_off))
    }

    /// Word `i` of a type's kind-specific data. Every type's data was bounds-checked when indexing, so the 0
    /// fallback is never used.
    fn word(&self, t: &RawType, i: usize) -> u32 {
        self.types.u32(t.data + 4 * i).unwrap_or(0)
    }

    /// The kind number of the type with this id; 0 for `void` and ids past the last.
    fn kind_of(&self, id: u32) -> u32 {
        self.raw(id).map_or(0, |t| t.kind())
    }

    /// The string at `name_off` in the string section (`""` for 0); `None` outside it or if not UTF-8.
    pub fn name(&self, name_off: u32) -> Option<&'a str> {
        let rest = self.strings.get(usize::try_from(name_off).ok()?..)?;
        // The section ends in NUL (checked by `index`), so a terminator is always found.
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(rest.get(..end)?).ok()
    }

    /// `self.name(name_off) == Some(name)`, without scanning for the end of a longer name or checking UTF-8.
    fn name_is(&self, name_off: u32, name: &str) -> bool {
        let Ok(start) = usize::try_from(name_off) else { return false };
        let end = start.saturating_add(name.len());
        !name.as_bytes().contains(&0)
            && self.strings.get(start..end) == Some(name.as_bytes())
            && self.strings.get(end) == Some(&0)
    }

    /// The fully decoded type.
    fn decode(&self, t: RawType) -> BtfType {
        let w = |i: usize| self.word(&t, i);
        let n = t.vlen();
        let size_or_type = t.size_or_type;
        let kind = match t.kind() {
            KIND_INT => {
                let v = w(0);
                BtfKind::Int {
                    size: size_or_type,
                    encoding: ((v >> 24) & 0x0f) as u8,
                    offset: ((v >> 16) & 0xff) as u8,
                    bits: (v & 0xff) as u8,
                }
            }
            KIND_PTR => BtfKind::Ptr { type_id: size_or_type },
            KIND_ARRAY => BtfKind::Array { elem_type: w(0), index_type: w(1), nelems: w(2) },
            k @ (KIND_STRUCT | KIND_UNION) => {
                let members = (0..n)
                    .map(|i| BtfMember { name_off: w(3 * i), type_id: w(3 * i + 1), offset: w(3 * i + 2) })
                    .collect();
                if k == KIND_STRUCT {
                    BtfKind::Struct { size: size_or_type, members }
                } else {
                    BtfKind::Union { size: size_or_type, members }
                }
            }
            KIND_ENUM => BtfKind::Enum {
                size: size_or_type,
                values: (0..n).map(|i| BtfEnumValue { name_off: w(2 * i), value: w(2 * i + 1) as i32 }).collect(),
            },
            KIND_FWD => BtfKind::Fwd,
            KIND_TYPEDEF => BtfKind::Typedef { type_id: size_or_type },
            KIND_VOLATILE => BtfKind::Volatile { type_id: size_or_type },
            KIND_CONST => BtfKind::Const { type_id: size_or_type },
            KIND_RESTRICT => BtfKind::Restrict { type_id: size_or_type },
            KIND_FUNC => BtfKind::Func { proto: size_or_type, linkage: t.info & 0x00ff_ffff },
            KIND_FUNC_PROTO => BtfKind::FuncProto {
                ret: size_or_type,
                params: (0..n).map(|i| BtfParam { name_off: w(2 * i), type_id: w(2 * i + 1) }).collect(),
            },
            KIND_VAR => BtfKind::Var { type_id: size_or_type, linkage: w(0) },
            KIND_DATASEC => BtfKind::Datasec {
                size: size_or_type,
                vars: (0..n)
                    .map(|i| BtfVarSecinfo { type_id: w(3 * i), offset: w(3 * i + 1), size: w(3 * i + 2) })
                    .collect(),
            },
            KIND_FLOAT => BtfKind::Float { size: size_or_type },
            KIND_DECL_TAG => BtfKind::DeclTag { type_id: size_or_type, component_idx: w(0) as i32 },
            KIND_TYPE_TAG => BtfKind::TypeTag { type_id: size_or_type },
            KIND_ENUM64 => BtfKind::Enum64 {
                size: size_or_type,
                values: (0..n)
                    .map(|i| BtfEnum64Value {
                        name_off: w(3 * i),
                        value: u64::from(w(3 * i + 2)) << 32 | u64::from(w(3 * i + 1)),
                    })
                    .collect(),
            },
            other => BtfKind::Unknown { kind: other, vlen: t.info & 0x00ff_ffff, size_or_type },
        };
        BtfType { name_off: t.name_off, kind_flag: t.info >> 31 != 0, kind }
    }

    /// libbpf's `btf_sanity_check()`: names inside the string section, referenced ids existing, FUNC -> FUNC_PROTO.
    fn validate(&self) -> Result<(), BtfError> {
        let last = self.type_count();
        let str_len = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        for type_id in 1..=last {
            let Some(t) = self.raw(type_id) else { break };
            let name = |what: &'static str, name_off: u32| {
                if name_off < str_len {
                    Ok(())
                } else {
                    Err(BtfError::BadNameOffset { type_id, what, name_off, str_len })
                }
            };
            let id = |target: u32| {
                if target <= last {
                    Ok(())
                } else {
                    Err(BtfError::BadTypeRef { type_id, target, last })
                }
            };
            let w = |i: usize| self.word(&t, i);
            name("type name", t.name_off)?;
            match t.kind() {
                KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_VAR | KIND_DECL_TAG
                | KIND_TYPE_TAG => id(t.size_or_type)?,
                KIND_ARRAY => {
                    id(w(0))?;
                    id(w(1))?;
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..t.vlen() {
                        name("member name", w(3 * i))?;
                        id(w(3 * i + 1))?;
                    }
                }
                KIND_ENUM => {
                    for i in 0..t.vlen() {
                        name("enum value name", w(2 * i))?;
                    }
                }
                KIND_ENUM64 => {
                    for i in 0..t.vlen() {
                        name("enum value name", w(3 * i))?;
                    }
                }
                KIND_FUNC => {
                    let proto = t.size_or_type;
                    id(proto)?;
                    let kind = self.kind_of(proto);
                    if kind != KIND_FUNC_PROTO {
                        return Err(BtfError::FuncNotProto { type_id, target: proto, kind });
                    }
                }
                KIND_FUNC_PROTO => {
                    id(t.size_or_type)?;
                    for i in 0..t.vlen() {
                        name("parameter name", w(2 * i))?;
                        id(w(2 * i + 1))?;
                    }
                }
                KIND_DATASEC => {
                    for i in 0..t.vlen() {
                        id(w(3 * i))?;
                    }
                }
                // INT, FWD, FLOAT and kinds known only by their layout refer to nothing.
                _ => {}
            }
        }
        Ok(())
    }

    /// Skips TYPEDEF, CONST, VOLATILE, RESTRICT and TYPE_TAG. `Some(0)` for `void`; `None` for an id past the
    /// last or a chain longer than 32 (a cycle).
    pub fn resolve(&self, id: u32) -> Option<u32> {
        let mut id = id;
        for _ in 0..MAX_RESOLVE_DEPTH {
            if id == 0 {
                return Some(0);
            }
            let t = self.raw(id)?;
            match t.kind() {
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return Some(id),
            }
        }
        None
    }

    /// Whether type `id` holds a kptr anywhere (through typedefs, modifiers, struct and union members, array
    /// elements, DATASEC variables): a pointer whose pointee is a type tag `kptr`, `kptr_untrusted` or
    /// `percpu_kptr`, the fields the kernel lets a program load and dereference (`btf_find_kptr`). Bounded
    /// like the kernel's walk: nesting past `MAX_RESOLVE_DEPTH` and more than 4,096 types visited count as
    /// holding one (the verifier would refuse such a value type or not see past it either).
    pub fn holds_kptr(&self, id: u32) -> bool {
        let mut pending = vec![(id, 0usize)];
        let mut visited = 0usize;
        while let Some((id, depth)) = pending.pop() {
            visited += 1;
            if depth > MAX_RESOLVE_DEPTH || visited > 4096 {
                return true;
            }
            let Some(t) = self.raw(id) else { continue };
            match t.kind() {
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_VAR => {
                    pending.push((t.size_or_type, depth + 1));
                }
                KIND_PTR => {
                    let tagged = self.raw(t.size_or_type).filter(|p| p.kind() == KIND_TYPE_TAG);
                    if tagged.is_some_and(|p| {
                        ["kptr", "kptr_untrusted", "percpu_kptr"].iter().any(|n| self.name_is(p.name_off, n))
                    }) {
                        return true;
                    }
                }
                KIND_ARRAY => pending.push((self.word(&t, 0), depth + 1)),
                KIND_STRUCT | KIND_UNION => {
                    pending.extend((0..t.vlen()).map(|i| (self.word(&t, 3 * i + 1), depth + 1)));
                }
                KIND_DATASEC => pending.extend((0..t.vlen()).map(|i| (self.word(&t, 3 * i), depth + 1))),
                _ => {}
            }
        }
        false
    }

    /// Size in bytes of a type, as libbpf's `btf__resolve_size()`: through modifiers, typedefs, VARs and
    /// DECL_TAGs, arrays multiplied out. `None` for `void`, FWD, FUNC, FUNC_PROTO, unknown kinds, cycles and sizes
    /// beyond `u32`.
    pub fn size_of(&self, id: u32) -> Option<u32> {
        let mut id = id;
        let mut count: u32 = 1;
        for _ in 0..MAX_RESOLVE_DEPTH {
            let t = self.raw(id)?;
            match t.kind() {
                KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_FLOAT => {
                    return count.checked_mul(t.size_or_type)
                }
                KIND_PTR => return count.checked_mul(PTR_SIZE),
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG | KIND_VAR
                | KIND_DECL_TAG => id = t.size_or_type,
                KIND_ARRAY => {
                    count = count.checked_mul(self.word(&t, 2))?;
                    id = self.word(&t, 0);
                }
                _ => return None,
            }
        }
        None
    }

    /// The first DATASEC with this name (`.data`, `.rodata`, `.maps`, `.ksyms`, ...) and its entries.
    pub fn datasec(&self, name: &str) -> Option<Vec<DatasecVar>> {
        let sec = self.datasecs.iter().filter_map(|&id| self.raw(id)).find(|t| self.name_is(t.name_off, name))?;
        Some(
            (0..sec.vlen())
                .map(|i| {
                    let var_id = self.word(&sec, 3 * i);
                    let entry = self.raw(var_id);
                    DatasecVar {
                        name: entry.and_then(|t| self.name(t.name_off)).unwrap_or_default().to_owned(),
                        var_id,
                        type_id: match entry {
                            Some(t) if t.kind() == KIND_VAR => t.size_or_type,
                            _ => var_id,
                        },
                        offset: self.word(&sec, 3 * i + 1),
                        size: self.word(&sec, 3 * i + 2),
                    }
                })
                .collect(),
        )
    }

    /// `(function, callback)` for every `exception_callback:NAME` DECL_TAG on a whole FUNC (component -1): libbpf
    /// appends the callback to the program whose entry function carries the tag, and the kernel runs it when
    /// `bpf_throw` unwinds, though no instruction refers to it.
    pub fn exception_callbacks(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for &id in self.func_tags.iter() {
            let Some(t) = self.raw(id).filter(|t| t.kind() == KIND_DECL_TAG) else { continue };
            if self.word(&t, 0) as i32 != -1 {
                continue;
            }
            let Some(cb) = self.name(t.name_off).and_then(|n| n.strip_prefix("exception_callback:")) else { continue };
            let func = self.raw(t.size_or_type).filter(|f| f.kind() == KIND_FUNC).and_then(|f| self.name(f.name_off));
            if let Some(func) = func {
                out.push((func.to_owned(), cb.to_owned()));
            }
        }
        out
    }

    /// The function-pointer members of STRUCT `struct_id` (a struct_ops type): each one's byte offset and
    /// whether its prototype returns `void`, sorted by offset. Empty for anything but a STRUCT.
    pub fn fn_ptr_members(&self, struct_id: u32) -> Vec<(u32, bool)> {
        let Some(st) = self.resolve(struct_id).and_then(|id| self.raw(id)).filter(|t| t.kind() == KIND_STRUCT) else {
            return Vec::new();
        };
        let kind_flag = st.info >> 31 != 0;
        let mut out = Vec::new();
        for i in 0..st.vlen() {
            let bits = self.word(&st, 3 * i + 2);
            let bits = if kind_flag { bits & 0x00ff_ffff } else { bits };
            let ptr =
                self.resolve(self.word(&st, 3 * i + 1)).and_then(|id| self.raw(id)).filter(|t| t.kind() == KIND_PTR);
            let proto = ptr
                .and_then(|p| self.resolve(p.size_or_type))
                .and_then(|id| self.raw(id))
                .filter(|t| t.kind() == KIND_FUNC_PROTO);
            if let (Some(proto), true) = (proto, bits % 8 == 0) {
                out.push((bits / 8, proto.size_or_type == 0));
            }
        }
        out.sort_unstable();
        out
    }

    /// The FUNCs named in `names` (sorted) whose prototype returns `void` (type 0), sorted. A GCC object's BTF
    /// declares every kernel function it names (~1,500): one byte of each name rules most of them out.
    pub fn void_funcs(&self, names: &[&str]) -> Vec<String> {
        let mut first = [false; 256];
        for n in names {
            first[usize::from(n.as_bytes().first().copied().unwrap_or(0))] = true;
        }
        let mut out = Vec::new();
        for &id in self.funcs.iter() {
            let Some(func) = self.raw(id).filter(|t| t.kind() == KIND_FUNC) else { continue };
            let byte = usize::try_from(func.name_off).ok().and_then(|o| self.strings.get(o));
            if !byte.is_some_and(|&b| first[usize::from(b)]) {
                continue;
            }
            let Some(name) = self.name(func.name_off).filter(|n| names.binary_search(n).is_ok()) else { continue };
            if let Some(proto) = self.raw(func.size_or_type).filter(|t| t.kind() == KIND_FUNC_PROTO) {
                if proto.size_or_type == 0 {
                    out.push(name.to_owned());
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Number of parameters of a FUNC's prototype, not counting a variadic `...` (type 0); `None` when `id` is
    /// not a FUNC with a FUNC_PROTO.
    pub fn func_param_count(&self, id: u32) -> Option<usize> {
        let func = self.raw(id).filter(|t| t.kind() == KIND_FUNC)?;
        let proto = self.raw(func.size_or_type).filter(|t| t.kind() == KIND_FUNC_PROTO)?;
        Some((0..proto.vlen()).filter(|&i| self.word(&proto, 2 * i + 1) != 0).count())
    }

    /// libbpf BTF-defined maps: every VAR of the `.maps` DATASEC, decoded as libbpf's `parse_btf_map_def()` does.
    /// No `.maps` DATASEC gives an empty list. Unknown fields are ignored (libbpf 1.x refuses them; that is
    /// the loader's business, not a capability); `values` is noted, not decoded.
    pub fn btf_map_defs(&self) -> Result<Vec<BtfMapDef>, BtfError> {
        let Some(vars) = self.datasec(".maps") else { return Ok(Vec::new()) };
        let mut defs = Vec::with_capacity(vars.len());
        for (index, v) in vars.into_iter().enumerate() {
            let kind = self.kind_of(v.var_id);
            if kind != KIND_VAR {
                return Err(BtfError::MapNotVar { index, type_id: v.var_id, kind });
            }
            if v.name.is_empty() {
                return Err(BtfError::MapNoName { index, type_id: v.var_id });
            }
            defs.push(self.map_def(v.name, v.type_id)?);
        }
        Ok(defs)
    }

    fn map_def(&self, map: String, type_id: u32) -> Result<BtfMapDef, BtfError> {
        let def_id = self.resolve(type_id).unwrap_or(type_id);
        let Some(def) = self.raw(def_id).filter(|t| t.kind() == KIND_STRUCT) else {
            return Err(BtfError::MapDefNotStruct { map, type_id: def_id, kind: self.kind_of(def_id) });
        };
        let mut d = BtfMapDef {
            name: String::new(),
            map_type: 0,
            key_size: 0,
            value_size: 0,
            max_entries: 0,
            flags: 0,
            pinning: 0,
            numa_node: 0,
            map_extra: 0,
            key_type_id: None,
            value_type_id: None,
            has_values: false,
        };
        let map = map.as_str();
        let conflict = |field: &'static str, first: u32, second: u32| {
            if first != 0 && first != second {
                Err(BtfError::MapSizeConflict { map: map.to_owned(), field, first, second })
            } else {
                Ok(())
            }
        };
        for i in 0..def.vlen() {
            let Some(field) = self.name(self.word(&def, 3 * i)) else { continue };
            let type_id = self.word(&def, 3 * i + 1);
            match field {
                "type" => d.map_type = self.map_field_int(map, field, type_id)?,
                "max_entries" => d.max_entries = self.map_field_int(map, field, type_id)?,
                "map_flags" => d.flags = self.map_field_int(map, field, type_id)?,
                "numa_node" => d.numa_node = self.map_field_int(map, field, type_id)?,
                "pinning" => d.pinning = self.map_field_int(map, field, type_id)?,
                "map_extra" => d.map_extra = self.map_field_long(map, field, type_id)?,
                "key_size" => {
                    let sz = self.map_field_int(map, field, type_id)?;
                    conflict("key", d.key_size, sz)?;
                    d.key_size = sz;
                }
                "value_size" => {
                    let sz = self.map_field_int(map, field, type_id)?;
                    conflict("value", d.value_size, sz)?;
                    d.value_size = sz;
                }
                "key" => {
                    let (pointee, sz) = self.map_field_pointee(map, field, type_id)?;
                    conflict("key", d.key_size, sz)?;
                    d.key_size = sz;
                    d.key_type_id = Some(pointee);
                }
                "value" => {
                    let (pointee, sz) = self.map_field_pointee(map, field, type_id)?;
                    conflict("value", d.value_size, sz)?;
                    d.value_size = sz;
                    d.value_type_id = Some(pointee);
                }
                "values" => {
                    // Inner map or prog array slots: the kernel sees 4-byte fd/id values.
                    conflict("value", d.value_size, 4)?;
                    d.value_size = 4;
                    d.has_values = true;
                }
                _ => {}
            }
        }
        if d.map_type == 0 {
            return Err(BtfError::MapTypeMissing { map: map.to_owned() });
        }
        d.name = map.to_owned();
        Ok(d)
    }

    /// `__uint(field, N)`: a pointer (through modifiers) to an array of N elements.
    fn map_field_int(&self, map: &str, field: &str, type_id: u32) -> Result<u32, BtfError> {
        let pointee = self.map_field_ptr(map, field, type_id)?;
        match self.raw(pointee).filter(|t| t.kind() == KIND_ARRAY) {
            Some(array) => Ok(self.word(&array, 2)),
            None => Err(BtfError::MapFieldNotArray {
                map: map.to_owned(),
                field: field.to_owned(),
                type_id: pointee,
                kind: self.kind_of(pointee),
            }),
        }
    }

    /// `__ulong(field, N)`: as `__uint`, or an enum with a single value N (for values beyond 32 bits).
    fn map_field_long(&self, map: &str, field: &str, type_id: u32) -> Result<u64, BtfError> {
        let resolved = self.resolve(type_id);
        let (count, first) = match resolved.and_then(|id| self.raw(id)) {
            Some(t) if t.kind() == KIND_ENUM => (t.vlen(), i64::from(self.word(&t, 1) as i32) as u64),
            Some(t) if t.kind() == KIND_ENUM64 => {
                (t.vlen(), u64::from(self.word(&t, 2)) << 32 | u64::from(self.word(&t, 1)))
            }
            _ => return self.map_field_int(map, field, type_id).map(u64::from),
        };
        if count == 1 {
            return Ok(first);
        }
        Err(BtfError::MapFieldBadEnum {
            map: map.to_owned(),
            field: field.to_owned(),
            type_id: resolved.unwrap_or(type_id),
            kind: self.kind_of(resolved.unwrap_or(type_id)),
            count,
        })
    }

    /// The pointee of the pointer a field is declared as, through modifiers and typedefs.
    fn map_field_ptr(&self, map: &str, field: &str, type_id: u32) -> Result<u32, BtfError> {
        let Some(ptr_id) = self.resolve(type_id) else {
            return Err(BtfError::MapFieldUnresolvable { map: map.to_owned(), field: field.to_owned(), type_id });
        };
        match self.raw(ptr_id).filter(|t| t.kind() == KIND_PTR) {
            Some(ptr) => Ok(ptr.size_or_type),
            None => Err(BtfError::MapFieldNotPtr {
                map: map.to_owned(),
                field: field.to_owned(),
                type_id: ptr_id,
                kind: self.kind_of(ptr_id),
            }),
        }
    }

    /// `__type(field, T)`: the field is a pointer to T (libbpf takes no modifiers here); returns (T, sizeof(T)).
    fn map_field_pointee(&self, map: &str, field: &str, type_id: u32) -> Result<(u32, u32), BtfError> {
        match self.raw(type_id).filter(|t| t.kind() == KIND_PTR) {
            Some(ptr) => match self.size_of(ptr.size_or_type) {
                Some(sz) => Ok((ptr.size_or_type, sz)),
                None => Err(BtfError::MapFieldSizeUnknown {
                    map: map.to_owned(),
                    field: field.to_owned(),
                    type_id: ptr.size_or_type,
                }),
            },
            None => Err(BtfError::MapFieldNotPtr {
                map: map.to_owned(),
                field: field.to_owned(),
                type_id,
                kind: self.kind_of(type_id),
            }),
        }
    }
}

/// A whole BTF blob kept for lookups, such as a kernel's `/sys/kernel/btf/vmlinux`: checked as [`index`] checks,
/// its byte order taken from the magic, each type decoded when it is read. A split BTF (a module's, which
/// continues the numbering of vmlinux) is not supported: its references to base types fail the checks.
#[derive(Debug, Clone)]
pub struct RawBtf {
    strings: Vec<u8>,
    type_data: Vec<u8>,
    offsets: Vec<u32>,
    datasecs: Vec<u32>,
    funcs: Vec<u32>,
    func_tags: Vec<u32>,
    little_endian: bool,
}

impl RawBtf {
    /// Checks and keeps a raw BTF blob (not an ELF file: the bytes of a `.BTF` section or of
    /// `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<RawBtf, BtfError> {
        // The magic reads 0xeb9f in the blob's own byte order.
        let little_endian = data.first_chunk::<2>() != Some(&BTF_MAGIC.to_be_bytes());
        let i = index(data, little_endian)?;
        Ok(RawBtf {
            strings: i.strings.to_vec(),
            type_data: i.types.data.to_vec(),
            offsets: i.offsets.into_owned(),
            datasecs: i.datasecs.into_owned(),
            funcs: i.funcs.into_owned(),
            func_tags: i.func_tags.into_owned(),
            little_endian,
        })
    }

    /// The types, read as they are looked up.
    pub fn index(&self) -> BtfIndex<'_> {
        BtfIndex {
            types: Reader { data: &self.type_data, le: self.little_endian },
            strings: &self.strings,
            offsets: Cow::Borrowed(&self.offsets),
            datasecs: Cow::Borrowed(&self.datasecs),
            funcs: Cow::Borrowed(&self.funcs),
            func_tags: Cow::Borrowed(&self.func_tags),
        }
    }
}

impl Btf {
    /// The same types, read from the section rather than the decoded list (the lookups below use it).
    pub fn index(&self) -> BtfIndex<'_> {
        BtfIndex {
            types: Reader { data: &self.type_data, le: self.little_endian },
            strings: &self.strings,
            offsets: Cow::Borrowed(&self.offsets),
            datasecs: Cow::Borrowed(&self.datasecs),
            funcs: Cow::Borrowed(&self.funcs),
            func_tags: Cow::Borrowed(&self.func_tags),
        }
    }

    /// Number of types, not counting `void`: the last valid type id.
    pub fn type_count(&self) -> u32 {
        u32::try_from(self.types.len()).unwrap_or(u32::MAX)
    }

    /// All types with their ids, in id order.
    pub fn types(&self) -> impl Iterator<Item = (u32, &BtfType)> {
        (1..=u32::MAX).zip(self.types.iter())
    }

    /// The type with this id; `None` for 0 (`void`) and ids past the last.
    pub fn type_by_id(&self, id: u32) -> Option<&BtfType> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.types.get(index)
    }

    /// The string at `name_off` in the string section (`""` for 0); `None` outside it or if not UTF-8.
    pub fn name(&self, name_off: u32) -> Option<&str> {
        self.index().name(name_off)
    }

    /// The name of the type with this id.
    pub fn type_name(&self, id: u32) -> Option<&str> {
        self.name(self.type_by_id(id)?.name_off)
    }

    /// See [`BtfIndex::resolve`].
    pub fn resolve(&self, id: u32) -> Option<u32> {
        self.index().resolve(id)
    }

    /// See [`BtfIndex::holds_kptr`].
    pub fn holds_kptr(&self, id: u32) -> bool {
        self.index().holds_kptr(id)
    }

    /// See [`BtfIndex::size_of`].
    pub fn size_of(&self, id: u32) -> Option<u32> {
        self.index().size_of(id)
    }

    /// See [`BtfIndex::datasec`].
    pub fn datasec(&self, name: &str) -> Option<Vec<DatasecVar>> {
        self.index().datasec(name)
    }

    /// See [`BtfIndex::btf_map_defs`].
    pub fn btf_map_defs(&self) -> Result<Vec<BtfMapDef>, BtfError> {
        self.index().btf_map_defs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    const CORPUS: &str = "/work/shared/corpus/cilium-ebpf";

    /// Writes BTF in either byte order: for hand-made inputs and to re-encode parsed ones.
    struct Builder {
        le: bool,
        types: Vec<u8>,
        strs: Vec<u8>,
        count: u32,
    }

    impl Builder {
        fn new(le: bool) -> Self {
            Builder { le, types: Vec::new(), strs: vec![0], count: 0 }
        }

        fn word(&self, v: u32) -> [u8; 4] {
            if self.le {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        }

        fn w(&mut self, v: u32) {
            let b = self.word(v);
            self.types.extend_from_slice(&b);
        }

        fn s(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(s.as_bytes());
            self.strs.push(0);
            off
        }

        fn ty_off(&mut self, name_off: u32, kind: u32, vlen: u32, kflag: bool, sot: u32, extra: &[u32]) -> u32 {
            self.w(name_off);
            self.w(u32::from(kflag) << 31 | kind << 24 | vlen);
            self.w(sot);
            for &e in extra {
                self.w(e);
            }
            self.count += 1;
            self.count
        }

        fn ty(&mut self, name: &str, kind: u32, vlen: u32, sot: u32, extra: &[u32]) -> u32 {
            let n = self.s(name);
            self.ty_off(n, kind, vlen, false, sot, extra)
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.ty(name, KIND_INT, 0, size, &[size * 8])
        }

        /// `__uint(x, n)`: PTR to ARRAY[n] of int.
        fn uint(&mut self, int: u32, n: u32) -> u32 {
            let arr = self.ty("", KIND_ARRAY, 0, 0, &[int, int, n]);
            self.ty("", KIND_PTR, 0, arr, &[])
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32)]) -> u32 {
            let mut extra = Vec::new();
            for (i, (m, t)) in members.iter().enumerate() {
                extra.extend([self.s(m), *t, i as u32 * 64]);
            }
            self.ty(name, KIND_STRUCT, members.len() as u32, size, &extra)
        }

        /// A `.maps` DATASEC holding one VAR per (name, def type).
        fn maps(&mut self, maps: &[(&str, u32)]) -> u32 {
            let mut extra = Vec::new();
            for (name, def) in maps {
                let var = self.ty(name, KIND_VAR, 0, *def, &[1]);
                extra.extend([var, 0, 0]);
            }
            self.ty(".maps", KIND_DATASEC, maps.len() as u32, 0, &extra)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let magic = if self.le { BTF_MAGIC.to_le_bytes() } else { BTF_MAGIC.to_be_bytes() };
            out.extend_from_slice(&magic);
            out.extend_from_slice(&[BTF_VERSION, 0]);
            let tl = self.types.len() as u32;
            for v in [HEADER_LEN, 0, tl, tl, self.strs.len() as u32] {
                out.extend_from_slice(&self.word(v));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strs);
            out
        }
    }

    /// Re-encodes parsed BTF in the given byte order.
    fn encode(btf: &Btf, le: bool) -> Vec<u8> {
        let mut b = Builder::new(le);
        b.strs = btf.strings.clone();
        for (_, t) in btf.types() {
            let (n, f) = (t.name_off, t.kind_flag);
            match &t.kind {
                BtfKind::Int { size, encoding, offset, bits } => {
                    let v = u32::from(*encoding) << 24 | u32::from(*offset) << 16 | u32::from(*bits);
                    b.ty_off(n, KIND_INT, 0, f, *size, &[v])
                }
                BtfKind::Ptr { type_id } => b.ty_off(n, KIND_PTR, 0, f, *type_id, &[]),
                BtfKind::Array { elem_type, index_type, nelems } => {
                    b.ty_off(n, KIND_ARRAY, 0, f, 0, &[*elem_type, *index_type, *nelems])
                }
                BtfKind::Struct { size, members } | BtfKind::Union { size, members } => {
                    let extra: Vec<u32> = members.iter().flat_map(|m| [m.name_off, m.type_id, m.offset]).collect();
                    b.ty_off(n, t.kind.number(), members.len() as u32, f, *size, &extra)
                }
                BtfKind::Enum { size, values } => {
                    let extra: Vec<u32> = values.iter().flat_map(|v| [v.name_off, v.value as u32]).collect();
                    b.ty_off(n, KIND_ENUM, values.len() as u32, f, *size, &extra)
                }
                BtfKind::Fwd => b.ty_off(n, KIND_FWD, 0, f, 0, &[]),
                BtfKind::Typedef { type_id }
                | BtfKind::Volatile { type_id }
                | BtfKind::Const { type_id }
                | BtfKind::Restrict { type_id }
                | BtfKind::TypeTag { type_id } => b.ty_off(n, t.kind.number(), 0, f, *type_id, &[]),
                BtfKind::Func { proto, linkage } => b.ty_off(n, KIND_FUNC, *linkage, f, *proto, &[]),
                BtfKind::FuncProto { ret, params } => {
                    let extra: Vec<u32> = params.iter().flat_map(|p| [p.name_off, p.type_id]).collect();
                    b.ty_off(n, KIND_FUNC_PROTO, params.len() as u32, f, *ret, &extra)
                }
                BtfKind::Var { type_id, linkage } => b.ty_off(n, KIND_VAR, 0, f, *type_id, &[*linkage]),
                BtfKind::Datasec { size, vars } => {
                    let extra: Vec<u32> = vars.iter().flat_map(|v| [v.type_id, v.offset, v.size]).collect();
                    b.ty_off(n, KIND_DATASEC, vars.len() as u32, f, *size, &extra)
                }
                BtfKind::Float { size } => b.ty_off(n, KIND_FLOAT, 0, f, *size, &[]),
                BtfKind::DeclTag { type_id, component_idx } => {
                    b.ty_off(n, KIND_DECL_TAG, 0, f, *type_id, &[*component_idx as u32])
                }
                BtfKind::Enum64 { size, values } => {
                    let extra: Vec<u32> =
                        values.iter().flat_map(|v| [v.name_off, v.value as u32, (v.value >> 32) as u32]).collect();
                    b.ty_off(n, KIND_ENUM64, values.len() as u32, f, *size, &extra)
                }
                BtfKind::Unknown { .. } => panic!("cannot re-encode unknown kinds"),
            };
        }
        b.build()
    }

    fn put(data: &mut [u8], off: usize, v: u32, le: bool) {
        let b = if le { v.to_le_bytes() } else { v.to_be_bytes() };
        data[off..off + 4].copy_from_slice(&b);
    }

    /// A raw section: header with the given fields, then `body`.
    fn raw(le: bool, hdr: &[u32], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let magic = if le { BTF_MAGIC.to_le_bytes() } else { BTF_MAGIC.to_be_bytes() };
        out.extend_from_slice(&magic);
        out.extend_from_slice(&[BTF_VERSION, 0]);
        for &v in hdr {
            out.extend_from_slice(&if le { v.to_le_bytes() } else { v.to_be_bytes() });
        }
        out.extend_from_slice(body);
        out
    }

    fn corpus_files() -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "o" || x == "elf") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(Path::new(CORPUS), &mut out);
        out.sort();
        out
    }

    /// The `.BTF` section of an object and its byte order, if it has one.
    fn btf_section(path: &Path) -> Option<(Vec<u8>, bool)> {
        use object::{Object, ObjectSection};
        let bytes = std::fs::read(path).ok()?;
        let file = object::File::parse(&*bytes).ok()?;
        let data = file.section_by_name(".BTF")?.data().ok()?.to_vec();
        Some((data, file.is_little_endian()))
    }

    fn corpus_btf(rel: &str) -> Option<Btf> {
        let Some((data, le)) = btf_section(&Path::new(CORPUS).join(rel)) else {
            eprintln!("skipping: {rel} not in the corpus");
            return None;
        };
        Some(parse(&data, le).expect(rel))
    }

    #[test]
    fn corpus_parses_and_round_trips_in_both_byte_orders() {
        let files = corpus_files();
        let mut parsed = 0;
        for path in &files {
            let Some((data, le)) = btf_section(path) else { continue };
            let btf = parse(&data, le).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(parse(&data, !le), Err(BtfError::WrongEndianness { little_endian: !le }));
            for out_le in [true, false] {
                let again = parse(&encode(&btf, out_le), out_le).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(again, btf, "{}", path.display());
            }
            parsed += 1;
        }
        eprintln!("parsed {parsed} .BTF sections of {} corpus files", files.len());
    }

    /// Every type of every corpus object, compared with what bpftool (libbpf) reads.
    #[test]
    fn corpus_matches_bpftool() {
        let mut compared = 0;
        for path in corpus_files() {
            let Some((data, le)) = btf_section(&path) else { continue };
            let out =
                match std::process::Command::new("bpftool").args(["-j", "btf", "dump", "file"]).arg(&path).output() {
                    Ok(o) if o.status.success() => o.stdout,
                    Ok(_) => panic!("bpftool failed on {}", path.display()),
                    Err(_) => return eprintln!("skipping: bpftool not available"),
                };
            let json: serde_json::Value = serde_json::from_slice(&out).expect("bpftool json");
            let want = json["types"].as_array().expect("types");
            let btf = parse(&data, le).expect("parse");
            assert_eq!(btf.type_count() as usize, want.len(), "{}", path.display());
            for w in want {
                let id = w["id"].as_u64().expect("id") as u32;
                let t = btf.type_by_id(id).expect("type");
                let ctx = format!("{} type {id}", path.display());
                assert_eq!(w["kind"], kind_name(t.kind.number()), "{ctx}");
                let name = btf.name(t.name_off).expect("name");
                assert_eq!(w["name"], if name.is_empty() { "(anon)" } else { name }, "{ctx}");
                let (size, type_id, vlen): (Option<u32>, Option<u32>, Option<usize>) = match &t.kind {
                    BtfKind::Int { size, .. } | BtfKind::Float { size } => (Some(*size), None, None),
                    BtfKind::Struct { size, members } | BtfKind::Union { size, members } => {
                        for (m, wm) in members.iter().zip(w["members"].as_array().expect("members")) {
                            assert_eq!(wm["type_id"], m.type_id, "{ctx}");
                            let mname = btf.name(m.name_off).expect("member name");
                            assert_eq!(wm["name"], if mname.is_empty() { "(anon)" } else { mname }, "{ctx}");
                            assert_eq!(wm["bits_offset"], m.bit_offset(t.kind_flag), "{ctx}");
                        }
                        (Some(*size), None, Some(members.len()))
                    }
                    BtfKind::Enum { size, values } => (Some(*size), None, Some(values.len())),
                    BtfKind::Enum64 { size, values } => (Some(*size), None, Some(values.len())),
                    BtfKind::Datasec { size, vars } => {
                        for (v, wv) in vars.iter().zip(w["vars"].as_array().expect("vars")) {
                            assert_eq!(wv["type_id"], v.type_id, "{ctx}");
                            assert_eq!(wv["offset"], v.offset, "{ctx}");
                            assert_eq!(wv["size"], v.size, "{ctx}");
                        }
                        (Some(*size), None, Some(vars.len()))
                    }
                    BtfKind::Array { elem_type, index_type, nelems } => {
                        assert_eq!(w["index_type_id"], *index_type, "{ctx}");
                        assert_eq!(w["nr_elems"], *nelems, "{ctx}");
                        (None, Some(*elem_type), None)
                    }
                    BtfKind::FuncProto { ret, params } => {
                        assert_eq!(w["ret_type_id"], *ret, "{ctx}");
                        (None, None, Some(params.len()))
                    }
                    BtfKind::Func { proto, .. } => (None, Some(*proto), None),
                    BtfKind::DeclTag { type_id, component_idx } => {
                        assert_eq!(w["component_idx"], *component_idx, "{ctx}");
                        (None, Some(*type_id), None)
                    }
                    BtfKind::Ptr { type_id }
                    | BtfKind::Typedef { type_id }
                    | BtfKind::Volatile { type_id }
                    | BtfKind::Const { type_id }
                    | BtfKind::Restrict { type_id }
                    | BtfKind::TypeTag { type_id }
                    | BtfKind::Var { type_id, .. } => (None, Some(*type_id), None),
                    BtfKind::Fwd | BtfKind::Unknown { .. } => (None, None, None),
                };
                if let Some(size) = size {
                    assert_eq!(w["size"], size, "{ctx}");
                }
                if let Some(type_id) = type_id {
                    assert_eq!(w["type_id"], type_id, "{ctx}");
                }
                if let Some(vlen) = vlen {
                    assert_eq!(w["vlen"], vlen, "{ctx}");
                }
            }
            compared += 1;
        }
        assert!(compared > 0 || !Path::new(CORPUS).exists());
    }

    fn map(btf: &Btf, name: &str) -> BtfMapDef {
        let defs = btf.btf_map_defs().expect("map defs");
        defs.into_iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no map {name}"))
    }

    /// Expected values from `bpftool btf dump file` of each object.
    #[test]
    fn corpus_map_defs() {
        if let Some(btf) = corpus_btf("examples/ringbuffer/bpf_bpfel.o") {
            // [16] STRUCT: type -> ARRAY nr_elems=27, max_entries -> 16777216, value -> struct event (size 20).
            let d = map(&btf, "events");
            assert_eq!((d.map_type, d.key_size, d.value_size, d.max_entries), (27, 0, 20, 1 << 24));
            assert_eq!((d.flags, d.pinning, d.has_values, d.key_type_id), (0, 0, false, None));
            assert_eq!(btf.type_name(d.value_type_id.expect("value type")), Some("event"));
            assert_eq!(btf.btf_map_defs().map(|v| v.len()), Ok(1));
        }
        if let Some(btf) = corpus_btf("examples/kprobe/bpf_bpfel.o") {
            // [15] STRUCT: type=2 (array), key u32, value u64, max_entries=1.
            let d = map(&btf, "kprobe_map");
            assert_eq!((d.map_type, d.key_size, d.value_size, d.max_entries), (2, 4, 8, 1));
            assert_eq!(btf.type_name(d.key_type_id.expect("key type")), Some("u32"));
        }
        if let Some(btf) = corpus_btf("testdata/loader-el.elf") {
            // hash_map: type=1, key uint32_t, value uint64_t, max_entries=1, map_flags=BPF_F_NO_PREALLOC.
            let d = map(&btf, "hash_map");
            assert_eq!((d.map_type, d.key_size, d.value_size, d.max_entries), (1, 4, 8, 1));
            // [40] perf_event_array: type=4, max_entries=4096, value struct perf_event (size 16), no key.
            let d = map(&btf, "perf_event_array");
            assert_eq!((d.map_type, d.key_size, d.value_size, d.max_entries), (4, 0, 16, 4096));
            // [29] btf_outer_map: ARRAY_OF_MAPS with key_size 4, max_entries 1, inner definition in `values`.
            let d = map(&btf, "btf_outer_map");
            assert_eq!((d.map_type, d.key_size, d.value_size, d.max_entries, d.has_values), (12, 4, 4, 1, true));
        }
        // Every corpus object with .maps decodes, but the ones built to be rejected.
        for path in corpus_files() {
            let Some((data, le)) = btf_section(&path) else { continue };
            let btf = parse(&data, le).expect("parse");
            let res = btf.btf_map_defs();
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            if !file.starts_with("invalid") {
                res.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }

    #[test]
    fn corpus_datasec_and_sizes() {
        let Some(btf) = corpus_btf("examples/ringbuffer/bpf_bpfel.o") else { return };
        let maps = btf.datasec(".maps").expect(".maps");
        assert_eq!(maps, vec![DatasecVar { name: "events".into(), var_id: 17, type_id: 16, offset: 0, size: 24 }]);
        let lic = btf.datasec("license").expect("license");
        assert_eq!((lic[0].name.as_str(), lic[0].size), ("__license", 13));
        assert_eq!(btf.size_of(lic[0].type_id), Some(13));
        assert_eq!(btf.datasec(".data"), None);
        // [9] u32 -> [10] __u32 -> [11] unsigned int
        assert_eq!(btf.resolve(9), Some(11));
        assert_eq!(btf.size_of(9), Some(4));
        assert_eq!(btf.size_of(8), Some(20)); // struct event
        assert_eq!(btf.size_of(7), Some(8)); // pointer
        assert_eq!(btf.size_of(15), Some(16)); // u8[16]
        assert_eq!(btf.size_of(19), None); // FWD pt_regs
        assert_eq!(btf.size_of(21), None); // FUNC
        assert_eq!(btf.size_of(0), None);
        assert_eq!(btf.resolve(0), Some(0));
        assert_eq!(btf.resolve(1000), None);
        assert_eq!(btf.type_by_id(0), None);
        assert_eq!(btf.type_by_id(27), None);
        assert_eq!(btf.type_name(21), Some("kprobe_execve"));
        assert_eq!(btf.name(0), Some(""));
        assert_eq!(btf.name(u32::MAX), None);
    }

    /// Every kind, hand-made, in both byte orders.
    #[test]
    fn all_kinds_both_byte_orders() {
        for le in [true, false] {
            let mut b = Builder::new(le);
            let int = b.ty("int", KIND_INT, 0, 4, &[1 << 24 | 32]); // 1
            let ptr = b.ty("", KIND_PTR, 0, int, &[]); // 2
            let arr = b.ty("", KIND_ARRAY, 0, 0, &[int, int, 3]); // 3
            let (x, y) = (b.s("x"), b.s("y"));
            let st = b.ty("s", KIND_STRUCT, 2, 8, &[x, int, 0, y, int, 32]); // 4
            let un = b.ty("u", KIND_UNION, 1, 4, &[x, int, 0]); // 5
            let (a, c) = (b.s("A"), b.s("B"));
            let en = b.ty("e", KIND_ENUM, 2, 4, &[a, (-1i32) as u32, c, 7]); // 6
            let fwd = b.ty("f", KIND_FWD, 0, 0, &[]); // 7
            let td = b.ty("td", KIND_TYPEDEF, 0, int, &[]); // 8
            let vol = b.ty("", KIND_VOLATILE, 0, td, &[]); // 9
            let cst = b.ty("", KIND_CONST, 0, vol, &[]); // 10
            let res = b.ty("", KIND_RESTRICT, 0, ptr, &[]); // 11
            let proto = b.ty("", KIND_FUNC_PROTO, 1, int, &[x, cst]); // 12
            let func = b.ty("fn", KIND_FUNC, 1, proto, &[]); // 13
            let var = b.ty("v", KIND_VAR, 0, arr, &[1]); // 14
            let ds = b.ty(".data", KIND_DATASEC, 1, 12, &[var, 0, 12]); // 15
            let fl = b.ty("double", KIND_FLOAT, 0, 8, &[]); // 16
            let tag = b.ty("tag", KIND_DECL_TAG, 0, func, &[(-1i32) as u32]); // 17
            let tt = b.ty("user", KIND_TYPE_TAG, 0, cst, &[]); // 18
            let e64 = b.ty("e64", KIND_ENUM64, 1, 8, &[a, 0x89ab_cdef, 0x0123_4567]); // 19
            let data = b.build();
            let btf = parse(&data, le).expect("parse");
            assert_eq!(btf.type_count(), 19);
            assert_eq!(
                btf.type_by_id(int).map(|t| &t.kind),
                Some(&BtfKind::Int { size: 4, encoding: 1, offset: 0, bits: 32 })
            );
            assert_eq!(
                btf.type_by_id(arr).map(|t| &t.kind),
                Some(&BtfKind::Array { elem_type: 1, index_type: 1, nelems: 3 })
            );
            let Some(BtfKind::Struct { size: 8, members }) = btf.type_by_id(st).map(|t| &t.kind) else {
                panic!("struct")
            };
            assert_eq!((btf.name(members[1].name_off), members[1].offset), (Some("y"), 32));
            assert!(matches!(btf.type_by_id(un).map(|t| &t.kind), Some(BtfKind::Union { size: 4, .. })));
            let Some(BtfKind::Enum { values, .. }) = btf.type_by_id(en).map(|t| &t.kind) else { panic!("enum") };
            assert_eq!(values[0].value, -1);
            assert_eq!(btf.type_by_id(fwd).map(|t| &t.kind), Some(&BtfKind::Fwd));
            assert_eq!(btf.type_by_id(func).map(|t| &t.kind), Some(&BtfKind::Func { proto, linkage: 1 }));
            assert!(
                matches!(btf.type_by_id(proto).map(|t| &t.kind), Some(BtfKind::FuncProto { ret: 1, params }) if params.len() == 1)
            );
            assert_eq!(btf.type_by_id(var).map(|t| &t.kind), Some(&BtfKind::Var { type_id: arr, linkage: 1 }));
            assert_eq!(btf.type_by_id(fl).map(|t| &t.kind), Some(&BtfKind::Float { size: 8 }));
            assert_eq!(
                btf.type_by_id(tag).map(|t| &t.kind),
                Some(&BtfKind::DeclTag { type_id: func, component_idx: -1 })
            );
            let Some(BtfKind::Enum64 { values, .. }) = btf.type_by_id(e64).map(|t| &t.kind) else { panic!("enum64") };
            assert_eq!(values[0].value, 0x0123_4567_89ab_cdef);
            assert_eq!(btf.resolve(tt), Some(int));
            assert_eq!(btf.resolve(res), Some(ptr));
            assert_eq!(btf.size_of(tt), Some(4));
            assert_eq!(btf.size_of(var), Some(12));
            assert_eq!(btf.size_of(ds), Some(12));
            assert_eq!(btf.size_of(en), Some(4));
            assert_eq!(btf.size_of(e64), Some(8));
            assert_eq!(btf.size_of(fl), Some(8));
            assert_eq!(btf.size_of(un), Some(4));
            assert_eq!(btf.size_of(tag), None); // DECL_TAG on a FUNC
            assert_eq!(btf.size_of(proto), None);
            assert_eq!(btf.datasec(".data").expect("datasec")[0].name, "v");
            assert_eq!(parse(&encode(&btf, !le), !le), Ok(btf));
        }
    }

    #[test]
    fn resolve_and_size_of_are_bounded() {
        let mut b = Builder::new(true);
        let int = b.int("int", 4);
        b.ty("a", KIND_TYPEDEF, 0, 2, &[]); // 2 -> 2: a cycle
        let big = b.ty("", KIND_ARRAY, 0, 0, &[int, int, u32::MAX]); // 3: 4 * u32::MAX overflows
        let mut prev = int;
        for _ in 0..40 {
            prev = b.ty("", KIND_CONST, 0, prev, &[]);
        }
        let btf = parse(&b.build(), true).expect("parse");
        assert_eq!(btf.resolve(2), None);
        assert_eq!(btf.size_of(2), None);
        assert_eq!(btf.size_of(big), None);
        assert_eq!(btf.resolve(prev), None); // 40 modifiers: deeper than libbpf goes
    }

    fn map_btf(f: impl FnOnce(&mut Builder, u32) -> Vec<(&'static str, u32)>) -> Btf {
        let mut b = Builder::new(true);
        let int = b.int("int", 4);
        let maps = f(&mut b, int);
        b.maps(&maps);
        parse(&b.build(), true).expect("parse")
    }

    /// A kptr is a pointer to a `kptr`, `kptr_untrusted` or `percpu_kptr` type tag, found through members,
    /// arrays, typedefs, volatile and DATASEC variables; a plain pointer and a `uptr` (user memory) are not.
    #[test]
    fn kptr_fields_are_found_where_the_kernel_looks() {
        let mut b = Builder::new(true);
        let int = b.int("int", 4);
        let task = b.strukt("task_struct", 4, &[("pid", int)]);
        let tagged = |b: &mut Builder, tag: &str| {
            let t = b.ty(tag, KIND_TYPE_TAG, 0, task, &[]);
            b.ty("", KIND_PTR, 0, t, &[])
        };
        let (kptr, untrusted, percpu, uptr) = (
            tagged(&mut b, "kptr"),
            tagged(&mut b, "kptr_untrusted"),
            tagged(&mut b, "percpu_kptr"),
            tagged(&mut b, "uptr"),
        );
        let plain = b.ty("", KIND_PTR, 0, task, &[]);
        let none = b.strukt("none", 16, &[("p", plain), ("u", uptr)]);
        let direct = b.strukt("direct", 8, &[("t", kptr)]);
        let volatile = b.ty("", KIND_VOLATILE, 0, untrusted, &[]);
        let inner = b.strukt("inner", 8, &[("t", volatile)]);
        let array = b.ty("", KIND_ARRAY, 0, 0, &[inner, int, 2]);
        let outer = b.strukt("outer", 24, &[("n", int), ("a", array)]);
        let named = b.ty("outer_t", KIND_TYPEDEF, 0, outer, &[]);
        let percpu_member = b.strukt("per", 8, &[("p", percpu)]);
        let var = b.ty("global", KIND_VAR, 0, percpu_member, &[1]);
        let data = b.ty(".bss", KIND_DATASEC, 1, 0, &[var, 0, 8]);
        let btf = parse(&b.build(), true).expect("parse");
        for (id, want) in [(none, false), (plain, false), (int, false), (direct, true), (named, true), (data, true)] {
            assert_eq!(btf.holds_kptr(id), want, "type {id}");
        }
    }

    #[test]
    fn map_defs_all_fields() {
        let btf = map_btf(|b, int| {
            let u64t = b.int("u64", 8);
            let (t, me, fl, numa, pin) =
                (b.uint(int, 1), b.uint(int, 10), b.uint(int, 1), b.uint(int, 2), b.uint(int, 1));
            let key = b.ty("", KIND_PTR, 0, int, &[]);
            let val = b.ty("", KIND_PTR, 0, u64t, &[]);
            let (e1, extra_name) = (b.s("X"), "");
            let en = b.ty(extra_name, KIND_ENUM64, 1, 8, &[e1, 5, 1]);
            let def = b.strukt(
                "",
                64,
                &[
                    ("type", t),
                    ("max_entries", me),
                    ("map_flags", fl),
                    ("numa_node", numa),
                    ("pinning", pin),
                    ("key", key),
                    ("value", val),
                    ("map_extra", en),
                    ("unknown_field", int),
                ],
            );
            let td = b.ty("def_t", KIND_TYPEDEF, 0, def, &[]);
            let in_type = b.uint(int, 13);
            let in_ks = b.uint(int, 4);
            let inner = b.strukt("", 16, &[("type", in_type), ("key_size", in_ks)]);
            let pinner = b.ty("", KIND_PTR, 0, inner, &[]);
            let values = b.ty("", KIND_ARRAY, 0, 0, &[pinner, int, 0]);
            let (aom_t, aom_ks) = (b.uint(int, 12), b.uint(int, 4));
            let aom = b.strukt("", 24, &[("type", aom_t), ("key_size", aom_ks), ("values", values)]);
            let (e2, extra32) = (b.s("Y"), b.ty("", KIND_ENUM, 1, 4, &[0, 0]));
            let _ = (e2, extra32);
            vec![("m", td), ("aom", aom)]
        });
        let m = map(&btf, "m");
        assert_eq!(
            m,
            BtfMapDef {
                name: "m".into(),
                map_type: 1,
                key_size: 4,
                value_size: 8,
                max_entries: 10,
                flags: 1,
                pinning: 1,
                numa_node: 2,
                map_extra: 5 | 1 << 32,
                key_type_id: Some(1),
                value_type_id: Some(2),
                has_values: false,
            }
        );
        let aom = map(&btf, "aom");
        assert_eq!((aom.map_type, aom.key_size, aom.value_size, aom.has_values), (12, 4, 4, true));
    }

    #[test]
    fn map_extra_forms() {
        // __ulong as __uint, and as a one-value 32-bit enum (sign-extended, as libbpf assigns `__s32` to `__u64`).
        let btf = map_btf(|b, int| {
            let t = b.uint(int, 2);
            let x = b.uint(int, 7);
            let a = b.strukt("", 16, &[("type", t), ("map_extra", x)]);
            let n = b.s("N");
            let en = b.ty("", KIND_ENUM, 1, 4, &[n, (-2i32) as u32]);
            let c = b.ty("", KIND_CONST, 0, en, &[]);
            let e = b.strukt("", 16, &[("type", t), ("map_extra", c)]);
            vec![("a", a), ("e", e)]
        });
        assert_eq!(map(&btf, "a").map_extra, 7);
        assert_eq!(map(&btf, "e").map_extra, (-2i64) as u64);
    }

    #[test]
    fn no_maps_section_is_empty() {
        let mut b = Builder::new(true);
        b.int("int", 4);
        assert_eq!(parse(&b.build(), true).expect("parse").btf_map_defs(), Ok(vec![]));
    }

    fn map_err(f: impl FnOnce(&mut Builder, u32) -> Vec<(&'static str, u32)>) -> BtfError {
        map_btf(f).btf_map_defs().expect_err("map defs must fail")
    }

    #[test]
    fn map_def_errors() {
        // .maps entry that is not a VAR.
        let mut b = Builder::new(true);
        let int = b.int("int", 4);
        b.ty(".maps", KIND_DATASEC, 1, 0, &[int, 0, 4]);
        let btf = parse(&b.build(), true).expect("parse");
        assert_eq!(btf.btf_map_defs(), Err(BtfError::MapNotVar { index: 0, type_id: 1, kind: KIND_INT }));

        // VAR without a name.
        let mut b = Builder::new(true);
        let int = b.int("int", 4);
        let var = b.ty("", KIND_VAR, 0, int, &[1]);
        b.ty(".maps", KIND_DATASEC, 1, 0, &[var, 0, 4]);
        let btf = parse(&b.build(), true).expect("parse");
        assert_eq!(btf.btf_map_defs(), Err(BtfError::MapNoName { index: 0, type_id: var }));

        assert_eq!(
            map_err(|_, int| vec![("m", int)]),
            BtfError::MapDefNotStruct { map: "m".into(), type_id: 1, kind: KIND_INT }
        );
        assert!(matches!(
            map_err(|b, _| {
                let cyc = b.ty("", KIND_TYPEDEF, 0, 2, &[]);
                vec![("m", b.strukt("", 8, &[("type", cyc)]))]
            }),
            BtfError::MapFieldUnresolvable { map, field, type_id: 2 } if map == "m" && field == "type"
        ));
        assert!(matches!(
            map_err(|b, int| vec![("m", b.strukt("", 8, &[("type", int)]))]),
            BtfError::MapFieldNotPtr { field, type_id: 1, kind: KIND_INT, .. } if field == "type"
        ));
        assert!(matches!(
            map_err(|b, int| {
                let p = b.ty("", KIND_PTR, 0, int, &[]);
                vec![("m", b.strukt("", 8, &[("max_entries", p)]))]
            }),
            BtfError::MapFieldNotArray { field, type_id: 1, kind: KIND_INT, .. } if field == "max_entries"
        ));
        assert!(matches!(
            map_err(|b, _| {
                let (x, y) = (b.s("X"), b.s("Y"));
                let en = b.ty("", KIND_ENUM, 2, 4, &[x, 1, y, 2]);
                vec![("m", b.strukt("", 8, &[("map_extra", en)]))]
            }),
            BtfError::MapFieldBadEnum { field, kind: KIND_ENUM, count: 2, .. } if field == "map_extra"
        ));
        assert!(matches!(
            map_err(|b, _| {
                let fwd = b.ty("opaque", KIND_FWD, 0, 0, &[]);
                let p = b.ty("", KIND_PTR, 0, fwd, &[]);
                vec![("m", b.strukt("", 8, &[("key", p)]))]
            }),
            BtfError::MapFieldSizeUnknown { field, type_id: 2, .. } if field == "key"
        ));
        assert!(matches!(
            map_err(|b, int| vec![("m", b.strukt("", 8, &[("value", int)]))]),
            BtfError::MapFieldNotPtr { field, type_id: 1, kind: KIND_INT, .. } if field == "value"
        ));
        assert_eq!(
            map_err(|b, int| {
                let ks = b.uint(int, 8);
                let p = b.ty("", KIND_PTR, 0, int, &[]);
                vec![("m", b.strukt("", 16, &[("key_size", ks), ("key", p)]))]
            }),
            BtfError::MapSizeConflict { map: "m".into(), field: "key", first: 8, second: 4 }
        );
        assert_eq!(
            map_err(|b, int| {
                let vs = b.uint(int, 8);
                let arr = b.ty("", KIND_ARRAY, 0, 0, &[int, int, 0]);
                vec![("m", b.strukt("", 16, &[("value_size", vs), ("values", arr)]))]
            }),
            BtfError::MapSizeConflict { map: "m".into(), field: "value", first: 8, second: 4 }
        );
        assert_eq!(
            map_err(|b, int| {
                let me = b.uint(int, 8);
                vec![("m", b.strukt("", 8, &[("max_entries", me)]))]
            }),
            BtfError::MapTypeMissing { map: "m".into() }
        );
    }

    #[test]
    fn header_errors() {
        let good = {
            let mut b = Builder::new(true);
            b.int("int", 4);
            b.build()
        };
        assert_eq!(parse(&good, true).map(|b| b.type_count()), Ok(1));
        assert_eq!(parse(&[], true), Err(BtfError::HeaderTruncated { len: 0 }));
        assert_eq!(parse(&good[..23], true), Err(BtfError::HeaderTruncated { len: 23 }));
        let mut bad = good.clone();
        bad[0] = 0x34;
        bad[1] = 0x12;
        assert_eq!(parse(&bad, true), Err(BtfError::BadMagic { magic: 0x1234 }));
        assert_eq!(parse(&good, false), Err(BtfError::WrongEndianness { little_endian: false }));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(parse(&bad, true), Err(BtfError::UnsupportedVersion { version: 2 }));
        let mut bad = good.clone();
        put(&mut bad, 4, 16, true);
        assert_eq!(parse(&bad, true), Err(BtfError::BadHeaderLength { hdr_len: 16, len: good.len() }));
        let mut bad = good.clone();
        put(&mut bad, 4, good.len() as u32 + 1, true);
        assert!(matches!(parse(&bad, true), Err(BtfError::BadHeaderLength { .. })));
        let mut bad = good.clone();
        put(&mut bad, 20, 1000, true); // str_len
        assert!(matches!(parse(&bad, true), Err(BtfError::SectionOutOfBounds { section: "string", len: 1000, .. })));
        let mut bad = good.clone();
        put(&mut bad, 16, u32::MAX, true); // str_off: no u32 overflow
        assert!(matches!(parse(&bad, true), Err(BtfError::SectionOutOfBounds { .. })));
        let mut bad = good.clone();
        put(&mut bad, 12, 20, true); // type_len past str_off
        assert!(matches!(parse(&bad, true), Err(BtfError::SectionsOverlap { first: "type", second: "string", .. })));

        // Types at an unaligned offset: [pad][strings].
        let body = [0u8, 0, 0, 0, 0];
        assert_eq!(
            parse(&raw(true, &[24, 2, 0, 4, 1], &body), true),
            Err(BtfError::Misaligned { section: "type", off: 2 })
        );
        // String section framing.
        assert_eq!(parse(&raw(true, &[24, 0, 0, 0, 0], &[]), true), Err(BtfError::BadStringSection { len: 0 }));
        assert_eq!(parse(&raw(true, &[24, 0, 0, 0, 2], b"a\0"), true), Err(BtfError::BadStringSection { len: 2 }));
        assert_eq!(parse(&raw(true, &[24, 0, 0, 0, 2], b"\0a"), true), Err(BtfError::BadStringSection { len: 2 }));
        // Header longer than 24 bytes without layout fields is fine; trailing header bytes are skipped.
        assert!(parse(&raw(true, &[28, 0, 0, 0, 1, 0xdead], b"\0"), true).is_ok());
    }

    /// Newer headers: hdr_len 32 with a kind layout section (info_sz, elem_sz, flags per kind).
    fn with_layout(type_words: &[u32], kind_layout: &[(usize, [u8; 4])], hdr_layout: Option<(u32, u32)>) -> Vec<u8> {
        let mut types = Vec::new();
        for w in type_words {
            types.extend_from_slice(&w.to_le_bytes());
        }
        let mut layout = vec![0u8; 4 * 22];
        for (k, e) in kind_layout {
            layout[k * 4..k * 4 + 4].copy_from_slice(e);
        }
        let tl = types.len() as u32;
        let (lo, ll) = hdr_layout.unwrap_or((tl, layout.len() as u32));
        let mut body = types;
        body.extend_from_slice(&layout);
        body.push(0);
        raw(true, &[32, 0, tl, tl + layout.len() as u32, 1, lo, ll], &body)
    }

    #[test]
    fn layout_and_unknown_kinds() {
        // Kind 20 with vlen 2: info 4 bytes, elements 8 bytes each.
        let kind20 = [0, 20 << 24 | 2, 0, 1, 2, 3, 4, 5];
        let data = with_layout(&kind20, &[(20, [4, 8, 0, 0])], None);
        let btf = parse(&data, true).expect("parse");
        assert_eq!(btf.type_by_id(1).map(|t| &t.kind), Some(&BtfKind::Unknown { kind: 20, vlen: 2, size_or_type: 0 }));
        assert_eq!(btf.size_of(1), None);
        assert_eq!(btf.resolve(1), Some(1));
        // Without a layout entry for it, the kind is an error.
        let data = with_layout(&kind20, &[], Some((0, 0)));
        assert_eq!(parse(&data, true), Err(BtfError::UnknownKind { type_id: 1, offset: 32, kind: 20 }));
        // A layout covering kinds 0..=19 only.
        assert_eq!(
            parse(&with_layout(&kind20[..3], &[], Some((12, 80))), true),
            Err(BtfError::UnknownKind { type_id: 1, offset: 32, kind: 20 })
        );
        assert_eq!(
            parse(&with_layout(&kind20, &[(20, [2, 8, 0, 0])], None), true),
            Err(BtfError::BadKindLayout { type_id: 1, offset: 32, kind: 20, info_sz: 2, elem_sz: 8 })
        );
        assert!(matches!(
            parse(&with_layout(&kind20[..6], &[(20, [4, 8, 0, 0])], None), true),
            Err(BtfError::TypeTruncated { type_id: 1, kind: 20, need: 32, avail: 24, .. })
        ));
        // Layout section placement.
        let tl = (kind20.len() * 4) as u32;
        assert_eq!(
            parse(&with_layout(&kind20, &[], Some((tl + 2, 4))), true),
            Err(BtfError::Misaligned { section: "layout", off: tl + 2 })
        );
        assert_eq!(parse(&with_layout(&kind20, &[], Some((tl, 6))), true), Err(BtfError::BadLayoutSection { len: 6 }));
        assert!(matches!(
            parse(&with_layout(&kind20, &[], Some((0, 4))), true),
            Err(BtfError::SectionsOverlap { first: "type", second: "layout", .. })
        ));
        assert!(matches!(
            parse(&with_layout(&kind20, &[], Some((tl, 4 * 23))), true),
            Err(BtfError::SectionsOverlap { first: "layout", second: "string", .. })
        ));
    }

    #[test]
    fn type_errors() {
        // Type header cut short.
        let mut b = Builder::new(true);
        b.int("int", 4);
        b.types.truncate(8);
        assert_eq!(
            parse(&b.build(), true),
            Err(BtfError::TypeTruncated { type_id: 1, offset: 24, kind: 0, need: 12, avail: 8 })
        );
        // STRUCT claiming more members than there are bytes.
        let mut b = Builder::new(true);
        b.int("int", 4);
        b.ty("s", KIND_STRUCT, 0xff_ffff, 4, &[0, 1, 0]);
        assert_eq!(
            parse(&b.build(), true),
            Err(BtfError::TypeTruncated {
                type_id: 2,
                offset: 40,
                kind: KIND_STRUCT,
                need: 12 + 12 * 0xff_ffff,
                avail: 24
            })
        );
        let mut b = Builder::new(true);
        b.ty("", 31, 0, 0, &[]);
        assert_eq!(parse(&b.build(), true), Err(BtfError::UnknownKind { type_id: 1, offset: 24, kind: 31 }));
        let mut b = Builder::new(true);
        b.ty("", 0, 0, 0, &[]); // kind 0 (UNKN) is not a real type
        assert!(matches!(parse(&b.build(), true), Err(BtfError::UnknownKind { kind: 0, .. })));

        let mut b = Builder::new(true);
        b.ty_off(100, KIND_INT, 0, false, 4, &[32]);
        let str_len = b.strs.len() as u32;
        assert_eq!(
            parse(&b.build(), true),
            Err(BtfError::BadNameOffset { type_id: 1, what: "type name", name_off: 100, str_len })
        );
        for (kind, extra, what) in [
            (KIND_STRUCT, vec![100, 1, 0], "member name"),
            (KIND_ENUM, vec![100, 0], "enum value name"),
            (KIND_ENUM64, vec![100, 0, 0], "enum value name"),
            (KIND_FUNC_PROTO, vec![100, 1], "parameter name"),
        ] {
            let mut b = Builder::new(true);
            b.int("int", 4);
            // size 4, or return type 1 for FUNC_PROTO
            let sot = if kind == KIND_FUNC_PROTO { 1 } else { 4 };
            b.ty("", kind, 1, sot, &extra);
            assert!(
                matches!(parse(&b.build(), true), Err(BtfError::BadNameOffset { type_id: 2, what: w, name_off: 100, .. }) if w == what),
                "{what}"
            );
        }
        for (kind, vlen, sot, extra) in [
            (KIND_PTR, 0, 9, vec![]),
            (KIND_TYPEDEF, 0, 9, vec![]),
            (KIND_VAR, 0, 9, vec![1]),
            (KIND_DECL_TAG, 0, 9, vec![0]),
            (KIND_ARRAY, 0, 0, vec![9, 1, 1]),
            (KIND_ARRAY, 0, 0, vec![1, 9, 1]),
            (KIND_STRUCT, 1, 4, vec![0, 9, 0]),
            (KIND_FUNC_PROTO, 0, 9, vec![]),
            (KIND_FUNC_PROTO, 1, 1, vec![0, 9]),
            (KIND_DATASEC, 1, 0, vec![9, 0, 0]),
            (KIND_FUNC, 0, 9, vec![]),
        ] {
            let mut b = Builder::new(true);
            b.int("int", 4);
            b.ty("", kind, vlen, sot, &extra);
            assert_eq!(parse(&b.build(), true), Err(BtfError::BadTypeRef { type_id: 2, target: 9, last: 2 }), "{kind}");
        }
        let mut b = Builder::new(true);
        b.int("int", 4);
        b.ty("f", KIND_FUNC, 0, 1, &[]);
        assert_eq!(parse(&b.build(), true), Err(BtfError::FuncNotProto { type_id: 2, target: 1, kind: KIND_INT }));
    }

    #[test]
    fn errors_display_kind_names() {
        let e = BtfError::MapDefNotStruct { map: "m".into(), type_id: 3, kind: KIND_TYPEDEF };
        assert_eq!(e.to_string(), "map m: definition is BTF type 3 (TYPEDEF), not STRUCT");
        assert_eq!(kind_name(99), "UNKNOWN");
    }

    /// Calls everything that reads parsed data.
    fn exercise(data: &[u8], le: bool) {
        if let Ok(btf) = parse(data, le) {
            for id in 0..=btf.type_count().saturating_add(1) {
                let _ = (btf.resolve(id), btf.size_of(id), btf.type_name(id));
            }
            let _ = btf.btf_map_defs();
            let _ = btf.datasec(".maps");
        }
    }

    fn real_btf() -> &'static Option<(Vec<u8>, bool)> {
        static REAL: OnceLock<Option<(Vec<u8>, bool)>> = OnceLock::new();
        REAL.get_or_init(|| btf_section(&Path::new(CORPUS).join("testdata/loader-el.elf")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), le in any::<bool>()) {
            exercise(&data, le);
        }

        /// Random bodies behind a plausible header, so the type parser sees them.
        #[test]
        fn random_types_never_panic(words in proptest::collection::vec(0u32..64, 0..64), kinds in proptest::collection::vec((0u32..24, 0u32..4), 0..16)) {
            let mut b = Builder::new(true);
            for (i, (kind, vlen)) in kinds.iter().enumerate() {
                let extra: Vec<u32> = words.iter().skip(i).take(6).copied().collect();
                b.ty_off(words.get(i).copied().unwrap_or(0), *kind, *vlen, i % 2 == 0, words.get(i + 1).copied().unwrap_or(1), &extra);
            }
            b.s("a");
            exercise(&b.build(), true);
        }

        #[test]
        fn mutated_real_btf_never_panics(
            muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let Some((real, le)) = real_btf() else { return Ok(()) };
            let mut data = real.clone();
            for (at, byte) in muts {
                let i = at.index(data.len());
                if let Some(b) = data.get_mut(i) {
                    *b = byte;
                }
            }
            if truncate {
                data.truncate(cut.index(data.len()));
            }
            exercise(&data, *le);
        }
    }
}
