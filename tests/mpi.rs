//! MPI mode end to end with real `mpirun` (MPICH) ranks: `smdfs demo` under `mpirun -n P`
//! for P in {2, 4, 7} and S in {1, 2, 3} must write the same run as the threads-mode demo
//! with S servers and P − S clients: every dataset (timestamps, values, presence masks,
//! ragged bytes and offsets, summary) byte for byte in event-id order through the reader, and
//! every `arrays/*.npy` file of the view byte for byte. Failures must end the job with the
//! message, never hang: too many servers (every rank says why), a client rank whose events
//! fail, ranks that disagree on a field's dtype, a client or server rank killed with SIGKILL.
//! The rayon writer example
//! (`core/examples/mpi_writer.rs`) runs unchanged in both modes.
//!
//! Needs the `mpi` feature (this crate's feature `mpi`; CI builds with `--all-features`), so
//! the `smdfs` binary and the example beside this test executable are built with it too.
//! Without the feature, or without `mpirun` (and FUSE and the `.venv` Python for the parts
//! read through a mount), the tests skip with that reason — or fail under
//! `SMDFS_REQUIRE_TOOLS=1`.

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_tests_need_the_mpi_feature() {
    let why = "built without the `mpi` feature (cargo test --features mpi, or --all-features)";
    assert!(!smdfs_tests::required(), "{}=1 and the MPI tests cannot run: {why}", smdfs_tests::REQUIRE_ENV);
    eprintln!("skipping the MPI tests: {why}");
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use smdfs::{demo, Kind, Run};
    use smdfs_fuse::{View, ViewOptions};
    use smdfs_tests::{check_demo_run, machine_has, Need};

    /// Whether `mpirun` (and, with `mount`, FUSE and the `.venv` Python) is here; see
    /// [`machine_has`].
    fn can_run(mount: bool) -> bool {
        let mut needs = vec![Need::Tool("mpirun")];
        if mount {
            needs.extend([Need::Fuse, Need::Python]);
        }
        machine_has(&needs)
    }

    /// A built binary of this workspace: `target/<profile>/<rel>` beside `target/<profile>/deps/`.
    fn built(rel: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let profile = exe.parent().and_then(Path::parent).unwrap();
        let p = profile.join(rel);
        assert!(
            p.exists(),
            "{} is missing: build it with the mpi feature (cargo test --workspace --release --all-features builds it)",
            p.display()
        );
        p
    }

    /// Runs `mpirun -n P` with `args`, killing the job if it runs past `limit` (a hang).
    fn mpirun(p: usize, args: &[&str], limit: Duration) -> Output {
        wait(spawn_mpirun(p, args), p, args, limit)
    }

    fn spawn_mpirun(p: usize, args: &[&str]) -> Child {
        Command::new("mpirun")
            .arg("-n")
            .arg(p.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpirun (MPICH) must be installed: scripts/setup.sh installs it")
    }

    fn wait(mut child: Child, p: usize, args: &[&str], limit: Duration) -> Output {
        let t = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "mpirun -n {p} {args:?} hung for {limit:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(o: &Output) -> String {
        format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    }

    /// Every dataset of a run as bytes in event-id order, by a name that says what it is.
    fn datasets(run: &Run) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let schema = run.schema().clone();
        for g in &schema.groups {
            let rows = match schema.fields_of(&g.name).next() {
                Some((_, f)) => run.field(&f.path).unwrap().rows(),
                None => run.len(),
            };
            let mut ids = vec![0u64; rows as usize];
            run.read_ids(&g.name, 0, &mut ids).unwrap();
            out.insert(format!("timestamp of group {:?}", g.name), ids.iter().flat_map(|i| i.to_le_bytes()).collect());
        }
        for f in &schema.fields {
            let r = run.field(&f.path).unwrap();
            let n = r.rows();
            if f.kind == Kind::Fixed {
                let mut buf = vec![0u8; n as usize * r.row_bytes()];
                r.read_rows(0, &mut buf).unwrap();
                out.insert(f.path.clone(), buf);
            } else {
                let bytes: Vec<u8> = (0..n).flat_map(|i| r.ragged_row(i).unwrap().to_vec()).collect();
                out.insert(f.path.clone(), bytes);
                let offs = r.offsets().unwrap();
                out.insert(format!("{}_offsets", f.path), offs.iter().flat_map(|o| o.to_le_bytes()).collect());
            }
            let mut present = vec![0u8; n as usize];
            r.read_present(0, &mut present).unwrap();
            out.insert(format!("_present/{}", f.path), present);
        }
        for s in run.summary() {
            out.insert(format!("summary/{}", s.path), s.data());
        }
        out
    }

    /// Every `arrays/*.npy` file of the run's view (the bytes a mount serves).
    fn npy_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let view = View::from_run(Run::open(dir).unwrap(), &ViewOptions::default()).unwrap();
        let mut out = BTreeMap::new();
        for (path, size) in view.files() {
            if !path.starts_with("arrays/") {
                continue;
            }
            let a = view.resolve(&path).unwrap();
            let mut buf = vec![0u8; size as usize];
            let mut at = 0;
            while at < buf.len() {
                let n = view.read_into(a.ino, at as u64, &mut buf[at..]).unwrap();
                assert!(n > 0, "short read of {path}");
                at += n;
            }
            out.insert(path, buf);
        }
        out
    }

    /// Every `arrays/*.npy` file read through a real mount (`smdfs mount`, then `smdfs umount`).
    fn mounted_npy_files(smdfs_bin: &Path, dir: &Path, mnt: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::create_dir_all(mnt).unwrap();
        let m = Command::new(smdfs_bin).arg("mount").arg(dir).arg(mnt).output().unwrap();
        assert!(m.status.success(), "mount: {}", text(&m));
        let mut out = BTreeMap::new();
        let mut stack = vec![mnt.join("arrays")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(mnt).unwrap().to_string_lossy().into_owned();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        let u = Command::new(smdfs_bin).arg("umount").arg(mnt).output().unwrap();
        assert!(u.status.success(), "umount: {}", text(&u));
        out
    }

    fn assert_same(what: &str, mpi: &BTreeMap<String, Vec<u8>>, threads: &BTreeMap<String, Vec<u8>>) {
        assert!(!mpi.is_empty(), "{what}: nothing to compare");
        assert_eq!(mpi.keys().collect::<Vec<_>>(), threads.keys().collect::<Vec<_>>(), "{what}: names");
        for (k, v) in mpi {
            assert!(v == &threads[k], "{what}: {k} differs from the threads-mode run");
        }
    }

    #[test]
    fn demo_under_mpirun_writes_the_threads_mode_run_byte_for_byte() {
        if !can_run(true) {
            return;
        }
        const N: u64 = 40_000;
        let smdfs = built("smdfs");
        let tmp = tempfile::tempdir().unwrap();
        for (p, s) in [(2, 1), (2, 2), (4, 1), (4, 2), (4, 3), (4, 4), (7, 1), (7, 2), (7, 3)] {
            let dir = tmp.path().join(format!("mpi-p{p}-s{s}"));
            let o = mpirun(
                p,
                &[
                    smdfs.to_str().unwrap(),
                    "demo",
                    dir.to_str().unwrap(),
                    "--events",
                    &N.to_string(),
                    "--servers",
                    &s.to_string(),
                ],
                Duration::from_secs(120),
            );
            assert!(o.status.success(), "P={p} S={s}: {}", text(&o));
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains(&format!("(MPI, {p} ranks)")) && out.lines().count() == 1,
                "P={p} S={s}: expected one line from rank 0 in MPI mode (is {} built with the mpi feature?)\n{}",
                smdfs.display(),
                text(&o)
            );
            let reference = tmp.path().join(format!("threads-s{s}-c{}", p - s));
            demo::write_demo(&reference, N, s, p - s, false).unwrap();
            let (mpi_run, threads_run) = (Run::open(&dir).unwrap(), Run::open(&reference).unwrap());
            assert_eq!(mpi_run.state(), smdfs::RunState::Complete);
            assert_eq!(mpi_run.shards().len(), s);
            check_demo_run(&mpi_run, N);
            assert_same(&format!("P={p} S={s} reader"), &datasets(&mpi_run), &datasets(&threads_run));
            let threads_view = npy_files(&reference);
            assert_same(&format!("P={p} S={s} view"), &npy_files(&dir), &threads_view);
            let mnt = tmp.path().join(format!("mnt-p{p}-s{s}"));
            assert_same(&format!("P={p} S={s} mount"), &mounted_npy_files(&smdfs, &dir, &mnt), &threads_view);
            std::fs::remove_dir_all(&reference).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn too_many_servers_is_an_error_on_every_rank_not_a_hang() {
        if !can_run(false) {
            return;
        }
        let smdfs = built("smdfs");
        let tmp = tempfile::tempdir().unwrap();
        for (p, s) in [(2, 3), (3, 5)] {
            let dir = tmp.path().join(format!("p{p}s{s}"));
            let o = mpirun(
                p,
                &[smdfs.to_str().unwrap(), "demo", dir.to_str().unwrap(), "--servers", &s.to_string()],
                Duration::from_secs(60),
            );
            assert!(!o.status.success(), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            let said = err.matches(&format!("{s} server rank(s) need at least {} ranks", s + 1)).count();
            assert_eq!(said, p, "every rank says why\n{}", text(&o));
        }
    }

    #[test]
    fn a_client_rank_whose_events_fail_fails_the_job_with_its_message() {
        if !can_run(false) {
            return;
        }
        let writer = built("examples/mpi_writer");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let o = mpirun(
            4,
            &[writer.to_str().unwrap(), dir.to_str().unwrap(), "--servers", "1", "--fail-rank", "1"],
            Duration::from_secs(60),
        );
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("injected failure on rank 1"), "{}", text(&o));
        assert!(err.contains("MPI rank 1 left the run") && err.contains("without done()"), "{}", text(&o));
    }

    #[test]
    fn ranks_that_disagree_on_a_fields_dtype_fail_the_job_naming_the_field() {
        if !can_run(false) {
            return;
        }
        let writer = built("examples/mpi_writer");
        let tmp = tempfile::tempdir().unwrap();
        // One server sees both dtypes: it aborts the job at once.
        let dir = tmp.path().join("one-server");
        let o = mpirun(
            3,
            &[writer.to_str().unwrap(), dir.to_str().unwrap(), "--servers", "1", "--f32-on-odd-ranks"],
            Duration::from_secs(60),
        );
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("field \"energy\"") && err.contains("f32") && err.contains("aborting"), "{}", text(&o));
        // Each server sees one dtype: done() finds the conflict, and every rank returns it.
        let dir = tmp.path().join("two-servers");
        let args =
            [writer.to_str().unwrap(), dir.to_str().unwrap(), "--servers", "2", "--sequential", "--f32-on-odd-ranks"];
        let o = mpirun(4, &args, Duration::from_secs(60));
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.matches("disagree on a field's type").count(), 4, "every rank returns the error\n{}", text(&o));
    }

    /// The pid of the rank `rank` of a job whose command line contains `tag`.
    fn rank_pid(tag: &str, rank: usize) -> Option<i32> {
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let has = |hay: &[u8], needle: &[u8]| hay.split(|&b| b == 0).any(|w| w == needle);
            if has(&cmd, tag.as_bytes()) && has(&env, format!("PMI_RANK={rank}").as_bytes()) {
                return Some(pid);
            }
        }
        None
    }

    #[test]
    fn a_killed_client_or_server_rank_ends_the_job_and_leaves_a_consistent_readable_prefix() {
        if !can_run(true) {
            return;
        }
        let smdfs_bin = built("smdfs");
        let tmp = tempfile::tempdir().unwrap();
        // Ranks 0 and 1 are clients, rank 2 the server.
        for victim in [1, 2] {
            let dir = tmp.path().join(format!("kill-rank-{victim}"));
            let d = dir.to_str().unwrap();
            let args = [smdfs_bin.to_str().unwrap(), "demo", d, "--events", "100000000", "--servers", "1"];
            let child = spawn_mpirun(3, &args);
            let t = Instant::now();
            // Kill once some batches have committed (the shard's log has grown).
            let log = dir.join("shard-00000").join("log");
            let pid = loop {
                let committed = std::fs::metadata(&log).map(|m| m.len() > 4096).unwrap_or(false);
                if committed {
                    if let Some(pid) = rank_pid(d, victim) {
                        break pid;
                    }
                }
                assert!(t.elapsed() < Duration::from_secs(30), "the job did not start");
                std::thread::sleep(Duration::from_millis(5));
            };
            // SAFETY: SIGKILL to a rank of the job this test started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            let o = wait(child, 3, &args, Duration::from_secs(60));
            assert!(!o.status.success(), "{}", text(&o));
            assert!(text(&o).contains("BAD TERMINATION"), "mpirun says why\n{}", text(&o));

            // What was committed reads back consistently: the reader, verify, and h5py/numpy
            // through a real mount.
            let run = Run::open(&dir).unwrap();
            assert_eq!(run.state(), smdfs::RunState::Crashed);
            let n = smdfs_tests::check_demo_subset(&run);
            assert!(n > 0, "some events committed before the kill");
            let v = smdfs::verify(&dir, &mut |_, _| {}).unwrap();
            assert!(v.is_sound(), "rank {victim} killed: {:?}", v.problems);
            let mnt = tmp.path().join(format!("mnt-{victim}"));
            std::fs::create_dir_all(&mnt).unwrap();
            let m = Command::new(&smdfs_bin).arg("mount").arg(&dir).arg(&mnt).output().unwrap();
            assert!(m.status.success(), "mount: {}", text(&m));
            let py = Command::new(smdfs_tests::python())
                .arg(smdfs_tests::script("check_demo_subset.py"))
                .arg(&mnt)
                .output()
                .unwrap();
            let u = Command::new(&smdfs_bin).arg("umount").arg(&mnt).output().unwrap();
            assert!(py.status.success(), "h5py check: {}", text(&py));
            assert!(u.status.success(), "umount: {}", text(&u));
            assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), n.to_string());
        }
    }

    #[test]
    fn the_rayon_writer_example_writes_the_same_run_in_both_modes() {
        if !can_run(false) {
            return;
        }
        let writer = built("examples/mpi_writer");
        let tmp = tempfile::tempdir().unwrap();
        let (m, t) = (tmp.path().join("mpi"), tmp.path().join("threads"));
        let o = mpirun(
            4,
            &[writer.to_str().unwrap(), m.to_str().unwrap(), "--events", "30000", "--servers", "1"],
            Duration::from_secs(60),
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = Command::new(&writer).args([t.to_str().unwrap(), "--events", "30000"]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let (mr, tr) = (Run::open(&m).unwrap(), Run::open(&t).unwrap());
        assert_eq!(mr.len(), 30_000);
        assert_eq!(mr.summary_value("n_events").unwrap().as_f64(), Some(30_000.0));
        assert_same("rayon writer", &datasets(&mr), &datasets(&tr));
    }
}
