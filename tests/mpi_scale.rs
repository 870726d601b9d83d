//! MPI mode at 32 ranks on this machine's 2 cores (`mpirun -n 32`, oversubscribed): the run
//! must hold every event once with the values its formula gives, and the global index the
//! ranks built together (each its slice, see `core/src/write/mpi/index.rs`) must be exactly
//! the index one process builds from the same shards — dense for round-robin dealing, runs
//! (joined across the slices' boundaries) for block dealing.
//!
//! Cases: the demo with one shard per rank (`--servers 32`), the demo with 4 server ranks and
//! 28 clients (zero-copy sends), and the rayon writer example (`core/examples/mpi_writer.rs`)
//! with one shard per rank and block shares. Needs the `mpi` feature and `mpirun`; without
//! them the test skips with the reason, or fails under `SMDFS_REQUIRE_TOOLS=1`.

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_scale_test_needs_the_mpi_feature() {
    let why = "built without the `mpi` feature (cargo test --features mpi, or --all-features)";
    assert!(!smdfs_tests::required(), "{}=1 and the MPI tests cannot run: {why}", smdfs_tests::REQUIRE_ENV);
    eprintln!("skipping the MPI scale test: {why}");
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use smdfs::index::{build_group, GroupIndex};
    use smdfs::shard::reader::Shard;
    use smdfs::Run;
    use smdfs_tests::{check_demo_run, machine_has, Need};

    const RANKS: usize = 32;

    /// A built binary of this workspace: `target/<profile>/<rel>`.
    fn built(rel: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let p = exe.parent().and_then(Path::parent).unwrap().join(rel);
        assert!(p.exists(), "{} is missing: build it with the mpi feature (--all-features)", p.display());
        p
    }

    /// `mpirun -n 32 args…`, killed if it runs past `limit` (a hang).
    fn mpirun(args: &[&str], limit: Duration) -> Output {
        let mut child = Command::new("mpirun")
            .arg("-n")
            .arg(RANKS.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpirun (MPICH) must be installed: scripts/setup.sh installs it");
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > limit {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!("mpirun -n {RANKS} {args:?} hung for {limit:?}: {}", String::from_utf8_lossy(&o.stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "mpirun -n {RANKS} {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// The stored index of every group equals the one a single process builds from the
    /// shards: same encoding, same entries, every row at the same place.
    fn assert_index_is_the_single_process_one(dir: &Path, want_runs: bool) {
        let run = Run::open(dir).unwrap();
        assert_eq!(run.state(), smdfs::RunState::Complete);
        let shards: Vec<Shard> = (0..run.shards().len()).map(|i| Shard::load(dir, i, None).unwrap()).collect();
        for (gi, g) in run.schema().groups.iter().enumerate() {
            let stored = GroupIndex::load(&dir.join(format!("index/g{gi:05}.idx"))).unwrap();
            let (alone, _, _) = build_group(&shards, &g.name);
            assert_eq!(stored.len(), alone.len(), "group {:?}: rows", g.name);
            assert_eq!(stored.is_runs(), alone.is_runs(), "group {:?}: encoding", g.name);
            assert_eq!(stored.entries(), alone.entries(), "group {:?}: runs are maximal", g.name);
            for i in 0..alone.len() {
                assert_eq!(stored.locate(i), alone.locate(i), "group {:?}: row {i}", g.name);
            }
        }
        let main = GroupIndex::load(&dir.join("index/g00000.idx")).unwrap();
        assert_eq!(main.is_runs(), want_runs, "the run group's encoding");
        let report = smdfs::verify(dir, &mut |_, _| {}).unwrap();
        assert!(report.is_sound(), "{report:?}");
    }

    #[test]
    fn thirty_two_ranks_write_every_event_once_with_its_values() {
        if !machine_has(&[Need::Tool("mpirun")]) {
            return;
        }
        let smdfs = built("smdfs");
        let writer = built("examples/mpi_writer");
        let tmp = tempfile::tempdir().unwrap();
        let limit = Duration::from_secs(120);

        // The demo, one shard per rank, then 4 server ranks and 28 clients.
        const N: u64 = 64_000;
        for servers in [RANKS, 4] {
            let dir = tmp.path().join(format!("demo-s{servers}"));
            let s = servers.to_string();
            let o = mpirun(
                &[smdfs.to_str().unwrap(), "demo", dir.to_str().unwrap(), "--events", "64000", "--servers", &s],
                limit,
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("(MPI, {RANKS} ranks)")));
            let run = Run::open(&dir).unwrap();
            assert_eq!(run.shards().len(), servers);
            check_demo_run(&run, N);
            assert_index_is_the_single_process_one(&dir, false);
        }

        // Block shares, one shard per rank: the index is long runs cut by the slices.
        const M: u64 = 96_000;
        let dir = tmp.path().join("blocks");
        let args = [dir.to_str().unwrap(), "--events", "96000", "--servers", "32", "--sequential"];
        mpirun(&[&[writer.to_str().unwrap()][..], &args[..]].concat(), limit);
        let run = Run::open(&dir).unwrap();
        assert_eq!(run.len(), M);
        let mut ids = vec![0u64; M as usize];
        run.read_ids("", 0, &mut ids).unwrap();
        let energy = run.field("energy").unwrap().read_all::<f64>().unwrap();
        let image = run.field("det/image").unwrap().read_all::<u16>().unwrap();
        for i in 0..M {
            let k = i as usize;
            assert_eq!(ids[k], 1000 + 3 * i, "row {i}: every id once, in order");
            assert_eq!(energy[k], i as f64 * 0.5, "energy row {i}");
            assert!(image[k * 16..(k + 1) * 16].iter().all(|&v| v == i as u16), "det/image row {i}");
        }
        assert_index_is_the_single_process_one(&dir, true);
    }
}
