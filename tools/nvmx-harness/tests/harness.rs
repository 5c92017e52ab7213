//! End-to-end checks of `nvmx-harness run` with a scripted stand-in for the
//! emulator: a shell script that writes a console file the way the guest's
//! `/init` does (TAP), then exits, fails or hangs.

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

/// What a run left: the harness's output, the saved console, the
/// results.json and how long it took.
struct Run {
    out: Output,
    saved: String,
    json: String,
    took: Duration,
}

/// Run the harness on a fake emulator whose body is `script`; `$S` in the
/// script is the console file.
fn harness(name: &str, limits: &[&str], script: &str) -> Run {
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
    let read = |f| std::fs::read_to_string(results.join(f)).unwrap_or_default();
    Run {
        saved: read("serial.log"),
        json: read("results.json"),
        out,
        took: t0.elapsed(),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn clean_plan_passes() {
    let r = harness(
        "clean",
        &[],
        r#"{ echo 'TAP version 13'; echo '# selftests: stock: a'; echo '# ok 1 a';
             echo '# exit=0 uptime=1.0'; echo 'ok 1 stock/a';
             echo '# selftests: stock: b'; echo '# 1..0 # SKIP no VMX'; echo '# exit=4 uptime=1.1';
             echo 'ok 2 stock/b # SKIP'; echo '1..2'; } >> "$S""#,
    );
    assert!(r.out.status.success(), "{}", stdout(&r.out));
    assert!(stdout(&r.out).contains("1 passed, 0 failed, 1 skipped"));
    assert!(
        r.saved.contains("] ok 1 stock/a\n"),
        "console is saved with stamps: {}",
        r.saved
    );
    assert!(r.json.contains("\n  \"success\": true,\n"), "{}", r.json);
    assert!(
        r.json.contains("\"emulator_exit\": \"exit status: 0\""),
        "{}",
        r.json
    );
    assert!(
        r.json.contains(
            "{\"phase\": \"stock\", \"name\": \"b\", \"status\": \"SKIP\", \"reason\": \"1..0 # SKIP no VMX\","
        ),
        "{}",
        r.json
    );
}

#[test]
fn failing_test_fails_the_run() {
    let r = harness(
        "fail",
        &[],
        r#"{ echo '# selftests: stock: canary-fail'; echo '# injected failure'; echo '# exit=1 uptime=1';
             echo 'not ok 1 stock/canary-fail # exit=1'; echo '1..1'; } >> "$S""#,
    );
    assert!(!r.out.status.success());
    assert!(stdout(&r.out).contains("0 passed, 1 failed, 0 skipped"));
    assert!(
        r.json
            .contains("\"name\": \"canary-fail\", \"status\": \"FAIL\", \"reason\": \"exit=1\""),
        "{}",
        r.json
    );
}

#[test]
fn run_without_plan_line_fails() {
    let r = harness(
        "noplan",
        &[],
        r#"{ echo '# selftests: stock: a'; echo '# exit=0'; echo 'ok 1 stock/a'; } >> "$S""#,
    );
    assert!(!r.out.status.success());
    assert!(
        stdout(&r.out).contains("no TAP plan line"),
        "{}",
        stdout(&r.out)
    );
    assert!(r.json.contains("\"finished\": false,"), "{}", r.json);
}

#[test]
fn hung_test_is_stopped_and_reported() {
    // The guest keeps printing (so it is not silent) but the test never ends.
    let r = harness(
        "hang",
        &["--test", "2", "--silence", "30"],
        r#"echo '# selftests: stock: canary-hang' >> "$S"; while :; do echo '# tick' >> "$S"; sleep 0.2; done"#,
    );
    assert!(!r.out.status.success());
    let s = stdout(&r.out);
    assert!(s.contains("TIMEOUT"), "{s}");
    assert!(s.contains("test ran longer than 2 s"), "{s}");
    assert!(r.took < Duration::from_secs(20), "took {:?}", r.took);
    assert!(
        r.json
            .contains("\"stopped\": \"test ran longer than 2 s\","),
        "{}",
        r.json
    );
    assert!(
        r.json
            .contains("\"name\": \"canary-hang\", \"status\": \"TIMEOUT\""),
        "{}",
        r.json
    );
}

#[test]
fn silent_guest_is_stopped() {
    let r = harness(
        "silent",
        &["--silence", "2"],
        r#"echo '# selftests: stock: spin' >> "$S"; exec sleep 600"#,
    );
    assert!(!r.out.status.success());
    assert!(
        stdout(&r.out).contains("no console output for 2 s"),
        "{}",
        stdout(&r.out)
    );
    assert!(r.took < Duration::from_secs(20), "took {:?}", r.took);
}

#[test]
fn emulator_dying_mid_plan_fails() {
    let r = harness(
        "crash",
        &[],
        r#"echo '# selftests: stock: a' >> "$S"; exit 1"#,
    );
    assert!(!r.out.status.success());
    assert!(stdout(&r.out).contains("INCOMPLETE"), "{}", stdout(&r.out));
    assert!(r.json.contains("\"status\": \"INCOMPLETE\""), "{}", r.json);
}

#[test]
fn report_writes_results_json_of_a_saved_log() {
    let dir = Scratch::new("report");
    let log = dir.0.join("serial.log");
    let json = dir.0.join("results.json");
    std::fs::write(
        &log,
        "[   1.0] # selftests: stock: a\n[   2.5] # exit=0 uptime=1\n[   2.5] ok 1 stock/a\n\
         [   3.0] # selftests: stock: b\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvmx-harness"))
        .args([
            "report",
            log.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "b never finished: {}", stdout(&out));
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"seconds\": 1.5, \"rc\": 0,"), "{text}");
    assert!(
        text.contains("\"name\": \"b\", \"status\": \"INCOMPLETE\""),
        "{text}"
    );
    assert!(text.contains("\"stopped\": null,"), "{text}");
}
