//! Writing with real server and client threads, read back through the reader and compared
//! value by value with what was sent; with `sync_commits(true)` too, where strace counts the
//! fdatasync calls of a child process writing the demo (skipped with a message without
//! strace, a failure under `SMDFS_REQUIRE_TOOLS=1`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use smdfs::{demo, fields, Error, Run, RunState, SmallData, Value};
use smdfs_tests::check_demo_run;

#[test]
fn demo_round_trips_for_every_server_and_client_mix() {
    for servers in [1, 3] {
        for clients in [1, 4, 8] {
            let dir = tempfile::tempdir().unwrap();
            let n = 9_001;
            let report = demo::write_demo(dir.path(), n, servers, clients, false).unwrap();
            assert_eq!(report.events, n);
            assert_eq!(report.duplicates(), 0);
            let run = Run::open(dir.path()).unwrap();
            assert_eq!(run.state(), RunState::Complete);
            assert_eq!(run.shards().len(), servers);
            check_demo_run(&run, n);
        }
    }
}

#[test]
fn schema_mismatch_names_field_expected_and_given_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(2).batch_events(7).build().unwrap();
    let mut c = smd.client();
    for i in 0..100u64 {
        c.event(i, fields! { "energy" => i as f64, "det/image" => vec![i as u16; 6] }).unwrap();
    }
    let e = c.event(100, fields! { "energy" => 1.0f32 }).unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { .. }));
    let msg = e.to_string();
    assert!(msg.contains("energy") && msg.contains("f64 scalar") && msg.contains("f32 scalar"), "{msg}");
    let e = c.event(101, fields! { "energy" => 1.0, "det/image" => vec![1u16; 5] }).unwrap_err().to_string();
    assert!(e.contains("det/image") && e.contains("[6]") && e.contains("[5]"), "{e}");
    // A rejected event writes none of its fields, even valid ones listed first.
    for i in 102..150u64 {
        c.event(i, fields! { "energy" => i as f64, "det/image" => vec![i as u16; 6] }).unwrap();
    }
    drop(c);
    smd.done().unwrap();
    let run = Run::open(dir.path()).unwrap();
    let e = run.field("energy").unwrap().read_all::<f64>().unwrap();
    let want: Vec<f64> = (0..100).chain(102..150).map(|i| i as f64).collect();
    assert_eq!(e, want);
    let img = run.field("det/image").unwrap().read_all::<u16>().unwrap();
    assert_eq!(img.len(), want.len() * 6);
}

#[test]
fn bad_paths_and_malformed_values_are_rejected_at_event() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(1).build().unwrap();
    let mut c = smd.client();
    for p in ["../x", "/abs", "a//b", "", "a/./b", "x\0y"] {
        let e = c.event(1, [(p, Value::from(1u8))]).unwrap_err();
        assert!(matches!(e, Error::BadPath { .. }), "{p:?}: {e}");
    }
    let e = c.event(1, [("img", Value::array(&[1u8, 2, 3], &[2, 2]))]).unwrap_err();
    assert!(matches!(e, Error::BadValue { .. }), "{e}");
    let e = c.event(1, fields! { "a" => 1u8, "a" => 2u8 }).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    drop(c);
    let r = smd.done().unwrap();
    assert_eq!(r.events, 0);
}

#[test]
fn fills_unaligned_ragged_text_bool_and_groups_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path())
        .servers(3)
        .batch_events(5)
        .unaligned("sparse")
        .aligned_group("slow", &["temp"])
        .fill("n", 7i32)
        .build()
        .unwrap();
    let n = 200u64;
    std::thread::scope(|s| {
        for k in 0..4u64 {
            let mut c = smd.client();
            s.spawn(move || {
                for i in (k..n).step_by(4) {
                    let wave: Vec<f32> = (0..i % 7).map(|j| (i * 10 + j) as f32).collect();
                    let name = format!("ev-{i}");
                    let mut f = vec![("wave", Value::ragged(&wave)), ("name", Value::from(name.as_str()))];
                    if i % 3 == 0 {
                        f.push(("n", Value::from(i as i32)));
                        f.push(("flag", Value::from(i % 2 == 0)));
                        f.push(("i8", Value::from(i as i8)));
                        f.push(("u64", Value::from(i)));
                    }
                    if i % 10 == 0 {
                        f.push(("sparse", Value::from(i as f64)));
                    }
                    if i % 20 == 0 {
                        f.push(("temp", Value::from(i as f32)));
                    }
                    c.event(10 * i, &f).unwrap();
                }
                c.reduce("seen", (k..n).step_by(4).count() as u64).unwrap();
                c.reduce("peak", (k..n).step_by(4).max().unwrap() as f64).unwrap();
            });
        }
    });
    assert_eq!(smd.sum::<u64>("seen").unwrap(), n);
    assert_eq!(smd.max::<f64>("peak").unwrap(), (n - 1) as f64);
    assert_eq!(smd.min::<f64>("peak").unwrap(), (n - 4) as f64);
    assert_eq!(smd.count("seen").unwrap(), 4);
    assert!(smd.sum::<u64>("nothing").is_err());
    smd.save_summary(fields! { "label" => "run 7", "vec" => vec![1.0f64, 2.0] }).unwrap();
    smd.done().unwrap();

    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.len(), n);
    let nf = run.field("n").unwrap().read_all::<i32>().unwrap();
    let flag = run.field("flag").unwrap().read_all::<bool>().unwrap();
    let i8s = run.field("i8").unwrap().read_all::<i8>().unwrap();
    let u64s = run.field("u64").unwrap().read_all::<u64>().unwrap();
    let wave = run.field("wave").unwrap();
    let name = run.field("name").unwrap();
    for i in 0..n {
        let k = i as usize;
        assert_eq!(run.event_id("", i).unwrap(), 10 * i);
        if i % 3 == 0 {
            assert_eq!((nf[k], flag[k], i8s[k], u64s[k]), (i as i32, i % 2 == 0, i as i8, i));
        } else {
            assert_eq!((nf[k], flag[k], i8s[k], u64s[k]), (7, false, i8::MIN, u64::MAX), "fill row {i}");
        }
        let want: Vec<f32> = (0..i % 7).map(|j| (i * 10 + j) as f32).collect();
        assert_eq!(wave.row::<f32>(i).unwrap(), want);
        assert_eq!(name.ragged_row(i).unwrap(), format!("ev-{i}").as_bytes());
    }
    let sparse = run.field("sparse").unwrap();
    assert_eq!(sparse.rows(), n / 10);
    assert_eq!(sparse.read_all::<f64>().unwrap(), (0..n).step_by(10).map(|i| i as f64).collect::<Vec<_>>());
    let slow = run.group("slow").unwrap();
    assert_eq!(slow.index.len(), n / 20);
    assert_eq!(
        run.field("temp").unwrap().read_all::<f32>().unwrap(),
        (0..n).step_by(20).map(|i| i as f32).collect::<Vec<_>>()
    );
    assert_eq!(run.field("n").unwrap().data().missing, n - n.div_ceil(3));
    let st = run.stats()["n"];
    assert_eq!((st.count, st.min, st.max), (n.div_ceil(3), 0.0, 198.0));
    assert_eq!(run.summary_value("label").unwrap().data(), b"run 7");
    assert_eq!(run.summary_value("vec").unwrap().shape, vec![2]);
}

#[test]
fn callbacks_see_every_event_on_the_client_that_produced_it() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<HashMap<u64, std::thread::ThreadId>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let smd = SmallData::builder(dir.path())
        .servers(2)
        .callback(move |id, fields| {
            assert_eq!(fields[0].0, "x");
            assert!(s2.lock().unwrap().insert(id, std::thread::current().id()).is_none());
        })
        .build()
        .unwrap();
    let threads: Mutex<HashMap<u64, std::thread::ThreadId>> = Mutex::default();
    std::thread::scope(|s| {
        for k in 0..3u64 {
            let mut c = smd.client();
            let threads = &threads;
            s.spawn(move || {
                for i in (k..300).step_by(3) {
                    c.event(i, fields! { "x" => i }).unwrap();
                    threads.lock().unwrap().insert(i, std::thread::current().id());
                }
            });
        }
    });
    smd.done().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 300);
    assert_eq!(*seen, *threads.lock().unwrap());
}

#[test]
fn rayon_workers_each_get_a_client() {
    use rayon::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(2).batch_events(64).build().unwrap();
    (0..10_000u64)
        .into_par_iter()
        .for_each_init(|| smd.client(), |c, i| c.event(i * 2, fields! { "v" => i as f64 }).unwrap());
    let r = smd.done().unwrap();
    assert_eq!(r.events, 10_000);
    let run = Run::open(dir.path()).unwrap();
    let v = run.field("v").unwrap().read_all::<f64>().unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as f64));
}

#[test]
fn done_refuses_while_clients_are_alive_and_duplicates_are_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let smd = SmallData::builder(dir.path()).servers(2).build().unwrap();
    let mut a = smd.client();
    let mut b = smd.client();
    a.event(5, fields! { "x" => 1u8 }).unwrap();
    b.event(5, fields! { "x" => 2u8 }).unwrap();
    a.event(6, fields! { "x" => 3u8 }).unwrap();
    drop(a);
    match smd.done() {
        Err(Error::Usage(m)) => assert!(m.contains("1 client"), "{m}"),
        other => panic!("done with a live client: {other:?}"),
    }
    drop(b);
    // The run was dropped without done(): it reads as crashed, with everything committed
    // (b's server was detached and commits b's last batch as b drops: wait for it).
    let mut run = Run::open(dir.path()).unwrap();
    for _ in 0..500 {
        if run.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        run = Run::open(dir.path()).unwrap();
    }
    assert_eq!(run.state(), RunState::Crashed);
    assert_eq!(run.len(), 3);
    assert_eq!(run.group("").unwrap().duplicates, 1);
    let x = run.field("x").unwrap().read_all::<u8>().unwrap();
    assert_eq!(x[2], 3);
    assert!(x[..2] == [1, 2] || x[..2] == [2, 1]);
}

#[test]
fn an_existing_run_is_not_overwritten_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    demo::write_demo(dir.path(), 10, 1, 1, false).unwrap();
    let e = SmallData::builder(dir.path()).build().err().unwrap().to_string();
    assert!(e.contains("already holds a run"), "{e}");
    demo::write_demo(dir.path(), 20, 2, 2, true).unwrap();
    check_demo_run(&Run::open(dir.path()).unwrap(), 20);
}

/// Writes the demo run of `n` events (docs/ARCHITECTURE.md "The demo run") into `dir` with 2 servers, 3
/// clients and batches of 64 events, with `sync_commits(sync)`.
fn write_demo_synced(dir: &std::path::Path, n: u64, sync: bool) {
    let smd = SmallData::builder(dir).servers(2).batch_events(64).sync_commits(sync).build().unwrap();
    std::thread::scope(|s| {
        for k in 0..3u64 {
            let mut c = smd.client();
            s.spawn(move || {
                demo::write_client_share(&mut c, n, 3, k).unwrap();
                c.finish().unwrap();
            });
        }
    });
    demo::save_demo_summary(&smd).unwrap();
    smd.done().unwrap();
}

/// The environment variable that makes [`sync_commits_child_writes_the_demo`] write: `DIR`,
/// a newline, then `on` or `off`.
const SYNC_CHILD: &str = "SMDFS_SYNC_CHILD";
const SYNC_EVENTS: u64 = 5_000;

#[test]
#[ignore = "the child process of a_run_written_with_sync_commits_is_the_demo_and_fdatasyncs_every_commit"]
fn sync_commits_child_writes_the_demo() {
    let spec = std::env::var(SYNC_CHILD).expect("run by the sync_commits test, which sets SMDFS_SYNC_CHILD");
    let (dir, sync) = spec.split_once('\n').unwrap();
    write_demo_synced(std::path::Path::new(dir), SYNC_EVENTS, sync == "on");
}

/// Runs [`sync_commits_child_writes_the_demo`] in a child process under strace; returns the
/// child's fdatasync calls on commit logs and on other files.
fn fdatasyncs_of_a_child_writing(dir: &std::path::Path, sync: bool) -> (u64, u64) {
    // One trace file per thread (`-ff`: `<prefix>.<tid>`), so no call is split across lines.
    let traces = dir.with_extension("strace");
    std::fs::create_dir(&traces).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("strace")
        .args(["-ff", "-qq", "-y", "-e", "trace=fdatasync", "-o"])
        .arg(traces.join("t"))
        .arg(exe)
        .args(["writer::sync_commits_child_writes_the_demo", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(SYNC_CHILD, format!("{}\n{}", dir.display(), if sync { "on" } else { "off" }))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "the child test did not run: {stdout}");
    let (mut logs, mut data) = (0, 0);
    for t in std::fs::read_dir(&traces).unwrap() {
        let trace = std::fs::read_to_string(t.unwrap().path()).unwrap();
        // One thread's calls in order: a commit's log is synced after the data it names.
        let mut data_since_log = 0;
        for call in trace.lines().filter(|l| l.starts_with("fdatasync(")) {
            assert!(call.trim_end().ends_with("= 0"), "an fdatasync failed: {call}");
            if call.contains("/log>") {
                assert!(data_since_log > 0, "a log fdatasync with no data fdatasync before it: {call}");
                (logs, data_since_log) = (logs + 1, 0);
            } else {
                (data, data_since_log) = (data + 1, data_since_log + 1);
            }
        }
    }
    (logs, data)
}

#[test]
fn a_run_written_with_sync_commits_is_the_demo_and_fdatasyncs_every_commit() {
    let tmp = tempfile::tempdir().unwrap();
    // In this process: the data, by the formula and by verify.
    let dir = tmp.path().join("in-process");
    write_demo_synced(&dir, SYNC_EVENTS, true);
    let run = Run::open(&dir).unwrap();
    assert_eq!(run.state(), RunState::Complete);
    check_demo_run(&run, SYNC_EVENTS);
    let v = smdfs::verify(&dir, &mut |_, _| {}).unwrap();
    assert!(v.is_sound(), "{:?}", v.problems);

    // Under strace: with sync on, every commit is covered by a log fdatasync that follows
    // the fdatasyncs of the data it names; with sync off, nothing is fdatasynced.
    if !smdfs_tests::machine_has(&[smdfs_tests::Need::Tool("strace")]) {
        return;
    }
    let (on, off) = (tmp.path().join("on"), tmp.path().join("off"));
    let (on_logs, on_data) = fdatasyncs_of_a_child_writing(&on, true);
    let (off_logs, off_data) = fdatasyncs_of_a_child_writing(&off, false);
    for d in [&on, &off] {
        let run = Run::open(d).unwrap();
        check_demo_run(&run, SYNC_EVENTS);
        let v = smdfs::verify(d, &mut |_, _| {}).unwrap();
        assert!(v.is_sound(), "{}: {:?}", d.display(), v.problems);
    }
    let commits = smdfs_tests::commits_in_logs(&on);
    assert!(commits >= SYNC_EVENTS / 64, "{commits} commits of batches of at most 64 events");
    eprintln!("sync_commits(true): {commits} commits, {on_logs} log and {on_data} data fdatasyncs");
    // The shard's committer groups the batches queued meanwhile into one round (one log
    // fdatasync after the data fdatasyncs of all of them), so at most one per commit.
    assert!(
        (1..=commits).contains(&on_logs),
        "sync_commits(true): {on_logs} log fdatasyncs for {commits} commits (1 to one per commit)"
    );
    assert!(on_data >= commits, "sync_commits(true): {on_data} data fdatasyncs for {commits} commits");
    assert_eq!((off_logs, off_data), (0, 0), "sync_commits(false) fdatasyncs nothing");
}

#[test]
fn writer_attributes_reach_the_layout_and_reserved_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let smd = SmallData::builder(&run_dir)
        .servers(1)
        .long_name("energy", "photon energy")
        .attr("energy", "source", "undulator")
        .build()
        .unwrap();
    let mut c = smd.client();
    for i in 0..5u64 {
        c.event(i, fields! { "energy" => i as f64 }).unwrap();
    }
    drop(c);
    smd.done().unwrap();
    let run = smdfs::Run::open(&run_dir).unwrap();
    let spec = run.field("energy").unwrap().spec().clone();
    assert_eq!(spec.attrs.get("long_name").map(String::as_str), Some("photon energy"));
    let plan = smdfs::h5::layout::plan(&run);
    let energy = plan.iter().find(|d| d.path == "energy").expect("energy in the layout");
    let attr = |n: &str| energy.attrs.iter().find(|(k, _)| k == n).map(|(_, v)| format!("{v:?}"));
    assert!(attr("long_name").is_some_and(|v| v.contains("photon energy")), "{:?}", energy.attrs);
    assert!(attr("source").is_some_and(|v| v.contains("undulator")), "{:?}", energy.attrs);

    let e = SmallData::builder(dir.path().join("bad")).attr("energy", "units", "eV").build().err().expect("refused");
    assert!(e.to_string().contains("energy") && e.to_string().contains("\"units\" is set by smdfs"), "{e}");
}
