//! Shard format v1: file names, the commit log's frame encoding, and its records.
//! `docs/FORMAT.md` is the byte-level specification; the constants here mirror it.
//!
//! A shard is a directory `shard-NNNNN/` holding one append-only file per column
//! (`cNNNNNN.col`, raw little-endian rows) and a commit log `log`. The log starts with a
//! 16-byte header and continues with frames:
//!
//! ```text
//! +---------+-------------+-----------------+------------------+
//! | len u32 | crc32c(len) | payload[len]    | crc32c(payload)  |
//! +---------+-------------+-----------------+------------------+
//! ```
//!
//! The first frame that is short or fails a checksum ends the log (a torn tail). A reader
//! trusts a column's bytes only up to the length the last valid commit record gives it.

use serde::{Deserialize, Serialize};

use crate::model::schema::{FieldSpec, GroupSpec};

/// Shard format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Magic at the start of every commit log.
pub const LOG_MAGIC: &[u8; 8] = b"SMDFSLOG";
/// Log header: magic, version u32, shard index u32.
pub const LOG_HEADER_LEN: usize = LOG_MAGIC.len() + 4 + 4;
/// Frame overhead: len u32 + crc(len) u32 + crc(payload) u32.
pub const FRAME_OVERHEAD: usize = 12;
/// Largest payload a reader accepts (a larger length is treated as corruption).
pub const MAX_FRAME_PAYLOAD: u32 = 64 << 20;
/// Bytes of one column entry in a commit record: column u32, length u64, crc u32.
pub const COMMIT_ENTRY_LEN: usize = 4 + 8 + 4;

/// Record type byte: schema additions (JSON [`SchemaRecord`]).
pub const REC_SCHEMA: u8 = 1;
/// Record type byte: batch commit (binary, see [`CommitEntry`]).
pub const REC_COMMIT: u8 = 2;
/// Record type byte: clean close (JSON [`CloseRecord`]).
pub const REC_CLOSE: u8 = 3;

/// Name of a shard's directory.
pub fn shard_dir_name(index: usize) -> String {
    format!("shard-{index:05}")
}

/// Name of a column's file inside its shard directory.
pub fn column_file_name(id: u32) -> String {
    format!("c{id:06}.col")
}

/// Name of the commit log inside a shard directory.
pub const LOG_FILE: &str = "log";

/// What a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The group's event ids, u64 per row.
    Ts,
    /// The field's values: fixed rows, or a ragged field's flat elements.
    Data,
    /// Aligned fields: u8 per row, 1 where the event had the field.
    Present,
    /// Ragged fields: u64 per row, element count (0 where missing).
    Len,
    /// Ragged fields: u64 per row, element offset of the row's first value in `Data`.
    Offs,
}

impl Role {
    /// Bytes per row for the fixed-width roles.
    pub const fn fixed_row_bytes(self) -> Option<usize> {
        match self {
            Role::Ts | Role::Len | Role::Offs => Some(8),
            Role::Present => Some(1),
            Role::Data => None,
        }
    }
}

/// A column of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Shard-local column id (its file name).
    pub id: u32,
    /// Group the column's rows belong to.
    pub group: String,
    /// Field path (none for the group's event-id column).
    pub field: Option<String>,
    /// What it holds.
    pub role: Role,
}

/// Schema additions of one shard (record type 1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaRecord {
    /// New groups.
    pub groups: Vec<GroupSpec>,
    /// New fields.
    pub fields: Vec<FieldSpec>,
    /// New columns.
    pub columns: Vec<ColumnDef>,
}

/// One column's entry in a commit record (record type 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitEntry {
    /// Column id.
    pub column: u32,
    /// The column's committed length in bytes after this commit.
    pub len: u64,
    /// crc32c of the bytes this commit appended to the column.
    pub crc: u32,
}

/// A clean close (record type 3): the shard's whole schema, every column's final length,
/// and its statistics, so a reader of a complete run reads this one frame instead of
/// replaying the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CloseRecord {
    /// Statistics of numeric scalar fields.
    pub stats: crate::model::schema::StatsMap,
    /// Every column, by id.
    pub columns: Vec<ColumnDef>,
    /// Every column's final length in bytes, by id.
    pub lens: Vec<u64>,
    /// Groups the shard has.
    pub groups: Vec<GroupSpec>,
    /// Fields the shard has.
    pub fields: Vec<FieldSpec>,
}

/// Encodes the log header.
pub fn encode_log_header(shard: u32) -> [u8; LOG_HEADER_LEN] {
    let mut h = [0u8; LOG_HEADER_LEN];
    h[..8].copy_from_slice(LOG_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&shard.to_le_bytes());
    h
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
}

/// Encodes a commit record's payload.
pub fn encode_commit(entries: &[CommitEntry], out: &mut Vec<u8>) {
    out.push(REC_COMMIT);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.column.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.crc.to_le_bytes());
    }
}

/// Decodes a commit record's body (after the type byte). `None` if malformed.
pub fn decode_commit(body: &[u8]) -> Option<Vec<CommitEntry>> {
    let n = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let rest = body.get(4..)?;
    if rest.len() != n.checked_mul(COMMIT_ENTRY_LEN)? {
        return None;
    }
    Some(
        rest.chunks_exact(COMMIT_ENTRY_LEN)
            .map(|c| CommitEntry {
                column: u32::from_le_bytes(c[0..4].try_into().expect("4 bytes")),
                len: u64::from_le_bytes(c[4..12].try_into().expect("8 bytes")),
                crc: u32::from_le_bytes(c[12..16].try_into().expect("4 bytes")),
            })
            .collect(),
    )
}

/// One decoded frame: its payload and the byte range it occupies in the log.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Offset of the frame's first byte in the log.
    pub offset: u64,
    /// The payload (type byte first).
    pub payload: &'a [u8],
}

/// Iterates the valid frames of a log image; stops at the first torn or corrupt frame.
/// After iteration, [`FrameIter::valid_end`] is the end of the last valid frame.
pub struct FrameIter<'a> {
    buf: &'a [u8],
    pos: usize,
    stopped: bool,
}

impl<'a> FrameIter<'a> {
    /// Iterates frames of `log` (the whole file, header included). The header must have
    /// been checked with [`check_log_header`].
    pub fn new(log: &'a [u8]) -> Self {
        FrameIter { buf: log, pos: LOG_HEADER_LEN.min(log.len()), stopped: false }
    }

    /// End of the last valid frame (the committed log length).
    pub fn valid_end(&self) -> u64 {
        self.pos as u64
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Frame<'a>;
    fn next(&mut self) -> Option<Frame<'a>> {
        if self.stopped {
            return None;
        }
        let b = &self.buf[self.pos..];
        let frame = (|| {
            let len_b: [u8; 4] = b.get(0..4)?.try_into().ok()?;
            let crc_len = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
            if crc32c::crc32c(&len_b) != crc_len {
                return None;
            }
            let len = u32::from_le_bytes(len_b);
            if len == 0 || len > MAX_FRAME_PAYLOAD {
                return None;
            }
            let end = 8 + len as usize;
            let payload = b.get(8..end)?;
            let crc = u32::from_le_bytes(b.get(end..end + 4)?.try_into().ok()?);
            (crc32c::crc32c(payload) == crc).then_some((payload, end + 4))
        })();
        match frame {
            Some((payload, n)) => {
                let offset = self.pos as u64;
                self.pos += n;
                Some(Frame { offset, payload })
            }
            None => {
                self.stopped = true;
                None
            }
        }
    }
}

/// Checks a log header; returns the shard index, or why it is not a v1 log.
pub fn check_log_header(log: &[u8]) -> Result<u32, String> {
    if log.len() < LOG_HEADER_LEN || &log[..8] != LOG_MAGIC {
        return Err("missing SMDFSLOG header".into());
    }
    let version = u32::from_le_bytes(log[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, this build reads {FORMAT_VERSION}"));
    }
    Ok(u32::from_le_bytes(log[12..16].try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = encode_log_header(0).to_vec();
        for f in frames {
            encode_frame(f, &mut v);
        }
        v
    }

    #[test]
    fn frames_round_trip() {
        let log = log_with(&[b"\x01abc", b"\x02xyz"]);
        let mut it = FrameIter::new(&log);
        assert_eq!(it.next().unwrap().payload, b"\x01abc");
        assert_eq!(it.next().unwrap().payload, b"\x02xyz");
        assert!(it.next().is_none());
        assert_eq!(it.valid_end(), log.len() as u64);
    }

    #[test]
    fn torn_commit_record_is_ignored() {
        let full = log_with(&[b"\x01abc", b"\x02xyzw"]);
        let first_end = LOG_HEADER_LEN + FRAME_OVERHEAD + 4;
        for cut in first_end..full.len() {
            let mut it = FrameIter::new(&full[..cut]);
            assert_eq!(it.next().unwrap().payload, b"\x01abc");
            assert!(it.next().is_none(), "cut at {cut}");
            assert_eq!(it.valid_end(), first_end as u64);
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_that_frame() {
        let full = log_with(&[b"\x01abc", b"\x02xyzw"]);
        let first_end = LOG_HEADER_LEN + FRAME_OVERHEAD + 4;
        for byte in first_end..full.len() {
            let mut bad = full.clone();
            bad[byte] ^= 0x10;
            let n = FrameIter::new(&bad).count();
            assert_eq!(n, 1, "flip at {byte}");
        }
    }

    #[test]
    fn commit_records_round_trip_and_reject_bad_lengths() {
        let e = vec![CommitEntry { column: 3, len: 1 << 40, crc: 7 }, CommitEntry { column: 0, len: 8, crc: 1 }];
        let mut p = Vec::new();
        encode_commit(&e, &mut p);
        assert_eq!(p[0], REC_COMMIT);
        assert_eq!(decode_commit(&p[1..]).unwrap(), e);
        assert!(decode_commit(&p[1..p.len() - 1]).is_none());
        assert!(decode_commit(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
