//! Retained sizes from the graph's dominator tree.
//!
//! Node `d` dominates node `n` when every path from the root to `n` passes through `d`: freeing
//! `d` frees `n`. The retained size of a node is its size plus the sizes of the nodes it
//! dominates. The dominators are computed iteratively over a reverse postorder of the nodes
//! reachable from the root (each node's dominator is the nearest common dominator of its
//! predecessors), until nothing changes.
//!
//! Per type, the retained size is the sum of the retained sizes of the type's objects that no
//! other object of the same type dominates (so nothing is counted twice): the bytes that are kept
//! alive only through one object of the type. It is a lower bound of what freeing every object of
//! the type would free (an object kept alive by two of them is dominated by neither).

use super::format::{FormatError, MemoryGraph};

const NONE: u32 = u32::MAX;

/// What the dominator tree gives a report.
#[derive(Debug)]
pub struct Retention {
    /// The retained size of each type (indexed like [`MemoryGraph::types`]).
    pub by_type: Vec<u64>,
    /// Whether each node is reachable from the root. Objects that are not (a heap walk that
    /// dumps whole segments lists dead objects too) retain nothing.
    pub reachable: Vec<bool>,
}

/// The retained size of each type, and which nodes the root reaches.
pub fn retained_by_type(graph: &MemoryGraph) -> Result<Retention, FormatError> {
    let n = graph.node_count();
    let mut offsets = Vec::with_capacity(n + 1);
    let mut targets: Vec<u32> = Vec::new();
    let mut sizes = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for index in 0..n as u32 {
        let node = graph.node(index)?;
        offsets.push(targets.len());
        targets.extend(node.children);
        sizes.push(node.size.max(0) as u64);
        types.push(node.type_index);
    }
    offsets.push(targets.len());
    let children = |node: u32| {
        let node = node as usize;
        &targets[offsets[node]..offsets[node + 1]]
    };
    let mut retained_types = vec![0u64; graph.types.len()];
    let root = graph.root;
    if root as usize >= n {
        return Ok(Retention {
            by_type: retained_types,
            reachable: vec![false; n],
        });
    }

    // Postorder of the reachable nodes (iterative depth-first search).
    let mut order = vec![NONE; n];
    let mut post: Vec<u32> = Vec::new();
    let mut visited = vec![false; n];
    visited[root as usize] = true;
    let mut stack: Vec<(u32, usize)> = vec![(root, 0)];
    while let Some(top) = stack.last_mut() {
        let (node, next) = *top;
        if let Some(&child) = children(node).get(next) {
            top.1 += 1;
            if !visited[child as usize] {
                visited[child as usize] = true;
                stack.push((child, 0));
            }
        } else {
            order[node as usize] = post.len() as u32;
            post.push(node);
            stack.pop();
        }
    }
    let m = post.len();

    // Predecessors of the reachable nodes, by postorder number.
    let mut pred_offsets = vec![0usize; m + 1];
    for &node in &post {
        for &child in children(node) {
            pred_offsets[order[child as usize] as usize + 1] += 1;
        }
    }
    for index in 0..m {
        pred_offsets[index + 1] += pred_offsets[index];
    }
    let mut fill = pred_offsets.clone();
    let mut preds = vec![0u32; pred_offsets[m]];
    for (po, &node) in post.iter().enumerate() {
        for &child in children(node) {
            let slot = &mut fill[order[child as usize] as usize];
            preds[*slot] = po as u32;
            *slot += 1;
        }
    }

    // Immediate dominators, as postorder numbers (the root has the highest).
    let root_po = (m - 1) as u32;
    let mut idom = vec![NONE; m];
    idom[root_po as usize] = root_po;
    let intersect = |idom: &[u32], mut a: u32, mut b: u32| {
        while a != b {
            while a < b {
                a = idom[a as usize];
            }
            while b < a {
                b = idom[b as usize];
            }
        }
        a
    };
    loop {
        let mut changed = false;
        for po in (0..root_po).rev() {
            let mut new = NONE;
            for &pred in &preds[pred_offsets[po as usize]..pred_offsets[po as usize + 1]] {
                if idom[pred as usize] == NONE {
                    continue;
                }
                new = if new == NONE {
                    pred
                } else {
                    intersect(&idom, pred, new)
                };
            }
            if new != NONE && idom[po as usize] != new {
                idom[po as usize] = new;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    // Retained sizes: a dominated node comes before its dominator in postorder.
    let mut retained: Vec<u64> = post.iter().map(|&node| sizes[node as usize]).collect();
    for po in 0..root_po as usize {
        let parent = idom[po] as usize;
        retained[parent] += retained[po];
    }

    // Per type: the topmost objects of each type in the dominator tree.
    let mut tree_offsets = vec![0usize; m + 1];
    for po in 0..root_po as usize {
        tree_offsets[idom[po] as usize + 1] += 1;
    }
    for index in 0..m {
        tree_offsets[index + 1] += tree_offsets[index];
    }
    let mut fill = tree_offsets.clone();
    let mut tree = vec![0u32; tree_offsets[m]];
    for po in 0..root_po as usize {
        let slot = &mut fill[idom[po] as usize];
        tree[*slot] = po as u32;
        *slot += 1;
    }
    let mut active = vec![0u32; graph.types.len()];
    let mut walk: Vec<(u32, usize)> = vec![(root_po, 0)];
    enter(
        root_po,
        &post,
        &types,
        &retained,
        &mut active,
        &mut retained_types,
    );
    while let Some(top) = walk.last_mut() {
        let (po, next) = *top;
        let range = tree_offsets[po as usize]..tree_offsets[po as usize + 1];
        if let Some(&child) = tree[range].get(next) {
            top.1 += 1;
            enter(
                child,
                &post,
                &types,
                &retained,
                &mut active,
                &mut retained_types,
            );
            walk.push((child, 0));
        } else {
            let ty = types[post[po as usize] as usize] as usize;
            active[ty] -= 1;
            walk.pop();
        }
    }
    Ok(Retention {
        by_type: retained_types,
        reachable: visited,
    })
}

fn enter(
    po: u32,
    post: &[u32],
    types: &[u32],
    retained: &[u64],
    active: &mut [u32],
    retained_types: &mut [u64],
) {
    let ty = types[post[po as usize] as usize] as usize;
    if active[ty] == 0 {
        retained_types[ty] += retained[po as usize];
    }
    active[ty] += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_sizes_follow_the_dominator_tree() {
        // root → a, root → b; a → c, b → c (shared); a → d → e; d → a (a cycle); e of type A too.
        let mut graph = MemoryGraph::new();
        let root = graph.create_node(0);
        let [a, b, c, d, e] = [1, 2, 3, 4, 5].map(|address| graph.create_node(address));
        let roots = graph.create_type("[.NET Roots]".into(), None);
        let ta = graph.create_type("A".into(), None);
        let tb = graph.create_type("B".into(), None);
        let tc = graph.create_type("C".into(), None);
        let td = graph.create_type("D".into(), None);
        graph.set_node(root, roots, 0, &[a, b]).unwrap();
        graph.set_node(a, ta, 10, &[c, d]).unwrap();
        graph.set_node(b, tb, 20, &[c]).unwrap();
        graph.set_node(c, tc, 40, &[]).unwrap();
        graph.set_node(d, td, 80, &[e, a]).unwrap();
        graph.set_node(e, ta, 160, &[]).unwrap();
        graph.root = root;
        let retention = retained_by_type(&graph).unwrap();
        assert!(retention.reachable.iter().all(|&reachable| reachable));
        let retained = retention.by_type;
        // a dominates d and e (not c, shared with b); e is under a, so A counts a's subtree once.
        assert_eq!(retained[ta as usize], 10 + 80 + 160);
        assert_eq!(retained[tb as usize], 20);
        assert_eq!(retained[tc as usize], 40);
        assert_eq!(retained[td as usize], 80 + 160);
        assert_eq!(retained[roots as usize], 10 + 20 + 40 + 80 + 160);
    }
}
