//! The generated damage family (issue "hostile input", acceptance): a small complete demo run
//! (240 events, 2 shards, batches of 16 events so the logs hold many commits), damaged one
//! way at a time, and every damaged copy opened, read, described, exported and verified
//! in-process. The family:
//!
//! - every single-bit flip of `manifest.json`;
//! - every single-field edit of the manifest: each JSON leaf replaced by a plausible wrong
//!   value of its type and by a value of another type, once with the stale checksum and once
//!   resealed (so the checks behind the checksum are exercised too);
//! - truncation of every log, column and index file at every frame, row or word boundary ± 1.
//!
//! For each: no panic, no hang (a watchdog aborts a case that takes over 60 s), no wrong
//! value served with success (every byte the view's plan serves — what the mount and export
//! serve — and every field reader's row is checked against the demo formula), `verify`
//! reports damage whenever open refuses, and for every damaged run. The only edits a reader
//! cannot tell from a writer's are resealed summary values (they exist only in the
//! manifest): those may serve the edited value, never a wrong row.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use smdfs::demo;
use smdfs::format::manifest::seal;
use smdfs::h5::layout::{plan, DatasetLayout};
use smdfs::{verify, Run, RunState};

const N: u64 = 240;

/// What a case may legitimately do besides being refused.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Damaged: verify must report it; a successful open must serve every row right.
    Damage,
    /// A resealed summary edit: the summary may read as edited; rows must still be right.
    SummaryMayDiffer,
}

#[derive(Default)]
struct Tally {
    cases: u64,
    opened: u64,
    refused: u64,
    verified_damaged: u64,
    exported: u64,
    failures: Vec<String>,
}

/// Runs `f` while a watchdog aborts the process if one case stays unfinished for 60 s.
struct Watchdog {
    current: Arc<Mutex<(String, Instant)>>,
    done: Arc<AtomicU64>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let current = Arc::new(Mutex::new((String::new(), Instant::now())));
        let done = Arc::new(AtomicU64::new(0));
        let (c, d) = (current.clone(), done.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if d.load(Ordering::Relaxed) == 1 {
                return;
            }
            let (name, since) = c.lock().unwrap().clone();
            if since.elapsed() > Duration::from_secs(60) {
                eprintln!("damage family: case {name:?} hangs (over 60 s)");
                std::process::abort();
            }
        });
        Watchdog { current, done }
    }

    fn case(&self, name: &str) {
        *self.current.lock().unwrap() = (name.to_string(), Instant::now());
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(1, Ordering::Relaxed);
    }
}

fn le<T: Copy>(v: &[T], f: impl Fn(&T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(f).collect()
}

/// Every dataset the demo's view serves, as the formula gives it.
fn expected() -> BTreeMap<String, Vec<u8>> {
    let all: Vec<u64> = (0..N).collect();
    let hits: Vec<u64> = all.iter().copied().filter(|&i| demo::hits(i).is_some()).collect();
    let mut m = BTreeMap::new();
    m.insert("timestamp".into(), le(&all, |&i| demo::id(i).to_le_bytes().to_vec()));
    m.insert("energy".into(), le(&all, |&i| demo::energy(i).to_le_bytes().to_vec()));
    m.insert("det/image".into(), le(&all, |&i| demo::image(i).iter().flat_map(|x| x.to_le_bytes()).collect()));
    m.insert("count".into(), le(&all, |&i| demo::count(i).to_le_bytes().to_vec()));
    m.insert("maybe".into(), le(&all, |&i| demo::maybe(i).unwrap_or(f32::NAN).to_le_bytes().to_vec()));
    m.insert("_present/maybe".into(), le(&all, |&i| vec![u8::from(demo::maybe(i).is_some())]));
    m.insert("unaligned_hits".into(), le(&hits, |&i| (i as u32).to_le_bytes().to_vec()));
    m.insert("unaligned_hits_timestamp".into(), le(&hits, |&i| demo::id(i).to_le_bytes().to_vec()));
    m.insert("tag".into(), le(&all, |&i| demo::tag(i).into_bytes()));
    m.insert("tag_len".into(), le(&all, |&i| (demo::tag(i).len() as u64).to_le_bytes().to_vec()));
    let mut offs = vec![0u64];
    for i in 0..N {
        offs.push(offs[offs.len() - 1] + demo::tag(i).len() as u64);
    }
    m.insert("tag_offsets".into(), le(&offs, |x| x.to_le_bytes().to_vec()));
    m.insert("summary/n_events".into(), N.to_le_bytes().to_vec());
    m.insert("summary/max_energy".into(), demo::energy(N - 1).to_le_bytes().to_vec());
    m
}

/// Checks what an opened run serves; `Err` names the first wrong value.
fn check_served(run: &Run, want: &BTreeMap<String, Vec<u8>>, expect: Expect) -> Result<(), String> {
    if run.len() != N {
        return Err(format!("served {} events of {N} (state {})", run.len(), run.state()));
    }
    let plans: Vec<DatasetLayout> = plan(run);
    let mut seen = 0;
    for d in &plans {
        let mask;
        let w = match want.get(&d.path) {
            Some(w) => {
                seen += 1;
                w
            }
            // A mask of a field with no missing rows (a manifest claiming some): all present.
            None if d.path.starts_with("_present/") => {
                mask = vec![1u8; d.byte_size() as usize];
                &mask
            }
            None if d.path.starts_with("summary/") && expect == Expect::SummaryMayDiffer => continue,
            None => return Err(format!("served an unknown dataset /{}", d.path)),
        };
        if d.path.starts_with("summary/") && expect == Expect::SummaryMayDiffer {
            continue;
        }
        let size = d.byte_size();
        if size != w.len() as u64 {
            return Err(format!("/{} holds {size} bytes, the demo {}", d.path, w.len()));
        }
        let mut buf = vec![0u8; w.len()];
        match d.read(run, 0, &mut buf) {
            Ok(()) if &buf == w => {}
            Ok(()) => return Err(format!("/{} serves wrong bytes", d.path)),
            // A read error is not a wrong value served with success.
            Err(_) => {}
        }
    }
    let summaries = want.keys().filter(|k| k.starts_with("summary/")).count();
    if seen != want.len() && !(expect == Expect::SummaryMayDiffer && seen + summaries >= want.len()) {
        let names: Vec<&String> = plans.iter().map(|d| &d.path).collect();
        return Err(format!("served datasets {names:?}, not the demo's"));
    }
    // The library's own readers too.
    let energy = run.field("energy").and_then(|f| f.read_all::<f64>());
    if let Ok(e) = energy {
        if e.iter().enumerate().any(|(i, &x)| x != demo::energy(i as u64)) {
            return Err("field reader serves a wrong energy".into());
        }
    }
    if let Ok(f) = run.field("tag") {
        for i in 0..N {
            if let Ok(b) = f.ragged_row(i) {
                if b != demo::tag(i).as_bytes() {
                    return Err(format!("field reader serves tag row {i} as {b:?}"));
                }
            }
        }
    }
    Ok(())
}

/// One damaged run: open, read, describe, maybe export, verify.
fn try_case(dir: &Path, name: &str, expect: Expect, export: bool, want: &BTreeMap<String, Vec<u8>>, t: &mut Tally) {
    t.cases += 1;
    let opened = Run::open(dir);
    let refused = opened.is_err();
    if let Ok(run) = &opened {
        t.opened += 1;
        if let Err(e) = check_served(run, want, expect) {
            t.failures.push(format!("{name}: {e}"));
        }
        let info = smdfs::RunInfo::of(run);
        assert!(serde_json::to_string(&info).is_ok());
        if export {
            let out = dir.parent().unwrap().join("x.h5");
            if smdfs::h5::export::export(run, &out, &Default::default(), &mut |_, _| {}).is_ok() {
                t.exported += 1;
            }
            let _ = std::fs::remove_file(&out);
        }
    } else {
        t.refused += 1;
    }
    drop(opened);
    let rep = verify(dir, &mut |_, _| {}).expect("verify reports damage rather than failing");
    if rep.is_sound() {
        if refused {
            t.failures.push(format!("{name}: open refuses the run but verify calls it sound"));
        } else if expect == Expect::Damage {
            t.failures.push(format!("{name}: verify calls a damaged run sound"));
        }
    } else {
        t.verified_damaged += 1;
    }
}

struct Pristine {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl Pristine {
    fn restore(&self, rel: &Path) {
        std::fs::write(self.dir.join(rel), &self.files[rel]).unwrap();
    }
}

fn pristine(root: &Path) -> Pristine {
    let dir = root.join("run");
    // The demo's events, sent in batches of 16 so each log holds many commit frames.
    let smd = smdfs::SmallData::builder(&dir).servers(2).batch_events(16).build().unwrap();
    std::thread::scope(|s| {
        for k in 0..3u64 {
            let mut c = smd.client();
            s.spawn(move || {
                demo::write_client_share(&mut c, N, 3, k).unwrap();
                c.finish().unwrap();
            });
        }
    });
    demo::save_demo_summary(&smd).unwrap();
    let r = smd.done().unwrap();
    assert_eq!(r.events, N);
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "writer.lock" {
                files.insert(p.strip_prefix(&dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    Pristine { dir, files }
}

/// A scratch directory in memory where there is one (thousands of rewrites of small files).
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn sound_and_right(p: &Pristine, want: &BTreeMap<String, Vec<u8>>) {
    let run = Run::open(&p.dir).unwrap();
    assert_eq!(run.state(), RunState::Complete);
    assert!(run.warnings().is_empty(), "{:?}", run.warnings());
    check_served(&run, want, Expect::Damage).unwrap();
    assert!(verify(&p.dir, &mut |_, _| {}).unwrap().is_sound());
}

fn report(what: &str, t: &Tally, since: Instant) {
    eprintln!(
        "{what}: {} runs: {} opened and checked, {} refused, verify damaged {}, exported {} ({:.1} s)",
        t.cases,
        t.opened,
        t.refused,
        t.verified_damaged,
        t.exported,
        since.elapsed().as_secs_f64()
    );
    assert!(
        t.failures.is_empty(),
        "{what}: {} failures, first: {:#?}",
        t.failures.len(),
        &t.failures[..t.failures.len().min(20)]
    );
}

#[test]
fn every_bit_flip_of_the_manifest_is_refused_or_served_right_and_verify_reports_it() {
    let tmp = scratch();
    let p = pristine(tmp.path());
    let want = expected();
    sound_and_right(&p, &want);
    let dog = Watchdog::start();
    let rel = PathBuf::from("manifest.json");
    let bytes = p.files[&rel].clone();
    let file = std::fs::OpenOptions::new().write(true).open(p.dir.join(&rel)).unwrap();
    let (mut t, since) = (Tally::default(), Instant::now());
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let name = format!("manifest.json byte {i} bit {bit}");
            dog.case(&name);
            // In place: one byte written, no truncation (thousands of cases).
            file.write_all_at(&[bytes[i] ^ (1 << bit)], i as u64).unwrap();
            try_case(&p.dir, &name, Expect::Damage, t.opened.is_multiple_of(50), &want, &mut t);
            file.write_all_at(&bytes[i..i + 1], i as u64).unwrap();
        }
    }
    p.restore(&rel);
    report("bit flips of manifest.json", &t, since);
    assert_eq!(t.cases, 8 * bytes.len() as u64);
}

/// Every leaf of a JSON value, by JSON pointer (empty arrays and objects count as leaves).
fn leaves(v: &Json, at: String, out: &mut Vec<String>) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            m.iter().for_each(|(k, x)| leaves(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        Json::Array(a) if !a.is_empty() => a.iter().enumerate().for_each(|(k, x)| leaves(x, format!("{at}/{k}"), out)),
        _ => out.push(at),
    }
}

const DTYPES: &[&str] = &["bool", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64"];
const KINDS: &[&str] = &["fixed", "ragged", "bytes", "str"];

/// A plausible wrong value of the leaf's own type.
fn same_type(v: &Json) -> Json {
    match v {
        Json::Null => Json::Object(Default::default()),
        Json::Bool(b) => Json::Bool(!b),
        Json::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => (u + 1).into(),
            (None, Some(f)) => (f * 2.0 + 1.0).into(),
            _ => 0.into(),
        },
        Json::String(s) if DTYPES.contains(&s.as_str()) => {
            DTYPES[(DTYPES.iter().position(|d| d == s).unwrap() + 1) % DTYPES.len()].into()
        }
        Json::String(s) if KINDS.contains(&s.as_str()) => {
            KINDS[(KINDS.iter().position(|d| d == s).unwrap() + 1) % KINDS.len()].into()
        }
        Json::String(s) if s == "complete" => "writing".into(),
        Json::String(s) if s.is_empty() => "x".into(),
        Json::String(s) => {
            let mut t = s.clone();
            let last = t.pop().unwrap();
            t.push(if last == '0' { '1' } else { '0' });
            t.into()
        }
        Json::Array(_) => serde_json::json!([1000]),
        Json::Object(_) => serde_json::json!({"x": 1}),
    }
}

/// A value of another type.
fn other_type(v: &Json) -> Json {
    match v {
        Json::String(_) => 7.into(),
        Json::Number(_) => "7".into(),
        Json::Bool(_) => "true".into(),
        Json::Null | Json::Object(_) => serde_json::json!([]),
        Json::Array(_) => Json::Null,
    }
}

#[test]
fn every_single_field_edit_of_the_manifest_is_refused_or_served_right_and_verify_reports_it() {
    let tmp = scratch();
    let p = pristine(tmp.path());
    let want = expected();
    let dog = Watchdog::start();
    let rel = PathBuf::from("manifest.json");
    let original: Json = serde_json::from_slice(&p.files[&rel]).unwrap();
    let mut paths = Vec::new();
    leaves(&original, String::new(), &mut paths);
    assert!(paths.len() > 100, "the demo's manifest has {} leaves", paths.len());
    let (mut t, since) = (Tally::default(), Instant::now());
    for ptr in &paths {
        if ptr == "/crc32c" {
            continue; // its edits are the bit flips' business
        }
        let leaf = original.pointer(ptr).unwrap();
        for (how, value) in [("same type", same_type(leaf)), ("other type", other_type(leaf))] {
            let mut edited = original.clone();
            *edited.pointer_mut(ptr).unwrap() = value.clone();
            let pretty = serde_json::to_vec_pretty(&edited).unwrap();
            let summary = ptr.starts_with("/summary/");
            for (sealed, bytes) in [(false, pretty.clone()), (true, seal(&pretty))] {
                let name = format!("{ptr} = {value} ({how}, {})", if sealed { "resealed" } else { "stale checksum" });
                dog.case(&name);
                std::fs::write(p.dir.join(&rel), &bytes).unwrap();
                let expect = if sealed && summary { Expect::SummaryMayDiffer } else { Expect::Damage };
                try_case(&p.dir, &name, expect, sealed, &want, &mut t);
            }
        }
    }
    p.restore(&rel);
    report("field edits of manifest.json", &t, since);
}

/// Frame boundaries of a log image: 16, then each frame's end.
fn frame_ends(log: &[u8]) -> Vec<usize> {
    let mut v = vec![16usize];
    v.extend(smdfs::format::FrameIter::new(log).map(|f| f.offset as usize + f.payload.len() + 12));
    v
}

#[test]
fn truncating_any_log_column_or_index_file_at_a_boundary_is_refused_or_reindexed_right() {
    let tmp = scratch();
    let p = pristine(tmp.path());
    let want = expected();
    let dog = Watchdog::start();
    let mut per_kind: BTreeMap<&str, Tally> = BTreeMap::new();
    let since = Instant::now();
    // Row sizes of the columns: from the shard's replayed log.
    for (rel, bytes) in &p.files {
        let name = rel.file_name().unwrap().to_str().unwrap();
        let (kind, bounds): (&str, Vec<usize>) = if name == "log" {
            ("log", frame_ends(bytes))
        } else if name.ends_with(".col") {
            let shard =
                smdfs::shard::reader::Shard::load(&p.dir, rel.to_str().unwrap()[6..11].parse().unwrap(), None).unwrap();
            let id: u32 = name[1..7].parse().unwrap();
            let c = shard.columns.iter().find(|c| c.id == id).unwrap();
            let rows = shard.group_rows(&c.group).max(1) as usize;
            // Row boundaries; a ragged data column's rows vary, so its element boundaries.
            let row = if bytes.len() % rows == 0 { bytes.len() / rows } else { 1 };
            ("column", (0..=bytes.len() / row.max(1)).map(|k| k * row).collect())
        } else if name.ends_with(".idx") || name.ends_with(".off") {
            ("index", (0..=(bytes.len() - 32) / 8).map(|k| 32 + 8 * k).collect())
        } else {
            continue;
        };
        let t = per_kind.entry(kind).or_default();
        let mut cuts: Vec<usize> =
            bounds.iter().flat_map(|&b| [b.saturating_sub(1), b, b + 1]).filter(|&c| c < bytes.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            let case = format!("{} truncated to {cut} of {} bytes", rel.display(), bytes.len());
            dog.case(&case);
            std::fs::write(p.dir.join(rel), &bytes[..cut]).unwrap();
            try_case(&p.dir, &case, Expect::Damage, t.cases.is_multiple_of(40), &want, t);
        }
        p.restore(rel);
    }
    let mut all = Tally::default();
    for (kind, t) in &per_kind {
        eprintln!(
            "truncations of {kind} files: {} runs: {} opened and checked (re-indexed), {} refused, verify damaged {}, exported {}",
            t.cases, t.opened, t.refused, t.verified_damaged, t.exported
        );
        all.cases += t.cases;
        all.opened += t.opened;
        all.refused += t.refused;
        all.verified_damaged += t.verified_damaged;
        all.exported += t.exported;
        all.failures.extend(t.failures.iter().cloned());
    }
    report("truncations", &all, since);
    sound_and_right(&p, &want);
}
