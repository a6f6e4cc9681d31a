//! The heap report: per type, how many objects and how many bytes, sorted by size — what
//! `dotnet-gcdump report` prints, computed from a [`MemoryGraph`].
//!
//! `size` is shallow: the bytes of the objects themselves. `retainedSize` comes from the
//! dominator tree ([`super::dominators`]): the bytes kept alive only through one object of the
//! type, a lower bound of what freeing all of them would free.

use std::collections::HashMap;

use serde::Serialize;

use super::format::{FormatError, HeapDump, MemoryGraph, UNIX_EPOCH_TICKS};

/// One row of the report: a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeRow {
    /// The type's name as the file holds it (objects over 1,000 bytes carry a size-range
    /// suffix, e.g. `System.Byte[] (Bytes > 10K)`).
    pub name: String,
    /// Live objects of this type.
    pub count: u64,
    /// Their shallow size in bytes (the objects themselves, not what they refer to).
    pub size: u64,
    /// The bytes they dominate: their own and those of every object reachable only through one
    /// of them (a lower bound of what freeing them all would free).
    pub retained_size: u64,
}

/// The heap report of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeapReport {
    /// The process's name, if the file gives it.
    pub process_name: Option<String>,
    /// The process id.
    pub process_id: i32,
    /// When the snapshot was taken, as Unix seconds (UTC); `None` when the file does not say
    /// (dotnet-gcdump leaves it out).
    pub collected_unix_seconds: Option<i64>,
    /// Live objects.
    pub objects: u64,
    /// Their total shallow size in bytes.
    pub size: u64,
    /// References from the roots (stack, handles, statics...) to objects.
    pub root_references: u64,
    /// Objects referred to but not described by the heap walk.
    pub undescribed_objects: u64,
    /// Objects the heap walk listed that no path from the roots reaches (dead objects of a walk
    /// that dumps whole segments, or objects outside the GC heap): they retain nothing.
    pub unreachable_objects: u64,
    /// Their total shallow size in bytes.
    pub unreachable_size: u64,
    /// Types in the report.
    pub type_count: u64,
    /// The largest types by size (at most `top` when a limit was asked for), largest first.
    pub types: Vec<TypeRow>,
    /// The types left out by the limit, summed (`None` when every type is listed).
    pub other_types: Option<OtherTypes>,
    /// What `size` counts: `"shallow"`.
    pub size_kind: String,
    /// What `retainedSize` counts: `"dominated"` (from the dominator tree of the graph).
    pub retained_size_kind: String,
}

/// The types a limited report leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtherTypes {
    /// How many types.
    pub types: u64,
    /// Their objects.
    pub count: u64,
    /// Their shallow size in bytes.
    pub size: u64,
}

/// Computes the report of `dump`, listing at most `top` types (all when `None`).
pub fn report(dump: &HeapDump, top: Option<usize>) -> Result<HeapReport, FormatError> {
    let graph = &dump.graph;
    let PerType {
        mut rows,
        objects,
        size,
        undescribed,
        unreachable_objects,
        unreachable_size,
    } = per_type(graph)?;
    rows.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then(b.count.cmp(&a.count))
            .then(a.name.cmp(&b.name))
    });
    let type_count = rows.len() as u64;
    let other_types = match top {
        Some(top) if top < rows.len() => {
            let rest = rows.split_off(top);
            Some(OtherTypes {
                types: rest.len() as u64,
                count: rest.iter().map(|row| row.count).sum(),
                size: rest.iter().map(|row| row.size).sum(),
            })
        }
        _ => None,
    };
    Ok(HeapReport {
        process_name: dump.process_name.clone(),
        process_id: dump.process_id,
        collected_unix_seconds: (dump.time_collected_ticks > 0)
            .then(|| dump.time_collected_ticks.saturating_sub(UNIX_EPOCH_TICKS) / 10_000_000),
        objects,
        size,
        root_references: root_references(graph)?,
        undescribed_objects: undescribed,
        unreachable_objects,
        unreachable_size,
        type_count,
        types: rows,
        other_types,
        size_kind: "shallow".to_owned(),
        retained_size_kind: "dominated".to_owned(),
    })
}

/// The objects of a graph, grouped by type name.
struct PerType {
    rows: Vec<TypeRow>,
    objects: u64,
    size: u64,
    undescribed: u64,
    unreachable_objects: u64,
    unreachable_size: u64,
}

/// Objects (nodes with an address) grouped by type name.
fn per_type(graph: &MemoryGraph) -> Result<PerType, FormatError> {
    let retention = super::dominators::retained_by_type(graph)?;
    let mut by_type: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut undescribed = 0u64;
    let (mut unreachable_objects, mut unreachable_size) = (0u64, 0u64);
    for index in 0..graph.node_count() as u32 {
        if graph.addresses.get(index as usize).copied().unwrap_or(0) == 0 {
            continue; // a root pseudo-node
        }
        if !graph.is_defined(index) {
            undescribed += 1;
            continue;
        }
        let (type_index, size) = graph.type_and_size(index)?;
        if !retention
            .reachable
            .get(index as usize)
            .copied()
            .unwrap_or(false)
        {
            unreachable_objects += 1;
            unreachable_size += size.max(0) as u64;
        }
        let entry = by_type.entry(type_index).or_default();
        entry.0 += 1;
        entry.1 += size.max(0) as u64;
    }
    let retained = retention.by_type;
    let mut by_name: HashMap<&str, (u64, u64, u64)> = HashMap::new();
    for (type_index, (count, size)) in by_type {
        let name = graph
            .types
            .get(type_index as usize)
            .map_or("UNDEFINED", |entry| entry.name.as_str());
        let entry = by_name.entry(name).or_default();
        entry.0 += count;
        entry.1 += size;
        entry.2 += retained.get(type_index as usize).copied().unwrap_or(0);
    }
    let objects = by_name.values().map(|(count, _, _)| count).sum();
    let size = by_name.values().map(|(_, size, _)| size).sum();
    let rows = by_name
        .into_iter()
        .map(|(name, (count, size, retained_size))| TypeRow {
            name: name.to_owned(),
            count,
            size,
            retained_size,
        })
        .collect();
    Ok(PerType {
        rows,
        objects,
        size,
        undescribed,
        unreachable_objects,
        unreachable_size,
    })
}

/// The references from root pseudo-nodes (no address) to objects (an address).
fn root_references(graph: &MemoryGraph) -> Result<u64, FormatError> {
    let mut count = 0;
    let mut pending = vec![graph.root];
    let mut seen = std::collections::HashSet::new();
    while let Some(index) = pending.pop() {
        if !seen.insert(index) {
            continue;
        }
        for child in graph.node(index)?.children {
            if graph.addresses.get(child as usize).copied().unwrap_or(0) == 0 {
                pending.push(child);
            } else {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The report as text, in `dotnet-gcdump report`'s layout: size, count, type.
pub fn render(report: &HeapReport) -> String {
    let mut out = String::new();
    let process = match (&report.process_name, report.process_id) {
        (Some(name), pid) => format!("process {pid} ({name})"),
        (None, 0) => "a process the file does not name".to_owned(),
        (None, pid) => format!("process {pid}"),
    };
    out.push_str(&format!(
        "Heap snapshot of {process}: {} objects, {} bytes (shallow sizes), {} root references\n",
        group(report.objects),
        group(report.size),
        group(report.root_references),
    ));
    out.push_str(&format!(
        "{:>16}  {:>12}  {:>18}  Type\n",
        "Size (Bytes)", "Count", "Retained (Bytes)"
    ));
    for row in &report.types {
        out.push_str(&format!(
            "{:>16}  {:>12}  {:>18}  {}\n",
            group(row.size),
            group(row.count),
            group(row.retained_size),
            row.name
        ));
    }
    if let Some(other) = &report.other_types {
        out.push_str(&format!(
            "{:>16}  {:>12}  {:>18}  ({} more types not listed)\n",
            group(other.size),
            group(other.count),
            "",
            other.types
        ));
    }
    out.push_str(
        "Size: the objects themselves. Retained: what is reachable only through one object of the type (dominator tree).\n",
    );
    if report.unreachable_objects > 0 {
        out.push_str(&format!(
            "{} objects ({} bytes) are not reachable from the roots, so they retain nothing\n",
            group(report.unreachable_objects),
            group(report.unreachable_size)
        ));
    }
    if report.undescribed_objects > 0 {
        out.push_str(&format!(
            "{} referenced objects were not described by the heap walk\n",
            report.undescribed_objects
        ));
    }
    out
}

/// `1234567` as `1,234,567`.
fn group(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::heap::HeapBuilder;
    use super::super::heap::tests::*;
    use super::*;

    #[test]
    fn the_report_counts_objects_per_type_largest_first() {
        let mut builder = HeapBuilder::new();
        feed(
            &mut builder,
            &[
                (15, bulk_type(&[(0xA, "App.Item"), (0xB, "System.String")])),
                (1, gc_start(4, 2, 1)),
                (16, bulk_root(&[(0x10, 0, 0), (0x20, 2, 0)])),
                (
                    18,
                    bulk_node(
                        0,
                        &[(0x10, 24, 0xA, 1), (0x20, 24, 0xA, 0), (0x30, 100, 0xB, 0)],
                    ),
                ),
                (19, bulk_edge(0, &[0x40])),
                (2, gc_stop(4)),
            ],
        );
        let dump = HeapDump {
            graph: builder.finish().unwrap(),
            size_of_all_segments: 0,
            collection_log: None,
            time_collected_ticks: UNIX_EPOCH_TICKS + 10_000_000,
            machine_name: None,
            process_name: Some("app".to_owned()),
            process_id: 9,
            creation_tool: None,
        };
        let full = report(&dump, None).unwrap();
        assert_eq!(full.objects, 3);
        assert_eq!(full.size, 148);
        assert_eq!(full.root_references, 2);
        assert_eq!(full.undescribed_objects, 1);
        assert_eq!(full.collected_unix_seconds, Some(1));
        // No time (dotnet-gcdump writes 0) or a corrupt one: not a date in year 1, not a panic.
        for ticks in [0, -1, i64::MIN] {
            let undated = HeapDump {
                time_collected_ticks: ticks,
                ..dump.clone()
            };
            assert_eq!(report(&undated, None).unwrap().collected_unix_seconds, None);
        }
        // The string is listed but nothing refers to it.
        assert_eq!((full.unreachable_objects, full.unreachable_size), (1, 100));
        assert!(
            render(&full).contains("1 objects (100 bytes) are not reachable from the roots"),
            "{}",
            render(&full)
        );
        assert_eq!(
            full.types,
            [
                TypeRow {
                    name: "System.String".into(),
                    count: 1,
                    size: 100,
                    retained_size: 0,
                },
                TypeRow {
                    name: "App.Item".into(),
                    count: 2,
                    size: 48,
                    retained_size: 48,
                },
            ]
        );
        assert!(full.other_types.is_none());
        let top = report(&dump, Some(1)).unwrap();
        assert_eq!(top.types.len(), 1);
        assert_eq!(
            top.other_types,
            Some(OtherTypes {
                types: 1,
                count: 2,
                size: 48
            })
        );
        let text = render(&top);
        assert!(text.contains("System.String"), "{text}");
        assert!(text.contains("1 more types not listed"), "{text}");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
