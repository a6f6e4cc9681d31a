//! The real .NET test targets start, open their diagnostic socket and stop as expected.
//! Needs `bash tests/targets/install.sh` first.

use std::time::Duration;

use diagmon_tests::target::{Program, TestTarget};

/// Whether a process with this pid exists.
fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks the pid.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn worker_starts_and_exits_gracefully_on_sigterm() {
    let mut target = TestTarget::start(Program::Worker, &[]);
    let socket = target.socket_path();
    assert!(socket.starts_with(target.tmpdir()), "{}", socket.display());
    assert!(
        std::fs::symlink_metadata(&socket).is_ok(),
        "{} missing",
        socket.display()
    );
    assert!(alive(target.pid()));
    assert!(target.dll_path().ends_with("bin/Worker.dll"));

    target.signal(libc::SIGTERM);
    let status = target
        .wait_exit(Duration::from_secs(5))
        .expect("exit within 5 s of SIGTERM");
    // .NET Core 3.1 runs its ProcessExit handlers, then exits with code 143 (128 + SIGTERM).
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(
        target.stdout_lines().contains(&"bye".to_string()),
        "no graceful exit"
    );
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn worker_exits_with_the_given_code_when_its_time_is_up() {
    let mut target = TestTarget::start(Program::Worker, &["1", "7"]);
    let status = target
        .wait_exit(Duration::from_secs(10))
        .expect("exit after 1 s");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn two_event_source_apps_share_one_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestTarget::start_in(dir.path(), Program::EventSourceApp, &[]);
    let b = TestTarget::start_in(dir.path(), Program::EventSourceApp, &["30"]);
    assert_ne!(a.socket_path(), b.socket_path());
    assert!(a.socket_path().exists() && b.socket_path().exists());
    assert!(alive(a.pid()) && alive(b.pid()));
    let pid = b.pid();
    drop(b);
    assert!(!alive(pid), "drop kills the target");
}
