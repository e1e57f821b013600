//! The layering that `src/lib.rs` states, checked on the source: statistics is a crate of
//! its own (so the compiler keeps it from importing evoattn), the searches never import
//! the study layer, the model never imports training or studies, and the CLI stays thin.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `crate::…` path used in the files under `src/<dir>`.
fn imports(dir: &str) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    for f in rust_files(&root().join("src").join(dir)) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let rest: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            v.push((f.clone(), rest));
        }
    }
    v
}

#[test]
fn statistics_is_a_separate_crate_without_evoattn_dependencies() {
    assert!(!root().join("src/stats").exists(), "src/stats came back");
    let manifest = std::fs::read_to_string(root().join("crates/stats/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    assert!(
        !deps.contains("evoattn"),
        "evoattn-stats depends on evoattn"
    );
}

#[test]
fn dependencies_run_one_way() {
    let forbidden: [(&str, &[&str]); 5] = [
        ("search", &["study", "report"]),
        ("model", &["train", "study", "search", "report"]),
        ("train", &["study", "search", "report"]),
        ("data", &["model", "train", "study", "search", "report"]),
        ("study", &["report"]),
    ];
    for (dir, bad) in forbidden {
        for (f, m) in imports(dir) {
            assert!(
                !bad.contains(&m.as_str()),
                "{} imports crate::{m}, against the layering",
                f.display()
            );
        }
    }
}

#[test]
fn the_cli_is_thin() {
    let main = std::fs::read_to_string(root().join("src/main.rs")).unwrap();
    assert!(main.lines().count() < 100, "src/main.rs has grown");
    for f in rust_files(&root().join("src/cli")) {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(n <= 300, "{} has {n} lines (at most 300)", f.display());
    }
}
