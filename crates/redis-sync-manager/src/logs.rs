//! Log files: the manager's own, and one per shard beside it with the shard's
//! serial number in the name (`logs/redis-sync-manager.0.log`), as the seed
//! asks. Events carrying a `shard = n` field go to that shard's file; events
//! at WARN and above also reach the manager's file and the console, so one
//! file tells the whole story of trouble. Files rotate by size.
//!
//! Passwords never reach a log: credentials are redacted in their `Debug`
//! form and never logged as fields.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Rotate a file when it passes this size; keep this many old ones.
const ROTATE_BYTES: u64 = 100 << 20;
const KEEP_ROTATED: usize = 3;

/// `logs/redis-sync-manager.log` → `logs/redis-sync-manager.3.log`.
pub fn shard_log_path(base: &Path, serial: usize) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "redis-sync-manager".into());
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{serial}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{serial}"),
    };
    base.with_file_name(name)
}

struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl RotatingFile {
    fn open(path: PathBuf) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { path, file, size })
    }

    fn write_line(&mut self, line: &str) {
        if self.size + line.len() as u64 > ROTATE_BYTES {
            self.rotate();
        }
        if self.file.write_all(line.as_bytes()).is_ok() {
            self.size += line.len() as u64;
        }
    }

    fn rotate(&mut self) {
        // name.log → name.log.1 → name.log.2 …; the oldest falls off.
        for i in (1..KEEP_ROTATED).rev() {
            let from = rotated(&self.path, i);
            let _ = std::fs::rename(&from, rotated(&self.path, i + 1));
        }
        let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        if let Ok(file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            self.file = file;
            self.size = 0;
        }
    }
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// The tracing layer that writes the files.
pub struct FileLogs {
    base: PathBuf,
    manager: Mutex<RotatingFile>,
    shards: Mutex<HashMap<u64, RotatingFile>>,
    console: bool,
}

impl FileLogs {
    pub fn open(base: &Path, console: bool) -> io::Result<FileLogs> {
        Ok(FileLogs {
            base: base.to_path_buf(),
            manager: Mutex::new(RotatingFile::open(base.to_path_buf())?),
            shards: Mutex::new(HashMap::new()),
            console,
        })
    }
}

#[derive(Default)]
struct Fields {
    shard: Option<u64>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "shard" {
            self.shard = Some(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "shard" && value >= 0 {
            self.shard = Some(value as u64);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for FileLogs {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        let now = chrono_like_now();
        let line = format!("{now} {level:>5} {}{}\n", fields.message, fields.rest);
        let lock = |m: &Mutex<RotatingFile>| m.lock().map(|mut f| f.write_line(&line)).ok();
        match fields.shard {
            Some(serial) => {
                let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
                if let std::collections::hash_map::Entry::Vacant(v) = shards.entry(serial) {
                    if let Ok(f) = RotatingFile::open(shard_log_path(&self.base, serial as usize)) {
                        v.insert(f);
                    }
                }
                if let Some(f) = shards.get_mut(&serial) {
                    f.write_line(&line);
                }
                if level <= Level::WARN {
                    let _ = lock(&self.manager);
                }
            }
            None => {
                let _ = lock(&self.manager);
            }
        }
        if self.console && level <= Level::WARN {
            eprint!("{line}");
        }
    }
}

/// UTC time as `2026-11-27T12:00:00.123Z` without a date crate.
fn chrono_like_now() -> String {
    let ms = rsm_status::now_ms();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// Install the file logger as the global subscriber.
pub fn init(base: &Path, console: bool) -> io::Result<()> {
    let layer = FileLogs::open(base, console)?;
    let filter = tracing_subscriber::filter::LevelFilter::INFO;
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_file_names() {
        assert_eq!(
            shard_log_path(Path::new("logs/redis-sync-manager.log"), 0),
            PathBuf::from("logs/redis-sync-manager.0.log")
        );
        assert_eq!(
            shard_log_path(Path::new("/x/REDISPORT.LOG"), 12),
            PathBuf::from("/x/REDISPORT.12.LOG")
        );
        assert_eq!(
            shard_log_path(Path::new("plain"), 1),
            PathBuf::from("plain.1")
        );
    }

    #[test]
    fn time_format() {
        let t = chrono_like_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
