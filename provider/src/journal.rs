//! The append-only journal: one JSON line per state change, fsynced before
//! the change is applied or answered, replayed at start, so a restart
//! loses nothing that was ever answered.
//!
//! A crash in the middle of a write leaves a torn last line; replay drops
//! it (the change it held was never applied nor answered). A bad line
//! anywhere else is corruption, and the provider refuses to start on it.
//! The file is locked while open: two providers never share a data
//! directory.

use std::{
    fs::OpenOptions,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::AsyncWriteExt;

/// The journal's file name inside the data directory.
pub(crate) const FILE_NAME: &str = "journal.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("journal {path}, line {line}: not a record ({source}); the file is damaged")]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("a record cannot be written as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// An earlier write failed half-way: nothing more is written until a
    /// restart has replayed (and trimmed) the file.
    #[error("an earlier write to the journal failed; restart the provider")]
    Broken,
}

/// The open journal, appending.
pub(crate) struct Journal {
    path: PathBuf,
    file: tokio::fs::File,
    broken: bool,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and reads back every record.
    pub(crate) fn open<T: DeserializeOwned>(dir: &Path) -> Result<(Self, Vec<T>), JournalError> {
        let path = dir.join(FILE_NAME);
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        if file.try_lock().is_err() {
            return Err(JournalError::Locked { path });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let (records, good_len) = parse(&path, &text)?;
        if good_len < text.len() {
            tracing::warn!(path = %path.display(), dropped = text.len() - good_len, "journal: dropping a torn last record");
            file.set_len(good_len as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Self {
                path,
                file: tokio::fs::File::from_std(file),
                broken: false,
            },
            records,
        ))
    }

    /// Writes `record` and waits until it is on disk.
    pub(crate) async fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JournalError> {
        if self.broken {
            return Err(JournalError::Broken);
        }
        let mut line = serde_json::to_vec(record).map_err(JournalError::Encode)?;
        line.push(b'\n');
        let written = async {
            self.file.write_all(&line).await?;
            self.file.flush().await?;
            self.file.sync_data().await
        }
        .await;
        written.map_err(|source| {
            self.broken = true;
            JournalError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// The records in `text` and the length of its well-formed part.
fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<(Vec<T>, usize), JournalError> {
    let mut records = Vec::new();
    let mut good_len = 0;
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let last = lines.peek().is_none();
        if !line.ends_with('\n') {
            // Torn: the write never finished.
            break;
        }
        if line.trim().is_empty() {
            good_len += line.len();
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => {
                records.push(record);
                good_len += line.len();
            }
            // A newline reached the disk before the rest of the line did.
            Err(_) if last => break,
            Err(source) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: number + 1,
                    source,
                });
            }
        }
    }
    Ok((records, good_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        n: u32,
    }

    #[tokio::test]
    async fn what_was_appended_is_read_back_after_a_restart() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let (mut journal, records) = Journal::open::<R>(dir.path()).expect("opens");
            assert!(records.is_empty());
            journal.append(&R { n: 1 }).await.expect("written");
            journal.append(&R { n: 2 }).await.expect("written");
        }
        let (mut journal, records) = Journal::open::<R>(dir.path()).expect("reopens");
        assert_eq!(records, [R { n: 1 }, R { n: 2 }]);
        journal.append(&R { n: 3 }).await.expect("written");
        drop(journal);
        let (_, records) = Journal::open::<R>(dir.path()).expect("reopens");
        assert_eq!(records.len(), 3);
    }

    #[tokio::test]
    async fn a_torn_last_record_is_dropped_and_the_file_trimmed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n{\"n\":").expect("written");
        {
            let (mut journal, records) = Journal::open::<R>(dir.path()).expect("opens");
            assert_eq!(records, [R { n: 1 }, R { n: 2 }]);
            journal.append(&R { n: 3 }).await.expect("written");
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("readable"),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"
        );
        // A last line whose newline landed before its text did.
        std::fs::write(&path, "{\"n\":1}\n{\"n\\u0000\n").expect("written");
        let (_, records) = Journal::open::<R>(dir.path()).expect("opens");
        assert_eq!(records, [R { n: 1 }]);
    }

    #[test]
    fn a_damaged_line_in_the_middle_stops_the_start() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join(FILE_NAME), "{\"n\":1}\ngarbage\n{\"n\":3}\n").expect("written");
        let err = Journal::open::<R>(dir.path()).err().expect("refused");
        assert!(matches!(err, JournalError::Corrupt { line: 2, .. }), "{err}");
    }

    #[test]
    fn one_journal_one_process() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let _first = Journal::open::<R>(dir.path()).expect("opens");
        let second = Journal::open::<R>(dir.path()).err().expect("refused");
        assert!(matches!(second, JournalError::Locked { .. }), "{second}");
    }
}
