//! The reports committed under `reports/` are what the committed code makes of their
//! committed Parquet tables: each is rebuilt into a temporary folder and compared byte for
//! byte (report and plots), except the line naming the commit that wrote the report. A
//! report written with extra `evoattn report` flags lists them in `report-args.txt` (one
//! per line; paths relative to `reports/`).

use std::path::Path;

fn rebuild(dir: &Path) {
    let out = std::env::temp_dir().join(format!(
        "evoattn-committed-{}-{}",
        dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for f in [
        "runs.parquet",
        "curves.parquet",
        "generations.parquet",
        "meta.json",
        "study.toml",
        "race.parquet",
    ] {
        if dir.join(f).exists() {
            std::fs::copy(dir.join(f), out.join(f)).unwrap();
        }
    }
    let root = dir.parent().unwrap();
    let args: Vec<String> = std::fs::read_to_string(dir.join("report-args.txt"))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    if l.starts_with("--") {
                        l.to_string()
                    } else {
                        root.join(l).display().to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_evoattn"))
        .arg("report")
        .arg(&out)
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let strip = |t: String| -> String {
        t.lines()
            .filter(|l| !l.starts_with("- Report written by commit"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        strip(read(&dir.join("report.md"))),
        strip(read(&out.join("report.md"))),
        "{}: the committed report differs from what its tables give now; rebuild it with `evoattn report {}`",
        dir.display(),
        dir.display()
    );
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".svg") {
            assert_eq!(
                read(&dir.join(&name)),
                read(&out.join(&name)),
                "{}/{name} differs from a rebuild",
                dir.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn committed_reports_match_their_tables_and_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        if dir.join("runs.parquet").exists() && dir.join("report.md").exists() {
            rebuild(&dir);
            n += 1;
        }
    }
    assert!(n >= 1, "no committed report under {}", root.display());
}
