//! Build script: the commit `--version` names (`git rev-parse`), or "unknown commit" when the
//! source is not a git checkout (a crate tarball).

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let date = git(&["log", "-1", "--format=%cs"]);
    let described = match (commit, date) {
        (Some(c), Some(d)) => format!("{c} {d}"),
        (Some(c), None) => c,
        _ => "unknown commit".to_owned(),
    };
    println!("cargo:rustc-env=IMPACT_DROP_COMMIT={described}");
    // Rebuilt when HEAD moves (a commit, a checkout); absent files are ignored by cargo.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
