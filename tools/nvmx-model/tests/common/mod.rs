// SPDX-License-Identifier: GPL-2.0

//! What the two explorers share: the depth-first search over every schedule
//! of a [`Model`], and the helpers of their tests (the scenario table, the
//! mutants that must be caught).
//!
//! The search runs every enabled actor's next step from every state, on a
//! clone of the world, and checks [`Model::check_always`] after each step
//! and [`Model::check_final`] once no actor can step. A model that gives
//! its states a [`Model::key`] has each state explored once; the search then
//! counts the complete schedules exactly, as the number of paths through the
//! state graph. Without a key the search is a plain tree walk.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

/// A world of actors, each a program of atomic steps.
pub(crate) trait Model: Clone {
    /// What the model counts on top of [`Outcome`].
    type Tally: Default;

    /// Heading and width of each column of the table of
    /// [`all_scenarios_hold`]; the scenario's name is the first.
    const COLUMNS: &'static [(&'static str, usize)];

    /// What [`must_hold`] says was violated ("invariant", "property").
    const PROPERTY: &'static str;

    fn actors(&self) -> usize;

    fn done(&self, id: usize) -> bool;

    /// Whether actor `id` can take its next step now.
    fn enabled(&self, id: usize) -> bool {
        !self.done(id)
    }

    /// Runs the next step of actor `id`; returns the line for the trace.
    fn step(&mut self, id: usize) -> Result<String, String>;

    /// Properties of every reachable state.
    fn check_always(&self) -> Result<(), String>;

    /// Properties once every actor finished.
    fn check_final(&self) -> Result<(), String>;

    /// The state's identity, for a search that visits each state once; `None`
    /// to search the tree of schedules.
    fn key(&self) -> Option<u128> {
        None
    }

    /// Counts what the step that printed `what` did.
    fn tally_step(_what: &str, _tally: &mut Self::Tally) {}

    /// Counts what the complete schedule that ends in `self` did.
    fn tally_final(&self, _tally: &mut Self::Tally) {}

    /// The cells of the table after the scenario's name.
    fn cells(o: &Outcome<Self::Tally>) -> Vec<String>;

    /// Whether the unbroken protocol exercised what the scenario is for.
    fn exercised(o: &Outcome<Self::Tally>) -> bool {
        o.schedules > 0
    }
}

/// A 128-bit hash of `t`, from two differently seeded hashers.
#[allow(dead_code)] // interleavings.rs searches the tree.
pub(crate) fn state_key<T: Hash>(t: &T) -> u128 {
    let mut a = DefaultHasher::new();
    t.hash(&mut a);
    let mut b = DefaultHasher::new();
    0x9e37_79b9_u32.hash(&mut b);
    t.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

#[derive(Debug, Default)]
pub(crate) struct Outcome<T> {
    /// Complete schedules (paths through the state graph).
    pub(crate) schedules: u128,
    /// Complete schedules reached so far (those of a remembered state are
    /// not walked again).
    pub(crate) complete: u64,
    /// States expanded: distinct states if the model has a key.
    pub(crate) states: u64,
    /// Steps taken (edges of the state graph).
    pub(crate) transitions: u64,
    /// Whether states were remembered.
    pub(crate) memo: bool,
    pub(crate) tally: T,
}

impl<T> Outcome<T> {
    /// How far a search that found a violation got.
    fn progress(&self) -> String {
        if self.memo {
            format!("{} states", self.states)
        } else {
            format!("{} complete schedules", self.complete)
        }
    }
}

/// What [`explore`] returns: what the search counted, and the violation it
/// found if any.
pub(crate) type Explored<T> = Result<Outcome<T>, (Violation, Outcome<T>)>;

pub(crate) struct Violation {
    pub(crate) msg: String,
    pub(crate) trace: Vec<String>,
}

struct Search<M: Model> {
    memo: HashMap<u128, u128>,
    out: Outcome<M::Tally>,
    trace: Vec<String>,
}

impl<M: Model> Search<M> {
    /// Returns the number of complete schedules from `w`.
    fn dfs(&mut self, w: &M) -> Result<u128, Violation> {
        let key = w.key();
        if let Some(n) = key.and_then(|k| self.memo.get(&k)) {
            return Ok(*n);
        }
        self.out.states += 1;
        let mut total = 0u128;
        let mut any = false;
        for id in 0..w.actors() {
            if !w.enabled(id) {
                continue;
            }
            any = true;
            self.out.transitions += 1;
            let mut next = w.clone();
            match next.step(id) {
                Ok(what) => {
                    M::tally_step(&what, &mut self.out.tally);
                    self.trace.push(what);
                    if let Err(msg) = next.check_always() {
                        return Err(self.violation(msg));
                    }
                    total += self.dfs(&next)?;
                    self.trace.pop();
                }
                Err(msg) => return Err(self.violation(msg)),
            }
        }
        if !any {
            if (0..w.actors()).any(|id| !w.done(id)) {
                return Err(self.violation("deadlock: no actor can step".into()));
            }
            self.out.complete += 1;
            w.check_final().map_err(|msg| self.violation(msg))?;
            w.tally_final(&mut self.out.tally);
            total = 1;
        }
        if let Some(k) = key {
            self.memo.insert(k, total);
        }
        Ok(total)
    }

    fn violation(&self, msg: String) -> Violation {
        Violation {
            msg,
            trace: self.trace.clone(),
        }
    }
}

/// Runs every schedule from `w`.
pub(crate) fn explore<M: Model>(w: M) -> Explored<M::Tally> {
    w.check_always().expect("initial state");
    let mut s = Search::<M> {
        memo: HashMap::new(),
        out: Outcome {
            memo: w.key().is_some(),
            ..Outcome::default()
        },
        trace: Vec::new(),
    };
    match s.dfs(&w) {
        Ok(n) => {
            s.out.schedules = n;
            Ok(s.out)
        }
        Err(v) => Err((v, s.out)),
    }
}

/// Runs scenario `s` (built as `w`) and requires that it holds.
pub(crate) fn must_hold<S: Debug, M: Model>(s: S, w: M) -> Outcome<M::Tally> {
    match explore(w) {
        Ok(o) => o,
        Err((v, _)) => panic!(
            "{s:?}: {} violated: {}\n  {}",
            M::PROPERTY,
            v.msg,
            v.trace.join("\n  ")
        ),
    }
}

fn print_row(cells: &[String], columns: &[(&str, usize)]) {
    let mut line = String::new();
    for (i, (cell, &(_, width))) in cells.iter().zip(columns).enumerate() {
        if i == 0 {
            line += &format!("{cell:<width$}");
        } else {
            line += &format!(" {cell:>width$}");
        }
    }
    println!("{line}");
}

/// Runs every scenario, built by `build`, requires that it holds and is not
/// vacuous, and prints a table of what it explored.
pub(crate) fn all_scenarios_hold<S: Copy + Debug, M: Model>(
    scenarios: &[S],
    build: impl Fn(S) -> M,
) {
    let mut total = 0;
    let headings: Vec<String> = M::COLUMNS.iter().map(|c| c.0.to_string()).collect();
    print_row(&headings, M::COLUMNS);
    for &s in scenarios {
        let o = must_hold(s, build(s));
        let mut cells = vec![format!("{s:?}")];
        cells.extend(M::cells(&o));
        print_row(&cells, M::COLUMNS);
        assert!(M::exercised(&o), "{s:?} is vacuous");
        total += o.schedules;
    }
    println!("total schedules: {total}");
}

/// Runs scenario `s` (built as `w`) with mutant `name` and requires a
/// violation; returns its message.
pub(crate) fn must_catch<S: Debug, M: Model>(name: &str, s: S, w: M) -> String {
    match explore(w) {
        Ok(o) => panic!(
            "mutant {name} survived {s:?} ({} schedules): the checker is blind",
            o.schedules
        ),
        Err((v, o)) => {
            println!(
                "mutant {name} caught in {s:?} after {}: {}\n  {}",
                o.progress(),
                v.msg,
                v.trace.join("\n  ")
            );
            v.msg
        }
    }
}

/// A coarser net than [`mutant_tests`]: each of `mutants` must break at
/// least one of `scenarios` (and the unbroken protocol none, which is
/// [`all_scenarios_hold`]).
pub(crate) fn every_mutant_breaks_some_scenario<F: Copy + Debug, S: Copy + Debug, M: Model>(
    mutants: &[F],
    scenarios: &[S],
    build: impl Fn(S, F) -> M,
) {
    for &f in mutants {
        let caught: Vec<S> = scenarios
            .iter()
            .copied()
            .filter(|&s| explore(build(s, f)).is_err())
            .collect();
        println!("{f:?}: caught by {caught:?}");
        assert!(!caught.is_empty(), "{f:?} survived every scenario");
    }
}

/// Defines one test for each group of mutants: for each line `name, faults,
/// scenario => check;`, `build(scenario, faults)` must break (see
/// [`must_catch`]) with a message for which the `fn(&str) -> bool` `check`
/// holds.
macro_rules! mutant_tests {
    ($build:path; $($test:ident { $($name:literal, $f:expr, $s:expr => $check:expr;)+ })+) => {
        $(
            #[test]
            fn $test() {
                $(
                    let msg = $crate::common::must_catch($name, $s, $build($s, $f));
                    let check: fn(&str) -> bool = $check;
                    assert!(check(&msg), "{}: {msg:?} fails {}", $name, stringify!($check));
                )+
            }
        )+
    };
}
pub(crate) use mutant_tests;
