//! nvmx-harness: run the nvmx-gpc test plan in an emulator and report.
//!
//! ```text
//! nvmx-harness run --serial FILE --results DIR [--total S] [--test S]
//!                  [--silence S] [--poweroff S] [--quiet] -- EMULATOR ARGS...
//! nvmx-harness report SERIAL_LOG
//! ```
//!
//! `run` starts the emulator, streams the guest console with host
//! timestamps, enforces host wall-time limits, writes `serial.log` and
//! `summary.txt` into the results directory and exits 0 only if the plan ran
//! to its end with no failed test and no kernel warning. `report` prints the
//! summary of a saved `serial.log` again.

mod log;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: nvmx-harness run --serial FILE --results DIR [--total S] [--test S] \
         [--silence S] [--poweroff S] [--quiet] -- COMMAND...\n       \
         nvmx-harness report SERIAL_LOG"
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
    if outcome.stopped.is_none() && outcome.log.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cmd_report(mut args: std::vec::IntoIter<String>) -> ExitCode {
    let (Some(path), None) = (args.next(), args.next()) else {
        return usage();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let log = log::Log::parse(&text);
            print!("{}", log.summary());
            if log.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("nvmx-harness: {path}: {e}");
            ExitCode::FAILURE
        }
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
