//! `smdfs mount`: serve a view in the foreground, or as a daemon that detaches like sshfs.
//!
//! The daemon path forks before anything else runs (no threads, no libhdf5 state yet), so
//! the child opens the run and mounts on its own. The child's stderr is a pipe to the
//! parent until the mount answers requests: errors (not a run, busy mount point) and panics
//! reach the parent, which prints them and exits 1. When the mount is ready the child writes
//! one NUL byte and closes the pipe; the parent exits 0. SIGINT, SIGTERM and SIGHUP unmount
//! (lazily when the mount is busy) instead of leaving a dead mount behind. A daemon unmounts
//! only the mount it made: when it ends after its mount was unmounted and the path mounted
//! again (it was stopped, or slow to exit), the newer mount is left alone.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use smdfs_fuse::live::Live;
use smdfs_fuse::mount::{MountOptions, Mounted};
use smdfs_fuse::ViewOptions;

/// What `smdfs mount` was asked to do.
pub(crate) struct MountArgs {
    pub(crate) run: PathBuf,
    pub(crate) mountpoint: PathBuf,
    pub(crate) foreground: bool,
    pub(crate) view: ViewOptions,
    pub(crate) mount: MountOptions,
}

/// Runs `smdfs mount`.
pub(crate) fn mount(args: MountArgs) -> anyhow::Result<ExitCode> {
    if args.foreground {
        let m = open_and_mount(&args)?;
        eprintln!(
            "smdfs: {} mounted at {}; Ctrl-C or `smdfs umount {}` unmounts",
            args.run.display(),
            m.mountpoint().display(),
            m.mountpoint().display()
        );
        serve(m)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the readiness pipe");
    }
    let (r, w) = (fds[0], fds[1]);
    // SAFETY: single-threaded so far (clap only), so the child may run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("forking the mount daemon"),
        0 => {
            // SAFETY: `r` is ours and unused in the child.
            unsafe { libc::close(r) };
            daemon_child(args, w)
        }
        pid => {
            // SAFETY: `w` is ours and unused in the parent; `r` is owned by the File from here.
            unsafe { libc::close(w) };
            let mut data = Vec::new();
            unsafe { File::from_raw_fd(r) }.read_to_end(&mut data).context("waiting for the mount daemon")?;
            if data.last() == Some(&0) {
                std::io::stderr().write_all(&data[..data.len() - 1])?;
                return Ok(ExitCode::SUCCESS);
            }
            std::io::stderr().write_all(&data)?;
            let mut status = 0;
            // SAFETY: `pid` is our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if data.is_empty() {
                eprintln!("smdfs: the mount process exited before the mount was ready (wait status {status})");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The forked child: detach, mount with stderr going to the parent, signal readiness, serve.
fn daemon_child(mut args: MountArgs, w: RawFd) -> anyhow::Result<ExitCode> {
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
        libc::dup2(w, 2);
    }
    // The daemon must not keep the caller's working directory busy.
    args.run = args.run.canonicalize().with_context(|| format!("opening run {}", args.run.display()))?;
    args.mountpoint = std::path::absolute(&args.mountpoint)?;
    std::env::set_current_dir("/")?;
    let m = open_and_mount(&args)?;
    // SAFETY: as above; fd 2 stops being the pipe, and closing `w` gives the parent EOF.
    unsafe {
        libc::write(w, [0u8].as_ptr().cast(), 1);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 2);
            libc::close(null);
        }
        libc::close(w);
    }
    serve(m)?;
    Ok(ExitCode::SUCCESS)
}

/// Blocks the stop signals (every thread started later inherits the mask), opens the view and
/// mounts it; a run still being written is followed as it grows.
fn open_and_mount(args: &MountArgs) -> anyhow::Result<Mounted> {
    block_stop_signals();
    let live = Live::open(&args.run, &args.view).with_context(|| format!("opening run {}", args.run.display()))?;
    crate::warn_run(live.current().run());
    Ok(smdfs_fuse::mount::mount_live(live, &args.mountpoint, &args.mount)?)
}

/// Serves until unmounted; a stop signal unmounts.
fn serve(m: Mounted) -> anyhow::Result<()> {
    let unmounter = m.unmounter();
    std::thread::Builder::new().name("signals".into()).spawn(move || unmount_on_signal(&unmounter))?;
    m.join()?;
    Ok(())
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn block_stop_signals() {
    let set = stop_signals();
    // SAFETY: `set` is initialised.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for a stop signal and unmounts this daemon's mount (lazily when busy: the server
/// exits once the last open file is closed) — only if it is still the one at the path.
fn unmount_on_signal(unmounter: &smdfs_fuse::mount::Unmounter) {
    let set = stop_signals();
    let mut sig = 0;
    // SAFETY: `set` is initialised and these signals are blocked in every thread.
    unsafe { libc::sigwait(&set, &mut sig) };
    let _ = unmounter.unmount();
}

/// Runs `smdfs umount`.
pub(crate) fn umount(mountpoint: &Path, lazy: bool) -> anyhow::Result<ExitCode> {
    if lazy {
        smdfs_fuse::mount::detach(mountpoint)?
    } else {
        smdfs_fuse::mount::unmount(mountpoint)?
    }
    Ok(ExitCode::SUCCESS)
}
