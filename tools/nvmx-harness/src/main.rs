//! nvmx-harness: run the nvmx-gpc test plan in an emulator and report.
//!
//! ```text
//! nvmx-harness run --serial FILE --results DIR [--total S] [--test S]
//!                  [--silence S] [--poweroff S] [--quiet] -- EMULATOR ARGS...
//! nvmx-harness report SERIAL_LOG [--json FILE]
//! ```
//!
//! `run` starts the emulator, streams the guest console with host
//! timestamps, enforces host wall-time limits, writes `serial.log`,
//! `summary.txt` (for people) and `results.json` (for scripts; see
//! [`log::Log::json`]) into the results directory and exits 0 only if the
//! plan ran to its end with no failed test and no kernel warning. `report`
//! prints the summary of a saved `serial.log` again and, with `--json`,
//! writes its `results.json` (without the emulator's exit and stop reason,
//! which the log does not hold).

mod json;
mod log;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: nvmx-harness run --serial FILE --results DIR [--total S] [--test S] \
         [--silence S] [--poweroff S] [--quiet] -- COMMAND...\n       \
         nvmx-harness report SERIAL_LOG [--json FILE]"
    );
    ExitCode::from(2)
}

fn seconds(v: Option<String>) -> Option<f64> {
    v.and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0)
}

fn cmd_run(mut args: std::vec::IntoIter<String>) -> ExitCode {
    let mut serial = None;
    let mut results = None;
    let mut limits = run::Limits::default();
    let mut echo = true;
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        let ok = match a.as_str() {
            "--serial" => args
                .next()
                .map(|v| serial = Some(PathBuf::from(v)))
                .is_some(),
            "--results" => args
                .next()
                .map(|v| results = Some(PathBuf::from(v)))
                .is_some(),
            "--total" => seconds(args.next()).map(|v| limits.total = v).is_some(),
            "--test" => seconds(args.next()).map(|v| limits.test = v).is_some(),
            "--silence" => seconds(args.next()).map(|v| limits.silence = v).is_some(),
            "--poweroff" => seconds(args.next()).map(|v| limits.poweroff = v).is_some(),
            "--quiet" => {
                echo = false;
                true
            }
            "--" => {
                command = args.by_ref().collect();
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("nvmx-harness: bad or incomplete option {a}");
            return usage();
        }
    }
    let (Some(serial), Some(results)) = (serial, results) else {
        return usage();
    };
    if command.is_empty() {
        return usage();
    }
    let cfg = run::Config {
        command,
        serial,
        results: results.clone(),
        limits,
        echo,
    };
    let outcome = match run::run(&cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nvmx-harness: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut summary = outcome.log.summary();
    if let Some(why) = &outcome.stopped {
        summary.insert_str(0, &format!("emulator stopped by the harness: {why}\n"));
    }
    if let Some(st) = outcome.status {
        summary.insert_str(0, &format!("emulator exit: {st}\n"));
    }
    print!("{summary}");
    if let Err(e) = std::fs::write(results.join("summary.txt"), &summary) {
        eprintln!("nvmx-harness: writing summary: {e}");
        return ExitCode::FAILURE;
    }
    let json = outcome.log.json(
        outcome.stopped.as_deref(),
        outcome.status.map(|st| st.to_string()),
    );
    if let Err(e) = std::fs::write(results.join("results.json"), json.to_text()) {
        eprintln!("nvmx-harness: writing results.json: {e}");
        return ExitCode::FAILURE;
    }
    if outcome.stopped.is_none() && outcome.log.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cmd_report(args: std::vec::IntoIter<String>) -> ExitCode {
    let args: Vec<String> = args.collect();
    let (path, json) = match args.as_slice() {
        [path] => (path, None),
        [path, opt, file] | [opt, file, path] if opt == "--json" => (path, Some(file)),
        _ => return usage(),
    };
    let text = match std::fs::read(path) {
        // A console may carry bytes that are not UTF-8 (a garbled line).
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("nvmx-harness: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut log = log::Log::parse(&text);
    // The log ends here: a test still running never finished.
    log.close(None);
    print!("{}", log.summary());
    if let Some(file) = json {
        if let Err(e) = std::fs::write(file, log.json(None, None).to_text()) {
            eprintln!("nvmx-harness: writing {file}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if log.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    match args.next().as_deref() {
        Some("run") => cmd_run(args),
        Some("report") => cmd_report(args),
        _ => usage(),
    }
}
