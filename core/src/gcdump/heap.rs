//! From the runtime's heap-walk events to a [`MemoryGraph`].
//!
//! During the induced gen-2 GC, between its `GCStart` and `GCStop`, the runtime describes every
//! live object in `GCBulkNode` events (address, size, type id, edge count), the objects each one
//! refers to in `GCBulkEdge` events (in the same order, edge counts consumed one node after the
//! other), the roots in `GCBulkRootEdge`, `GCBulkRootConditionalWeakTableElementEdge` and
//! `GCBulkRootStaticVar` events, and the types in `BulkType` events (which may also come before
//! the GC). On .NET Core 3.1 these events carry no field descriptions in their metadata, so their
//! payloads are read with the runtime's fixed layouts (64-bit pointers).
//!
//! [`HeapBuilder`] keeps the raw nodes and edges compactly while the events arrive and turns them
//! into the graph once the GC ended ([`HeapBuilder::finish`]), naming the nodes the way TraceEvent
//! does so that existing tools show the same type names: generic arity removed, `[`/`]` as `<`/`>`,
//! objects over 1,000 bytes in a size-range type (`System.Byte[] (Bytes > 10K)`), roots grouped
//! under `[.NET Roots]`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::format::{FormatError, MemoryGraph};
use crate::diagnostics::nettrace::NettraceRecord;
use crate::diagnostics::payload::EventMetadata;

/// The runtime's provider.
pub const RUNTIME_PROVIDER: &str = "Microsoft-Windows-DotNETRuntime";

/// Event ids of the runtime provider that the heap walk uses.
mod event {
    pub const GC_START: u32 = 1;
    pub const GC_STOP: u32 = 2;
    pub const BULK_TYPE: u32 = 15;
    pub const BULK_ROOT_EDGE: u32 = 16;
    pub const BULK_ROOT_CWT_EDGE: u32 = 17;
    pub const BULK_NODE: u32 = 18;
    pub const BULK_EDGE: u32 = 19;
    pub const BULK_ROOT_STATIC_VAR: u32 = 38;
}

/// `GCStart`'s reason for a GC asked for by a tool or `GC.Collect`.
const REASON_INDUCED: u32 = 1;
/// `GCStart`'s type for a blocking GC.
const TYPE_NON_CONCURRENT: u32 = 0;

/// Root kinds and flags of `GCBulkRootEdge`.
const ROOT_KIND_STACK: u8 = 0;
const ROOT_KIND_FINALIZER: u8 = 1;
const ROOT_KIND_HANDLE: u8 = 2;
const ROOT_FLAG_PINNING: u32 = 1;
const ROOT_FLAG_WEAK: u32 = 2;
const ROOT_FLAG_REF_COUNTED: u32 = 8;

/// Where a root hangs in the graph: a path of category names under `[.NET Roots]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootCategory {
    /// `[local vars]`
    LocalVars,
    /// `[other roots]/[COM/WinRT Objects]`
    Com,
    /// `[other roots]/[finalizer Handles]`
    Finalizer,
    /// `[other roots]/[pinning Handles]`
    Pinning,
    /// `[other roots]/[strong Handles]`
    Strong,
    /// `[other roots]/[other Handles]`
    OtherHandles,
    /// `[other roots]/[Dependent Handles]`
    Dependent,
    /// `[static vars]`
    Statics,
}

impl RootCategory {
    fn path(self) -> &'static [&'static str] {
        match self {
            RootCategory::LocalVars => &["[local vars]"],
            RootCategory::Com => &["[other roots]", "[COM/WinRT Objects]"],
            RootCategory::Finalizer => &["[other roots]", "[finalizer Handles]"],
            RootCategory::Pinning => &["[other roots]", "[pinning Handles]"],
            RootCategory::Strong => &["[other roots]", "[strong Handles]"],
            RootCategory::OtherHandles => &["[other roots]", "[other Handles]"],
            RootCategory::Dependent => &["[other roots]", "[Dependent Handles]"],
            RootCategory::Statics => &["[static vars]"],
        }
    }
}

/// One object as `GCBulkNode` describes it.
#[derive(Debug, Clone, Copy)]
struct RawNode {
    address: u64,
    size: u64,
    type_id: u64,
    edges: u32,
}

/// Where the heap walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Waiting for the induced gen-2 GC to start.
    Waiting,
    /// Inside GC number `gc`.
    Inside { gc: u32 },
    /// The GC ended: the graph is complete.
    Done,
}

/// What the heap walk counted, for logs and errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkCounts {
    /// Objects described.
    pub nodes: u64,
    /// References described.
    pub edges: u64,
    /// Roots described (weak ones left out).
    pub roots: u64,
    /// Types described.
    pub types: u64,
    /// Events of the heap walk whose payload did not fit its layout.
    pub malformed: u64,
}

/// Collects the heap walk's events; see the module documentation.
#[derive(Debug)]
pub struct HeapBuilder {
    /// Metadata id → event id, for the runtime provider's events only.
    runtime_events: HashMap<u32, u32>,
    /// Type id → (name, module id).
    types: HashMap<u64, (String, u64)>,
    walk: Walk,
    nodes: Vec<RawNode>,
    edges: Vec<u64>,
    roots: Vec<(RootCategory, u64)>,
    counts: WalkCounts,
    /// The first inconsistency in the walk's events, if any.
    error: Option<String>,
    next_node_block: Option<u32>,
    next_edge_block: Option<u32>,
}

impl Default for HeapBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapBuilder {
    /// A builder waiting for the GC.
    pub fn new() -> Self {
        HeapBuilder {
            runtime_events: HashMap::new(),
            types: HashMap::new(),
            walk: Walk::Waiting,
            nodes: Vec::new(),
            edges: Vec::new(),
            roots: Vec::new(),
            counts: WalkCounts::default(),
            error: None,
            next_node_block: None,
            next_edge_block: None,
        }
    }

    /// True once the heap-walking GC ended.
    pub fn is_done(&self) -> bool {
        self.walk == Walk::Done
    }

    /// True once the heap-walking GC started.
    pub fn has_started(&self) -> bool {
        self.walk != Walk::Waiting
    }

    /// What was counted so far.
    pub fn counts(&self) -> WalkCounts {
        self.counts
    }

    /// Takes one record of the trace. Returns true when this record ended the heap walk.
    pub fn on_record(&mut self, record: NettraceRecord<'_>) -> bool {
        match record {
            NettraceRecord::Metadata(bytes) => {
                if let Ok(metadata) = EventMetadata::parse(bytes)
                    && metadata.provider == RUNTIME_PROVIDER
                {
                    self.runtime_events.insert(metadata.id, metadata.event_id);
                }
                false
            }
            NettraceRecord::Event {
                metadata_id,
                payload,
            } => {
                let Some(&event_id) = self.runtime_events.get(&metadata_id) else {
                    return false;
                };
                let was_done = self.is_done();
                if self.on_event(event_id, payload).is_none() && self.walk != Walk::Waiting {
                    self.counts.malformed += 1;
                    if self.error.is_none() {
                        self.error = Some(format!(
                            "a heap-walk event (runtime event {event_id}) does not fit its layout"
                        ));
                    }
                }
                !was_done && self.is_done()
            }
        }
    }

    fn on_event(&mut self, event_id: u32, payload: &[u8]) -> Option<()> {
        let mut r = Payload::new(payload);
        match event_id {
            event::BULK_TYPE => self.on_types(&mut r),
            event::GC_START => {
                let count = r.u32()?;
                let depth = r.u32()?;
                let reason = r.u32()?;
                let gc_type = r.u32()?;
                if self.walk == Walk::Waiting
                    && depth == 2
                    && reason == REASON_INDUCED
                    && gc_type == TYPE_NON_CONCURRENT
                {
                    self.walk = Walk::Inside { gc: count };
                }
                Some(())
            }
            event::GC_STOP => {
                let count = r.u32()?;
                if self.walk == (Walk::Inside { gc: count }) {
                    if self.nodes.is_empty() && self.roots.is_empty() {
                        // An induced GC without a heap walk (someone else's): wait for ours.
                        self.walk = Walk::Waiting;
                    } else {
                        self.walk = Walk::Done;
                    }
                }
                Some(())
            }
            _ if !matches!(self.walk, Walk::Inside { .. }) => Some(()),
            event::BULK_NODE => {
                let index = r.u32()?;
                let count = r.u32()?;
                r.u16()?;
                self.check_block("GCBulkNode", index, true);
                for _ in 0..count {
                    let address = r.u64()?;
                    let size = r.u64()?;
                    let type_id = r.u64()?;
                    let edges = u32::try_from(r.u64()?).ok()?;
                    self.nodes.push(RawNode {
                        address,
                        size,
                        type_id,
                        edges,
                    });
                }
                self.counts.nodes += u64::from(count);
                Some(())
            }
            event::BULK_EDGE => {
                let index = r.u32()?;
                let count = r.u32()?;
                r.u16()?;
                self.check_block("GCBulkEdge", index, false);
                for _ in 0..count {
                    let target = r.u64()?;
                    r.u32()?; // referencing field id
                    self.edges.push(target);
                }
                self.counts.edges += u64::from(count);
                Some(())
            }
            event::BULK_ROOT_EDGE => {
                r.u32()?; // index
                let count = r.u32()?;
                r.u16()?;
                for _ in 0..count {
                    let address = r.u64()?;
                    let kind = r.u8()?;
                    let flags = r.u32()?;
                    r.u64()?; // root id
                    if flags & ROOT_FLAG_WEAK != 0 {
                        continue;
                    }
                    let category = if kind == ROOT_KIND_STACK {
                        RootCategory::LocalVars
                    } else if flags & ROOT_FLAG_REF_COUNTED != 0 {
                        RootCategory::Com
                    } else if kind == ROOT_KIND_FINALIZER {
                        RootCategory::Finalizer
                    } else if kind == ROOT_KIND_HANDLE {
                        if flags == ROOT_FLAG_PINNING {
                            RootCategory::Pinning
                        } else {
                            RootCategory::Strong
                        }
                    } else {
                        RootCategory::OtherHandles
                    };
                    self.roots.push((category, address));
                    self.counts.roots += 1;
                }
                Some(())
            }
            event::BULK_ROOT_CWT_EDGE => {
                r.u32()?; // index
                let count = r.u32()?;
                r.u16()?;
                for _ in 0..count {
                    let key = r.u64()?;
                    let value = r.u64()?;
                    r.u64()?; // root id
                    if key != 0 {
                        self.roots.push((RootCategory::Dependent, value));
                        self.counts.roots += 1;
                    }
                }
                Some(())
            }
            event::BULK_ROOT_STATIC_VAR => {
                let count = r.u32()?;
                r.u64()?; // app domain
                r.u16()?;
                for _ in 0..count {
                    r.u64()?; // root id
                    let object = r.u64()?;
                    r.u64()?; // type id
                    r.u32()?; // flags
                    r.skip_utf16z()?; // field name
                    if object != 0 {
                        self.roots.push((RootCategory::Statics, object));
                        self.counts.roots += 1;
                    }
                }
                Some(())
            }
            _ => Some(()),
        }
    }

    fn check_block(&mut self, what: &str, index: u32, nodes: bool) {
        let expected = if nodes {
            &mut self.next_node_block
        } else {
            &mut self.next_edge_block
        };
        if let Some(expected) = *expected
            && index != expected
            && self.error.is_none()
        {
            self.error = Some(format!(
                "{what} event {index} arrived where event {expected} was expected: the runtime dropped heap-walk events (its buffer was full)"
            ));
        }
        *expected = Some(index.wrapping_add(1));
    }

    fn on_types(&mut self, r: &mut Payload<'_>) -> Option<()> {
        let count = r.u32()?;
        r.u16()?;
        for _ in 0..count {
            let type_id = r.u64()?;
            let module_id = r.u64()?;
            let name_id = r.u32()?;
            let flags = r.u32()?;
            r.u8()?; // CorElementType
            let mut name = r.utf16z()?;
            let parameters = r.u32()?;
            r.skip(usize::try_from(parameters).ok()?.checked_mul(8)?)?;
            if name.is_empty() {
                name = if flags & 8 != 0 {
                    format!("ArrayType(0x{name_id:x})")
                } else {
                    format!("Type(0x{name_id:x})")
                };
            }
            self.types.insert(type_id, (name, module_id));
            self.counts.types += 1;
        }
        Some(())
    }

    /// Turns the walk into a graph. Fails if the walk did not end, or its events do not fit
    /// together (missing or extra edges, dropped events, an object described twice).
    pub fn finish(self) -> Result<MemoryGraph, String> {
        if self.walk != Walk::Done {
            return Err(if self.walk == Walk::Waiting {
                "the runtime did not start the heap-walking GC".to_owned()
            } else {
                "the heap-walking GC did not end".to_owned()
            });
        }
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut builder = GraphBuilder::new(self.nodes.len());
        let root = builder.graph.create_node(0);
        let mut categories = Categories::default();
        for &(category, address) in &self.roots {
            let object = builder.node_for(address);
            categories.add(&mut builder.graph, category, object);
        }
        let mut edges = self.edges.iter();
        let mut children = Vec::new();
        for node in &self.nodes {
            let index = builder.node_for(node.address);
            children.clear();
            for _ in 0..node.edges {
                let Some(&target) = edges.next() else {
                    return Err(format!(
                        "the runtime's edge events end before the references of the object at 0x{:x}",
                        node.address
                    ));
                };
                children.push(builder.node_for(target));
            }
            let type_index = builder.type_for(&self.types, node.type_id, node.size);
            if builder.graph.is_defined(index) {
                return Err(format!(
                    "the object at 0x{:x} is described twice",
                    node.address
                ));
            }
            builder
                .graph
                .set_node(index, type_index, node.size, &children)
                .map_err(|error| error.to_string())?;
        }
        if edges.next().is_some() {
            return Err("the runtime described more references than its objects have".to_owned());
        }
        categories
            .build(&mut builder.graph, root)
            .map_err(|error: FormatError| error.to_string())?;
        builder.graph.root = root;
        Ok(builder.graph)
    }
}

/// A fast hasher for object addresses (8-byte aligned integers the runtime chose, not input an
/// attacker picks per entry): the address's bits mixed by one multiplication.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (value ^ (value >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 32;
    }
}

/// The graph under construction, with the address → node and type id → type tables.
struct GraphBuilder {
    graph: MemoryGraph,
    by_address: HashMap<u64, u32, BuildHasherDefault<AddressHasher>>,
    by_type_id: HashMap<u64, u32>,
    by_name: HashMap<String, u32>,
}

impl GraphBuilder {
    fn new(nodes: usize) -> Self {
        let mut graph = MemoryGraph::new();
        graph.labels.reserve(nodes + 16);
        graph.addresses.reserve(nodes + 16);
        graph.blob.reserve(nodes * 4);
        GraphBuilder {
            graph,
            by_address: HashMap::with_capacity_and_hasher(nodes, BuildHasherDefault::default()),
            by_type_id: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    fn node_for(&mut self, address: u64) -> u32 {
        let graph = &mut self.graph;
        *self
            .by_address
            .entry(address)
            .or_insert_with(|| graph.create_node(address))
    }

    fn interned(&mut self, name: String, module: Option<String>) -> u32 {
        let key = match &module {
            Some(module) => format!("{module}!{name}"),
            None => name.clone(),
        };
        if let Some(&index) = self.by_name.get(&key) {
            return index;
        }
        let index = self.graph.create_type(name, module);
        self.by_name.insert(key, index);
        index
    }

    fn type_for(&mut self, types: &HashMap<u64, (String, u64)>, type_id: u64, size: u64) -> u32 {
        let base = match self.by_type_id.get(&type_id) {
            Some(&index) => index,
            None => {
                let index = match types.get(&type_id) {
                    Some((name, module)) => {
                        self.interned(display_name(name), Some(format!("Module(0x{module:x})")))
                    }
                    None => self.interned(format!("UNKNOWN 0x{type_id:x}"), None),
                };
                self.by_type_id.insert(type_id, index);
                index
            }
        };
        let suffix = size_suffix(size);
        if suffix.is_empty() {
            return base;
        }
        let Some(entry) = self.graph.types.get(base as usize) else {
            return base;
        };
        let (name, module) = (format!("{}{suffix}", entry.name), entry.module.clone());
        self.interned(name, module)
    }
}

/// The root categories' pseudo-nodes, created as roots of each kind appear.
#[derive(Default)]
struct Categories {
    /// Name path → (node, category children in order, object children).
    nodes: Vec<(Vec<&'static str>, u32, Vec<u32>)>,
}

impl Categories {
    fn find_or_create(&mut self, graph: &mut MemoryGraph, path: &[&'static str]) -> usize {
        if let Some(position) = self.nodes.iter().position(|(p, _, _)| p == path) {
            return position;
        }
        let parent = (path.len() > 1).then(|| self.find_or_create(graph, &path[..path.len() - 1]));
        let node = graph.create_node(0);
        if let Some(parent) = parent
            && let Some(entry) = self.nodes.get_mut(parent)
        {
            entry.2.push(node);
        }
        self.nodes.push((path.to_vec(), node, Vec::new()));
        self.nodes.len() - 1
    }

    fn add(&mut self, graph: &mut MemoryGraph, category: RootCategory, object: u32) {
        let position = self.find_or_create(graph, category.path());
        if let Some(entry) = self.nodes.get_mut(position) {
            entry.2.push(object);
        }
    }

    fn build(self, graph: &mut MemoryGraph, root: u32) -> Result<(), FormatError> {
        let mut types: HashMap<&'static str, u32> = HashMap::new();
        let mut type_of = |graph: &mut MemoryGraph, name: &'static str| {
            *types
                .entry(name)
                .or_insert_with(|| graph.create_type(name.to_owned(), None))
        };
        let top: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(path, _, _)| path.len() == 1)
            .map(|(_, node, _)| *node)
            .collect();
        let root_type = type_of(graph, "[.NET Roots]");
        graph.set_node(root, root_type, 0, &top)?;
        for (path, node, children) in self.nodes {
            let name = path.last().copied().unwrap_or("[other roots]");
            let ty = type_of(graph, name);
            graph.set_node(node, ty, 0, &children)?;
        }
        Ok(())
    }
}

/// A type name as TraceEvent shows it: generic arity (`` `1 ``) removed, `[`/`]` as `<`/`>`,
/// and array brackets back as `[]`.
pub fn display_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if chars.peek().is_some_and(|next| next.is_ascii_digit()) => {
                while chars.peek().is_some_and(|next| next.is_ascii_digit()) {
                    chars.next();
                }
            }
            '[' => out.push('<'),
            ']' => out.push('>'),
            other => out.push(other),
        }
    }
    out.replace("<>", "[]")
}

/// The size-range suffix of an object over 1,000 bytes.
pub fn size_suffix(size: u64) -> &'static str {
    match size {
        0..=1000 => "",
        1001..=9_999 => " (Bytes > 1K)",
        10_000..=99_999 => " (Bytes > 10K)",
        100_000..=999_999 => " (Bytes > 100K)",
        1_000_000..=9_999_999 => " (Bytes > 1M)",
        10_000_000..=99_999_999 => " (Bytes > 10M)",
        _ => " (Bytes > 100M)",
    }
}

/// A bounds-checked little-endian payload reader.
struct Payload<'a> {
    bytes: &'a [u8],
}

impl<'a> Payload<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Payload { bytes }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn utf16z(&mut self) -> Option<String> {
        let end = self.bytes.chunks_exact(2).position(|unit| unit == [0, 0])? * 2;
        let units: Vec<u16> = self
            .take(end)?
            .chunks_exact(2)
            .map(|unit| u16::from_le_bytes([unit[0], unit[1]]))
            .collect();
        self.skip(2)?;
        Some(String::from_utf16_lossy(&units))
    }

    fn skip_utf16z(&mut self) -> Option<()> {
        let end = self.bytes.chunks_exact(2).position(|unit| unit == [0, 0])? * 2;
        self.skip(end + 2)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Payload builders for the heap-walk events (64-bit layouts).
    pub(crate) fn gc_start(count: u32, depth: u32, reason: u32) -> Vec<u8> {
        let mut p = Vec::new();
        for v in [count, depth, reason, TYPE_NON_CONCURRENT] {
            p.extend(v.to_le_bytes());
        }
        p.extend(1u16.to_le_bytes());
        p.extend(0u64.to_le_bytes());
        p
    }

    pub(crate) fn gc_stop(count: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(count.to_le_bytes());
        p.extend(2u32.to_le_bytes());
        p.extend(1u16.to_le_bytes());
        p
    }

    pub(crate) fn bulk_type(types: &[(u64, &str)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend((types.len() as u32).to_le_bytes());
        p.extend(1u16.to_le_bytes());
        for (id, name) in types {
            p.extend(id.to_le_bytes());
            p.extend(0x7700u64.to_le_bytes());
            p.extend(0u32.to_le_bytes());
            p.extend(0u32.to_le_bytes());
            p.push(0x12);
            for unit in name.encode_utf16() {
                p.extend(unit.to_le_bytes());
            }
            p.extend([0, 0]);
            p.extend(0u32.to_le_bytes());
        }
        p
    }

    pub(crate) fn bulk_node(index: u32, nodes: &[(u64, u64, u64, u64)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(index.to_le_bytes());
        p.extend((nodes.len() as u32).to_le_bytes());
        p.extend(1u16.to_le_bytes());
        for (address, size, type_id, edges) in nodes {
            for v in [address, size, type_id, edges] {
                p.extend(v.to_le_bytes());
            }
        }
        p
    }

    pub(crate) fn bulk_edge(index: u32, targets: &[u64]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(index.to_le_bytes());
        p.extend((targets.len() as u32).to_le_bytes());
        p.extend(1u16.to_le_bytes());
        for target in targets {
            p.extend(target.to_le_bytes());
            p.extend(0u32.to_le_bytes());
        }
        p
    }

    pub(crate) fn bulk_root(roots: &[(u64, u8, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(0u32.to_le_bytes());
        p.extend((roots.len() as u32).to_le_bytes());
        p.extend(1u16.to_le_bytes());
        for (address, kind, flags) in roots {
            p.extend(address.to_le_bytes());
            p.push(*kind);
            p.extend(flags.to_le_bytes());
            p.extend(0u64.to_le_bytes());
        }
        p
    }

    fn metadata(id: u32, event_id: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(id.to_le_bytes());
        for unit in RUNTIME_PROVIDER.encode_utf16() {
            p.extend(unit.to_le_bytes());
        }
        p.extend([0, 0]);
        p.extend(event_id.to_le_bytes());
        p.extend([0, 0]); // no name
        p.extend(0u64.to_le_bytes());
        p.extend(0u32.to_le_bytes());
        p.extend(5u32.to_le_bytes());
        p.extend(0u32.to_le_bytes()); // no fields
        p
    }

    /// Feeds `events` (event id, payload) to a builder, defining metadata first.
    pub(crate) fn feed(builder: &mut HeapBuilder, events: &[(u32, Vec<u8>)]) -> bool {
        let mut done = false;
        for id in [1, 2, 15, 16, 17, 18, 19, 38] {
            builder.on_record(NettraceRecord::Metadata(&metadata(id + 100, id)));
        }
        for (id, payload) in events {
            done |= builder.on_record(NettraceRecord::Event {
                metadata_id: id + 100,
                payload,
            });
        }
        done
    }

    #[test]
    fn a_walk_becomes_a_graph_with_roots_types_and_edges() {
        let mut builder = HeapBuilder::new();
        let done = feed(
            &mut builder,
            &[
                (
                    15,
                    bulk_type(&[(0xA, "System.Collections.Generic.List`1[System.String]")]),
                ),
                (1, gc_start(7, 1, REASON_INDUCED)), // not gen 2: ignored
                (18, bulk_node(0, &[(0x99, 24, 0xA, 0)])),
                (1, gc_start(8, 2, REASON_INDUCED)),
                (16, bulk_root(&[(0x10, 0, 0), (0x20, 2, 2), (0x20, 2, 0)])),
                (15, bulk_type(&[(0xB, "System.Byte[]")])),
                (
                    18,
                    bulk_node(
                        0,
                        &[(0x10, 32, 0xA, 2), (0x20, 5000, 0xB, 0), (0x30, 40, 0xC, 1)],
                    ),
                ),
                (19, bulk_edge(0, &[0x20, 0x30])),
                (19, bulk_edge(1, &[0x10])),
                (2, gc_stop(8)),
            ],
        );
        assert!(done);
        assert_eq!(builder.counts().nodes, 3);
        assert_eq!(builder.counts().roots, 2, "the weak root is left out");
        let graph = builder.finish().unwrap();
        let name = |index: u32| {
            let node = graph.node(index).unwrap();
            graph.types[node.type_index as usize].name.clone()
        };
        assert_eq!(name(graph.root), "[.NET Roots]");
        let top = graph.node(graph.root).unwrap().children;
        let top_names: Vec<String> = top.iter().map(|&n| name(n)).collect();
        assert_eq!(top_names, ["[local vars]", "[other roots]"]);
        let list = graph.node(top[0]).unwrap().children[0];
        assert_eq!(name(list), "System.Collections.Generic.List<System.String>");
        assert_eq!(graph.addresses[list as usize], 0x10);
        let children = graph.node(list).unwrap().children;
        assert_eq!(name(children[0]), "System.Byte[] (Bytes > 1K)");
        assert_eq!(graph.node(children[0]).unwrap().size, 5000);
        assert_eq!(name(children[1]), "UNKNOWN 0xc");
        assert_eq!(graph.node(children[1]).unwrap().children, [list]);
        assert_eq!(graph.total_size, 32 + 5000 + 40);
    }

    #[test]
    fn missing_edges_and_dropped_blocks_are_errors() {
        let mut builder = HeapBuilder::new();
        feed(
            &mut builder,
            &[
                (1, gc_start(3, 2, REASON_INDUCED)),
                (16, bulk_root(&[(0x10, 0, 0)])),
                (18, bulk_node(0, &[(0x10, 32, 0xA, 2)])),
                (19, bulk_edge(0, &[0x20])),
                (2, gc_stop(3)),
            ],
        );
        let error = builder.finish().unwrap_err();
        assert!(error.contains("edge events end"), "{error}");

        let mut builder = HeapBuilder::new();
        feed(
            &mut builder,
            &[
                (1, gc_start(3, 2, REASON_INDUCED)),
                (18, bulk_node(0, &[(0x10, 32, 0xA, 0)])),
                (18, bulk_node(2, &[(0x20, 32, 0xA, 0)])),
                (2, gc_stop(3)),
            ],
        );
        let error = builder.finish().unwrap_err();
        assert!(error.contains("dropped"), "{error}");

        let mut builder = HeapBuilder::new();
        feed(&mut builder, &[(1, gc_start(3, 2, REASON_INDUCED))]);
        assert!(builder.finish().unwrap_err().contains("did not end"));
    }

    #[test]
    fn type_names_read_as_traceevent_shows_them() {
        assert_eq!(display_name("System.Int32[]"), "System.Int32[]");
        assert_eq!(
            display_name("System.Collections.Generic.Dictionary`2[System.String,System.Int32][]"),
            "System.Collections.Generic.Dictionary<System.String,System.Int32>[]"
        );
        assert_eq!(size_suffix(1000), "");
        assert_eq!(size_suffix(10_000), " (Bytes > 10K)");
    }
}
