//! Helpers shared by the integration tests.

use evoattn::data;
use std::path::PathBuf;

/// The real data directory, or None when it is absent outside CI. Under CI (CI set) a
/// missing directory fails the test instead of skipping it.
#[allow(dead_code)]
pub fn real_data() -> Option<PathBuf> {
    let dir = std::env::var_os(data::DATA_ENV).map(PathBuf::from);
    match dir {
        Some(d) if d.join("train.txt").is_file() => Some(d),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but {} does not name a WikiText-2 directory ({dir:?})",
                    data::DATA_ENV
                );
            }
            eprintln!(
                "skipping: set {} to the WikiText-2 directory to run this test",
                data::DATA_ENV
            );
            None
        }
    }
}

/// A fresh folder `evoattn-PREFIX-NAME-PID-NANOS` under the system temp folder.
#[allow(dead_code)]
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "evoattn-{prefix}-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small synthetic data directory (train/valid/test of about `tokens` tokens each, 40
/// word types): fast to train on, so the failure tests do not need WikiText-2.
#[allow(dead_code)]
pub fn tiny_data(dir: &std::path::Path, tokens: usize) -> PathBuf {
    let d = dir.join("tiny-data");
    std::fs::create_dir_all(&d).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (split, n) in [
        ("train", tokens),
        ("valid", tokens / 2),
        ("test", tokens / 2),
    ] {
        let mut text = String::new();
        let mut count = 0;
        while count < n {
            for _ in 0..15 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(&format!("w{} ", (x >> 33) % 40));
            }
            text.push('\n');
            count += 16; // 15 words and <eos>
        }
        std::fs::write(d.join(format!("{split}.txt")), text).unwrap();
    }
    d
}

/// Runs `cmd` with a time limit; fails the test (after killing it) when it runs over.
#[allow(dead_code)]
pub fn output_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?} (a hang?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Asserts that a process ended by itself with one of `codes` (not by a signal such as
/// SIGABRT) and printed no panic; returns its stderr.
#[allow(dead_code)]
pub fn assert_clean_exit(out: &std::process::Output, codes: &[i32], what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{what}: exit {:?} (signal?), wanted one of {codes:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked at"), "{what}: panicked: {err}");
    err
}
