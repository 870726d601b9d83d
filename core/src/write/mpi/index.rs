//! `done()`'s global index built by every rank at once (collective), so rank 0 never merges
//! the whole run: each rank takes an equal share of the event-id range (splitters from
//! samples of every shard's ids), merges the rows of every shard in its range, and writes
//! its slice of each index and ragged-offsets file in place (see `index::slice`). Rank 0
//! only creates the files and, afterwards, stores the manifest.
//!
//! Four collectives for the whole run, whatever the number of groups: (1) every shard's
//! sorted stretches, id samples and missing-row counts, each computed by one rank (shard
//! `s` by rank `s mod P`); (2) every slice's size, runs at its ends, duplicates and ragged
//! element totals; (3) the files exist; (4) every slice is written and durable. Each ends in
//! an agreement, so a rank's failure reaches every rank as an error, never a hang. A shard
//! whose ids are too unsorted for stretches makes every rank return `None`: rank 0 then
//! builds the index alone, as threads mode does.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkCrcs, GroupIndexInfo, IndexManifest, RaggedIndexInfo, CHUNK_BYTES, INDEX_DIR};
use crate::format::Role;
use crate::index::shard_ids;
use crate::index::slice::{
    create_file, join_runs, merge_range, placed_runs, sample, splitters, stretches, write_words_at, SliceInfo,
};
use crate::index::{IndexReport, INDEX_MAGIC, KIND_DENSE, KIND_RUNS, OFFSETS_MAGIC};
use crate::model::schema::Schema;
use crate::shard::reader::Shard;
use crate::write::mpi::comm::Comm;
use crate::write::mpi::node::agree;

/// Id samples each rank takes per shard it describes.
const SAMPLES: usize = 64;
/// The runs encoding is kept when runs average at least this many rows (FORMAT.md).
const MIN_AVG_RUN: u64 = 16;

/// u64 words as bytes and back, for the all-gathers.
fn to_bytes(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// Reads words front to back; a short message is an error naming the rank.
struct Words<'a> {
    w: &'a [u64],
    at: usize,
    rank: usize,
}

impl Words<'_> {
    fn next(&mut self) -> Result<u64> {
        let x = self
            .w
            .get(self.at)
            .copied()
            .ok_or_else(|| Error::Mpi { rank: Some(self.rank), why: "a short index-building message".into() })?;
        self.at += 1;
        Ok(x)
    }
}

/// Aligned fields of a group, in schema order (their missing-row counts travel in it).
fn aligned_fields<'a>(schema: &'a Schema, group: &'a str) -> Vec<&'a str> {
    let aligned = schema.groups.iter().find(|g| g.name == group).is_some_and(|g| g.aligned);
    if !aligned {
        return vec![];
    }
    schema.fields_of(group).map(|(_, f)| f.path.as_str()).collect()
}

fn ragged_fields<'a>(schema: &'a Schema, group: &str) -> Vec<(usize, &'a str)> {
    schema
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.group == group && f.kind.is_ragged())
        .map(|(i, f)| (i, f.path.as_str()))
        .collect()
}

/// Builds and stores the global index of a closed run with every rank (collective). `None`
/// (on every rank) when some shard's ids are too unsorted: rank 0 builds it alone then.
pub(crate) fn build(
    comm: Comm,
    dir: &Path,
    schema: &Schema,
    closes: &[u64],
) -> Result<Option<(IndexManifest, Vec<IndexReport>)>> {
    let (rank, size) = (comm.rank(), comm.size());
    let shards: Result<Vec<Shard>> =
        (0..closes.len()).into_par_iter().map(|i| Shard::load(dir, i, Some(closes[i]))).collect();
    let shards = agree(comm, rank, shards)?;
    let groups: Vec<&str> = schema.groups.iter().map(|g| g.name.as_str()).collect();
    let ids: Vec<Vec<&[u64]>> = groups.iter().map(|g| shard_ids(&shards, g)).collect();

    // (1) Per group, per shard this rank describes: stretches, samples, missing rows.
    let mine: Vec<usize> = (rank..shards.len()).step_by(size).collect();
    let mut msg = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for &s in &mine {
            let ts = ids[gi][s];
            match stretches(ts) {
                Some(st) => {
                    msg.push(st.len() as u64);
                    msg.extend(st.iter().flat_map(|&(a, b)| [a, b]));
                }
                None => msg.push(u64::MAX),
            }
            let smp = sample(ts, SAMPLES);
            let weight = (ts.len() as u64).div_ceil(smp.len().max(1) as u64);
            msg.push(smp.len() as u64);
            msg.extend(smp.iter().flat_map(|&x| [x, weight]));
            for f in aligned_fields(schema, g) {
                let sh = &shards[s];
                msg.push(match sh.column(g, Some(f), Role::Present) {
                    Some(p) => sh.bytes(p).iter().filter(|&&b| b == 0).count() as u64,
                    None => sh.group_rows(g),
                });
            }
        }
    }
    let all = comm.allgather_bytes(&to_bytes(&msg));
    let all = agree(comm, rank, all)?;
    let n = shards.len();
    let mut st: Vec<Vec<Vec<(u64, u64)>>> = vec![vec![vec![]; n]; groups.len()];
    let mut samples: Vec<Vec<(u64, u64)>> = vec![vec![]; groups.len()];
    let mut missing: BTreeMap<String, u64> = BTreeMap::new();
    let mut unsorted = false;
    for (r, bytes) in all.iter().enumerate() {
        let words = to_words(bytes);
        let mut w = Words { w: &words, at: 0, rank: r };
        for (gi, g) in groups.iter().enumerate() {
            for s in (r..n).step_by(size) {
                let k = w.next()?;
                if k == u64::MAX {
                    unsorted = true;
                } else {
                    for _ in 0..k {
                        st[gi][s].push((w.next()?, w.next()?));
                    }
                }
                for _ in 0..w.next()? {
                    samples[gi].push((w.next()?, w.next()?));
                }
                for f in aligned_fields(schema, g) {
                    *missing.entry(f.to_string()).or_default() += w.next()?;
                }
            }
        }
    }
    if unsorted {
        return Ok(None);
    }

    // (2) This rank's slice of every group, and its ragged fields' element totals.
    let mut slices = Vec::with_capacity(groups.len());
    let mut msg = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        let split = splitters(&mut samples[gi], size);
        let lo = if rank == 0 { 0 } else { split[rank - 1] };
        let s = merge_range(&ids[gi], &st[gi], lo, split.get(rank).copied());
        let i = SliceInfo::of(&s);
        msg.extend([i.rows, i.runs, i.first, i.last, i.first_run, s.duplicates, s.duplicate_ids.len() as u64]);
        msg.extend_from_slice(&s.duplicate_ids);
        let mut offs = Vec::new();
        for (_, f) in ragged_fields(schema, g) {
            let o = local_offsets(&shards, &s.dense, g, f);
            msg.push(o.last().copied().unwrap_or(0));
            offs.push(o);
        }
        slices.push((s, offs));
    }
    let all = comm.allgather_bytes(&to_bytes(&msg));
    let all = agree(comm, rank, all)?;
    let mut infos = vec![vec![SliceInfo::default(); size]; groups.len()];
    let mut dups = vec![(0u64, Vec::new()); groups.len()];
    let mut elements: Vec<Vec<Vec<u64>>> =
        groups.iter().map(|g| vec![vec![0u64; size]; ragged_fields(schema, g).len()]).collect();
    for (r, bytes) in all.iter().enumerate() {
        let words = to_words(bytes);
        let mut w = Words { w: &words, at: 0, rank: r };
        for (gi, g) in groups.iter().enumerate() {
            infos[gi][r] =
                SliceInfo { rows: w.next()?, runs: w.next()?, first: w.next()?, last: w.next()?, first_run: w.next()? };
            dups[gi].0 += w.next()?;
            for _ in 0..w.next()? {
                let id = w.next()?;
                if dups[gi].1.len() < 16 {
                    dups[gi].1.push(id);
                }
            }
            for e in elements[gi].iter_mut().take(ragged_fields(schema, g).len()) {
                e[r] = w.next()?;
            }
        }
    }

    // (3) Rank 0 creates every file at its final size.
    let idx_dir = dir.join(INDEX_DIR);
    let places: Vec<_> = infos.iter().map(|i| join_runs(i)).collect();
    let runs_kind: Vec<bool> = places.iter().map(|p| p.runs <= p.rows / MIN_AVG_RUN).collect();
    let created = if rank == 0 {
        (|| -> Result<()> {
            std::fs::create_dir_all(&idx_dir).map_err(|e| Error::io(&idx_dir, e))?;
            for (gi, g) in groups.iter().enumerate() {
                let p = &places[gi];
                let (kind, words) = if runs_kind[gi] { (KIND_RUNS, 3 * p.runs) } else { (KIND_DENSE, p.rows) };
                create_file(&dir.join(format!("{INDEX_DIR}/g{gi:05}.idx")), INDEX_MAGIC, kind, p.rows, words)?;
                for (fi, _) in ragged_fields(schema, g) {
                    let path = dir.join(format!("{INDEX_DIR}/f{fi:05}.off"));
                    create_file(&path, OFFSETS_MAGIC, KIND_DENSE, p.rows, p.rows + 1)?;
                }
            }
            Ok(())
        })()
    } else {
        Ok(())
    };
    agree(comm, rank, created)?;

    // (4) Every rank writes its slices in place.
    let written = (|| -> Result<()> {
        for (gi, g) in groups.iter().enumerate() {
            let (s, offs) = &slices[gi];
            let p = &places[gi];
            let file = dir.join(format!("{INDEX_DIR}/g{gi:05}.idx"));
            if runs_kind[gi] {
                let w = placed_runs(s, p.row[rank], p.skip_first[rank], p.grow_last[rank]);
                write_words_at(&file, 3 * p.run[rank], &w)?;
            } else {
                write_words_at(&file, p.row[rank], &s.dense)?;
            }
            for (k, (fi, _)) in ragged_fields(schema, g).into_iter().enumerate() {
                let base: u64 = elements[gi][k][..rank].iter().sum();
                let o: Vec<u64> = offs[k].iter().map(|x| x + base).collect();
                write_words_at(&dir.join(format!("{INDEX_DIR}/f{fi:05}.off")), p.row[rank] + 1, &o)?;
            }
        }
        Ok(())
    })();
    agree(comm, rank, written)?;

    let group_files: Vec<String> = (0..groups.len()).map(|gi| format!("{INDEX_DIR}/g{gi:05}.idx")).collect();
    let ragged_files: Vec<(String, String)> = schema
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind.is_ragged() && groups.contains(&f.group.as_str()))
        .map(|(fi, f)| (f.path.clone(), format!("{INDEX_DIR}/f{fi:05}.off")))
        .collect();
    // Chunk checksums of the written files (every rank's slices are on disk once `agree`
    // returned): rank r reads chunks r, r + P, … of every file and rank 0 interleaves them,
    // so no rank reads more than its share of the index.
    let files: Vec<&String> = group_files.iter().chain(ragged_files.iter().map(|(_, f)| f)).collect();
    let mine = files.iter().try_fold(Vec::new(), |mut out, f| -> Result<Vec<u8>> {
        let crcs = ChunkCrcs::of_chunks(&dir.join(f), rank as u64, size as u64)?;
        out.extend_from_slice(&(crcs.len() as u64).to_le_bytes());
        crcs.iter().for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
        Ok(out)
    });
    let mine = agree(comm, rank, mine)?;
    let all = comm.gather_bytes(&mine)?.map(|all| interleave_chunk_crcs(&all, files.len())).transpose()?;
    // Rank 0 stores the manifest; the other ranks' index parts carry no checksums.
    let mut crcs = all.into_iter().flatten().map(|c| ChunkCrcs { chunk_bytes: Some(CHUNK_BYTES), crc32c: Some(c) });
    let mut chunks = || crcs.next().unwrap_or_default();

    let mut out_groups = Vec::new();
    let mut reports = Vec::new();
    for (gi, (g, file)) in groups.iter().zip(group_files).enumerate() {
        let (d, ids) = dups[gi].clone();
        out_groups.push(GroupIndexInfo {
            group: g.to_string(),
            chunks: chunks(),
            file,
            rows: places[gi].rows,
            shard_rows: shards.iter().map(|s| s.group_rows(g)).collect(),
            duplicates: d,
            duplicate_ids: ids.clone(),
        });
        reports.push(IndexReport { group: g.to_string(), rows: places[gi].rows, duplicates: d, duplicate_ids: ids });
    }
    let ragged =
        ragged_files.into_iter().map(|(field, file)| RaggedIndexInfo { field, chunks: chunks(), file }).collect();
    if rank == 0 {
        crate::format::manifest::sync_dir(&idx_dir)?;
    }
    Ok(Some((IndexManifest { groups: out_groups, ragged, close_offsets: closes.to_vec(), missing }, reports)))
}

/// Every file's chunk checksums, in chunk order, from each rank's share (`all[r]`: per
/// file, a u64 count and that many u32 crcs of chunks r, r + P, …).
fn interleave_chunk_crcs(all: &[Vec<u8>], files: usize) -> Result<Vec<Vec<u32>>> {
    let bad = || Error::Mpi { rank: None, why: "a malformed chunk checksum share".into() };
    let mut shares: Vec<(&[u8], Vec<Vec<u32>>)> = all.iter().map(|b| (b.as_slice(), Vec::new())).collect();
    for (rest, lists) in shares.iter_mut() {
        for _ in 0..files {
            let (n, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            let n = usize::try_from(u64::from_le_bytes(*n)).map_err(|_| bad())?;
            let (body, tail) = tail.split_at_checked(n.checked_mul(4).ok_or_else(bad)?).ok_or_else(bad)?;
            lists.push(body.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect());
            *rest = tail;
        }
    }
    let p = shares.len();
    Ok((0..files)
        .map(|f| {
            let total: usize = shares.iter().map(|(_, l)| l[f].len()).sum();
            (0..total).map(|k| shares[k % p].1[f][k / p]).collect()
        })
        .collect())
}

/// A ragged field's element offsets at the end of each row of a slice (cumulative, from 0).
fn local_offsets(shards: &[Shard], dense: &[u64], group: &str, field: &str) -> Vec<u64> {
    let lens: Vec<&[u64]> =
        shards.iter().map(|s| s.column(group, Some(field), Role::Len).map_or(&[][..], |c| s.u64s(c))).collect();
    let mut acc = 0u64;
    dense
        .iter()
        .map(|&e| {
            let l = crate::index::GroupIndex::unpack(e);
            acc += lens.get(l.shard).and_then(|c| c.get(l.row as usize)).copied().unwrap_or(0);
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_checksums_read_in_shares_interleave_to_the_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        // Files of 0.5, 3 and 7.2 chunks: fewer, as many and more chunks than ranks.
        let sizes = [CHUNK_BYTES / 2, 3 * CHUNK_BYTES, 7 * CHUNK_BYTES + 12_345];
        let files: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, (0..n).map(|b| (b * 31 + i as u64) as u8).collect::<Vec<u8>>()).unwrap();
                p
            })
            .collect();
        for ranks in [1u64, 2, 3, 5] {
            let shares: Vec<Vec<u8>> = (0..ranks)
                .map(|r| {
                    let mut out = Vec::new();
                    for f in &files {
                        let crcs = ChunkCrcs::of_chunks(f, r, ranks).unwrap();
                        out.extend_from_slice(&(crcs.len() as u64).to_le_bytes());
                        crcs.iter().for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
                    }
                    out
                })
                .collect();
            let got = interleave_chunk_crcs(&shares, files.len()).unwrap();
            for (f, crcs) in files.iter().zip(got) {
                let whole = ChunkCrcs::of_bytes(&std::fs::read(f).unwrap(), CHUNK_BYTES);
                assert_eq!(ChunkCrcs::of_file(f).unwrap(), whole);
                assert_eq!(Some(crcs), whole.crc32c, "{} with {ranks} ranks", f.display());
            }
        }
        assert!(interleave_chunk_crcs(&[vec![9, 0, 0, 0, 0, 0, 0, 0, 1]], 1).is_err(), "a short share is an error");
    }
}
