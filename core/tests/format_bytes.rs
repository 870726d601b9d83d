//! Fixed-byte tests tying every encoder to `docs/FORMAT.md`: for each on-disk structure (log
//! header, frame envelope, the schema, commit and close records, the manifest, group index
//! files dense and runs, ragged offsets files, the `.npy` header) a tiny known value is
//! encoded by the crate and compared with bytes written out here from the spec, and the
//! literal bytes are decoded back by the crate's readers. The end-to-end cases run the real
//! writer (`SmallData`) so that the private shard writer and index builder are pinned too.
//!
//! The literals were derived from FORMAT.md alone (checksums computed with an independent
//! CRC-32C); a failure here means the code and the spec disagree: fix one of them and, if the
//! bytes change, the format version.

use std::collections::BTreeMap;
use std::path::Path;

use smdfs::format::manifest::Manifest;
use smdfs::format::{
    check_log_header, decode_commit, encode_commit, encode_frame, encode_log_header, CloseRecord, ColumnDef,
    CommitEntry, FrameIter, Role, SchemaRecord,
};
use smdfs::index::{load_offsets, GroupIndex, Loc};
use smdfs::tools::slices::NpyHeader;
use smdfs::{fields, Dtype, FieldSpec, GroupSpec, Kind, Run, RunState, SmallData, Stats, Value};

/// Bytes from hex digits; spaces, newlines and `|` separate fields for the reader's eye.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex digit"))
        .collect()
}

/// One frame (FORMAT.md "The commit log"): len u32 | crc32c(len) u32 | payload | crc32c(payload) u32.
fn frame_lit(len_and_crc: &str, payload: &[u8], payload_crc: &str) -> Vec<u8> {
    let mut v = hex(len_and_crc);
    v.extend_from_slice(payload);
    v.extend(hex(payload_crc));
    v
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- FORMAT.md § "All multi-byte integers…": CRC-32C check value -------------------------

#[test]
fn crc32c_is_castagnoli_with_the_spec_check_value() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b""), 0, "crc32c of nothing is 0 (commit entries of empty appends)");
}

// ---- FORMAT.md § "The commit log (`log`)": the 16-byte header ---------------------------

/// magic "SMDFSLOG" | version u32 = 1 | shard u32.
const LOG_HEADER_SHARD_3: &str = "53 4D 44 46 53 4C 4F 47 | 01 00 00 00 | 03 00 00 00";

#[test]
fn log_header_bytes() {
    assert_eq!(encode_log_header(3).to_vec(), hex(LOG_HEADER_SHARD_3));
    assert_eq!(check_log_header(&hex(LOG_HEADER_SHARD_3)), Ok(3));
    let other_version = hex("53 4D 44 46 53 4C 4F 47 | 02 00 00 00 | 03 00 00 00");
    let e = check_log_header(&other_version).unwrap_err();
    assert!(e.contains("version 2"), "{e}");
    let other_magic = hex("53 4D 44 46 53 4C 4F 48 | 01 00 00 00 | 03 00 00 00");
    assert!(check_log_header(&other_magic).is_err());
    assert!(check_log_header(&hex("53 4D 44 46 53 4C 4F 47 | 01 00 00 00")).is_err(), "short header");
}

// ---- FORMAT.md § "The commit log (`log`)": the frame envelope ---------------------------

/// A frame holding the 5-byte payload of an empty commit (`02 | count 0`).
const EMPTY_COMMIT_FRAME: &str = "05 00 00 00 | 8c d0 00 ee | 02 00 00 00 00 | 6d a9 50 35";

#[test]
fn frame_envelope_bytes() {
    let mut out = Vec::new();
    encode_frame(&hex("02 00 00 00 00"), &mut out);
    assert_eq!(out, hex(EMPTY_COMMIT_FRAME));

    let mut log = hex(LOG_HEADER_SHARD_3);
    log.extend(hex(EMPTY_COMMIT_FRAME));
    let mut it = FrameIter::new(&log);
    let f = it.next().expect("one frame");
    assert_eq!((f.offset, f.payload), (16, &hex("02 00 00 00 00")[..]));
    assert!(it.next().is_none());
    assert_eq!(it.valid_end(), 16 + 17, "a frame is len + 12 bytes");

    // A short frame, a bad crc(len), a bad crc(payload) and len 0 each end the log at 16.
    let torn = &log[..log.len() - 1];
    let mut bad_len_crc = log.clone();
    bad_len_crc[16 + 4] ^= 1;
    let mut bad_payload_crc = log.clone();
    *bad_payload_crc.last_mut().expect("non-empty") ^= 1;
    let mut zero = hex(LOG_HEADER_SHARD_3);
    // len 0 with its correct crc32c(00 00 00 00) = 0x48674bc7, then crc32c(nothing) = 0.
    zero.extend(hex("00 00 00 00 | c7 4b 67 48 | 00 00 00 00"));
    assert_eq!(crc32c::crc32c(&[0, 0, 0, 0]), 0x4867_4BC7);
    for (what, image) in
        [("torn", torn), ("crc(len)", &bad_len_crc[..]), ("crc(payload)", &bad_payload_crc[..]), ("len 0", &zero[..])]
    {
        let mut it = FrameIter::new(image);
        assert!(it.next().is_none(), "{what}");
        assert_eq!(it.valid_end(), 16, "{what}");
    }
}

// ---- FORMAT.md § "Record type 2: commit" ------------------------------------------------

/// `02 | count u32 = 2 | (column u32, committed length u64, crc u32) × 2`.
const COMMIT_TWO_ENTRIES: &str = "02 | 02 00 00 00
    | 02 00 00 00 | 10 00 00 00 00 00 00 00 | ef be ad de
    | 00 00 00 00 | 08 00 00 00 00 00 00 00 | 00 00 00 00";

#[test]
fn commit_record_bytes() {
    let entries = [CommitEntry { column: 2, len: 16, crc: 0xDEAD_BEEF }, CommitEntry { column: 0, len: 8, crc: 0 }];
    let mut out = Vec::new();
    encode_commit(&entries, &mut out);
    assert_eq!(out, hex(COMMIT_TWO_ENTRIES));
    let lit = hex(COMMIT_TWO_ENTRIES);
    assert_eq!(lit[0], 2, "record type byte");
    assert_eq!(decode_commit(&lit[1..]), Some(entries.to_vec()));
    // The payload must be exactly 5 + 16·count bytes.
    assert_eq!(decode_commit(&lit[1..lit.len() - 1]), None);
    let mut longer = lit[1..].to_vec();
    longer.push(0);
    assert_eq!(decode_commit(&longer), None);
}

// ---- FORMAT.md § "Record type 1: schema additions" and "Record type 3: close" -----------

fn group_run() -> GroupSpec {
    GroupSpec { name: String::new(), aligned: true }
}

fn field_x() -> FieldSpec {
    FieldSpec {
        path: "x".into(),
        kind: Kind::Fixed,
        dtype: Dtype::U8,
        shape: vec![],
        group: String::new(),
        fill: vec![255],
        units: None,
        attrs: Default::default(),
    }
}

fn columns_x() -> Vec<ColumnDef> {
    let col =
        |id, field: Option<&str>, role| ColumnDef { id, group: String::new(), field: field.map(Into::into), role };
    vec![col(0, None, Role::Ts), col(1, Some("x"), Role::Data), col(2, Some("x"), Role::Present)]
}

/// The payload of the schema frame of a shard whose first batch brings the run group and one
/// aligned u8 scalar `x`: type 0x01, then compact JSON (ts column first, then data, present).
const SCHEMA_X: &[u8] = br#"{"groups":[{"name":"","aligned":true}],"fields":[{"path":"x","kind":"fixed","dtype":"u8","shape":[],"group":"","fill":[255]}],"columns":[{"id":0,"group":"","field":null,"role":"ts"},{"id":1,"group":"","field":"x","role":"data"},{"id":2,"group":"","field":"x","role":"present"}]}"#;

/// The close payload after two events with x = 5 and 6: stats, all columns, their lengths.
const CLOSE_X: &[u8] = br#"{"stats":{"x":{"count":2,"min":5.0,"max":6.0,"sum":11.0}},"columns":[{"id":0,"group":"","field":null,"role":"ts"},{"id":1,"group":"","field":"x","role":"data"},{"id":2,"group":"","field":"x","role":"present"}],"lens":[16,2,2],"groups":[{"name":"","aligned":true}],"fields":[{"path":"x","kind":"fixed","dtype":"u8","shape":[],"group":"","fill":[255]}]}"#;

#[test]
fn schema_record_bytes() {
    let rec = SchemaRecord { groups: vec![group_run()], fields: vec![field_x()], columns: columns_x() };
    assert_eq!(serde_json::to_vec(&rec).expect("encodes"), SCHEMA_X);
    assert_eq!(serde_json::from_slice::<SchemaRecord>(SCHEMA_X).expect("decodes"), rec);
    // `units` is optional: written only when given, and accepted when present.
    let mut with_units = field_x();
    with_units.units = Some("eV".into());
    let json = serde_json::to_string(&with_units).expect("encodes");
    assert_eq!(json, r#"{"path":"x","kind":"fixed","dtype":"u8","shape":[],"group":"","fill":[255],"units":"eV"}"#);
    assert_eq!(serde_json::from_str::<FieldSpec>(&json).expect("decodes"), with_units);
}

#[test]
fn close_record_bytes() {
    let rec = CloseRecord {
        stats: BTreeMap::from([("x".to_string(), Stats { count: 2, min: 5.0, max: 6.0, sum: 11.0 })]),
        columns: columns_x(),
        lens: vec![16, 2, 2],
        groups: vec![group_run()],
        fields: vec![field_x()],
    };
    assert_eq!(serde_json::to_vec(&rec).expect("encodes"), CLOSE_X);
    assert_eq!(serde_json::from_slice::<CloseRecord>(CLOSE_X).expect("decodes"), rec);
    // A field with no present value: min "inf", max "-inf" (strings), count 0.
    let none: &[u8] = br#"{"count":0,"min":"inf","max":"-inf","sum":0.0}"#;
    assert_eq!(serde_json::to_vec(&Stats::default()).expect("encodes"), none);
    let back: Stats = serde_json::from_slice(none).expect("decodes");
    assert_eq!((back.count, back.min, back.max, back.sum), (0, f64::INFINITY, f64::NEG_INFINITY, 0.0));
}

// ---- FORMAT.md § "The run manifest (`manifest.json`)" -----------------------------------

/// The members of a fresh manifest (state writing, run group only), pretty-printed with a
/// 2-space indent, up to the last one before the seal.
macro_rules! manifest_writing_2_members {
    () => {
        r#"{
  "format": "smdfs-run",
  "version": 1,
  "state": "writing",
  "shards": 2,
  "schema": {
    "groups": [
      {
        "name": "",
        "aligned": true
      }
    ],
    "fields": []
  },
  "summary": [],
  "stats": {},
  "index": null"#
    };
}

/// The fresh manifest sealed by its last member, the crc32c of every byte before
/// `,\n  "crc32c"` (revision 4).
const MANIFEST_WRITING_2_SEALED: &str = concat!(manifest_writing_2_members!(), ",\n  \"crc32c\": \"dc9ab4ea\"\n}\n");

/// The same manifest as writers before document revision 4 wrote it (no checksum): still read.
const MANIFEST_WRITING_2: &str = concat!(manifest_writing_2_members!(), "\n}");

#[test]
fn manifest_required_fields_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    Manifest::new(2).store(dir.path()).expect("stores");
    assert_eq!(String::from_utf8(read(&dir.path().join("manifest.json"))).expect("utf-8"), MANIFEST_WRITING_2_SEALED);
    let sealed = tempfile::tempdir().expect("tempdir");
    std::fs::write(sealed.path().join("manifest.json"), MANIFEST_WRITING_2_SEALED).expect("write");
    assert_eq!(Manifest::load(sealed.path()).expect("the sealed literal decodes"), Manifest::new(2));
    std::fs::write(sealed.path().join("manifest.json"), MANIFEST_WRITING_2_SEALED.replace(": 2,", ": 3,"))
        .expect("write");
    assert!(Manifest::load(sealed.path()).unwrap_err().to_string().contains("checksum"), "an edit breaks the seal");
    assert!(!dir.path().join(".manifest.json.tmp").exists(), "the temporary is renamed away");

    let lit = tempfile::tempdir().expect("tempdir");
    std::fs::write(lit.path().join("manifest.json"), MANIFEST_WRITING_2).expect("write");
    let m = Manifest::load(lit.path()).expect("the literal decodes");
    assert_eq!(m, Manifest::new(2));
    // `format`, `version` and `shards` are checked.
    for (from, to) in
        [("smdfs-run", "smdfs-xyz"), ("\"version\": 1", "\"version\": 2"), ("\"shards\": 2", "\"shards\": 65537")]
    {
        std::fs::write(lit.path().join("manifest.json"), MANIFEST_WRITING_2.replace(from, to)).expect("write");
        assert!(Manifest::load(lit.path()).is_err(), "{to} must be refused");
    }
}

// ---- End to end: a one-shard run, byte for byte ------------------------------------------

/// Log of shard 0 after two events (ids 7 and 9, x = 5 and 6) in one batch, then close.
fn tiny_log() -> Vec<u8> {
    let mut log = hex("53 4D 44 46 53 4C 4F 47 | 01 00 00 00 | 00 00 00 00");
    // Schema frame: len 279 (1 + 278 bytes of JSON).
    let mut schema = vec![0x01];
    schema.extend_from_slice(SCHEMA_X);
    log.extend(frame_lit("17 01 00 00 | 4e d0 42 1d", &schema, "e2 87 0b a2"));
    // Commit frame: ts 16 bytes, data 2, present 2; crcs of exactly the appended bytes.
    let commit = hex("02 | 03 00 00 00
         | 00 00 00 00 | 10 00 00 00 00 00 00 00 | 0f 2f 8b 9c
         | 01 00 00 00 | 02 00 00 00 00 00 00 00 | 91 69 e8 8a
         | 02 00 00 00 | 02 00 00 00 00 00 00 00 | a6 6c a8 10");
    assert_eq!(crc32c::crc32c(&hex("07 00 00 00 00 00 00 00 09 00 00 00 00 00 00 00")), 0x9C8B_2F0F);
    log.extend(frame_lit("35 00 00 00 | 3a 75 41 d0", &commit, "75 9b 06 ad"));
    // Close frame at offset 16 + 291 + 65 = 372.
    assert_eq!(log.len(), 372);
    let mut close = vec![0x03];
    close.extend_from_slice(CLOSE_X);
    log.extend(frame_lit("60 01 00 00 | d5 92 a5 91", &close, "ce 55 dc d7"));
    log
}

/// Group index of 2 rows, both in shard 0 (< 16 rows: dense, kind 1).
const TINY_INDEX: &str = "53 4D 44 46 53 49 44 58 | 01 00 00 00 | 01 00 00 00
    | 02 00 00 00 00 00 00 00 | 02 00 00 00 00 00 00 00
    | 00 00 00 00 00 00 00 00 | 01 00 00 00 00 00 00 00";

const TINY_MANIFEST: &str = r#"{
  "format": "smdfs-run",
  "version": 1,
  "state": "complete",
  "shards": 1,
  "schema": {
    "groups": [
      {
        "name": "",
        "aligned": true
      }
    ],
    "fields": [
      {
        "path": "x",
        "kind": "fixed",
        "dtype": "u8",
        "shape": [],
        "group": "",
        "fill": [
          255
        ]
      }
    ]
  },
  "summary": [],
  "stats": {
    "x": {
      "count": 2,
      "min": 5.0,
      "max": 6.0,
      "sum": 11.0
    }
  },
  "index": {
    "groups": [
      {
        "group": "",
        "file": "index/g00000.idx",
        "rows": 2,
        "shard_rows": [
          2
        ],
        "duplicates": 0,
        "duplicate_ids": [],
        "chunk_bytes": 1048576,
        "chunk_crc32c": [
          2316971448
        ]
      }
    ],
    "ragged": [],
    "close_offsets": [
      372
    ],
    "missing": {
      "x": 0
    }
  },
  "crc32c": "f9ae3d42"
}
"#;

/// The same manifest as a revision-4 writer sealed it: no chunk checksums (the reader checks
/// the whole index at open).
const TINY_MANIFEST_REV4: &str = r#"{
  "format": "smdfs-run",
  "version": 1,
  "state": "complete",
  "shards": 1,
  "schema": {
    "groups": [
      {
        "name": "",
        "aligned": true
      }
    ],
    "fields": [
      {
        "path": "x",
        "kind": "fixed",
        "dtype": "u8",
        "shape": [],
        "group": "",
        "fill": [
          255
        ]
      }
    ]
  },
  "summary": [],
  "stats": {
    "x": {
      "count": 2,
      "min": 5.0,
      "max": 6.0,
      "sum": 11.0
    }
  },
  "index": {
    "groups": [
      {
        "group": "",
        "file": "index/g00000.idx",
        "rows": 2,
        "shard_rows": [
          2
        ],
        "duplicates": 0,
        "duplicate_ids": []
      }
    ],
    "ragged": [],
    "close_offsets": [
      372
    ],
    "missing": {
      "x": 0
    }
  },
  "crc32c": "4ee63470"
}
"#;

/// Column files: ts (u64 ids), data (u8), present (u8).
const TINY_COLUMNS: [(&str, &str); 3] = [
    ("c000000.col", "07 00 00 00 00 00 00 00 | 09 00 00 00 00 00 00 00"),
    ("c000001.col", "05 06"),
    ("c000002.col", "01 01"),
];

#[test]
fn a_tiny_run_is_written_byte_for_byte_as_specified() {
    for sync in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let smd = SmallData::builder(dir.path()).servers(1).sync_commits(sync).build().expect("builds");
        let mut c = smd.client();
        c.event(7, fields! { "x" => 5u8 }).expect("event");
        c.event(9, fields! { "x" => 6u8 }).expect("event");
        drop(c);
        smd.done().expect("done");

        let shard = dir.path().join("shard-00000");
        assert_eq!(read(&shard.join("log")), tiny_log(), "log (sync_commits({sync}))");
        for (name, bytes) in TINY_COLUMNS {
            assert_eq!(read(&shard.join(name)), hex(bytes), "{name}");
        }
        assert_eq!(read(&dir.path().join("index/g00000.idx")), hex(TINY_INDEX), "index");
        assert_eq!(crc32c::crc32c(&hex(TINY_INDEX)), 2316971448, "chunk 0 of the index is the whole 48-byte file");
        assert_eq!(String::from_utf8(read(&dir.path().join("manifest.json"))).expect("utf-8"), TINY_MANIFEST);
    }
}

/// A complete one-shard run made of the literal bytes above, with `log` as its log.
fn literal_tiny_run(log: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard = dir.path().join("shard-00000");
    std::fs::create_dir_all(&shard).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("index")).expect("mkdir");
    std::fs::write(shard.join("log"), log).expect("write");
    for (name, bytes) in TINY_COLUMNS {
        std::fs::write(shard.join(name), hex(bytes)).expect("write");
    }
    std::fs::write(dir.path().join("index/g00000.idx"), hex(TINY_INDEX)).expect("write");
    std::fs::write(dir.path().join("manifest.json"), TINY_MANIFEST).expect("write");
    dir
}

/// Makes the literal run look crashed (a `writing` manifest, no lock holder): read by replay.
fn as_crashed(dir: &Path) {
    let writing = MANIFEST_WRITING_2.replace("\"shards\": 2", "\"shards\": 1");
    std::fs::write(dir.join("manifest.json"), writing).expect("write");
}

fn x_values(dir: &Path) -> (RunState, Vec<u8>) {
    let run = Run::open(dir).expect("opens");
    (run.state(), run.field("x").expect("x").read_all::<u8>().expect("reads"))
}

#[test]
fn a_run_made_of_the_literal_bytes_reads_back() {
    let dir = literal_tiny_run(&tiny_log());

    // Frame by frame: schema, commit, close.
    let log = tiny_log();
    assert_eq!(check_log_header(&log), Ok(0));
    let frames: Vec<_> = FrameIter::new(&log).map(|f| (f.offset, f.payload.to_vec())).collect();
    assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [16, 307, 372]);
    assert_eq!(frames.iter().map(|f| f.1[0]).collect::<Vec<_>>(), [1, 2, 3]);
    let schema: SchemaRecord = serde_json::from_slice(&frames[0].1[1..]).expect("schema record");
    assert_eq!(schema.columns, columns_x());
    let commit = decode_commit(&frames[1].1[1..]).expect("commit record");
    assert_eq!(commit.iter().map(|e| (e.column, e.len)).collect::<Vec<_>>(), [(0, 16), (1, 2), (2, 2)]);
    let close: CloseRecord = serde_json::from_slice(&frames[2].1[1..]).expect("close record");
    assert_eq!(close.lens, [16, 2, 2]);

    // The whole run, through the close record and the stored index.
    let run = Run::open(dir.path()).expect("opens");
    assert_eq!(run.state(), RunState::Complete);
    assert_eq!(run.len(), 2);
    assert_eq!(run.field("x").expect("x").read_all::<u8>().expect("reads"), [5, 6]);
    assert_eq!(run.row_of("", 9).expect("lookup"), Some(1));
    // And by replay: the same run seen as crashed (no index), from the log alone.
    as_crashed(dir.path());
    assert_eq!(x_values(dir.path()), (RunState::Crashed, vec![5, 6]));
}

// ---- FORMAT.md § "The commit log": reader rules ----------------------------------------

#[test]
fn the_header_shard_field_is_not_checked_against_the_directory() {
    let mut log = tiny_log();
    log[12..16].copy_from_slice(&hex("05 00 00 00"));
    let dir = literal_tiny_run(&log);
    assert_eq!(x_values(dir.path()), (RunState::Complete, vec![5, 6]), "through the close record");
    as_crashed(dir.path());
    assert_eq!(x_values(dir.path()), (RunState::Crashed, vec![5, 6]), "by replay");
}

#[test]
fn a_schema_frame_whose_commit_never_landed_is_dropped_by_replay() {
    // A second batch announced field y (columns 3 and 4) in a group that already has 2 rows,
    // and the writer died before its commit: y does not exist, the shard is not corrupt.
    let mut log = tiny_log();
    log.truncate(372); // no close record: the writer died
    let rec = br#"{"groups":[],"fields":[{"path":"y","kind":"fixed","dtype":"u8","shape":[],"group":"","fill":[255]}],"columns":[{"id":3,"group":"","field":"y","role":"data"},{"id":4,"group":"","field":"y","role":"present"}]}"#;
    let mut payload = vec![0x01];
    payload.extend_from_slice(rec);
    encode_frame(&payload, &mut log);
    let dir = literal_tiny_run(&log);
    as_crashed(dir.path());
    assert_eq!(x_values(dir.path()), (RunState::Crashed, vec![5, 6]));
    let run = Run::open(dir.path()).expect("opens");
    assert!(run.field("y").is_err(), "y was never committed");
    assert_eq!(run.shards()[0].torn_bytes, 0, "the schema frame is valid, not torn");
}

#[test]
fn frames_after_a_close_record_count_for_replay_only() {
    // A commit after the close adds a third row (id 11, x = 8). No v1 writer does this;
    // readers must not reject it: the close record path stops at the close, replay applies it.
    let mut log = tiny_log();
    let ts3 = hex("07 00 00 00 00 00 00 00 | 09 00 00 00 00 00 00 00 | 0b 00 00 00 00 00 00 00");
    let entries = [
        CommitEntry { column: 0, len: 24, crc: crc32c::crc32c(&ts3[16..]) },
        CommitEntry { column: 1, len: 3, crc: crc32c::crc32c(&[8]) },
        CommitEntry { column: 2, len: 3, crc: crc32c::crc32c(&[1]) },
    ];
    let mut payload = Vec::new();
    encode_commit(&entries, &mut payload);
    encode_frame(&payload, &mut log);
    let dir = literal_tiny_run(&log);
    let shard = dir.path().join("shard-00000");
    std::fs::write(shard.join("c000000.col"), &ts3).expect("write");
    std::fs::write(shard.join("c000001.col"), hex("05 06 08")).expect("write");
    std::fs::write(shard.join("c000002.col"), hex("01 01 01")).expect("write");
    assert_eq!(x_values(dir.path()), (RunState::Complete, vec![5, 6]), "through the close record at 372");
    as_crashed(dir.path());
    assert_eq!(x_values(dir.path()), (RunState::Crashed, vec![5, 6, 8]), "by replay");
}

// ---- FORMAT.md § "Global index files (`index/`)": dense, runs, the rule, empty groups ----

/// Writes a run with one client per server, client k sending `ids[k]` (each event x = 0).
fn run_with(ids: &[&[u64]]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let smd = SmallData::builder(dir.path()).servers(ids.len()).build().expect("builds");
    let clients: Vec<_> = ids.iter().map(|_| smd.client()).collect();
    for (mut c, ids) in clients.into_iter().zip(ids) {
        for &id in *ids {
            c.event(id, fields! { "x" => 0u8 }).expect("event");
        }
    }
    smd.done().expect("done");
    dir
}

fn index_words(bytes: &[u8]) -> Vec<u64> {
    bytes[32..].chunks(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))).collect()
}

#[test]
fn runs_encoding_bytes() {
    // 32 rows in 2 runs: 2 <= 32 / 16, so runs (kind 2), words = 3 × runs.
    let (a, b): (Vec<u64>, Vec<u64>) = ((0..16).collect(), (16..32).collect());
    let dir = run_with(&[&a, &b]);
    let lit = hex("53 4D 44 46 53 49 44 58 | 01 00 00 00 | 02 00 00 00
         | 20 00 00 00 00 00 00 00 | 06 00 00 00 00 00 00 00
         | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00 | 10 00 00 00 00 00 00 00
         | 10 00 00 00 00 00 00 00 | 00 00 00 00 00 00 01 00 | 10 00 00 00 00 00 00 00");
    assert_eq!(read(&dir.path().join("index/g00000.idx")), lit);
    let p = dir.path().join("lit.idx");
    std::fs::write(&p, &lit).expect("write");
    let idx = GroupIndex::load(&p).expect("loads");
    assert!(idx.is_runs());
    assert_eq!((idx.len(), idx.entries()), (32, 2));
    assert_eq!(idx.locate(15), Some(Loc { shard: 0, row: 15 }));
    assert_eq!(idx.locate(16), Some(Loc { shard: 1, row: 0 }));
    assert_eq!(idx.locate(31), Some(Loc { shard: 1, row: 15 }));
    assert_eq!(idx.locate(32), None);
}

#[test]
fn one_run_too_many_for_its_rows_is_dense() {
    // 31 rows in 2 runs: 2 > 31 / 16 = 1, so dense although 3 × 2 < 31.
    let (a, b): (Vec<u64>, Vec<u64>) = ((0..16).collect(), (16..31).collect());
    let dir = run_with(&[&a, &b]);
    let bytes = read(&dir.path().join("index/g00000.idx"));
    assert_eq!(
        bytes[..32],
        hex("53 4D 44 46 53 49 44 58 | 01 00 00 00 | 01 00 00 00
        | 1f 00 00 00 00 00 00 00 | 1f 00 00 00 00 00 00 00")[..]
    );
    let want: Vec<u64> = (0..16).chain((0..15).map(|r| 1 << 48 | r)).collect();
    assert_eq!(index_words(&bytes), want);
    assert_eq!(bytes.len(), 32 + 8 * 31);
}

#[test]
fn dense_encoding_bytes() {
    // Ids dealt alternately: shard 0 holds 1, 3 and shard 1 holds 0, 2. A location is
    // shard << 48 | row.
    let dir = run_with(&[&[1, 3], &[0, 2]]);
    let lit = hex("53 4D 44 46 53 49 44 58 | 01 00 00 00 | 01 00 00 00
         | 04 00 00 00 00 00 00 00 | 04 00 00 00 00 00 00 00
         | 00 00 00 00 00 00 01 00 | 00 00 00 00 00 00 00 00
         | 01 00 00 00 00 00 01 00 | 01 00 00 00 00 00 00 00");
    assert_eq!(read(&dir.path().join("index/g00000.idx")), lit);
    let p = dir.path().join("lit.idx");
    std::fs::write(&p, &lit).expect("write");
    let idx = GroupIndex::load(&p).expect("loads");
    assert!(!idx.is_runs());
    let locs: Vec<_> = (0..4).map(|i| idx.locate(i).expect("in range")).collect();
    assert_eq!(
        locs,
        [Loc { shard: 1, row: 0 }, Loc { shard: 0, row: 0 }, Loc { shard: 1, row: 1 }, Loc { shard: 0, row: 1 }]
    );
    // A size that disagrees with the header is refused.
    std::fs::write(&p, &lit[..lit.len() - 8]).expect("write");
    assert!(GroupIndex::load(&p).is_err());
}

#[test]
fn an_empty_group_is_stored_as_runs_with_no_words() {
    let dir = run_with(&[&[]]);
    let lit = hex("53 4D 44 46 53 49 44 58 | 01 00 00 00 | 02 00 00 00
         | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00");
    assert_eq!(read(&dir.path().join("index/g00000.idx")), lit);
    let p = dir.path().join("lit.idx");
    std::fs::write(&p, &lit).expect("write");
    let idx = GroupIndex::load(&p).expect("loads");
    assert!(idx.is_runs() && idx.is_empty());
    // Readers accept the dense form of an empty group too.
    let dense = hex("53 4D 44 46 53 49 44 58 | 01 00 00 00 | 01 00 00 00
         | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00");
    std::fs::write(&p, &dense).expect("write");
    let idx = GroupIndex::load(&p).expect("loads");
    assert!(!idx.is_runs() && idx.is_empty());
}

// ---- FORMAT.md § "Ragged offsets `fNNNNN.off`" and the ragged columns -------------------

#[test]
fn ragged_offsets_file_and_columns_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smd = SmallData::builder(dir.path()).servers(1).build().expect("builds");
    let mut c = smd.client();
    for (id, tag) in [(1u64, &b"ab"[..]), (2, &b""[..]), (3, &b"xyz"[..])] {
        c.event(id, fields! { "tag" => Value::bytes(tag) }).expect("event");
    }
    drop(c);
    smd.done().expect("done");

    // Columns of a bytes field: ts 0, data 1, present 2, len 3, offs 4 (creation order).
    let shard = dir.path().join("shard-00000");
    assert_eq!(read(&shard.join("c000001.col")), b"abxyz");
    assert_eq!(read(&shard.join("c000002.col")), hex("01 01 01"));
    assert_eq!(
        read(&shard.join("c000003.col")),
        hex("02 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00 | 03 00 00 00 00 00 00 00")
    );
    assert_eq!(
        read(&shard.join("c000004.col")),
        hex("00 00 00 00 00 00 00 00 | 02 00 00 00 00 00 00 00 | 02 00 00 00 00 00 00 00")
    );

    // Offsets: magic "SMDFSOFF", version 1, kind 1, rows 3, words 4; 0 then cumulative lengths.
    let lit = hex("53 4D 44 46 53 4F 46 46 | 01 00 00 00 | 01 00 00 00
         | 03 00 00 00 00 00 00 00 | 04 00 00 00 00 00 00 00
         | 00 00 00 00 00 00 00 00 | 02 00 00 00 00 00 00 00
         | 02 00 00 00 00 00 00 00 | 05 00 00 00 00 00 00 00");
    assert_eq!(read(&dir.path().join("index/f00000.off")), lit);
    let p = dir.path().join("lit.off");
    std::fs::write(&p, &lit).expect("write");
    assert_eq!(load_offsets(&p, 3).expect("loads").get(), [0, 2, 2, 5]);
    assert!(load_offsets(&p, 4).is_err(), "rows must match the group's");
}

// ---- FORMAT.md § "`.npy` headers" -------------------------------------------------------

#[test]
fn npy_header_bytes() {
    // "\x93NUMPY" 01 00, hlen u16 = 118, the dict, 60 spaces, '\n': 128 bytes in all.
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }";
    let mut lit = hex("93 4E 55 4D 50 59 | 01 00 | 76 00");
    lit.extend_from_slice(dict.as_bytes());
    lit.extend_from_slice(&[b' '; 60]);
    lit.push(b'\n');
    assert_eq!(lit.len(), 128);
    assert_eq!(smdfs::format::npy::header("<f8", &[5]), lit);
    let h = NpyHeader::parse(Path::new("lit.npy"), &lit).expect("parses");
    assert_eq!((h.dtype, h.shape, h.data_offset), (Dtype::F64, vec![5], 128));

    // A 3-d u16 array and a 0-d bool: the shape tuple's forms.
    let h = smdfs::format::npy::header("<u2", &[10, 4, 8]);
    assert_eq!(&h[..10], &hex("93 4E 55 4D 50 59 | 01 00 | 76 00")[..]);
    assert!(h[10..].starts_with(b"{'descr': '<u2', 'fortran_order': False, 'shape': (10, 4, 8), }  "));
    let h = smdfs::format::npy::header("|b1", &[]);
    assert_eq!(&h[..10], &hex("93 4E 55 4D 50 59 | 01 00 | 76 00")[..]);
    // A 55-byte dict, 62 spaces and '\n' make hlen 118.
    assert_eq!(&h[10..], format!("{:<117}\n", "{'descr': '|b1', 'fortran_order': False, 'shape': (), }").as_bytes());
}

#[test]
fn a_revision_4_manifest_without_chunk_checksums_still_opens_with_its_index_checked_whole() {
    let dir = literal_tiny_run(&tiny_log());
    std::fs::write(dir.path().join("manifest.json"), TINY_MANIFEST_REV4).expect("write");
    let run = Run::open(dir.path()).expect("a revision-4 run opens");
    assert!(run.warnings().is_empty(), "{:?}", run.warnings());
    assert_eq!(x_values(dir.path()), (RunState::Complete, vec![5, 6]));
    // Without checksums, damage is found at open by the whole-index check, as before.
    let mut idx = hex(TINY_INDEX);
    idx.copy_within(32..40, 40); // both words name row 0
    std::fs::write(dir.path().join("index/g00000.idx"), &idx).expect("write");
    let run = Run::open(dir.path()).expect("re-indexed from the shards");
    assert!(run.warnings().iter().any(|w| w.contains("appears twice")), "{:?}", run.warnings());
    assert_eq!(run.field("x").expect("x").read_all::<u8>().expect("reads"), vec![5, 6]);
}
