//! Printing the plan and the memory estimate the seed asks for with `--sync-parallel`.

use std::fmt::Write;

use rsm_cluster::Role;

use crate::discover::Plan;

/// Memory the engine may hold per shard in full sync before spilling to disk
/// (the spool), plus the writer's in-flight window. Kept in step with the engine.
pub const SPOOL_MEMORY_PER_SHARD: u64 = rsm_engine::shard::DEFAULT_SPOOL_MEMORY as u64;
pub const WRITER_WINDOW_PER_SHARD: u64 = rsm_writer::DEFAULT_MAX_BUFFERED_BYTES as u64;

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The plan as printed by `--dry-run` and at start.
pub fn render(plan: &Plan, parallel: usize, big_key_size: Option<u64>) -> String {
    let mut out = String::new();
    let kind = if plan.source_is_cluster {
        "cluster"
    } else {
        "standalone server"
    };
    let target_kind = if plan.target.cluster {
        "cluster"
    } else {
        "standalone/proxy"
    };
    let _ = writeln!(
        out,
        "source: {kind} with {} shard(s); target: {} ({target_kind}, {})",
        plan.shards.len(),
        plan.target.endpoint,
        plan.target.version
    );
    for s in &plan.shards {
        let role = match s.role {
            Role::Master => "master",
            Role::Slave => "slave",
        };
        let _ = writeln!(
            out,
            "shard {:<3} slots {:<24} {:<22} {:<6} used_memory {:>10}  keys {}",
            s.serial,
            rsm_cluster::display_ranges(&s.slots),
            s.node.to_string(),
            role,
            s.used_memory.map(human_bytes).unwrap_or_else(|| "?".into()),
            s.keys.map(|k| k.to_string()).unwrap_or_else(|| "?".into()),
        );
    }
    for s in &plan.shards {
        if let Some(w) = &s.warning {
            let _ = writeln!(out, "warning: shard {}: {w}", s.serial);
        }
    }
    let mut sizes: Vec<u64> = plan
        .shards
        .iter()
        .map(|s| s.used_memory.unwrap_or(0))
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let n = parallel.min(plan.shards.len());
    let fork_worst: u64 = sizes.iter().take(n).sum();
    let tool = n as u64 * SPOOL_MEMORY_PER_SHARD
        + plan.shards.len() as u64 * WRITER_WINDOW_PER_SHARD
        // One value held whole per shard in full sync (in the decoder, then as a payload).
        + big_key_size
            .unwrap_or(rsm_writer::HELD_WHOLE)
            .min(512 << 20)
            * n as u64;
    let _ = writeln!(
        out,
        "memory estimate with --sync-parallel={parallel}: source up to {} extra while {n} shard(s) fork for BGSAVE at once \
         (copy-on-write worst case: the {n} largest used_memory); this tool up to {} \
         ({} spool per shard in full sync, then disk; {} write window per shard)",
        human_bytes(fork_worst),
        human_bytes(tool),
        human_bytes(SPOOL_MEMORY_PER_SHARD),
        human_bytes(WRITER_WINDOW_PER_SHARD),
    );
    out
}
