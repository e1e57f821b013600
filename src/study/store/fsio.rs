//! Files of the store: atomic writes (temporary file, fsync, rename, fsync folder),
//! Parquet in and out, and I/O errors that say what to do.

use anyhow::{anyhow, Context, Result};
use polars::prelude::*;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// Reads a Parquet file into a frame.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| anyhow!("cannot read {} as Parquet: {e}", path.display()))
}

/// Explains an I/O error on the store in terms of what to do: the path, the operation,
/// the OS error and a fix.
pub fn store_error(e: &std::io::Error, path: &Path, doing: &str) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(28) | Some(122) => {
            "the disk is full (or over quota); free space and run again: finished units are kept"
        }
        Some(13) | Some(1) | Some(30) => {
            "the store is not writable; fix its permissions or pass --store DIR"
        }
        Some(17) | Some(20) | Some(21) => {
            "a file is in the way of the store's folders (or a folder in the way of a file); move it away or pass --store DIR"
        }
        Some(2) => "it vanished while evoattn ran (removed by another process?); run again",
        Some(24) => "too many open files; raise the limit (ulimit -n) and run again",
        Some(5) => "the device reported an I/O error; check the disk, then run again",
        _ => "finished units are kept; fix the cause and run again to resume",
    };
    anyhow!("cannot {doing} {}: {e} ({hint})", path.display())
}

/// Writes a file atomically: temporary file in the same folder, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".tmp-{name}-{}-{nanos}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| store_error(&e, &tmp, "create"))?;
        write(&mut f).map_err(|e| match e.downcast::<std::io::Error>() {
            Ok(io) => store_error(&io, path, "write"),
            Err(e) if e.to_string().contains(&path.display().to_string()) => e,
            Err(e) => e.context(format!("cannot write {}", path.display())),
        })?;
        f.flush().map_err(|e| store_error(&e, &tmp, "write"))?;
        f.sync_all().map_err(|e| store_error(&e, &tmp, "sync"))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| store_error(&e, path, "rename into"))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `df` as Parquet at `path`, atomically.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    write_atomic(path, |f| {
        ParquetWriter::new(f)
            .finish(df)
            .map_err(|e| match e {
                PolarsError::IO { error, .. } => store_error(&error, path, "write"),
                other => anyhow!("cannot write {}: {other}", path.display()),
            })
            .map(|_| ())
    })
}
