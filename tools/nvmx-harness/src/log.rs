//! The guest's serial console, turned into test results.
//!
//! The guest's `/init` (`testbed/init`) reports the test plan as TAP, the
//! way the kselftest runner does, and the TAP lines are the source of truth
//! for every result:
//!
//! ```text
//! TAP version 13
//! # selftests: <phase>: <name>            a test starts (kselftest runner)
//! # ...the test's output, indented with "# "...
//! # @@BENCH test=<t> mode=<m> iters=<n> ticks=<t> per_rt=<p>
//! # exit=<exit code> uptime=<guest s> [live=<module counters>]
//! ok <N> <phase>/<name>                   a pass
//! ok <N> <phase>/<name> # SKIP [reason]   a skip (exit code 4)
//! not ok <N> <phase>/<name> # exit=<rc>   a failure
//! not ok <N> <phase>/<name> # TODO ...    an expected failure: XFAIL
//! not ok <N> <phase>/<name> # XPASS: ...  an unexpected pass: XPASS
//! 1..<N>                                  the plan: the run got to its end
//! ```
//!
//! Kernel messages share the console, so a TAP line may be preceded by
//! kernel text on its line; it is searched for anywhere in the line, but
//! not after a `#`: the tests' own output, nested TAP included, is all
//! behind `# `. A result line's description must be `<phase>/<name>`.
//! The start line is needed only for what TAP does not give: a test that
//! is running (the host-side timeout, a run that stops in the middle) and
//! its host wall time. The `# exit=` diagnostic just before a result line
//! gives the exit code; a failure's reason is the test's last line that
//! looks like one (an assertion, `not ok`, `FAIL`, `error`).
//!
//! The plan comes at the end (TAP 13 allows it there; KTAP prefers it
//! first, but the number of tests is only known at the end). A run
//! succeeded only if its plan line came and counts the result lines seen,
//! the results are numbered 1, 2, ... in order, there was no `Bail out!`,
//! no test failed and the kernel printed no oops or warning.
//!
//! A test the plan expects to fail in this phase (`run <name>
//! xfail=<phases> ...`, e.g. a test that detects a stale mapping of stock
//! KVM) gets `# TODO` if it failed with kselftest's exit code 1: XFAIL,
//! not counted as a failure but listed with its reason. If it passed, it
//! gets `# XPASS`, which fails the run because the test no longer detects
//! what it was written to detect. Any other failure (an assertion abort, a
//! signal) is still a plain `not ok`: FAIL.
//!
//! Private `@@` markers remain only where TAP has no equivalent:
//! `@@BENCH` (and `scripts/bench-report.py`'s `@@RESULT`, `@@L1-STATS`)
//! are data lines inside a test's output; `@@HEARTBEAT` comes from a
//! background loop, at any time. For saved logs of the previous format,
//! `@@TEST-START <phase> <name>` is still read as a start line and
//! `@@TEST-END ... rc=<rc>` as the exit diagnostic (`/init` prints neither
//! any more); the statuses come from the TAP lines those logs carry too,
//! and their `@@NVMX-DONE` is ignored (the plan line is the end).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::json::Value;

/// Exit code with which a kselftest reports that it skipped.
pub const KSFT_SKIP: i32 = 4;

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

/// Why an INCOMPLETE test is one.
pub const INCOMPLETE_REASON: &str = "no result line: the run stopped during this test";

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

    /// The reason text: what the test printed, or why the harness decided.
    pub fn reason(&self) -> &str {
        match self {
            Status::Skip(w) | Status::Fail(w) | Status::Timeout(w) | Status::XFail(w) => w,
            Status::Incomplete => INCOMPLETE_REASON,
            Status::XPass => XPASS_REASON,
            Status::Pass => "",
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
    /// Host wall seconds between the start and result lines, when known.
    pub wall: Option<f64>,
    /// The exit code from the `# exit=` diagnostic.
    pub rc: Option<i32>,
    /// The guest's uptime at the end of the test, as printed.
    pub uptime: Option<String>,
    /// The module's live counters after the test, as printed.
    pub live: Option<String>,
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

impl Running {
    fn new(phase: &str, name: &str, started: Option<f64>) -> Self {
        Running {
            phase: phase.to_string(),
            name: name.to_string(),
            started,
            last_skip: None,
            last_error: None,
            error_tail: 0,
        }
    }
}

/// The `# exit=` diagnostic before a result line.
#[derive(Default)]
struct Exit {
    rc: Option<i32>,
    uptime: Option<String>,
    live: Option<String>,
}

/// One top-level TAP line (or start line) of the console.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Start {
        phase: &'a str,
        name: &'a str,
    },
    Exit(&'a str),
    Result(TapResult<'a>),
    Plan(usize),
    Bail(&'a str),
    /// A previous-format `@@TEST-END <phase> <name> rc=<rc> ...`.
    OldEnd(&'a str),
}

/// One TAP result line: `[not ]ok <number> <phase>/<name> [# <directive> <text>]`.
#[derive(Debug, PartialEq)]
struct TapResult<'a> {
    ok: bool,
    number: usize,
    phase: &'a str,
    name: &'a str,
    /// The directive's keyword, upper case, without a final `:`.
    directive: Option<String>,
    /// What follows the `#` (the directive's keyword excepted).
    text: &'a str,
}

/// Directives of a result line that `/init` prints or KTAP defines.
const DIRECTIVES: &[&str] = &["SKIP", "TODO", "XFAIL", "XPASS", "TIMEOUT", "ERROR"];

/// Whether the text before a TAP token leaves it at the top level: not in
/// a `# ` diagnostic or a test's output, only after kernel text.
fn top_level_before(before: &str) -> bool {
    !before.trim_start().starts_with('#') && !before.trim_end().ends_with('#')
}

/// Find `token` at the top level of `line` and give what follows it to
/// `parse`; the first occurrence that parses wins.
fn find_top<'a, T>(
    line: &'a str,
    token: &str,
    parse: impl Fn(&'a str, &'a str) -> Option<T>,
) -> Option<T> {
    line.match_indices(token).find_map(|(i, _)| {
        let before = &line[..i];
        top_level_before(before)
            .then(|| parse(before, &line[i + token.len()..]))
            .flatten()
    })
}

fn parse_result<'a>(ok: bool, rest: &'a str) -> Option<Line<'a>> {
    let (number, rest) = rest.split_once(' ')?;
    let number = number.parse::<usize>().ok()?;
    let (desc, diag) = match rest.split_once('#') {
        Some((d, x)) => (d.trim(), Some(x.trim())),
        None => (rest.trim(), None),
    };
    let (phase, name) = desc.split_once('/')?;
    if phase.is_empty() || name.is_empty() || desc.contains(char::is_whitespace) {
        return None;
    }
    let mut directive = None;
    let mut text = diag.unwrap_or("");
    if let Some(d) = diag {
        let word = d.split_whitespace().next().unwrap_or("");
        let key = word.trim_end_matches(':').to_ascii_uppercase();
        if DIRECTIVES.contains(&key.as_str()) {
            directive = Some(key);
            text = d[word.len()..].trim();
        }
    }
    Some(Line::Result(TapResult {
        ok,
        number,
        phase,
        name,
        directive,
        text,
    }))
}

/// Classify one console line (host stamp removed).
fn classify(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end();
    if let Some(r) = find_top(line, "not ok ", |_, rest| parse_result(false, rest)) {
        return Some(r);
    }
    if !line.contains("not ok ") {
        if let Some(r) = find_top(line, "ok ", |_, rest| parse_result(true, rest)) {
            return Some(r);
        }
    }
    if let Some(s) = find_top(line, "# selftests: ", |_, rest| {
        let (phase, name) = rest.split_once(": ")?;
        let name = name.split_whitespace().next()?;
        (!phase.is_empty() && !phase.contains(' ')).then_some(Line::Start { phase, name })
    }) {
        return Some(s);
    }
    if let Some(e) = find_top(line, "# exit=", |_, rest| Some(Line::Exit(rest.trim()))) {
        return Some(e);
    }
    if let Some(p) = find_top(line, "1..", |before, rest| {
        if before.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let n = rest.split('#').next()?.trim();
        n.parse::<usize>().ok().map(Line::Plan)
    }) {
        return Some(p);
    }
    if let Some(b) = find_top(line, "Bail out!", |_, rest| Some(Line::Bail(rest.trim()))) {
        return Some(b);
    }
    // The start and end markers of saved logs of the previous console
    // format; the end marker only for its exit code, uptime and counters.
    if let Some(i) = line.find("@@TEST-END ") {
        return Some(Line::OldEnd(&line[i..]));
    }
    let i = line.find("@@TEST-START ")?;
    let mut words = line[i..].split_whitespace().skip(1);
    let (phase, name) = (words.next()?, words.next()?);
    Some(Line::Start { phase, name })
}

/// Incremental parser of the console; feed it lines as they arrive.
#[derive(Default)]
pub struct Log {
    pub results: Vec<TestResult>,
    pub benches: Vec<Bench>,
    /// The count of the TAP plan line, once it came: the run got to its end.
    pub plan: Option<usize>,
    /// TAP result lines seen.
    pub result_lines: usize,
    /// Lines that look like kernel oopses or warnings.
    pub splats: Vec<String>,
    /// Warnings known to come from the emulator, not from the code under
    /// test; listed in the summary but not counted as failures.
    pub benign: Vec<String>,
    /// What is wrong with the TAP stream itself as it came: a bail out,
    /// result lines out of sequence, a second plan. See [`Log::problems`].
    pub tap_errors: Vec<String>,
    current: Option<Running>,
    exit: Option<Exit>,
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
    /// A test still running at its end stays running: see [`Log::close`].
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

    /// Whether the plan line came: `/init` got to the end of the plan.
    pub fn finished(&self) -> bool {
        self.plan.is_some()
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
        if let Some(i) = line.find("@@BENCH ") {
            self.bench(&line[i..]);
            return;
        }
        match classify(line) {
            Some(Line::Start { phase, name }) => {
                self.finish_incomplete();
                self.exit = None;
                self.current = Some(Running::new(phase, name, t));
            }
            Some(Line::Exit(fields)) => {
                // `fields` follows "exit=": the code, then key=value words.
                self.exit = Some(Exit {
                    rc: fields
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse().ok()),
                    uptime: kv(fields, "uptime").map(str::to_string),
                    live: kv(fields, "live").map(str::to_string),
                });
            }
            Some(Line::OldEnd(fields)) => {
                self.exit = Some(Exit {
                    rc: kv(fields, "rc").and_then(|v| v.parse().ok()),
                    uptime: kv(fields, "uptime").map(str::to_string),
                    live: kv(fields, "live").map(str::to_string),
                });
            }
            Some(Line::Result(r)) => self.result(&r, t),
            Some(Line::Plan(n)) => {
                if self.plan.is_some() {
                    self.tap_errors.push(format!("a second plan line 1..{n}"));
                } else {
                    self.finish_incomplete();
                    self.plan = Some(n);
                }
            }
            Some(Line::Bail(why)) => {
                self.finish_incomplete();
                self.tap_errors.push(format!("Bail out! {why}"));
            }
            None => self.note_output(line),
        }
    }

    fn bench(&mut self, m: &str) {
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

    fn result(&mut self, r: &TapResult<'_>, t: Option<f64>) {
        let TapResult {
            ok,
            number,
            phase,
            name,
            text,
            ..
        } = *r;
        let directive = r.directive.as_deref();
        self.result_lines += 1;
        if number != self.result_lines {
            self.tap_errors.push(format!(
                "result line {number} ({phase}/{name}) out of sequence: expected {}",
                self.result_lines
            ));
        }
        let run = match self.current.take() {
            Some(r) if r.phase == phase && r.name == name => r,
            other => {
                // A result without its start line: keep what we had and
                // record this one on its own.
                self.current = other;
                self.finish_incomplete();
                Running::new(phase, name, None)
            }
        };
        let exit = self.exit.take().unwrap_or_default();
        let failure = |base: String| match run.last_error.clone() {
            Some(e) if base.is_empty() => e,
            Some(e) => format!("{base}: {e}"),
            None => base,
        };
        let exit_text = exit.rc.map_or(String::new(), |rc| format!("exit={rc}"));
        let status = match (ok, directive) {
            (_, Some("SKIP")) => Status::Skip(if text.is_empty() {
                run.last_skip.clone().unwrap_or_default()
            } else {
                text.to_string()
            }),
            (false, Some("TODO" | "XFAIL")) => Status::XFail(failure(exit_text)),
            (_, Some("XPASS")) | (true, Some("TODO" | "XFAIL")) => Status::XPass,
            (_, Some("TIMEOUT")) => Status::Timeout(failure(format!("TIMEOUT {text}"))),
            (true, _) => Status::Pass,
            (false, _) if text.is_empty() => Status::Fail(failure(exit_text)),
            (false, Some(d)) => Status::Fail(failure(format!("{d} {text}"))),
            (false, None) => Status::Fail(failure(text.to_string())),
        };
        let wall = match (run.started, t) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        // A skip without the diagnostic (a saved log's, or an old /init's)
        // still exited with kselftest's skip code.
        let rc = exit
            .rc
            .or(matches!(status, Status::Skip(_)).then_some(KSFT_SKIP));
        self.results.push(TestResult {
            phase: run.phase,
            name: run.name,
            status,
            wall,
            rc,
            uptime: exit.uptime,
            live: exit.live,
        });
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

    fn push_unfinished(&mut self, run: Running, status: Status) {
        self.results.push(TestResult {
            phase: run.phase,
            name: run.name,
            status,
            wall: None,
            rc: None,
            uptime: None,
            live: None,
        });
    }

    fn finish_incomplete(&mut self) {
        if let Some(run) = self.current.take() {
            self.push_unfinished(run, Status::Incomplete);
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
            self.push_unfinished(run, status);
        }
    }

    /// What is wrong with the TAP stream as a whole: no plan line (the run
    /// did not get to its end), a plan that does not count the result
    /// lines, and the [`Log::tap_errors`].
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.tap_errors.clone();
        match self.plan {
            None => out.push("the test plan did not run to its end (no TAP plan line)".into()),
            Some(n) if n != self.result_lines => out.push(format!(
                "the TAP plan says 1..{n} but {} result lines came",
                self.result_lines
            )),
            Some(_) => {}
        }
        out
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

    /// Whether the whole run succeeded: the plan finished and counts the
    /// results, nothing failed, and the kernel printed no oops or warning.
    pub fn success(&self) -> bool {
        self.problems().is_empty()
            && self.splats.is_empty()
            && self.results.iter().all(|r| !r.status.is_failure())
    }

    /// The machine-readable result (`results.json`). `stopped` is why the
    /// harness stopped the emulator, `exit` how the emulator exited; a run
    /// the harness stopped never succeeded.
    pub fn json(&self, stopped: Option<&str>, exit: Option<String>) -> Value {
        let (passed, failed, skipped) = self.counts();
        let strs = |v: &[String]| Value::Arr(v.iter().map(Value::str).collect());
        let secs =
            |s: Option<f64>| s.map_or(Value::Null, |s| Value::Num((s * 10.0).round() / 10.0));
        let tests = self
            .results
            .iter()
            .map(|r| {
                Value::obj([
                    ("phase", Value::str(&r.phase)),
                    ("name", Value::str(&r.name)),
                    ("status", Value::str(r.status.label())),
                    ("reason", Value::str(r.status.reason())),
                    ("seconds", secs(r.wall)),
                    ("rc", r.rc.map_or(Value::Null, |rc| Value::Int(rc.into()))),
                    ("uptime", Value::opt_str(r.uptime.clone())),
                    ("live", Value::opt_str(r.live.clone())),
                ])
            })
            .collect();
        let bench = self
            .benches
            .iter()
            .map(|b| {
                Value::obj([
                    ("phase", Value::str(&b.phase)),
                    ("test", Value::str(&b.test)),
                    ("mode", Value::str(&b.mode)),
                    ("iters", Value::Num(b.iters as f64)),
                    ("ticks", Value::Num(b.ticks as f64)),
                    ("per_round_trip", Value::Num(b.per_round_trip())),
                ])
            })
            .collect();
        Value::obj([
            ("format", Value::str("nvmx-harness results 1")),
            ("success", Value::Bool(stopped.is_none() && self.success())),
            ("finished", Value::Bool(self.finished())),
            (
                "plan",
                self.plan.map_or(Value::Null, |n| Value::Num(n as f64)),
            ),
            ("result_lines", Value::Num(self.result_lines as f64)),
            (
                "counts",
                Value::obj([
                    ("passed", Value::Num(passed as f64)),
                    ("failed", Value::Num(failed as f64)),
                    ("skipped", Value::Num(skipped as f64)),
                    ("xfail", Value::Num(self.xfails() as f64)),
                    ("total", Value::Num(self.results.len() as f64)),
                ]),
            ),
            ("stopped", Value::opt_str(stopped)),
            ("emulator_exit", Value::opt_str(exit)),
            ("problems", strs(&self.problems())),
            ("kernel_warnings", strs(&self.splats)),
            ("benign_warnings", strs(&self.benign)),
            ("tests", Value::Arr(tests)),
            ("bench", Value::Arr(bench)),
        ])
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
            if r.status == Status::Pass {
                continue;
            }
            let why = r.status.reason();
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
        let problems = self.problems();
        if !problems.is_empty() {
            out.push_str("problems with the run's TAP output:\n");
            for p in &problems {
                let _ = writeln!(out, "  {p}");
            }
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
[   0.9] TAP version 13
[   1.0] # selftests: stock: vmx_msrs_test
[   1.1] # TAP version 13
[   1.2] # ok 1 vmx_msrs_test
[   2.0] # exit=0 uptime=1.15
[   2.0] ok 1 stock/vmx_msrs_test
[   2.1] # selftests: stock: vmx_pmu_caps_test
[   2.2] # 1..0 # SKIP - Requirement not met: kvm_is_pmu_enabled()
[   2.3] # exit=4 uptime=1.2
[   2.3] ok 2 stock/vmx_pmu_caps_test # SKIP
[   3.0] # selftests: module: vmx_msrs_test
[   3.1] # ==== Test Assertion Failure ====
[   3.5] # exit=254 uptime=1.4 live=mappings,0,refs,0,vms,1
[   3.5] not ok 3 module/vmx_msrs_test # exit=254
[   4.0] # selftests: stock: nvmx_l2_loop
[   4.5] # @@BENCH test=nvmx_l2_loop mode=managed iters=100 ticks=2110000 per_rt=21100
[   4.6] # exit=0 uptime=1.6
[   4.6] ok 4 stock/nvmx_l2_loop
[   5.0] # selftests: module: nvmx_l2_loop
[   5.5] # @@BENCH test=nvmx_l2_loop mode=managed iters=100 ticks=1800000 per_rt=18000
[   5.6] # exit=0 uptime=1.8
[   5.6] ok 5 module/nvmx_l2_loop
[   6.0] # uptime=1.9
[   6.0] 1..5
";

    /// One test of `/init`: start, output, exit diagnostic, result line.
    fn test(n: usize, id: &str, output: &str, rc: i32, result: &str) -> String {
        let (phase, name) = id.split_once('/').unwrap();
        format!("# selftests: {phase}: {name}\n{output}# exit={rc} uptime=1.0\n{result} {n} {id}\n")
    }

    fn labels(log: &Log) -> Vec<(&str, &str, &str)> {
        log.results
            .iter()
            .map(|r| (r.phase.as_str(), r.name.as_str(), r.status.label()))
            .collect()
    }

    #[test]
    fn classifies_pass_skip_fail() {
        let log = Log::parse(SAMPLE);
        assert_eq!(
            labels(&log),
            vec![
                ("stock", "vmx_msrs_test", "PASS"),
                ("stock", "vmx_pmu_caps_test", "SKIP"),
                ("module", "vmx_msrs_test", "FAIL"),
                ("stock", "nvmx_l2_loop", "PASS"),
                ("module", "nvmx_l2_loop", "PASS"),
            ]
        );
        assert_eq!(log.counts(), (3, 1, 1));
        assert!(log.finished());
        assert_eq!(log.problems(), Vec::<String>::new());
        assert!(!log.success(), "a failed test must fail the run");
        assert_eq!(log.results[2].rc, Some(254));
        assert_eq!(
            log.results[2].live.as_deref(),
            Some("mappings,0,refs,0,vms,1")
        );
        assert_eq!(log.results[2].uptime.as_deref(), Some("1.4"));
    }

    #[test]
    fn keeps_skip_reason_and_failure_text() {
        let log = Log::parse(SAMPLE);
        assert_eq!(
            log.results[1].status,
            Status::Skip("1..0 # SKIP - Requirement not met: kvm_is_pmu_enabled()".into())
        );
        match &log.results[2].status {
            Status::Fail(why) => assert!(why.starts_with("exit=254: ==== Test Assertion"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let out = "# ==== Test Assertion Failure ====\n#   lib/kvm_util.c:1016: ret == 0\n\
                   #   errno=38\n# x\n#   madvise failed\n# later noise\n";
        let asserted = Log::parse(&test(1, "stock/t", out, 254, "not ok"));
        match &asserted.results[0].status {
            Status::Fail(why) => assert_eq!(
                why,
                "exit=254: ==== Test Assertion Failure ==== | lib/kvm_util.c:1016: ret == 0 | errno=38 | x | madvise failed"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        let wall = log.results[0].wall.expect("timestamps were present");
        assert!((wall - 1.0).abs() < 1e-9);
        // The reason on the result line itself wins over the output.
        let log = Log::parse(
            "# selftests: stock: s\n# SKIP from output\nok 1 stock/s # SKIP (not run in this test bed): no VMX\n1..1\n",
        );
        assert_eq!(
            log.results[0].status,
            Status::Skip("(not run in this test bed): no VMX".into())
        );
        assert_eq!(log.results[0].rc, Some(KSFT_SKIP));
    }

    #[test]
    fn result_lines_survive_kernel_text_before_them() {
        let text = "[    5.123456] kvm: something# selftests: stock: a\n\
                    # exit=0 uptime=1\n\
                    [    5.2] nvmx_gpc: loadedok 1 stock/a\n\
                    [    5.3] random: crng initnot ok 2 stock/b # exit=1\n\
                    [    5.4] kernel says 1..2\n";
        let log = Log::parse(text);
        assert_eq!(
            labels(&log),
            vec![("stock", "a", "PASS"), ("stock", "b", "FAIL")]
        );
        assert_eq!(log.results[0].rc, Some(0));
        assert_eq!(log.plan, Some(2));
        assert!(log.problems().is_empty(), "{:?}", log.problems());
    }

    #[test]
    fn nested_tap_in_test_output_is_not_top_level() {
        let out = "# TAP version 13\n# 1..2\n# ok 1 x/y\n# not ok 2 x/z\n# # selftests: a: b\n\
                   # all ok 3 p/q\n# # exit=9\n";
        let log = Log::parse(&format!("{}1..1\n", test(1, "stock/a", out, 0, "ok")));
        assert_eq!(labels(&log), vec![("stock", "a", "PASS")]);
        assert_eq!(log.results[0].rc, Some(0));
        assert_eq!((log.result_lines, log.plan), (1, Some(1)));
        assert!(log.success());
    }

    #[test]
    fn missing_result_is_incomplete_or_timeout_and_fails() {
        let log = Log::parse("TAP version 13\n# selftests: stock: hang\n# spinning\n");
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
        let mut log = Log::parse("# selftests: stock: hang\n");
        log.close(None);
        assert_eq!(log.results[0].status, Status::Incomplete);
    }

    #[test]
    fn next_start_closes_an_unfinished_test() {
        let log = Log::parse(&format!(
            "# selftests: stock: a\n{}1..1\n",
            test(1, "stock/b", "", 0, "ok")
        ));
        assert_eq!(log.results[0].status, Status::Incomplete);
        assert_eq!(log.results[1].status, Status::Pass);
        assert!(!log.success());
    }

    #[test]
    fn missing_plan_fails_the_run() {
        let log = Log::parse(&test(1, "stock/a", "", 0, "ok"));
        assert_eq!(log.counts(), (1, 0, 0));
        assert!(!log.finished());
        assert!(!log.success());
        assert_eq!(
            log.problems(),
            ["the test plan did not run to its end (no TAP plan line)"]
        );
        assert!(log
            .summary()
            .contains("problems with the run's TAP output:\n  the test plan did not run"));
    }

    #[test]
    fn plan_count_mismatch_fails_the_run() {
        let two = format!(
            "{}{}",
            test(1, "stock/a", "", 0, "ok"),
            test(2, "stock/b", "", 0, "ok")
        );
        let log = Log::parse(&format!("{two}1..3\n"));
        assert_eq!(log.counts(), (2, 0, 0));
        assert!(!log.success());
        assert_eq!(
            log.problems(),
            ["the TAP plan says 1..3 but 2 result lines came"]
        );
        assert!(Log::parse(&format!("{two}1..2\n")).success());
        // Numbering must run 1, 2, ...; a second plan is an error too.
        let log = Log::parse(&format!(
            "{}{}1..2\n1..2\n",
            test(1, "stock/a", "", 0, "ok"),
            test(3, "stock/b", "", 0, "ok")
        ));
        assert_eq!(
            log.problems(),
            [
                "result line 3 (stock/b) out of sequence: expected 2",
                "a second plan line 1..2"
            ]
        );
    }

    #[test]
    fn bail_out_fails_the_run() {
        let log = Log::parse("TAP version 13\nBail out! no test plan /plans/x.plan\n");
        assert!(!log.success());
        assert_eq!(log.problems()[0], "Bail out! no test plan /plans/x.plan");
    }

    #[test]
    fn kernel_warning_fails_an_otherwise_clean_run() {
        let out = "[ 9.1] WARNING: CPU: 0 PID: 7 at arch/x86/kvm/x86.c:1\n";
        let log = Log::parse(&format!("{}1..1\n", test(1, "stock/a", out, 0, "ok")));
        assert_eq!(log.counts(), (1, 0, 0));
        assert!(!log.success());
        assert!(log.summary().contains("kernel warnings or oopses"));
    }

    #[test]
    fn bochs_cpuid_boot_warnings_are_listed_not_counted() {
        let log = Log::parse(&format!(
            "[ 0.02] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:254 fpu__init+0x1\n\
             [ 0.03] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/cpu/topology_common.c:57 x\n\
             {}1..1\n",
            test(1, "stock/a", "", 0, "ok")
        ));
        assert_eq!(log.benign.len(), 2);
        assert!(log.splats.is_empty());
        assert!(log.success());
        // The same kind of WARN from KVM is not excused.
        let log =
            Log::parse("[ 9.1] WARNING: CPU: 0 PID: 7 at arch/x86/kvm/vmx/nested.c:5 x\n1..0\n");
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
        let out =
            "# not ok 3 dontneed: stale virtual-APIC page: L2 read TPR 0x30, host wrote 0x90\n\
                   # # Totals: pass:1 fail:2 xfail:0 xpass:0 skip:1 error:0\n";
        let log = Log::parse(&format!(
            "{}{}1..2\n",
            test(1, "stock/race", out, 1, "not ok").replace(
                "stock/race\n",
                "stock/race # TODO expected failure (exit=1)\n"
            ),
            test(2, "stock/other", "", 0, "ok")
        ));
        assert_eq!(
            log.results[0].status,
            Status::XFail(
                "exit=1: not ok 3 dontneed: stale virtual-APIC page: L2 read TPR 0x30, host wrote 0x90"
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
        assert!(
            s.contains("  XFAIL stock/race: exit=1: not ok 3 dontneed: stale virtual-APIC page")
        );
        assert!(s.contains("\n1 failed as expected (XFAIL), not counted as failures\n"));
        assert_eq!(s.lines().last(), Some("1 passed, 0 failed, 0 skipped"));
        // What /init prints for an xfail test that skipped, aborted on an
        // assertion (only exit 1 is the expected failure) or failed in a
        // phase without xfail.
        let log = Log::parse(
            "ok 1 stock/a # SKIP\nnot ok 2 stock/b # exit=1\nnot ok 3 stock/c # exit=254\n1..3\n",
        );
        assert_eq!(
            labels(&log).iter().map(|l| l.2).collect::<Vec<_>>(),
            ["SKIP", "FAIL", "FAIL"]
        );
        assert!(!log.success());
    }

    #[test]
    fn unexpected_pass_is_xpass_and_fails_the_run() {
        let log = Log::parse(&format!(
            "{}1..1\n",
            test(1, "module/race", "# ok 1 race\n", 0, "not ok").replace(
                "module/race\n",
                "module/race # XPASS: expected to fail in this phase\n"
            )
        ));
        assert_eq!(log.results[0].status, Status::XPass);
        assert!(log.results[0].status.is_failure());
        assert_eq!(log.counts(), (0, 1, 0));
        assert!(!log.success(), "an unexpected pass must fail the run");
        let s = log.summary();
        assert!(s.contains(
            "  XPASS module/race: expected to fail in this phase; the test no longer detects stock's stale mapping"
        ));
        assert!(s.contains("0 passed, 1 failed, 0 skipped\n"));
        // A TAP "ok ... # TODO" is an unexpected pass as well.
        assert_eq!(
            Log::parse("ok 1 s/t # TODO\n").results[0].status,
            Status::XPass
        );
    }

    #[test]
    fn previous_console_format_is_still_read() {
        let log = Log::parse(
            "[ 1.0] @@NVMX-BEGIN plan=test\n[ 1.0] TAP version 13\n[ 1.0] @@TEST-START stock a\n\
             [ 2.0] @@TEST-END stock a rc=0 uptime=0.88\n[ 2.0] ok 1 stock/a\n\
             [ 2.0] @@TEST-START stock b\n[ 2.0] # SKIP no PMU\n[ 2.5] @@TEST-END stock b rc=4\n\
             [ 2.5] ok 2 stock/b # SKIP\n[ 3.0] @@TEST-START stock c\n\
             [ 3.5] @@TEST-END stock c rc=1 xfail=1\n[ 3.5] not ok 3 stock/c # TODO expected failure (rc=1)\n\
             [ 4.0] 1..3\n[ 4.0] @@NVMX-DONE uptime=1\n",
        );
        assert_eq!(
            labels(&log),
            vec![
                ("stock", "a", "PASS"),
                ("stock", "b", "SKIP"),
                ("stock", "c", "XFAIL")
            ]
        );
        assert_eq!(log.results[1].status.reason(), "SKIP no PMU");
        assert_eq!(log.results[0].wall, Some(1.0));
        assert_eq!(log.results[0].uptime.as_deref(), Some("0.88"));
        assert_eq!(
            log.results.iter().map(|r| r.rc).collect::<Vec<_>>(),
            [Some(0), Some(4), Some(1)]
        );
        assert!(log.success());
    }

    #[test]
    fn json_has_the_run_and_every_test() {
        let mut log = Log::parse(SAMPLE);
        log.feed("# selftests: cache: \"quoted\"", Some(7.0));
        log.close(Some("test ran longer than 2 s"));
        let text = log
            .json(
                Some("test ran longer than 2 s"),
                Some("exit status: 1".into()),
            )
            .to_text();
        let want_start = "{\n  \"format\": \"nvmx-harness results 1\",\n  \"success\": false,\n  \
                          \"finished\": true,\n  \"plan\": 5,\n  \"result_lines\": 5,\n  \"counts\": {\n    \
                          \"passed\": 3,\n    \"failed\": 2,\n    \"skipped\": 1,\n    \"xfail\": 0,\n    \
                          \"total\": 6\n  },\n  \"stopped\": \"test ran longer than 2 s\",\n  \
                          \"emulator_exit\": \"exit status: 1\",\n  \"problems\": [],\n";
        assert!(text.starts_with(want_start), "{text}");
        assert!(text.contains(
            "\n    {\"phase\": \"module\", \"name\": \"vmx_msrs_test\", \"status\": \"FAIL\", \
             \"reason\": \"exit=254: ==== Test Assertion Failure ====\", \"seconds\": 0.5, \"rc\": 254, \
             \"uptime\": \"1.4\", \"live\": \"mappings,0,refs,0,vms,1\"},\n"
        ), "{text}");
        assert!(
            text.contains(
                "{\"phase\": \"cache\", \"name\": \"\\\"quoted\\\"\", \"status\": \"TIMEOUT\", \
             \"reason\": \"test ran longer than 2 s\", \"seconds\": null, \"rc\": null, \
             \"uptime\": null, \"live\": null}\n  ],\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "{\"phase\": \"stock\", \"test\": \"nvmx_l2_loop\", \"mode\": \"managed\", \
             \"iters\": 100, \"ticks\": 2110000, \"per_round_trip\": 21100}"
            ),
            "{text}"
        );
        assert!(text.ends_with("}\n  ]\n}\n"));
        // The success field is the run's: stopped by the harness, never.
        let clean = Log::parse(&format!("{}1..1\n", test(1, "stock/a", "", 0, "ok")));
        assert!(clean
            .json(None, None)
            .to_text()
            .contains("\"success\": true,"));
        assert!(clean
            .json(Some("x"), None)
            .to_text()
            .contains("\"success\": false,"));
    }

    #[test]
    fn stamp_prefix_is_optional() {
        assert_eq!(split_stamp("[  12.5] x"), (Some(12.5), "x"));
        assert_eq!(split_stamp("[not a stamp] x"), (None, "[not a stamp] x"));
        assert_eq!(split_stamp("plain"), (None, "plain"));
    }
}
