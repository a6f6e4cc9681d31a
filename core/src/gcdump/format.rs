//! The `.gcdump` file: a FastSerialization stream whose entry object is a `GCHeapDump` holding a
//! `Graphs.MemoryGraph` (types, nodes, the node blob, addresses), the format that PerfView,
//! Visual Studio and `dotnet-gcdump report` open. `docs/gcdump.md` describes the layout byte by
//! byte; [`write`] produces it and [`read`] reads it back (the report and the tests use it).
//!
//! A [`MemoryGraph`] keeps its nodes the way the format stores them: each node is a record in a
//! byte blob (`typeIndex << 1 | sizeDiffers`, the size if it differs from the type's, the child
//! count, then each child as a delta to the node's own index, all as compressed integers), and a
//! table of blob offsets, one per node. A node that was referred to but never described points at
//! offset 0, the record of the `UNDEFINED` node.

use std::collections::HashMap;

/// The stream's signature, written as a FastSerialization string.
const SIGNATURE: &str = "!FastSerialization.1";

/// FastSerialization tags.
mod tag {
    pub const NULL_REFERENCE: u8 = 1;
    pub const OBJECT_REFERENCE: u8 = 2;
    pub const BEGIN_OBJECT: u8 = 4;
    pub const BEGIN_PRIVATE_OBJECT: u8 = 5;
    pub const END_OBJECT: u8 = 6;
    pub const BYTE: u8 = 8;
    pub const SKIP_REGION: u8 = 12;
    pub const STRING: u8 = 13;
}

/// DateTime ticks (100 ns since 0001-01-01) at the Unix epoch.
pub const UNIX_EPOCH_TICKS: i64 = 621_355_968_000_000_000;

/// The name of the type every node starts with until it is described.
pub const UNDEFINED_TYPE: &str = "UNDEFINED";

/// Why a graph could not be built, written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes end before what they describe.
    #[error("the file ends inside {0}")]
    Short(&'static str),
    /// The bytes are not what the format puts there.
    #[error("not a .gcdump file: {0}")]
    Invalid(String),
    /// The file starts as a heap snapshot but does not end as one.
    #[error(
        "the file is cut short or corrupt: it starts as a .gcdump heap snapshot but does not end \
         with the forward-reference table and trailer every whole one ends with"
    )]
    CutShort,
    /// The graph is larger than the format's 32-bit fields can describe.
    #[error("the heap graph is too large for the .gcdump format: {0}")]
    TooLarge(&'static str),
}

/// One node type: a .NET type (possibly with a size-range suffix) or a root category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeEntry {
    /// The type's name, e.g. `System.String` or `[.NET Roots]`.
    pub name: String,
    /// The size of the first node of this type (nodes of another size store theirs), -1 before.
    pub size: i32,
    /// The module that defines it, when known.
    pub module: Option<String>,
}

/// One node of a graph, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its type, an index into [`MemoryGraph::types`].
    pub type_index: u32,
    /// Its size in bytes.
    pub size: i32,
    /// The nodes it refers to.
    pub children: Vec<u32>,
}

/// A memory graph as the `.gcdump` format stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryGraph {
    /// The node types; index 0 is `UNDEFINED`.
    pub types: Vec<TypeEntry>,
    /// Per node, the offset of its record in `blob` (0: not described).
    pub labels: Vec<u32>,
    /// Per node, the object's address (0 for the root pseudo-nodes).
    pub addresses: Vec<u64>,
    /// The node records.
    pub blob: Vec<u8>,
    /// The node every root hangs from.
    pub root: u32,
    /// The sum of every described node's size.
    pub total_size: i64,
    /// Whether the addresses are 64-bit.
    pub is_64bit: bool,
}

impl Default for MemoryGraph {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryGraph {
    /// An empty graph: the `UNDEFINED` type and the record undescribed nodes point at.
    pub fn new() -> Self {
        let mut blob = Vec::new();
        write_compressed(&mut blob, 0); // type 0, the type's size
        write_compressed(&mut blob, 0); // no children
        MemoryGraph {
            types: vec![TypeEntry {
                name: UNDEFINED_TYPE.to_owned(),
                size: 0,
                module: None,
            }],
            labels: Vec::new(),
            addresses: Vec::new(),
            blob,
            root: 0,
            total_size: 0,
            is_64bit: true,
        }
    }

    /// Adds a type and returns its index (no interning).
    pub fn create_type(&mut self, name: String, module: Option<String>) -> u32 {
        self.types.push(TypeEntry {
            name,
            size: -1,
            module,
        });
        (self.types.len() - 1) as u32
    }

    /// Adds an undescribed node for `address` and returns its index.
    pub fn create_node(&mut self, address: u64) -> u32 {
        self.labels.push(0);
        self.addresses.push(address);
        (self.labels.len() - 1) as u32
    }

    /// The number of nodes.
    pub fn node_count(&self) -> usize {
        self.labels.len()
    }

    /// Describes node `index`: its type, size and children. A node is described once.
    pub fn set_node(
        &mut self,
        index: u32,
        type_index: u32,
        size: u64,
        children: &[u32],
    ) -> Result<(), FormatError> {
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        let label = u32::try_from(self.blob.len())
            .map_err(|_| FormatError::TooLarge("the node records pass 4 GiB"))?;
        let Some(slot) = self.labels.get_mut(index as usize) else {
            return Err(FormatError::Invalid(format!("no node {index}")));
        };
        if *slot != 0 {
            return Err(FormatError::Invalid(format!(
                "node {index} is described twice"
            )));
        }
        *slot = label;
        let Some(entry) = self.types.get_mut(type_index as usize) else {
            return Err(FormatError::Invalid(format!("no type {type_index}")));
        };
        if entry.size < 0 {
            entry.size = size;
        }
        let type_and_size = i32::try_from(type_index)
            .ok()
            .and_then(|t| t.checked_mul(2))
            .ok_or(FormatError::TooLarge("more than 2^30 types"))?;
        if entry.size == size {
            write_compressed(&mut self.blob, type_and_size);
        } else {
            write_compressed(&mut self.blob, type_and_size | 1);
            write_compressed(&mut self.blob, size);
        }
        let count = i32::try_from(children.len())
            .map_err(|_| FormatError::TooLarge("a node with more than 2^31 children"))?;
        write_compressed(&mut self.blob, count);
        for &child in children {
            write_compressed(&mut self.blob, (child as i32).wrapping_sub(index as i32));
        }
        self.total_size += i64::from(size);
        Ok(())
    }

    /// Whether node `index` was described.
    pub fn is_defined(&self, index: u32) -> bool {
        self.labels
            .get(index as usize)
            .is_some_and(|&label| label != 0)
    }

    /// The type and size of node `index`, without its children.
    pub fn type_and_size(&self, index: u32) -> Result<(u32, i32), FormatError> {
        self.record(index)
            .map(|(_, type_index, size)| (type_index, size))
    }

    /// Node `index`'s record: its type and size, and a cursor at its child list.
    fn record(&self, index: u32) -> Result<(Cursor<'_>, u32, i32), FormatError> {
        let label = *self
            .labels
            .get(index as usize)
            .ok_or_else(|| FormatError::Invalid(format!("no node {index}")))?;
        let mut r = Cursor::new(&self.blob);
        r.pos = label as usize;
        let type_and_size = r.compressed("a node record")?;
        let type_index = u32::try_from(type_and_size >> 1)
            .map_err(|_| FormatError::Invalid(format!("node {index} has a negative type")))?;
        let entry = self.types.get(type_index as usize).ok_or_else(|| {
            FormatError::Invalid(format!(
                "node {index} has type {type_index}, which is not defined"
            ))
        })?;
        let size = if type_and_size & 1 != 0 {
            r.compressed("a node size")?
        } else {
            entry.size.max(0)
        };
        Ok((r, type_index, size))
    }

    /// Decodes node `index` (an undescribed node reads as `UNDEFINED`, size 0, no children).
    pub fn node(&self, index: u32) -> Result<Node, FormatError> {
        let (mut r, type_index, size) = self.record(index)?;
        let count = r.compressed("a node's child count")?;
        let count = usize::try_from(count).map_err(|_| {
            FormatError::Invalid(format!("node {index} has a negative child count"))
        })?;
        let mut children = Vec::with_capacity(count.min(r.remaining()));
        for _ in 0..count {
            let delta = r.compressed("a node's children")?;
            let child = (index as i32).wrapping_add(delta);
            if child < 0 || child as usize >= self.labels.len() {
                return Err(FormatError::Invalid(format!(
                    "node {index} refers to node {child}, which does not exist"
                )));
            }
            children.push(child as u32);
        }
        Ok(Node {
            type_index,
            size,
            children,
        })
    }
}

/// A `.gcdump` file's content: the graph and what it says about the capture.
#[derive(Debug, Clone, PartialEq)]
pub struct HeapDump {
    /// The heap graph.
    pub graph: MemoryGraph,
    /// The bytes of every GC segment (0 when unknown).
    pub size_of_all_segments: i64,
    /// A log of the collection.
    pub collection_log: Option<String>,
    /// When the snapshot was taken, in DateTime ticks (UTC).
    pub time_collected_ticks: i64,
    /// The machine's name.
    pub machine_name: Option<String>,
    /// The process's name.
    pub process_name: Option<String>,
    /// The process id.
    pub process_id: i32,
    /// What wrote the file.
    pub creation_tool: Option<String>,
}

/// Encodes `dump` as a `.gcdump` file.
pub fn write(dump: &HeapDump) -> Result<Vec<u8>, FormatError> {
    let graph = &dump.graph;
    let node_count =
        i32::try_from(graph.labels.len()).map_err(|_| FormatError::TooLarge("2^31 nodes"))?;
    let blob_len =
        i32::try_from(graph.blob.len()).map_err(|_| FormatError::TooLarge("a 2 GiB node blob"))?;
    let type_count =
        i32::try_from(graph.types.len()).map_err(|_| FormatError::TooLarge("2^31 types"))?;
    let mut w = Writer {
        out: Vec::with_capacity(graph.blob.len() + graph.labels.len() * 12 + 4096),
    };
    w.string(Some(SIGNATURE));
    // The entry object: GCHeapDump, version 10, readable by readers of version 8 and later.
    w.begin_object("GCHeapDump", 10, 8);
    // Its MemoryGraph (Graph version 1, minimum reader version 0: no deferred types).
    w.begin_object("Graphs.MemoryGraph", 1, 0);
    w.i64(graph.total_size);
    w.i32(graph.root as i32);
    w.i32(type_count);
    for entry in &graph.types {
        w.string(Some(&entry.name));
        w.i32(entry.size);
        w.string(entry.module.as_deref());
    }
    w.i32(node_count);
    for &label in &graph.labels {
        w.i32(label as i32);
    }
    w.i32(blob_len);
    w.out.extend_from_slice(&graph.blob);
    w.i32(node_count);
    for &address in &graph.addresses {
        w.i64(address as i64);
    }
    w.out.push(tag::BYTE);
    w.out.push(u8::from(graph.is_64bit));
    w.out.push(tag::END_OBJECT);
    // GCHeapDump's own fields.
    w.out.push(u8::from(graph.is_64bit));
    w.f32(1.0); // AverageCountMultiplier: not sampled
    w.f32(1.0); // AverageSizeMultiplier
    w.out.push(tag::NULL_REFERENCE); // JSHeapInfo
    w.begin_object("DotNetHeapInfo", 0, 0);
    w.i64(dump.size_of_all_segments);
    w.i32(0); // no segments
    w.out.push(tag::END_OBJECT);
    w.string(dump.collection_log.as_deref());
    w.i64(dump.time_collected_ticks);
    w.string(dump.machine_name.as_deref());
    w.string(dump.process_name.as_deref());
    w.i32(dump.process_id);
    w.i64(0); // TotalProcessCommit
    w.i64(0); // TotalProcessWorkingSet
    w.i32(0); // no CountMultipliersByType
    // Tagged InteropInfo (none): a skip region whose end is forward reference 0.
    w.out.push(tag::SKIP_REGION);
    w.i32(0);
    w.out.push(tag::NULL_REFERENCE);
    let region_end = label_of(&w.out)?;
    w.out.push(tag::STRING);
    w.string(dump.creation_tool.as_deref());
    w.out.push(tag::END_OBJECT); // GCHeapDump
    w.out.push(tag::END_OBJECT); // the end of the objects
    let forward_table = label_of(&w.out)?;
    w.i32(1);
    w.i32(region_end as i32);
    let trailer = label_of(&w.out)?;
    w.i32(forward_table as i32);
    w.i32(trailer as i32);
    Ok(w.out)
}

fn label_of(out: &[u8]) -> Result<u32, FormatError> {
    u32::try_from(out.len())
        .ok()
        .filter(|&label| label <= i32::MAX as u32)
        .ok_or(FormatError::TooLarge("a file of 2 GiB"))
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn i32(&mut self, value: i32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn f32(&mut self, value: f32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// A string: its length in UTF-16 code units (-1 for none), then each code unit as 1 to 3
    /// UTF-8-style bytes.
    fn string(&mut self, value: Option<&str>) {
        let Some(value) = value else {
            self.i32(-1);
            return;
        };
        let units: Vec<u16> = value.encode_utf16().collect();
        self.i32(units.len() as i32);
        for unit in units {
            if unit < 0x80 {
                self.out.push(unit as u8);
            } else if unit < 0x800 {
                self.out.push(0xC0 | (unit >> 6) as u8);
                self.out.push(0x80 | (unit & 0x3F) as u8);
            } else {
                self.out.push(0xE0 | ((unit >> 12) & 0xF) as u8);
                self.out.push(0x80 | ((unit >> 6) & 0x3F) as u8);
                self.out.push(0x80 | (unit & 0x3F) as u8);
            }
        }
    }

    /// `BeginObject`, then the object's type inline: `BeginObject`, a null type, version,
    /// minimum reader version, full name, `EndObject`.
    fn begin_object(&mut self, type_name: &str, version: i32, minimum_reader: i32) {
        self.out.push(tag::BEGIN_OBJECT);
        self.out.push(tag::BEGIN_OBJECT);
        self.out.push(tag::NULL_REFERENCE);
        self.i32(version);
        self.i32(minimum_reader);
        self.string(Some(type_name));
        self.out.push(tag::END_OBJECT);
    }
}

/// Writes `value` as the format's compressed integer: 7 bits a byte, most significant first,
/// the high bit set on all but the last, the first byte sign-extended.
pub fn write_compressed(out: &mut Vec<u8>, value: i32) {
    let fits = |bits: u32| (value << (32 - bits)) >> (32 - bits) == value;
    let bytes = if fits(7) {
        1
    } else if fits(14) {
        2
    } else if fits(21) {
        3
    } else if fits(28) {
        4
    } else {
        5
    };
    for index in (1..bytes).rev() {
        out.push(((value >> (7 * index)) as u8) | 0x80);
    }
    out.push((value & 0x7F) as u8);
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).ok_or(FormatError::Short(what))?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(FormatError::Short(what))?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, FormatError> {
        let bytes = self.take(4, what)?;
        Ok(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, FormatError> {
        let bytes = self.take(8, what)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(i64::from_le_bytes(array))
    }

    fn count(&mut self, what: &'static str, each: usize) -> Result<usize, FormatError> {
        let count = self.i32(what)?;
        let count = usize::try_from(count)
            .map_err(|_| FormatError::Invalid(format!("{what} is negative")))?;
        if count.saturating_mul(each) > self.remaining() {
            return Err(FormatError::Short(what));
        }
        Ok(count)
    }

    fn string(&mut self, what: &'static str) -> Result<Option<String>, FormatError> {
        let length = self.i32(what)?;
        if length < 0 {
            return Ok(None);
        }
        let mut units = Vec::with_capacity((length as usize).min(self.remaining()));
        for _ in 0..length {
            let first = u16::from(self.u8(what)?);
            let unit = if first < 0x80 {
                first
            } else if first < 0xE0 {
                ((first & 0x1F) << 6) | u16::from(self.u8(what)? & 0x3F)
            } else {
                let second = u16::from(self.u8(what)? & 0x3F);
                let third = u16::from(self.u8(what)? & 0x3F);
                ((first & 0xF) << 12) | (second << 6) | third
            };
            units.push(unit);
        }
        Ok(Some(String::from_utf16_lossy(&units)))
    }

    fn compressed(&mut self, what: &'static str) -> Result<i32, FormatError> {
        let first = self.u8(what)?;
        let mut value = (i32::from(first) << 25) >> 25;
        let mut byte = first;
        let mut read = 1;
        while byte & 0x80 != 0 {
            byte = self.u8(what)?;
            read += 1;
            value = value.wrapping_shl(7);
            if read == 5 {
                value = value.wrapping_add(i32::from(byte));
                break;
            }
            value = value.wrapping_add(i32::from(byte & 0x7F));
        }
        Ok(value)
    }

    fn expect(&mut self, expected: u8, what: &str) -> Result<(), FormatError> {
        let found = self.u8("a tag")?;
        if found != expected {
            return Err(FormatError::Invalid(format!(
                "expected tag {expected} ({what}) at byte {}, found {found}",
                self.pos - 1
            )));
        }
        Ok(())
    }
}

/// An object's type as its header describes it.
#[derive(Clone)]
struct ObjectType {
    name: String,
    /// The version the writer wrote; a reader reads the fields of that version.
    version: i32,
    /// The oldest reader version that can read it.
    minimum_reader: i32,
}

/// Reads objects' type descriptions, remembering them for later references.
#[derive(Default)]
struct Types {
    by_label: HashMap<usize, ObjectType>,
}

impl Types {
    /// An object's start: `BeginObject` and its type. `None` for a null reference.
    fn begin(&mut self, r: &mut Cursor<'_>) -> Result<Option<ObjectType>, FormatError> {
        let tag = r.u8("an object")?;
        match tag {
            tag::NULL_REFERENCE => return Ok(None),
            tag::BEGIN_OBJECT | tag::BEGIN_PRIVATE_OBJECT => {}
            other => {
                return Err(FormatError::Invalid(format!(
                    "expected an object at byte {}, found tag {other}",
                    r.pos - 1
                )));
            }
        }
        let type_tag = r.u8("an object's type")?;
        match type_tag {
            tag::OBJECT_REFERENCE => {
                let label = r.i32("a type reference")?;
                let found = usize::try_from(label)
                    .ok()
                    .and_then(|label| self.by_label.get(&label))
                    .cloned()
                    .ok_or_else(|| {
                        FormatError::Invalid(format!("a reference to no type at byte {label}"))
                    })?;
                Ok(Some(found))
            }
            tag::BEGIN_OBJECT | tag::BEGIN_PRIVATE_OBJECT => {
                let label = r.pos - 1;
                r.expect(tag::NULL_REFERENCE, "the type of a type")?;
                let version = r.i32("a type's version")?;
                let minimum_reader = r.i32("a type's minimum reader version")?;
                let name = r
                    .string("a type's name")?
                    .ok_or_else(|| FormatError::Invalid("a type without a name".to_owned()))?;
                r.expect(tag::END_OBJECT, "the end of a type")?;
                let found = ObjectType {
                    name,
                    version,
                    minimum_reader,
                };
                self.by_label.insert(label, found.clone());
                Ok(Some(found))
            }
            other => Err(FormatError::Invalid(format!(
                "expected a type at byte {}, found tag {other}",
                r.pos - 1
            ))),
        }
    }
}

/// The first GCHeapDump version on the tagged plan this reader follows (8 was never readable;
/// older ones have another layout).
const FIRST_TAGGED_VERSION: i32 = 9;

/// Reads a `.gcdump` file: its graph and what it says about the capture.
pub fn read(bytes: &[u8]) -> Result<HeapDump, FormatError> {
    if bytes.starts_with(b"Nettrace") {
        return Err(FormatError::Invalid(
            "it is a nettrace trace (`diagmon validate` reads those)".to_owned(),
        ));
    }
    let mut r = Cursor::new(bytes);
    let signature = r.string("the signature").ok().flatten();
    if signature.as_deref() != Some(SIGNATURE) {
        return Err(FormatError::Invalid(
            "it does not start with the FastSerialization signature".to_owned(),
        ));
    }
    let mut types = Types::default();
    let entry = match types.begin(&mut r) {
        Ok(Some(entry)) if entry.name == "GCHeapDump" => entry,
        Err(error) => return Err(error),
        Ok(other) => {
            return Err(FormatError::Invalid(format!(
                "the entry object is {:?}, not a GCHeapDump",
                other.map(|entry| entry.name)
            )));
        }
    };
    // A file that starts as a heap snapshot and does not end as one was cut short.
    check_trailer(bytes)?;
    if entry.version < FIRST_TAGGED_VERSION {
        return Err(FormatError::Invalid(format!(
            "the GCHeapDump is version {}; this reader reads version {FIRST_TAGGED_VERSION} and \
             later (PerfView and dotnet-gcdump have written them since 2017)",
            entry.version
        )));
    }
    let graph_type = types.begin(&mut r)?;
    match &graph_type {
        Some(graph) if graph.name == "Graphs.MemoryGraph" => {
            if graph.minimum_reader >= 1 {
                return Err(FormatError::Invalid(
                    "the graph has deferred type names (a .NET Native heap), which this reader does not read"
                        .to_owned(),
                ));
            }
        }
        other => {
            return Err(FormatError::Invalid(format!(
                "the GCHeapDump holds {:?}, not a Graphs.MemoryGraph",
                other.as_ref().map(|graph| &graph.name)
            )));
        }
    }
    let total_size = r.i64("the graph's total size")?;
    let root = r.i32("the graph's root")?;
    let type_count = r.count("the type count", 9)?;
    let mut graph_types = Vec::with_capacity(type_count);
    for _ in 0..type_count {
        let name = r.string("a type name")?.unwrap_or_default();
        let size = r.i32("a type size")?;
        let module = r.string("a type's module")?;
        graph_types.push(TypeEntry { name, size, module });
    }
    let node_count = r.count("the node count", 4)?;
    let mut labels = Vec::with_capacity(node_count);
    for _ in 0..node_count {
        labels.push(r.i32("the node table")? as u32);
    }
    let blob_len = r.count("the node blob", 1)?;
    let blob = r.take(blob_len, "the node blob")?.to_vec();
    if let Some(label) = labels.iter().find(|&&label| label as usize >= blob.len()) {
        return Err(FormatError::Invalid(format!(
            "a node points at byte {label} of a {blob_len}-byte blob"
        )));
    }
    let address_count = r.count("the address count", 8)?;
    let mut addresses = Vec::with_capacity(address_count);
    for _ in 0..address_count {
        addresses.push(r.i64("the address table")? as u64);
    }
    let mut is_64bit = false;
    if r.bytes.get(r.pos) == Some(&tag::BYTE) {
        r.pos += 1;
        is_64bit = r.u8("Is64Bit")? != 0;
    }
    r.expect(tag::END_OBJECT, "the end of the MemoryGraph")?;
    let root = u32::try_from(root)
        .ok()
        .filter(|&root| (root as usize) < labels.len())
        .ok_or_else(|| {
            FormatError::Invalid(format!("the root is node {root}, which does not exist"))
        })?;
    let _is_64bit_again = r.u8("Is64Bit")?;
    let _count_multiplier = r.i32("AverageCountMultiplier")?;
    let _size_multiplier = r.i32("AverageSizeMultiplier")?;
    // A JavaScript heap's marker object has no fields; its graph reads like any other.
    if let Some(js) = types.begin(&mut r)? {
        if js.name != "JSHeapInfo" {
            return Err(FormatError::Invalid(format!(
                "expected a JSHeapInfo, found {}",
                js.name
            )));
        }
        r.expect(tag::END_OBJECT, "the end of the JSHeapInfo")?;
    }
    let mut size_of_all_segments = 0;
    if let Some(info) = types.begin(&mut r)? {
        if info.name != "DotNetHeapInfo" {
            return Err(FormatError::Invalid(format!(
                "expected a DotNetHeapInfo, found {}",
                info.name
            )));
        }
        size_of_all_segments = r.i64("SizeOfAllSegments")?;
        let segments = r.count("the segment count", 1)?;
        for _ in 0..segments {
            if let Some(segment) = types.begin(&mut r)? {
                // Start, End and the ends of generations 0 to 3; version 1 added generation 4.
                let fields = if segment.version >= 1 { 7 } else { 6 };
                for _ in 0..fields {
                    r.i64("a segment")?;
                }
                r.expect(tag::END_OBJECT, "the end of a segment")?;
            }
        }
        r.expect(tag::END_OBJECT, "the end of the DotNetHeapInfo")?;
    }
    let collection_log = r.string("the collection log")?;
    let time_collected_ticks = r.i64("the collection time")?;
    let machine_name = r.string("the machine name")?;
    let process_name = r.string("the process name")?;
    let process_id = r.i32("the process id")?;
    r.i64("the process commit")?;
    r.i64("the process working set")?;
    let multipliers = r.count("the count multipliers", 4)?;
    r.take(multipliers * 4, "the count multipliers")?;
    let graph = MemoryGraph {
        types: graph_types,
        labels,
        addresses,
        blob,
        root,
        total_size,
        is_64bit,
    };
    Ok(HeapDump {
        graph,
        size_of_all_segments,
        collection_log,
        time_collected_ticks,
        machine_name,
        process_name,
        process_id,
        creation_tool: read_creation_tool(&mut r),
    })
}

/// Checks the end of the stream: the last 4 bytes point at the trailer, which points at the
/// forward-reference table, which ends where the trailer starts. A cut file fails here.
fn check_trailer(bytes: &[u8]) -> Result<(), FormatError> {
    let label_at = |pos: usize| -> Option<usize> {
        let field = bytes.get(pos..pos.checked_add(4)?)?;
        usize::try_from(i32::from_le_bytes(field.try_into().ok()?)).ok()
    };
    let whole = (|| {
        let end = bytes.len().checked_sub(4)?;
        let trailer = label_at(end)?;
        let table = label_at(trailer)?;
        let count = label_at(table)?;
        let table_end = table.checked_add(count.checked_mul(4)?.checked_add(4)?)?;
        (trailer.checked_add(4) == Some(end) && table_end == trailer).then_some(())
    })();
    whole.ok_or(FormatError::CutShort)
}

/// The tagged fields after version 8: the InteropInfo (skipped) and the creation tool.
fn read_creation_tool(r: &mut Cursor<'_>) -> Option<String> {
    if r.bytes.get(r.pos) == Some(&tag::SKIP_REGION) {
        // The region's end is a forward reference; its objects are skipped by reading them.
        r.pos += 1;
        r.i32("a skip region").ok()?;
        if r.bytes.get(r.pos) == Some(&tag::NULL_REFERENCE) {
            r.pos += 1;
        } else {
            return None;
        }
    }
    if r.bytes.get(r.pos) == Some(&tag::STRING) {
        r.pos += 1;
        return r.string("the creation tool").ok().flatten();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressed_round_trip(value: i32) -> (usize, i32) {
        let mut out = Vec::new();
        write_compressed(&mut out, value);
        let mut r = Cursor::new(&out);
        let back = r.compressed("test").unwrap();
        assert_eq!(r.pos, out.len(), "{value}");
        (out.len(), back)
    }

    #[test]
    fn compressed_integers_round_trip_with_their_lengths() {
        for (value, length) in [
            (0, 1),
            (63, 1),
            (-64, 1),
            (64, 2),
            (-65, 2),
            (8191, 2),
            (8192, 3),
            ((1 << 20) - 1, 3),
            (1 << 20, 4),
            (1 << 21, 4),
            (1 << 27, 5),
            (i32::MAX, 5),
            (i32::MIN, 5),
            (-1_000_000, 3),
        ] {
            assert_eq!(compressed_round_trip(value), (length, value), "{value}");
        }
    }

    #[test]
    fn a_written_dump_reads_back_whole() {
        let mut graph = MemoryGraph::new();
        let root = graph.create_node(0);
        let object = graph.create_node(0x1000);
        let other = graph.create_node(0x2000);
        let never = graph.create_node(0x3000);
        let ty = graph.create_type("My.Type".to_owned(), Some("Module(0x1)".to_owned()));
        let roots = graph.create_type("[.NET Roots]".to_owned(), None);
        graph.set_node(object, ty, 24, &[other, never]).unwrap();
        graph.set_node(other, ty, 32, &[object]).unwrap();
        graph.set_node(root, roots, 0, &[object]).unwrap();
        graph.root = root;
        assert!(graph.set_node(object, ty, 24, &[]).is_err());
        let dump = HeapDump {
            graph,
            size_of_all_segments: 4096,
            collection_log: None,
            time_collected_ticks: UNIX_EPOCH_TICKS,
            machine_name: Some("héllo→".to_owned()),
            process_name: Some("app".to_owned()),
            process_id: 42,
            creation_tool: Some("diagmon".to_owned()),
        };
        let bytes = write(&dump).unwrap();
        assert_eq!(&bytes[4..24], SIGNATURE.as_bytes());
        let back = read(&bytes).unwrap();
        assert_eq!(back, dump);
        let node = back.graph.node(object).unwrap();
        assert_eq!(node.size, 24);
        assert_eq!(node.children, [other, never]);
        assert_eq!(back.graph.node(other).unwrap().size, 32);
        assert!(!back.graph.is_defined(never));
        assert_eq!(back.graph.node(never).unwrap().type_index, 0);
        assert_eq!(back.graph.total_size, 56);
        // The trailer points at the forward-reference table, which points inside the file.
        let trailer = i32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let table = i32::from_le_bytes(bytes[trailer..trailer + 4].try_into().unwrap()) as usize;
        assert_eq!(&bytes[table..table + 4], &1i32.to_le_bytes());
        let region_end =
            i32::from_le_bytes(bytes[table + 4..table + 8].try_into().unwrap()) as usize;
        assert_eq!(bytes[region_end], tag::STRING);
    }

    fn small_dump() -> HeapDump {
        let mut graph = MemoryGraph::new();
        let root = graph.create_node(0);
        let ty = graph.create_type("T".to_owned(), None);
        graph.set_node(root, ty, 0, &[]).unwrap();
        HeapDump {
            graph,
            size_of_all_segments: 0,
            collection_log: None,
            time_collected_ticks: 0,
            machine_name: None,
            process_name: None,
            process_id: 1,
            creation_tool: None,
        }
    }

    /// `bytes` with `remove` bytes at `at` replaced by `insert`, and the forward reference and
    /// the trailer (all after `at`) moved to match.
    fn splice(bytes: &[u8], at: usize, remove: usize, insert: &[u8]) -> Vec<u8> {
        let label = |bytes: &[u8], pos: usize| {
            i32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize
        };
        let trailer = label(bytes, bytes.len() - 4);
        let table = label(bytes, trailer);
        let region_end = label(bytes, table + 4);
        let shift = |label: usize| (label + insert.len() - remove) as i32;
        let mut out = bytes[..at].to_vec();
        out.extend_from_slice(insert);
        out.extend_from_slice(&bytes[at + remove..table]);
        for value in [1, shift(region_end), shift(table), shift(trailer)] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// Where the object of type `name` begins (its type is written inline).
    fn object_start(bytes: &[u8], name: &str) -> usize {
        let name = name.as_bytes();
        let found = bytes.windows(name.len()).position(|w| w == name).unwrap();
        // BeginObject, BeginObject, NullReference, version, minimum reader, name length.
        found - 15
    }

    #[test]
    fn segments_of_version_0_have_no_generation_4() {
        let dump = small_dump();
        let bytes = write(&dump).unwrap();
        let info = object_start(&bytes, "DotNetHeapInfo");
        let count_at = info + 15 + "DotNetHeapInfo".len() + 1 + 8;
        let segments = |version: i32, fields: usize| {
            let mut w = Writer { out: Vec::new() };
            w.i32(2);
            w.begin_object("GCHeapDumpSegment", version, 0);
            let type_label = (count_at + 5) as i32;
            for field in 0..fields {
                w.i64(0x1000 * field as i64);
            }
            w.out.push(tag::END_OBJECT);
            // The second segment refers to the first one's type.
            w.out
                .extend_from_slice(&[tag::BEGIN_OBJECT, tag::OBJECT_REFERENCE]);
            w.i32(type_label);
            for field in 0..fields {
                w.i64(0x1000 * field as i64);
            }
            w.out.push(tag::END_OBJECT);
            w.out
        };
        for (version, fields) in [(0, 6), (1, 7)] {
            let with = splice(&bytes, count_at, 4, &segments(version, fields));
            assert_eq!(read(&with).unwrap(), dump, "version {version}");
        }
        let wrong = splice(&bytes, count_at, 4, &segments(1, 6));
        assert!(read(&wrong).is_err());
    }

    #[test]
    fn a_javascript_heap_marker_is_read_past() {
        let dump = small_dump();
        let bytes = write(&dump).unwrap();
        let null_js_heap = object_start(&bytes, "DotNetHeapInfo") - 1;
        assert_eq!(bytes[null_js_heap], tag::NULL_REFERENCE);
        let mut w = Writer { out: Vec::new() };
        w.begin_object("JSHeapInfo", 0, 0);
        w.out.push(tag::END_OBJECT);
        let with = splice(&bytes, null_js_heap, 1, &w.out);
        assert_eq!(read(&with).unwrap(), dump);
    }

    #[test]
    fn a_dump_older_than_the_tagged_layout_is_named_as_such() {
        let bytes = write(&small_dump()).unwrap();
        let entry = object_start(&bytes, "GCHeapDump");
        let mut old = bytes.clone();
        old[entry + 3..entry + 7].copy_from_slice(&7i32.to_le_bytes());
        let error = read(&old).unwrap_err().to_string();
        assert!(error.contains("version 7"), "{error}");
    }

    #[test]
    fn a_cut_file_is_an_error_not_a_panic() {
        let bytes = write(&small_dump()).unwrap();
        let entry_type_end = object_start(&bytes, "GCHeapDump") + 15 + "GCHeapDump".len() + 1;
        for end in 0..bytes.len() {
            let error = read(&bytes[..end]).expect_err("a cut file");
            // Once the start says "heap snapshot", a missing end says "cut short".
            assert_eq!(
                matches!(error, FormatError::CutShort),
                end >= entry_type_end,
                "{end}: {error}"
            );
        }
        let error = read(b"not a gcdump at all, really").unwrap_err();
        assert!(error.to_string().contains("signature"), "{error}");
        let error = read(b"Nettrace\x14\0\0\0!FastSerialization.1").unwrap_err();
        assert!(error.to_string().contains("diagmon validate"), "{error}");
    }
}
