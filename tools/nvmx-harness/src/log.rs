//! The guest's serial console, turned into test results.
//!
//! The guest's `/init` brackets every test with markers that start with `@@`:
//!
//! ```text
//! @@TEST-START <phase> <name>
//! ...test output...
//! @@TEST-END <phase> <name> rc=<exit code> [xfail=1]
//! @@BENCH test=<t> mode=<m> iters=<n> ticks=<t> per_rt=<p>
//! @@NVMX-DONE
//! ```
//!
//! Kernel messages share the console, so a marker may be preceded by other
//! text on its line; it is searched for anywhere in the line. Exit code 0 is
//! a pass, 4 is a kselftest skip, anything else a failure.
//!
//! `xfail=1` on the end marker means the plan expects the test to fail in
//! this phase (`run <name> xfail=<phases> ...`, e.g. a test that detects a
//! stale mapping of stock KVM): a kselftest failure (rc=1) is then XFAIL,
//! not counted as a failure but listed with its reason, and a pass is XPASS,
//! which fails the run because the test no longer detects what it was
//! written to detect. Any other failure (an assertion abort, a signal) is
//! still a FAIL.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Exit code with which a kselftest reports that it skipped.
pub const KSFT_SKIP: i32 = 4;

/// Exit code of a kselftest whose checks ran and some failed (`ksft_finished`).
/// Only this is an expected failure: an assertion abort (254), a signal or
/// a timeout of an xfail test is still a FAIL.
pub const KSFT_FAIL: i32 = 1;

/// The outcome of one test in one phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Skip(String),
    Fail(String),
    /// Started but never finished: the harness stopped the emulator.
    Timeout(String),
    /// Started, never finished, and the log simply ends.
    Incomplete,
    /// Failed where the plan expects it to fail; the failure text.
    XFail(String),
    /// Passed where the plan expects it to fail: a failure of the run.
    XPass,
}

/// Why an XPASS fails the run.
pub const XPASS_REASON: &str =
    "expected to fail in this phase; the test no longer detects stock's stale mapping";

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Skip(_) => "SKIP",
            Status::Fail(_) => "FAIL",
            Status::Timeout(_) => "TIMEOUT",
            Status::Incomplete => "INCOMPLETE",
            Status::XFail(_) => "XFAIL",
            Status::XPass => "XPASS",
        }
    }

    pub fn is_failure(&self) -> bool {
        !matches!(self, Status::Pass | Status::Skip(_) | Status::XFail(_))
    }
}

/// One test run in one phase.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub phase: String,
    pub name: String,
    pub status: Status,
    /// Host wall seconds between the start and end markers, when known.
    pub wall: Option<f64>,
}

/// One `@@BENCH` line, attributed to the phase it ran in.
#[derive(Clone, Debug, PartialEq)]
pub struct Bench {
    pub phase: String,
    pub test: String,
    pub mode: String,
    pub iters: u64,
    pub ticks: u64,
}

impl Bench {
    /// Emulated TSC ticks per round trip.
    pub fn per_round_trip(&self) -> f64 {
        self.ticks as f64 / self.iters as f64
    }
}

struct Running {
    phase: String,
    name: String,
    started: Option<f64>,
    last_skip: Option<String>,
    last_error: Option<String>,
    /// Lines still to append to `last_error` (the assertion's details).
    error_tail: usize,
}

/// Incremental parser of the console; feed it lines as they arrive.
#[derive(Default)]
pub struct Log {
    pub results: Vec<TestResult>,
    pub benches: Vec<Bench>,
    pub done: bool,
    /// Lines that look like kernel oopses or warnings.
    pub splats: Vec<String>,
    /// Warnings known to come from the emulator, not from the code under
    /// test; listed in the summary but not counted as failures.
    pub benign: Vec<String>,
    current: Option<Running>,
}

fn marker(line: &str) -> Option<&str> {
    line.find("@@").map(|i| &line[i..])
}

fn kv<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    fields
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

const SPLAT_PATTERNS: &[&str] = &[
    "BUG: ",
    "Oops: ",
    "general protection fault",
    "Kernel panic",
    "WARNING: CPU:",
    "UBSAN:",
    "possible circular locking",
    "suspicious RCU usage",
];

/// Boot-time warnings that Bochs 2.7's CPU model causes in any kernel: its
/// CPUID leaf 0xD is wrong (XSAVE layout; the kernel falls back to FXSAVE)
/// and its legacy topology leaves are inconsistent. Matched on the file the
/// WARN names, so the same WARN from anywhere else still fails the run.
const BENIGN_WARNINGS: &[&str] = &[
    "at arch/x86/kernel/fpu/xstate.c:",
    "at arch/x86/kernel/cpu/topology_common.c:",
];

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse a whole saved log; `[   12.3] ` host timestamps are honoured.
    pub fn parse(text: &str) -> Self {
        let mut log = Log::new();
        for line in text.lines() {
            let (t, rest) = split_stamp(line);
            log.feed(rest, t);
        }
        log
    }

    /// The test running now, if any, as (phase, name, start time).
    pub fn running(&self) -> Option<(&str, &str, Option<f64>)> {
        self.current
            .as_ref()
            .map(|r| (r.phase.as_str(), r.name.as_str(), r.started))
    }

    /// Feed one console line that arrived at host time `t` (seconds).
    pub fn feed(&mut self, line: &str, t: Option<f64>) {
        if SPLAT_PATTERNS.iter().any(|p| line.contains(p)) {
            let text = line.trim_end().to_string();
            if BENIGN_WARNINGS.iter().any(|b| line.contains(b)) {
                self.benign.push(text);
            } else {
                self.splats.push(text);
            }
        }
        let Some(m) = marker(line) else {
            self.note_output(line);
            return;
        };
        let mut words = m.split_whitespace();
        match words.next() {
            Some("@@TEST-START") => {
                let phase = words.next().unwrap_or("?").to_string();
                let name = words.next().unwrap_or("?").to_string();
                self.finish_incomplete();
                self.current = Some(Running {
                    phase,
                    name,
                    started: t,
                    last_skip: None,
                    last_error: None,
                    error_tail: 0,
                });
            }
            Some("@@TEST-END") => {
                let phase = words.next().unwrap_or("?").to_string();
                let name = words.next().unwrap_or("?").to_string();
                let rc = kv(m, "rc").and_then(|v| v.parse::<i32>().ok());
                let xfail = kv(m, "xfail") == Some("1");
                let run = match self.current.take() {
                    Some(r) if r.phase == phase && r.name == name => r,
                    other => {
                        // An END without its START: keep what we had and
                        // record this one on its own.
                        self.current = other;
                        self.finish_incomplete();
                        Running {
                            phase,
                            name,
                            started: None,
                            last_skip: None,
                            last_error: None,
                            error_tail: 0,
                        }
                    }
                };
                let status = match rc {
                    Some(0) if xfail => Status::XPass,
                    Some(0) => Status::Pass,
                    Some(KSFT_SKIP) => Status::Skip(run.last_skip.unwrap_or_default()),
                    Some(rc) => {
                        let why = match run.last_error {
                            Some(e) => format!("rc={rc}: {e}"),
                            None => format!("rc={rc}"),
                        };
                        if xfail && rc == KSFT_FAIL {
                            Status::XFail(why)
                        } else {
                            Status::Fail(why)
                        }
                    }
                    None => Status::Fail("unreadable end marker".into()),
                };
                let wall = match (run.started, t) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                self.results.push(TestResult {
                    phase: run.phase,
                    name: run.name,
                    status,
                    wall,
                });
            }
            Some("@@BENCH") => {
                let phase = self
                    .current
                    .as_ref()
                    .map_or("?".to_string(), |r| r.phase.clone());
                let num = |k| kv(m, k).and_then(|v| v.parse::<u64>().ok());
                if let (Some(iters), Some(ticks)) = (num("iters"), num("ticks")) {
                    if iters > 0 {
                        self.benches.push(Bench {
                            phase,
                            test: kv(m, "test").unwrap_or("?").to_string(),
                            mode: kv(m, "mode").unwrap_or("?").to_string(),
                            iters,
                            ticks,
                        });
                    }
                }
            }
            Some("@@NVMX-DONE") => {
                self.finish_incomplete();
                self.done = true;
            }
            _ => self.note_output(line),
        }
    }

    fn note_output(&mut self, line: &str) {
        let Some(run) = self.current.as_mut() else {
            return;
        };
        let text = line.trim().trim_start_matches("# ").trim();
        if text.contains("SKIP") {
            run.last_skip = Some(text.to_string());
        }
        if run.error_tail > 0 {
            run.error_tail -= 1;
            if let Some(e) = run.last_error.as_mut() {
                e.push_str(" | ");
                e.push_str(text);
            }
            return;
        }
        if text.starts_with("Totals:") {
            // kselftest's closing counts ("... error:0"), never the reason.
            return;
        }
        if text.contains("Test Assertion Failure") {
            // kselftest prints the location, then errno, then the message.
            run.last_error = Some(text.to_string());
            run.error_tail = 4;
        } else if text.contains("Assertion")
            || text.contains("not ok")
            || text.contains("FAIL")
            || text.contains("rror")
        {
            run.last_error = Some(text.to_string());
        }
    }

    fn finish_incomplete(&mut self) {
        if let Some(run) = self.current.take() {
            self.results.push(TestResult {
                phase: run.phase,
                name: run.name,
                status: Status::Incomplete,
                wall: None,
            });
        }
    }

    /// Close the log after the emulator is gone. `why` is set when the
    /// harness had to stop it; the test running then gets the blame.
    pub fn close(&mut self, why: Option<&str>) {
        if let Some(run) = self.current.take() {
            let status = match why {
                Some(w) => Status::Timeout(w.to_string()),
                None => Status::Incomplete,
            };
            self.results.push(TestResult {
                phase: run.phase,
                name: run.name,
                status,
                wall: None,
            });
        }
    }

    /// (passed, failed, skipped); XFAIL is in none of them, see `xfails`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.results {
            match r.status {
                Status::Pass => c.0 += 1,
                Status::Skip(_) => c.2 += 1,
                Status::XFail(_) => {}
                _ => c.1 += 1,
            }
        }
        c
    }

    /// Tests that failed where the plan expects them to.
    pub fn xfails(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.status, Status::XFail(_)))
            .count()
    }

    /// Whether the whole run succeeded: the plan finished, nothing failed,
    /// and the kernel printed no oops or warning.
    pub fn success(&self) -> bool {
        self.done && self.splats.is_empty() && self.results.iter().all(|r| !r.status.is_failure())
    }

    /// Human-readable summary: a test x phase table, then details.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut phases: Vec<&str> = Vec::new();
        let mut tests: Vec<&str> = Vec::new();
        let mut cell: BTreeMap<(&str, &str), &TestResult> = BTreeMap::new();
        for r in &self.results {
            if !phases.contains(&r.phase.as_str()) {
                phases.push(&r.phase);
            }
            if !tests.contains(&r.name.as_str()) {
                tests.push(&r.name);
            }
            cell.insert((r.name.as_str(), r.phase.as_str()), r);
        }
        let width = tests.iter().map(|t| t.len()).max().unwrap_or(4).max(4);
        let _ = write!(out, "{:width$}", "test");
        for p in &phases {
            let _ = write!(out, "  {p:>10}");
        }
        out.push('\n');
        for t in &tests {
            let _ = write!(out, "{t:width$}");
            for p in &phases {
                let label = cell.get(&(*t, *p)).map_or("-", |r| r.status.label());
                let _ = write!(out, "  {label:>10}");
            }
            out.push('\n');
        }
        let mut details = String::new();
        for r in &self.results {
            let why = match &r.status {
                Status::Skip(w) | Status::Fail(w) | Status::Timeout(w) | Status::XFail(w) => {
                    w.as_str()
                }
                Status::Incomplete => "no end marker: the run stopped during this test",
                Status::XPass => XPASS_REASON,
                Status::Pass => continue,
            };
            let _ = writeln!(
                details,
                "  {} {}/{}: {}",
                r.status.label(),
                r.phase,
                r.name,
                if why.is_empty() {
                    "(no reason printed)"
                } else {
                    why
                }
            );
        }
        if !details.is_empty() {
            out.push_str("details:\n");
            out.push_str(&details);
        }
        if !self.splats.is_empty() {
            out.push_str("kernel warnings or oopses on the console:\n");
            for s in &self.splats {
                let _ = writeln!(out, "  {s}");
            }
        }
        if !self.benign.is_empty() {
            let _ = writeln!(
                out,
                "{} known emulator boot warnings (Bochs CPUID), not counted:",
                self.benign.len()
            );
            for s in &self.benign {
                let _ = writeln!(out, "  {s}");
            }
        }
        if !self.done {
            out.push_str("the test plan did not run to its end (no @@NVMX-DONE)\n");
        }
        out.push_str(&self.bench_table());
        let x = self.xfails();
        if x > 0 {
            let _ = writeln!(
                out,
                "{x} failed as expected (XFAIL), not counted as failures"
            );
        }
        // Last, and alone on its line: the plain tally CI runners read.
        let (p, f, s) = self.counts();
        let _ = writeln!(out, "{p} passed, {f} failed, {s} skipped");
        out
    }

    /// Benchmarks side by side: one row per (test, mode), one column per
    /// phase, and each phase's ratio to the first phase (the stock run).
    pub fn bench_table(&self) -> String {
        let mut out = String::new();
        if self.benches.is_empty() {
            return out;
        }
        let mut phases: Vec<&str> = Vec::new();
        let mut rows: Vec<(&str, &str)> = Vec::new();
        let mut val: BTreeMap<(&str, &str, &str), f64> = BTreeMap::new();
        for b in &self.benches {
            if !phases.contains(&b.phase.as_str()) {
                phases.push(&b.phase);
            }
            let row = (b.test.as_str(), b.mode.as_str());
            if !rows.contains(&row) {
                rows.push(row);
            }
            val.insert(
                (b.test.as_str(), b.mode.as_str(), b.phase.as_str()),
                b.per_round_trip(),
            );
        }
        let base = phases[0];
        out.push_str("L2 round trip, emulated TSC ticks (lower is better); ratio = phase / ");
        out.push_str(base);
        out.push('\n');
        let _ = write!(out, "{:24}", "benchmark");
        for p in &phases {
            let _ = write!(out, "  {p:>10}");
        }
        for p in phases.iter().skip(1) {
            let _ = write!(out, "  {:>14}", format!("{p}/{base}"));
        }
        out.push('\n');
        for (test, mode) in &rows {
            let _ = write!(out, "{:24}", format!("{test} {mode}"));
            for p in &phases {
                match val.get(&(*test, *mode, *p)) {
                    Some(v) => {
                        let _ = write!(out, "  {v:>10.0}");
                    }
                    None => {
                        let _ = write!(out, "  {:>10}", "-");
                    }
                }
            }
            for p in phases.iter().skip(1) {
                let ratio = match (val.get(&(*test, *mode, base)), val.get(&(*test, *mode, *p))) {
                    (Some(b), Some(v)) if *b > 0.0 => format!("{:.3}x", v / b),
                    _ => "-".to_string(),
                };
                let _ = write!(out, "  {ratio:>14}");
            }
            out.push('\n');
        }
        out
    }
}

/// Split a `[   12.3] ` host timestamp off a saved log line.
pub fn split_stamp(line: &str) -> (Option<f64>, &str) {
    if let Some(rest) = line.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            if let Ok(t) = rest[..end].trim().parse::<f64>() {
                return (Some(t), &rest[end + 2..]);
            }
        }
    }
    (None, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
[   1.0] @@TEST-START stock vmx_msrs_test
[   1.1] TAP version 13
[   1.2] ok 1 vmx_msrs_test
[   2.0] @@TEST-END stock vmx_msrs_test rc=0
[   2.1] @@TEST-START stock vmx_pmu_caps_test
[   2.2] 1..0 # SKIP - Requirement not met: kvm_is_pmu_enabled()
[   2.3] @@TEST-END stock vmx_pmu_caps_test rc=4
[   3.0] @@TEST-START module vmx_msrs_test
[   3.1] ==== Test Assertion Failure ====
[   3.5] @@TEST-END module vmx_msrs_test rc=254
[   4.0] @@TEST-START stock nvmx_l2_loop
[   4.5] @@BENCH test=nvmx_l2_loop mode=managed iters=100 ticks=2110000 per_rt=21100
[   4.6] @@TEST-END stock nvmx_l2_loop rc=0
[   5.0] @@TEST-START module nvmx_l2_loop
[   5.5] @@BENCH test=nvmx_l2_loop mode=managed iters=100 ticks=1800000 per_rt=18000
[   5.6] @@TEST-END module nvmx_l2_loop rc=0
[   6.0] @@NVMX-DONE
";

    #[test]
    fn classifies_pass_skip_fail() {
        let log = Log::parse(SAMPLE);
        let st: Vec<_> = log
            .results
            .iter()
            .map(|r| (r.phase.as_str(), r.name.as_str(), r.status.label()))
            .collect();
        assert_eq!(
            st,
            vec![
                ("stock", "vmx_msrs_test", "PASS"),
                ("stock", "vmx_pmu_caps_test", "SKIP"),
                ("module", "vmx_msrs_test", "FAIL"),
                ("stock", "nvmx_l2_loop", "PASS"),
                ("module", "nvmx_l2_loop", "PASS"),
            ]
        );
        assert_eq!(log.counts(), (3, 1, 1));
        assert!(log.done);
        assert!(!log.success(), "a failed test must fail the run");
    }

    #[test]
    fn keeps_skip_reason_and_failure_text() {
        let log = Log::parse(SAMPLE);
        assert_eq!(
            log.results[1].status,
            Status::Skip("1..0 # SKIP - Requirement not met: kvm_is_pmu_enabled()".into())
        );
        match &log.results[2].status {
            Status::Fail(why) => assert!(why.starts_with("rc=254: ==== Test Assertion")),
            other => panic!("expected a failure, got {other:?}"),
        }
        let asserted = Log::parse(
            "@@TEST-START stock t\n# ==== Test Assertion Failure ====\n#   lib/kvm_util.c:1016: ret == 0\n\
             #   errno=38\n# x\n#   madvise failed\n# later noise\n@@TEST-END stock t rc=254\n",
        );
        match &asserted.results[0].status {
            Status::Fail(why) => assert_eq!(
                why,
                "rc=254: ==== Test Assertion Failure ==== | lib/kvm_util.c:1016: ret == 0 | errno=38 | x | madvise failed"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        let wall = log.results[0].wall.expect("timestamps were present");
        assert!((wall - 1.0).abs() < 1e-9);
    }

    #[test]
    fn markers_survive_interleaved_kernel_text() {
        let text = "[    5.123456] kvm: something@@TEST-START stock a\n\
                    @@TEST-END stock a rc=0\n@@NVMX-DONE\n";
        let log = Log::parse(text);
        assert_eq!(log.results.len(), 1);
        assert_eq!(log.results[0].status, Status::Pass);
        assert!(log.success());
    }

    #[test]
    fn missing_end_is_incomplete_and_fails() {
        let log = Log::parse("@@TEST-START stock hang\nspinning\n");
        assert!(log.results.is_empty());
        assert_eq!(log.running().map(|r| r.1), Some("hang"));
        let mut log = log;
        log.close(Some("no end marker within 5 s"));
        assert_eq!(
            log.results[0].status,
            Status::Timeout("no end marker within 5 s".into())
        );
        assert!(!log.success());
        assert!(log.summary().contains("0 passed, 1 failed, 0 skipped"));
    }

    #[test]
    fn next_start_closes_an_unfinished_test() {
        let log = Log::parse(
            "@@TEST-START stock a\n@@TEST-START stock b\n@@TEST-END stock b rc=0\n@@NVMX-DONE\n",
        );
        assert_eq!(log.results[0].status, Status::Incomplete);
        assert_eq!(log.results[1].status, Status::Pass);
        assert!(!log.success());
    }

    #[test]
    fn kernel_warning_fails_an_otherwise_clean_run() {
        let log = Log::parse(
            "@@TEST-START stock a\n[ 9.1] WARNING: CPU: 0 PID: 7 at arch/x86/kvm/x86.c:1\n\
             @@TEST-END stock a rc=0\n@@NVMX-DONE\n",
        );
        assert_eq!(log.counts(), (1, 0, 0));
        assert!(!log.success());
        assert!(log.summary().contains("kernel warnings or oopses"));
    }

    #[test]
    fn bochs_cpuid_boot_warnings_are_listed_not_counted() {
        let log = Log::parse(
            "[ 0.02] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:254 fpu__init+0x1\n\
             [ 0.03] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/cpu/topology_common.c:57 x\n\
             @@TEST-START stock a\n@@TEST-END stock a rc=0\n@@NVMX-DONE\n",
        );
        assert_eq!(log.benign.len(), 2);
        assert!(log.splats.is_empty());
        assert!(log.success());
        // The same kind of WARN from KVM is not excused.
        let log = Log::parse(
            "[ 9.1] WARNING: CPU: 0 PID: 7 at arch/x86/kvm/vmx/nested.c:5 x\n@@NVMX-DONE\n",
        );
        assert!(!log.success());
    }

    #[test]
    fn run_without_done_marker_fails() {
        let log = Log::parse("@@TEST-START stock a\n@@TEST-END stock a rc=0\n");
        assert!(!log.success());
    }

    #[test]
    fn bench_table_has_ratio_to_first_phase() {
        let log = Log::parse(SAMPLE);
        assert_eq!(log.benches.len(), 2);
        assert_eq!(log.benches[0].phase, "stock");
        let table = log.bench_table();
        let row = table
            .lines()
            .find(|l| l.starts_with("nvmx_l2_loop managed"))
            .expect("a row for the benchmark");
        let cols: Vec<_> = row.split_whitespace().collect();
        assert_eq!(cols[2..], ["21100", "18000", "0.853x"]);
    }

    #[test]
    fn summary_table_lists_phases_as_columns() {
        let log = Log::parse(SAMPLE);
        let s = log.summary();
        let header = s.lines().next().unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["test", "stock", "module"]
        );
        let row = s
            .lines()
            .find(|l| l.starts_with("vmx_pmu_caps_test"))
            .unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["vmx_pmu_caps_test", "SKIP", "-"]
        );
    }

    #[test]
    fn expected_failure_is_xfail_with_its_reason() {
        let log = Log::parse(
            "@@TEST-START stock race\n# not ok 3 dontneed: stale virtual-APIC page: L2 read TPR 0x30, host wrote 0x90\n\
             # # Totals: pass:1 fail:2 xfail:0 xpass:0 skip:1 error:0\n\
             @@TEST-END stock race rc=1 xfail=1 uptime=3.0\n@@TEST-START stock other\n\
             @@TEST-END stock other rc=0\n@@NVMX-DONE\n",
        );
        assert_eq!(
            log.results[0].status,
            Status::XFail(
                "rc=1: not ok 3 dontneed: stale virtual-APIC page: L2 read TPR 0x30, host wrote 0x90"
                    .into()
            )
        );
        assert!(!log.results[0].status.is_failure());
        assert_eq!(log.counts(), (1, 0, 0));
        assert_eq!(log.xfails(), 1);
        assert!(log.success(), "an expected failure must not fail the run");
        let s = log.summary();
        let row = s.lines().find(|l| l.starts_with("race")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["race", "XFAIL"]
        );
        assert!(s.contains("  XFAIL stock/race: rc=1: not ok 3 dontneed: stale virtual-APIC page"));
        assert!(s.contains("\n1 failed as expected (XFAIL), not counted as failures\n"));
        assert_eq!(s.lines().last(), Some("1 passed, 0 failed, 0 skipped"));
        // A skip stays a skip, an assertion abort is not the expected
        // failure, and xfail=0 or no xfail is an ordinary failure.
        let log = Log::parse(
            "@@TEST-START stock a\n@@TEST-END stock a rc=4 xfail=1\n\
             @@TEST-START stock b\n@@TEST-END stock b rc=1 xfail=0\n\
             @@TEST-START stock c\n# ==== Test Assertion Failure ====\n@@TEST-END stock c rc=254 xfail=1\n\
             @@NVMX-DONE\n",
        );
        assert_eq!(log.results[0].status.label(), "SKIP");
        assert_eq!(log.results[1].status.label(), "FAIL");
        assert_eq!(log.results[2].status.label(), "FAIL");
        assert!(!log.success());
    }

    #[test]
    fn unexpected_pass_is_xpass_and_fails_the_run() {
        let log = Log::parse(
            "@@TEST-START module race\n# ok 1 race\n@@TEST-END module race rc=0 xfail=1\n@@NVMX-DONE\n",
        );
        assert_eq!(log.results[0].status, Status::XPass);
        assert!(log.results[0].status.is_failure());
        assert_eq!(log.counts(), (0, 1, 0));
        assert!(!log.success(), "an unexpected pass must fail the run");
        let s = log.summary();
        assert!(s.contains(
            "  XPASS module/race: expected to fail in this phase; the test no longer detects stock's stale mapping"
        ));
        assert!(s.contains("0 passed, 1 failed, 0 skipped\n"));
    }

    #[test]
    fn stamp_prefix_is_optional() {
        assert_eq!(split_stamp("[  12.5] x"), (Some(12.5), "x"));
        assert_eq!(split_stamp("[not a stamp] x"), (None, "[not a stamp] x"));
        assert_eq!(split_stamp("plain"), (None, "plain"));
    }
}
