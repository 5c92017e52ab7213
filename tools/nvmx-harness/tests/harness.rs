//! End-to-end checks of `nvmx-harness run` with a scripted stand-in for the
//! emulator: a shell script that writes a console file the way the guest's
//! `/init` does, then exits, fails or hangs.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nvmx-harness-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the harness on a fake emulator whose body is `script`; `$S` in the
/// script is the console file.
fn harness(name: &str, limits: &[&str], script: &str) -> (Output, String, Duration) {
    let dir = Scratch::new(name);
    let serial = dir.0.join("serial.out");
    let results = dir.0.join("results");
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_nvmx-harness"))
        .arg("run")
        .args(["--serial", serial.to_str().unwrap()])
        .args(["--results", results.to_str().unwrap()])
        .args(limits)
        .arg("--quiet")
        .args(["--", "sh", "-c", script, "fake-emulator"])
        .env("S", &serial)
        .output()
        .unwrap();
    let saved = std::fs::read_to_string(results.join("serial.log")).unwrap_or_default();
    (out, saved, t0.elapsed())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn clean_plan_passes() {
    let (out, saved, _) = harness(
        "clean",
        &[],
        r#"{ echo '@@TEST-START stock a'; echo 'ok 1 a'; echo '@@TEST-END stock a rc=0';
             echo '@@TEST-START stock b'; echo '1..0 # SKIP no VMX'; echo '@@TEST-END stock b rc=4';
             echo '@@NVMX-DONE'; } >> "$S""#,
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 passed, 0 failed, 1 skipped"));
    assert!(
        saved.contains("@@TEST-END stock a rc=0"),
        "console is saved with stamps: {saved}"
    );
}

#[test]
fn failing_test_fails_the_run() {
    let (out, _, _) = harness(
        "fail",
        &[],
        r#"{ echo '@@TEST-START stock canary-fail'; echo '@@TEST-END stock canary-fail rc=1';
             echo '@@NVMX-DONE'; } >> "$S""#,
    );
    assert!(!out.status.success());
    assert!(stdout(&out).contains("0 passed, 1 failed, 0 skipped"));
}

#[test]
fn hung_test_is_stopped_and_reported() {
    // The guest keeps printing (so it is not silent) but the test never ends.
    let (out, _, took) = harness(
        "hang",
        &["--test", "2", "--silence", "30"],
        r#"echo '@@TEST-START stock canary-hang' >> "$S"; while :; do echo tick >> "$S"; sleep 0.2; done"#,
    );
    assert!(!out.status.success());
    let s = stdout(&out);
    assert!(s.contains("TIMEOUT"), "{s}");
    assert!(s.contains("test ran longer than 2 s"), "{s}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn silent_guest_is_stopped() {
    let (out, _, took) = harness(
        "silent",
        &["--silence", "2"],
        r#"echo '@@TEST-START stock spin' >> "$S"; exec sleep 600"#,
    );
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("no console output for 2 s"),
        "{}",
        stdout(&out)
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn emulator_dying_mid_plan_fails() {
    let (out, _, _) = harness(
        "crash",
        &[],
        r#"echo '@@TEST-START stock a' >> "$S"; exit 1"#,
    );
    assert!(!out.status.success());
    assert!(stdout(&out).contains("INCOMPLETE"), "{}", stdout(&out));
}
