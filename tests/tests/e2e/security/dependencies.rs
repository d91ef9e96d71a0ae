//! The dependency audit (`scripts/audit`, cargo-deny with deny.toml) against
//! advisory databases made for the test: it fails on an advisory for a crate
//! in Cargo.lock, passes on one for a crate we do not use, and says so when
//! there is no database at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A RustSec-format database holding one advisory against `package`.
fn database_with_advisory(dir: &Path, package: &str) -> PathBuf {
    let db = dir.join(format!("db-{package}"));
    let crate_dir = db.join("crates").join(package);
    std::fs::create_dir_all(&crate_dir).expect("a crate folder");
    std::fs::write(
        db.join("SNAPSHOT.txt"),
        format!("test database: {package}\n"),
    )
    .expect("snapshot");
    std::fs::write(
        crate_dir.join("RUSTSEC-2099-0001.md"),
        format!(
            "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"{package}\"\n\
             date = \"2099-01-01\"\nurl = \"https://example.invalid/advisory\"\n\
             categories = [\"denial-of-service\"]\n\n[versions]\npatched = []\n```\n\n\
             # A test advisory against every version of {package}\n\nMade by the test suite.\n"
        ),
    )
    .expect("advisory");
    db
}

fn audit(database: &Path) -> Output {
    Command::new(workspace().join("scripts/audit"))
        .env("EVERGREEN_ADVISORY_DB", database)
        .output()
        .expect("scripts/audit runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_audit_fails_on_an_advisory_for_a_locked_crate_and_only_then() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let affecting = database_with_advisory(dir.path(), "serde_json");
    let unrelated = database_with_advisory(dir.path(), "a-crate-we-do-not-use");

    // Act
    let failing = audit(&affecting);
    let passing = audit(&unrelated);
    let skipped = audit(&dir.path().join("no-database-here"));

    // Assert
    let failing_text = text(&failing);
    assert!(!failing.status.success(), "{failing_text}");
    assert!(failing_text.contains("RUSTSEC-2099-0001"), "{failing_text}");
    assert!(failing_text.contains("serde_json"), "{failing_text}");
    assert!(passing.status.success(), "{}", text(&passing));
    assert!(
        text(&passing).contains("advisories ok"),
        "{}",
        text(&passing)
    );
    assert!(skipped.status.success(), "{}", text(&skipped));
    assert!(
        text(&skipped).contains("advisories: SKIPPED"),
        "{}",
        text(&skipped)
    );
    // Licenses, bans and sources ran in all three.
    for output in [&failing, &passing, &skipped] {
        assert!(text(output).contains("licenses ok"), "{}", text(output));
    }
}
