//! Run an emulator, follow the file its serial console goes to, and stop it
//! when the guest finishes, hangs or runs too long.
//!
//! Guest-side timeouts cannot be trusted: under Bochs 2.7 a spinning nested
//! guest masks the host's timer, so the guest's own clock stops. Every limit
//! here is host wall time.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::log::Log;

/// Host wall-time limits, in seconds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The whole emulator run.
    pub total: f64,
    /// One test, from its start line.
    pub test: f64,
    /// No console output at all.
    pub silence: f64,
    /// After the plan's TAP plan line (its end), for the emulator to power off.
    pub poweroff: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: 3600.0,
            test: 900.0,
            silence: 600.0,
            poweroff: 120.0,
        }
    }
}

pub struct Config {
    pub command: Vec<String>,
    pub serial: PathBuf,
    pub results: PathBuf,
    pub limits: Limits,
    /// Print console lines as they arrive.
    pub echo: bool,
}

pub struct Outcome {
    pub log: Log,
    /// Why the harness stopped the emulator, if it had to.
    pub stopped: Option<String>,
    pub status: Option<ExitStatus>,
}

/// Follows a growing file and hands out complete lines.
struct Follower {
    file: Option<File>,
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    fn new(path: PathBuf) -> Self {
        Follower {
            file: None,
            path,
            pos: 0,
            partial: Vec::new(),
        }
    }

    fn poll(&mut self, out: &mut Vec<String>) -> io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        let n = file.read_to_end(&mut buf)?;
        self.pos += n as u64;
        for &b in &buf {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial)
                    .trim_end_matches('\r')
                    .to_string();
                out.push(line);
                self.partial.clear();
            } else {
                self.partial.push(b);
            }
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&self.partial).to_string());
            self.partial.clear();
        }
    }
}

fn signal_group(child: &Child, sig: &str) {
    // The emulator runs in its own process group; signal all of it.
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

/// Stop the emulator: SIGINT first (Bochs then dumps its CPU state to its
/// log, which says where the guest was stuck), SIGKILL if it lingers.
fn stop(child: &mut Child) -> Option<ExitStatus> {
    signal_group(child, "-INT");
    for _ in 0..50 {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        sleep(Duration::from_millis(100));
    }
    signal_group(child, "-KILL");
    child.wait().ok()
}

pub fn run(cfg: &Config) -> io::Result<Outcome> {
    fs::create_dir_all(&cfg.results)?;
    // A stale console file from an earlier run would be read as this one.
    match fs::remove_file(&cfg.serial) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut saved = File::create(cfg.results.join("serial.log"))?;
    let emu_out = File::create(cfg.results.join("emulator.out"))?;
    let (prog, args) = cfg
        .command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no emulator command"))?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(emu_out.try_clone()?)
        .stderr(emu_out)
        .process_group(0)
        .spawn()?;

    let t0 = Instant::now();
    let mut last_output = t0;
    let mut done_at: Option<Instant> = None;
    let mut follower = Follower::new(cfg.serial.clone());
    let mut log = Log::new();
    let mut lines = Vec::new();
    let mut stopped = None;
    let status;

    loop {
        let exited = child.try_wait()?;
        follower.poll(&mut lines)?;
        if exited.is_some() {
            follower.flush(&mut lines);
        }
        let now = Instant::now();
        let t = now.duration_since(t0).as_secs_f64();
        if !lines.is_empty() {
            last_output = now;
        }
        for line in lines.drain(..) {
            writeln!(saved, "[{t:8.1}] {line}")?;
            if cfg.echo {
                println!("[{:02}:{:04.1}] {line}", (t / 60.0) as u64, t % 60.0);
            }
            log.feed(&line, Some(t));
            if log.finished() && done_at.is_none() {
                done_at = Some(now);
            }
        }
        if let Some(st) = exited {
            status = Some(st);
            break;
        }

        let why = if t > cfg.limits.total {
            Some(format!("emulator ran longer than {} s", cfg.limits.total))
        } else if done_at.is_some_and(|d| now.duration_since(d).as_secs_f64() > cfg.limits.poweroff)
        {
            Some(format!(
                "guest did not power off within {} s of finishing",
                cfg.limits.poweroff
            ))
        } else if now.duration_since(last_output).as_secs_f64() > cfg.limits.silence {
            Some(format!(
                "no console output for {} s (guest hung?)",
                cfg.limits.silence
            ))
        } else {
            match log.running() {
                Some((_, _, Some(start))) if t - start > cfg.limits.test => {
                    Some(format!("test ran longer than {} s", cfg.limits.test))
                }
                _ => None,
            }
        };
        if let Some(why) = why {
            eprintln!("nvmx-harness: stopping the emulator: {why}");
            status = stop(&mut child);
            follower.poll(&mut lines)?;
            follower.flush(&mut lines);
            for line in lines.drain(..) {
                writeln!(saved, "[{t:8.1}] {line}")?;
                log.feed(&line, Some(t));
            }
            // A timeout after the plan finished is a power-off problem,
            // not a test failure, but it still fails the run.
            stopped = Some(why);
            break;
        }
        sleep(Duration::from_millis(200));
    }
    log.close(stopped.as_deref());
    Ok(Outcome {
        log,
        stopped,
        status,
    })
}
