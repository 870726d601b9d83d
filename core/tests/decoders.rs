//! Hostile input: a proptest harness over every decoder a reader runs on files — the commit
//! log (frames, schema, commit and close records), the manifest, index and offsets files —
//! and over whole runs opened and read after their files were truncated, bit-flipped,
//! overwritten or spliced. Errors are fine; panics, out-of-bounds reads and huge
//! allocations are not. The seed corpus is a real 40-event demo run committed in
//! `tests/corpus/demo-run`; the case count is bounded so CI runs it in seconds
//! (`PROPTEST_CASES` raises it).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use smdfs::format::{check_log_header, FrameIter};
use smdfs::index::{load_offsets, GroupIndex};
use smdfs::shard::reader::replay_log;
use smdfs::Run;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("corpus").join("demo-run")
}

fn corpus_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![corpus()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

fn copy_corpus(to: &Path) {
    for f in corpus_files() {
        let rel = f.strip_prefix(corpus()).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dst).unwrap();
    }
}

/// The valid frames of a log image, as (offset, payload).
fn frames(log: &[u8]) -> Vec<(u64, Vec<u8>)> {
    FrameIter::new(log).map(|f| (f.offset, f.payload.to_vec())).collect()
}

/// Bytes before the first frame (FORMAT.md: a 16-byte header).
const LOG_HEADER_LEN: usize = 16;

/// A way to damage bytes.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Overwrite(usize, Vec<u8>),
    Splice(usize, usize, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| Damage::Flip(a, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..24)).prop_map(|(a, v)| Damage::Overwrite(a, v)),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Damage::Splice(a, b, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match d {
        Damage::Truncate(k) => bytes.truncate(k % n),
        Damage::Flip(k, bit) => bytes[k % n] ^= 1 << bit,
        Damage::Overwrite(k, v) => {
            for (j, b) in v.iter().enumerate() {
                if let Some(x) = bytes.get_mut(k % n + j) {
                    *x = *b;
                }
            }
        }
        Damage::Splice(a, b, len) => {
            let (a, b) = (a % n, b % n);
            let len = (*len).min(n - a).min(n - b);
            let src = bytes[a..a + len].to_vec();
            bytes[b..b + len].copy_from_slice(&src);
        }
    }
}

/// Opens a damaged run and reads everything the reader offers.
fn read_everything(dir: &Path) {
    let Ok(run) = Run::open(dir) else { return };
    let _ = smdfs::RunInfo::of(&run);
    for g in run.groups() {
        let n = g.index.len().min(10_000);
        let mut ids = vec![0u64; n as usize];
        let _ = run.read_ids(&g.spec.name, 0, &mut ids);
        let _ = run.row_of(&g.spec.name, 1003);
    }
    for f in run.fields() {
        let Ok(r) = run.field(&f.spec.path) else { continue };
        let rows = r.rows().min(10_000);
        if f.spec.kind.is_ragged() {
            for i in 0..rows {
                let _ = r.ragged_row(i);
            }
        } else {
            let mut buf = vec![0u8; rows as usize * r.row_bytes()];
            let _ = r.read_rows(0, &mut buf);
        }
        let mut p = vec![0u8; rows as usize];
        let _ = r.read_present(0, &mut p);
    }
    for loc in run.shardwise("", Some(1)).into_iter().flatten().take(10_000) {
        let _ = run.id_at(0, loc);
    }
    let _ = smdfs::verify(dir, &mut |_, _| {});
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_logs_decode_to_a_prefix_or_an_error(file in 0usize..2, ds in proptest::collection::vec(damage(), 1..4)) {
        let path = corpus().join(format!("shard-0000{file}")).join("log");
        let original = std::fs::read(&path).unwrap();
        let mut bytes = original.clone();
        for d in &ds {
            apply(&mut bytes, d);
        }
        if check_log_header(&bytes).is_ok() {
            let intact = frames(&original);
            let got = frames(&bytes);
            // The first byte the damage changed (a truncation ends the bytes there).
            let damaged_at = original.iter().zip(&bytes).position(|(a, b)| a != b).unwrap_or(bytes.len());
            // Every frame that ends before the damage decodes exactly as in the undamaged log.
            let kept = intact.iter().take_while(|(at, payload)| *at as usize + payload.len() + 12 <= damaged_at).count();
            prop_assert!(got.len() >= kept, "{} frames before the damage at {damaged_at}, {} decoded", kept, got.len());
            prop_assert_eq!(&got[..kept], &intact[..kept]);
            // Past it, only whole frames of the undamaged log (a splice can copy one); a frame the
            // damage made up would need both of its crc32c checksums to match by chance.
            for (at, payload) in &got[kept..] {
                prop_assert!(intact.iter().any(|(_, p)| p == payload), "frame at {at}: not a frame of the undamaged log");
            }
            // One truncation or bit flip among the frames ends the log right there: crc32c
            // catches every single-bit error, so nothing after the damage decodes.
            if ds.len() == 1 && matches!(ds[0], Damage::Truncate(_) | Damage::Flip(..)) && damaged_at >= LOG_HEADER_LEN {
                prop_assert_eq!(got.len(), kept, "decoded past a single {:?} at {}", ds[0], damaged_at);
            }
        }
        let _ = replay_log(&path, &bytes, true);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut log = smdfs::format::encode_log_header(0).to_vec();
        log.extend_from_slice(&bytes);
        let _ = replay_log(Path::new("fuzz"), &log, true);
        let _ = replay_log(Path::new("fuzz"), &bytes, true);
        let _ = smdfs::format::decode_commit(&bytes);
        let _ = serde_json::from_slice::<smdfs::format::manifest::Manifest>(&bytes);
    }

    #[test]
    fn a_run_with_any_damaged_file_opens_or_errors_and_reads_without_panics(
        pick in any::<usize>(), ds in proptest::collection::vec(damage(), 1..4)
    ) {
        let dir = tempfile::tempdir().unwrap();
        copy_corpus(dir.path());
        let files = corpus_files();
        let rel = files[pick % files.len()].strip_prefix(corpus()).unwrap().to_path_buf();
        let target = dir.path().join(&rel);
        let mut bytes = std::fs::read(&target).unwrap();
        for d in &ds {
            apply(&mut bytes, d);
        }
        std::fs::write(&target, &bytes).unwrap();
        if rel.starts_with("index") {
            let _ = GroupIndex::load(&target).map(|g| { let _ = g.locate(3); g.for_each_segment(0, 100, |_, _| {}); });
            let _ = load_offsets(&target, 40);
        }
        read_everything(dir.path());
    }
}

#[test]
fn the_corpus_itself_is_a_sound_run() {
    let dir = tempfile::tempdir().unwrap();
    copy_corpus(dir.path());
    let r = smdfs::verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(r.is_sound(), "{:?}", r.problems);
    assert_eq!(Run::open(dir.path()).unwrap().len(), 40);
}
