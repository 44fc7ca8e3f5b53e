//! Turning what the test harnesses printed into pass/fail per test.

use crate::initramfs::{BEGIN_MARKER, DONE_MARKER, END_MARKER};

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// libtest printed `ok`.
    Passed,
    /// libtest printed `FAILED`, the test never finished, or the binary failed outside any test.
    Failed,
    /// libtest printed `ignored` (counted as neither).
    Ignored,
}

/// The result of one test binary in the VM.
#[derive(Debug, Clone)]
pub struct BinaryResult {
    /// `<crate>::<test target>`.
    pub name: String,
    /// Each test with its outcome, in the order it ran.
    pub tests: Vec<(String, Outcome)>,
    /// Exit status the guest saw; `None` if the binary never finished.
    pub exit: Option<i32>,
    /// What the binary printed.
    pub output: String,
}

impl BinaryResult {
    fn failed(&self) -> bool {
        self.tests.iter().any(|(_, o)| *o == Outcome::Failed)
    }
}

/// Passed and failed counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed (including binaries that failed outside any test).
    pub failed: usize,
}

impl Tally {
    /// Adds another tally to this one.
    pub fn add(&mut self, other: &Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Splits the serial console into per-binary results for the binaries the guest was asked to run.
pub fn parse_console(console: &str, expected: &[String]) -> Vec<BinaryResult> {
    expected
        .iter()
        .map(|name| parse_binary(console, name))
        .collect()
}

fn parse_binary(console: &str, name: &str) -> BinaryResult {
    let begin = format!("{BEGIN_MARKER} {name}");
    let end = format!("{END_MARKER} {name} rc=");
    // Terminal escapes from the firmware can precede a marker on its line: match from the marker.
    let mut lines = console.lines().map(from_marker).skip_while(|l| *l != begin);
    let started = lines.next().is_some();
    let mut output = String::new();
    let mut exit = None;
    for line in lines {
        if let Some(rc) = line.strip_prefix(&end) {
            exit = Some(rc.trim().parse().unwrap_or(-1));
            break;
        }
        if line.starts_with(BEGIN_MARKER) || line == DONE_MARKER {
            break;
        }
        output.push_str(line);
        output.push('\n');
    }
    let mut tests = libtest_outcomes(&output);
    let clean_exit = exit == Some(0);
    if !started {
        tests.push(("(binary never started)".into(), Outcome::Failed));
    } else if !clean_exit && !tests.iter().any(|(_, o)| *o == Outcome::Failed) {
        let why = match exit {
            Some(rc) => format!("(binary exited with status {rc})"),
            None => "(binary never finished: the VM stopped)".into(),
        };
        tests.push((why, Outcome::Failed));
    }
    BinaryResult {
        name: name.to_owned(),
        tests,
        exit,
        output,
    }
}

/// The line from its first `@@PROXIER` marker on, or the whole line if it has none.
fn from_marker(line: &str) -> &str {
    line.find("@@PROXIER").map_or(line, |at| &line[at..])
}

/// `test NAME ... ok|FAILED|ignored` lines; a test announced without an outcome (killed) failed.
fn libtest_outcomes(output: &str) -> Vec<(String, Outcome)> {
    let mut tests = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, outcome)) = rest.split_once(" ...") else {
            continue;
        };
        let outcome = match outcome.trim() {
            "ok" => Outcome::Passed,
            o if o.starts_with("ignored") => Outcome::Ignored,
            _ => Outcome::Failed,
        };
        tests.push((name.to_owned(), outcome));
    }
    tests
}

/// Counts tests by outcome over every binary.
pub fn tally(results: &[BinaryResult]) -> Tally {
    let mut tally = Tally::default();
    for (_, outcome) in results.iter().flat_map(|r| &r.tests) {
        match outcome {
            Outcome::Passed => tally.passed += 1,
            Outcome::Failed => tally.failed += 1,
            Outcome::Ignored => {}
        }
    }
    tally
}

/// Prints one line per binary, and the output of the ones that failed.
pub fn print(results: &[BinaryResult]) {
    println!("== VM results ==");
    for result in results {
        let verdict = if result.failed() { "FAIL" } else { "PASS" };
        let exit = result
            .exit
            .map_or_else(|| "never finished".to_owned(), |rc| format!("exit {rc}"));
        println!(
            "{verdict} {} ({} tests, {exit})",
            result.name,
            result.tests.len()
        );
        for (test, outcome) in &result.tests {
            if *outcome != Outcome::Passed {
                println!("    {outcome:?}: {test}");
            }
        }
    }
    for result in results.iter().filter(|r| r.failed()) {
        println!("---- output of {} ----\n{}", result.name, result.output);
    }
}

/// Sums libtest's `test result:` lines of a host `cargo test` run.
pub fn tally_cargo_test(text: &str) -> Tally {
    let mut tally = Tally::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(kind)) = (words.next(), words.next()) {
                match (n.parse::<usize>(), kind) {
                    (Ok(n), "passed") => tally.passed += n,
                    (Ok(n), "failed") => tally.failed += n,
                    _ => {}
                }
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn passing_binary() {
        let console = "boot noise\n\x1b[2J@@PROXIER-BEGIN k::smoke\n\nrunning 2 tests\ntest a ... ok\ntest b ... ok\n\
                       test result: ok. 2 passed; 0 failed\n@@PROXIER-END k::smoke rc=0\n@@PROXIER-DONE\n";
        let results = parse_console(console, &names(&["k::smoke"]));
        assert_eq!(
            tally(&results),
            Tally {
                passed: 2,
                failed: 0
            }
        );
        assert_eq!(results[0].exit, Some(0));
    }

    #[test]
    fn failed_test_and_nonzero_exit() {
        let console =
            "@@PROXIER-BEGIN k::x\ntest a ... ok\ntest b ... FAILED\n@@PROXIER-END k::x rc=101\n";
        let results = parse_console(console, &names(&["k::x"]));
        assert_eq!(
            tally(&results),
            Tally {
                passed: 1,
                failed: 1
            }
        );
    }

    #[test]
    fn exit_without_failed_test_counts_as_failure() {
        let console = "@@PROXIER-BEGIN k::x\ntest a ... ok\n@@PROXIER-END k::x rc=3\n";
        let results = parse_console(console, &names(&["k::x"]));
        assert_eq!(
            tally(&results),
            Tally {
                passed: 1,
                failed: 1
            }
        );
    }

    #[test]
    fn killed_binary_fails_its_running_test() {
        let console =
            "@@PROXIER-BEGIN k::x\ntest a ... ok\ntest hangs ... \n@@PROXIER-END k::x rc=137\n";
        let results = parse_console(console, &names(&["k::x"]));
        assert_eq!(
            tally(&results),
            Tally {
                passed: 1,
                failed: 1
            }
        );
        assert_eq!(results[0].tests[1], ("hangs".to_string(), Outcome::Failed));
    }

    #[test]
    fn binary_that_never_ran_or_never_ended_fails() {
        let console = "@@PROXIER-BEGIN k::x\ntest a ... ok\n";
        let results = parse_console(console, &names(&["k::x", "k::y"]));
        assert_eq!(
            tally(&results),
            Tally {
                passed: 1,
                failed: 2
            }
        );
        assert_eq!(results[0].exit, None);
    }

    #[test]
    fn host_summary_lines_are_summed() {
        let text = "test result: ok. 3 passed; 0 failed; 0 ignored\n\
                    test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured\n";
        assert_eq!(
            tally_cargo_test(text),
            Tally {
                passed: 4,
                failed: 2
            }
        );
    }
}
