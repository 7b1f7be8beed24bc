//! `sideline validate`: every shipped pipeline passes; every broken file under
//! `tests/pipelines/invalid/` fails with the diagnostic its first line announces, at the exact
//! line and column of the offending text.
//!
//! A broken file starts with
//!
//! ```text
//! # expect: LINE:COLUMN message substring
//! # What is wrong, for people.
//! # hint: hint substring          (optional, on the third line)
//! ```
//!
//! Add a case by dropping a file there: it is discovered by its `.toml` extension.

use std::path::{Path, PathBuf};
use std::process::Command;

use sideline::pipeline::{self, Diagnostic, Registry};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn registry() -> Registry {
    Registry::new(Some(root().join("models")))
}

fn invalid_dir() -> PathBuf {
    root().join("tests/pipelines/invalid")
}

/// What a broken file announces.
#[derive(Debug)]
struct Expect {
    line: usize,
    column: usize,
    message: String,
    hint: Option<String>,
}

fn expectation(path: &Path) -> Expect {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").unwrap_or_else(|| {
        panic!(
            "{}: the first line must be `# expect: LINE:COLUMN message`",
            path.display()
        )
    });
    let (at, message) = rest.split_once(' ').expect("`LINE:COLUMN message`");
    let (line, column) = at.split_once(':').expect("LINE:COLUMN");
    let hint = text
        .lines()
        .take(3)
        .find_map(|l| l.strip_prefix("# hint: "))
        .map(String::from);
    Expect {
        line: line.parse().expect("a line number"),
        column: column.parse().expect("a column number"),
        message: message.to_string(),
        hint,
    }
}

fn broken_files() -> Vec<PathBuf> {
    let files = pipeline::files_in(&invalid_dir()).unwrap();
    assert!(
        files.len() >= 15,
        "only {} broken pipeline files found",
        files.len()
    );
    files
}

fn matches(d: &Diagnostic, e: &Expect) -> bool {
    (d.line, d.column) == (e.line, e.column)
        && d.message.contains(&e.message)
        && e.hint
            .as_ref()
            .is_none_or(|h| d.hint.as_deref().is_some_and(|dh| dh.contains(h.as_str())))
}

#[test]
fn every_broken_file_reports_its_problem_at_the_offending_text() {
    let registry = registry();
    let mut failures = Vec::new();
    for path in broken_files() {
        let expect = expectation(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        match pipeline::load(&path, &registry) {
            Ok(_) => failures.push(format!("{}: accepted", path.display())),
            Err(invalid) => {
                for d in &invalid.0 {
                    let width = text.lines().nth(d.line - 1).map(|l| l.chars().count());
                    assert!(
                        d.line >= 1 && d.column >= 1 && width.is_some_and(|w| d.column <= w + 1),
                        "{d}: outside the file"
                    );
                }
                if !invalid.0.iter().any(|d| matches(d, &expect)) {
                    failures.push(format!(
                        "{}: expected {}:{} `{}`{}; got:\n{invalid}",
                        path.display(),
                        expect.line,
                        expect.column,
                        expect.message,
                        expect
                            .hint
                            .as_ref()
                            .map_or(String::new(), |h| format!(" with hint `{h}`"))
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_shipped_pipeline_is_valid() {
    let registry = registry();
    let files = pipeline::files_in(&root().join("pipelines")).unwrap();
    assert!(!files.is_empty());
    for f in files {
        match pipeline::load(&f, &registry) {
            Ok(plan) => assert!(!plan.features.is_empty(), "{}", f.display()),
            Err(e) => panic!("{e}"),
        }
    }
}

fn sideline(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sideline"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_passes_the_shipped_pipelines() {
    let (ok, stdout, stderr) = sideline(&["validate", "pipelines"]);
    assert!(ok, "sideline validate pipelines failed:\n{stdout}{stderr}");
    for f in pipeline::files_in(&root().join("pipelines")).unwrap() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            stdout.contains(&format!("ok: pipelines/{name} (pipeline ")),
            "no ok line for {name}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(
            "(pipeline nfl_win_probability v1: 10 features, 16 derived, model nfl_wp/v1)"
        ),
        "{stdout}"
    );
}

#[test]
fn the_binary_reports_every_broken_file_as_file_line_column() {
    let (ok, stdout, stderr) = sideline(&["validate", "tests/pipelines/invalid"]);
    assert!(!ok, "a directory of broken files passed:\n{stdout}");
    let files = broken_files();
    assert!(
        stderr.contains(&format!(
            "{} of {} pipeline files are invalid",
            files.len(),
            files.len()
        )),
        "{stderr}"
    );
    for path in files {
        let e = expectation(&path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let at = format!(
            "tests/pipelines/invalid/{name}:{}:{}: error: ",
            e.line, e.column
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&at) && l.contains(&e.message)),
            "no `{at}{}` in:\n{stderr}",
            e.message
        );
    }
}

#[test]
fn the_binary_fails_on_one_broken_file_and_still_passes_the_good_one() {
    let file = "tests/pipelines/invalid/unknown_event_field.toml";
    let (ok, stdout, stderr) = sideline(&["validate", "pipelines/nfl_win_probability.toml", file]);
    assert!(!ok);
    assert!(
        stdout.contains("ok: pipelines/nfl_win_probability.toml"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:18:11: error: unknown event field `home_pionts`\n  hint: did you mean `home_points`?"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 2 pipeline files are invalid"),
        "{stderr}"
    );

    let (ok, _, stderr) = sideline(&["validate", "no/such/file.toml"]);
    assert!(!ok);
    assert!(
        stderr.contains("no/such/file.toml:1:1: error: cannot read the file"),
        "{stderr}"
    );
}
