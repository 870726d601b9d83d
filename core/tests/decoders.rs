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
        let mut bytes = std::fs::read(&path).unwrap();
        for d in &ds {
            apply(&mut bytes, d);
        }
        if check_log_header(&bytes).is_ok() {
            let frames: Vec<_> = FrameIter::new(&bytes).map(|f| f.payload.len()).collect();
            prop_assert!(frames.iter().all(|&n| n <= bytes.len()));
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
