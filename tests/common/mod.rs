//! Helpers shared by the integration tests.

use evoattn::data;
use std::path::PathBuf;

/// The real data directory, or None when it is absent outside CI. Under CI (CI set) a
/// missing directory fails the test instead of skipping it.
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
